/**
 * cpio "newc" (SVR4 without CRC), the format the kernel unpacks into the
 * initramfs (init/initramfs.c). Each entry is a 110-byte ASCII header, the
 * name with its NUL padded to 4 bytes, then the data padded to 4 bytes.
 */
export const CPIO_NEWC_MAGIC = "070701";
/** newc with a checksum in c_check, which the kernel also accepts. */
export const CPIO_CRC_MAGIC = "070702";
export const CPIO_HEADER_SIZE = 110;
export const CPIO_ALIGN = 4;
export const CPIO_TRAILER_NAME = "TRAILER!!!";
/** PATH_MAX on Linux, counting the NUL: a name has at most 4095 bytes. */
export const CPIO_PATH_MAX = 4096;
/** Every numeric field is 8 hex digits, so 32 bits. */
export const CPIO_FIELD_MAX = 0xffffffff;

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;

/** Fields of a newc header, in file order, without c_magic. */
export interface CpioHeader {
  c_ino: number;
  c_mode: number;
  c_uid: number;
  c_gid: number;
  c_nlink: number;
  c_mtime: number;
  c_filesize: number;
  c_devmajor: number;
  c_devminor: number;
  c_rdevmajor: number;
  c_rdevminor: number;
  c_namesize: number;
  c_check: number;
}

export const CPIO_HEADER_FIELDS: readonly (keyof CpioHeader)[] = [
  "c_ino",
  "c_mode",
  "c_uid",
  "c_gid",
  "c_nlink",
  "c_mtime",
  "c_filesize",
  "c_devmajor",
  "c_devminor",
  "c_rdevmajor",
  "c_rdevminor",
  "c_namesize",
  "c_check",
];

export class CpioError extends Error {
  constructor(
    readonly code: string,
    message: string,
    /** Archive path of the entry the error is about, when one applies. */
    readonly entry?: string,
    /** Byte offset in the archive, for errors of the reader. */
    readonly offset?: number,
  ) {
    super(message);
    this.name = "CpioError";
  }
}

/** Bytes needed to pad `length` to a multiple of `align`. */
export function padLength(length: number, align = CPIO_ALIGN): number {
  return (align - (length % align)) % align;
}

/** Length of a header plus the padded name. */
export function headerLength(namesize: number): number {
  const length = CPIO_HEADER_SIZE + namesize;
  return length + padLength(length);
}

/**
 * Encodes one header and its padded name. `name` is the UTF-8 name
 * without its NUL; c_namesize must be its length plus one.
 */
export function encodeHeader(header: CpioHeader, name: Buffer): Buffer {
  if (header.c_namesize !== name.length + 1) {
    throw new CpioError(
      "CPIO_INVALID_FIELD",
      `c_namesize ${header.c_namesize} does not match the name's ` +
        `${name.length} bytes plus NUL`,
      name.toString("utf8"),
    );
  }
  const out = Buffer.alloc(headerLength(header.c_namesize));
  out.write(CPIO_NEWC_MAGIC, 0, "latin1");
  let pos = CPIO_NEWC_MAGIC.length;
  for (const field of CPIO_HEADER_FIELDS) {
    out.write(hex8(header[field], field, name), pos, "latin1");
    pos += 8;
  }
  name.copy(out, CPIO_HEADER_SIZE);
  return out;
}

function hex8(value: number, field: string, name: Buffer): string {
  if (!Number.isInteger(value) || value < 0 || value > CPIO_FIELD_MAX) {
    throw new CpioError(
      "CPIO_INVALID_FIELD",
      `${field} ${value} of ${quoteName(name.toString("utf8"))} does ` +
        `not fit in 8 hex digits: use an integer from 0 to ` +
        `${CPIO_FIELD_MAX}`,
      name.toString("utf8"),
    );
  }
  return value.toString(16).toUpperCase().padStart(8, "0");
}

/** Encodes the TRAILER!!! entry that ends an archive. */
export function trailerHeader(): Buffer {
  const name = Buffer.from(CPIO_TRAILER_NAME, "latin1");
  return encodeHeader(
    {
      c_ino: 0,
      c_mode: 0,
      c_uid: 0,
      c_gid: 0,
      c_nlink: 1,
      c_mtime: 0,
      c_filesize: 0,
      c_devmajor: 0,
      c_devminor: 0,
      c_rdevmajor: 0,
      c_rdevminor: 0,
      c_namesize: name.length + 1,
      c_check: 0,
    },
    name,
  );
}

// Checks of entry fields. Each throws a CpioError that names the value
// and the fix.

export function sourceDateEpoch(): number {
  const value = process.env.SOURCE_DATE_EPOCH;
  if (value === undefined || value === "") return 0;
  if (!/^[0-9]+$/.test(value)) {
    throw new CpioError(
      "CPIO_INVALID_MTIME",
      `invalid SOURCE_DATE_EPOCH ${JSON.stringify(value)}: ` +
        `use decimal seconds from 0 to ${CPIO_FIELD_MAX}`,
    );
  }
  return checkMtime(Number(value), "SOURCE_DATE_EPOCH");
}

export function checkMtime(value: number, what: string): number {
  if (Number.isInteger(value) && value >= 0 && value <= CPIO_FIELD_MAX) {
    return value;
  }
  throw new CpioError(
    "CPIO_INVALID_MTIME",
    `invalid ${what} ${value}: newc stores 32-bit seconds, ` +
      `use an integer from 0 to ${CPIO_FIELD_MAX}`,
  );
}

export function checkField(value: number, what: string): number {
  if (Number.isInteger(value) && value >= 0 && value <= CPIO_FIELD_MAX) {
    return value;
  }
  throw new CpioError(
    "CPIO_INVALID_FIELD",
    `invalid ${what} ${value}: use an integer from 0 to ${CPIO_FIELD_MAX}`,
  );
}

export function fileMode(mode: number, type: number, name: string): number {
  const typeBits = Number.isInteger(mode) ? mode & S_IFMT : -1;
  const valid =
    Number.isInteger(mode) &&
    mode >= 0 &&
    mode <= S_IFMT + 0o7777 &&
    (typeBits === 0 || typeBits === type);
  if (!valid) {
    throw new CpioError(
      "CPIO_INVALID_MODE",
      `invalid mode ${formatOctal(mode)} for ${quoteName(name)}: give ` +
        `permission bits (0 to 0o7777), optionally with type ` +
        `${formatOctal(type)}`,
      name,
    );
  }
  return type | (mode & 0o7777);
}

export function formatOctal(value: number): string {
  return Number.isInteger(value) ? `0o${value.toString(8)}` : String(value);
}

export function checkName(name: string): Buffer {
  const fail = (code: string, reason: string) => {
    const quoted = quoteName(name);
    const message = `invalid archive path ${quoted}: ${reason}`;
    return new CpioError(code, message, name);
  };
  if (name === "") throw fail("CPIO_EMPTY_NAME", "the name is empty");
  if (name.startsWith("/")) {
    throw fail("CPIO_ABSOLUTE_NAME", "remove the leading /");
  }
  if (name.includes("\0")) {
    throw fail("CPIO_NAME_HAS_NUL", "names cannot contain a NUL byte");
  }
  if (name === CPIO_TRAILER_NAME) {
    throw fail("CPIO_RESERVED_NAME", "this name marks the archive's end");
  }
  if (/\p{Cs}/u.test(name)) {
    throw fail("CPIO_INVALID_NAME", "the string has a lone surrogate");
  }
  const bytes = Buffer.from(name, "utf8");
  if (bytes.length >= CPIO_PATH_MAX) {
    throw fail(
      "CPIO_NAME_TOO_LONG",
      `${bytes.length} bytes, the maximum is ${CPIO_PATH_MAX - 1}`,
    );
  }
  return bytes;
}

/** Quotes a name for a message, shortened to its first 80 characters. */
export function quoteName(name: string): string {
  const limit = 80;
  if (name.length <= limit) return JSON.stringify(name);
  return `${JSON.stringify(name.slice(0, limit))}...`;
}

export function symlinkBody(name: string, target: string): Buffer {
  const fail = (code: string, reason: string) => {
    const quoted = quoteName(name);
    return new CpioError(
      code,
      `invalid symlink target for ${quoted}: ${reason}`,
      name,
    );
  };
  if (target === "") throw fail("CPIO_INVALID_SYMLINK", "it is empty");
  if (target.includes("\0")) {
    throw fail("CPIO_INVALID_SYMLINK", "it contains a NUL byte");
  }
  const body = Buffer.from(target, "utf8");
  if (body.length >= CPIO_PATH_MAX) {
    throw fail(
      "CPIO_SYMLINK_TOO_LONG",
      `${body.length} bytes, the maximum is ${CPIO_PATH_MAX - 1}`,
    );
  }
  return body;
}
