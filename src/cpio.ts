import { Readable } from "node:stream";

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

/** Bytes of a regular file: whole, streamed, or produced on demand. */
export type CpioFileData =
  | Uint8Array
  | AsyncIterable<Uint8Array>
  | Iterable<Uint8Array>
  | (() =>
      | Uint8Array
      | Promise<Uint8Array>
      | AsyncIterable<Uint8Array>
      | Iterable<Uint8Array>);

export interface CpioEntryOptions {
  /** Permission bits (0 to 0o7777); the type bits may be included. */
  mode?: number;
  uid?: number;
  gid?: number;
  /** Seconds since the epoch; default: the writer's mtime. */
  mtime?: number;
  /** Inode number; default: the writer's next sequential number. */
  ino?: number;
}

export interface CpioFileOptions extends CpioEntryOptions {
  /** Byte count; optional when `data` is a Uint8Array. */
  size?: number;
  data: CpioFileData;
}

export interface CpioWriterOptions {
  /**
   * Default c_mtime in seconds since the epoch. Default: the
   * SOURCE_DATE_EPOCH environment variable, else 0.
   */
  mtime?: number;
  /** Default c_uid. Default 0. */
  uid?: number;
  /** Default c_gid. Default 0. */
  gid?: number;
  /** First inode number handed out. Default 1. */
  firstIno?: number;
}

export interface CpioFinishOptions {
  /** Write the TRAILER!!! entry. Default true. */
  trailer?: boolean;
  /**
   * Pad with zeros so that `baseLength` plus this archive's length is a
   * multiple of `padTo`. Default 512 with a trailer, 1 (none) without.
   */
  padTo?: number;
  /** Length of the archive this one will be appended to. Default 0. */
  baseLength?: number;
}

interface PendingEntry {
  name: string;
  /** Encoded header and padded name. */
  header: Buffer;
  size: number;
  data?: CpioFileData;
  consumed?: boolean;
}

/** Output is handed on in pieces of at least this many bytes. */
const OUTPUT_CHUNK = 64 * 1024;
const ZERO_PAD = Buffer.alloc(CPIO_ALIGN);
const MAX_FILE_SIZE = CPIO_FIELD_MAX;

/**
 * Builds a newc archive. Each entry is validated and its header encoded
 * when it is added, so `length` is exact before any file byte is read.
 * File bytes are read only while the output is consumed, one file at a
 * time. After finish(), read the output with toBuffer(), stream() or
 * `for await`, more than once unless a file's data is a plain iterable
 * or stream, which can be read only once.
 */
export class CpioWriter {
  readonly #entries: PendingEntry[] = [];
  readonly #names = new Set<string>();
  readonly #mtime: number;
  readonly #uid: number;
  readonly #gid: number;
  #nextIno: number;
  #length = 0;
  #finished = false;

  constructor(options: CpioWriterOptions = {}) {
    this.#mtime = checkMtime(options.mtime ?? sourceDateEpoch(), "mtime");
    this.#uid = checkField(options.uid ?? 0, "uid");
    this.#gid = checkField(options.gid ?? 0, "gid");
    this.#nextIno = checkField(options.firstIno ?? 1, "firstIno");
  }

  /** Archive length in bytes so far; final after finish(). */
  get length(): number {
    return this.#length;
  }

  /** Inode number the next entry without an `ino` option gets. */
  get nextIno(): number {
    return this.#nextIno;
  }

  /** Number of entries added, the trailer excluded. */
  get entryCount(): number {
    return this.#names.size;
  }

  /** Reports whether an entry of this name was added. */
  has(name: string): boolean {
    return this.#names.has(name);
  }

  /** Adds a directory, mode 040755 unless given, nlink 2. */
  addDirectory(name: string, options: CpioEntryOptions = {}): this {
    const mode = fileMode(options.mode ?? 0o755, S_IFDIR, name);
    return this.#add(name, options, mode, 2, 0);
  }

  /** Adds a regular file, mode 0100644 unless given, nlink 1. */
  addFile(name: string, options: CpioFileOptions): this {
    const mode = fileMode(options.mode ?? 0o644, S_IFREG, name);
    const size = fileSize(name, options);
    return this.#add(name, options, mode, 1, size, options.data);
  }

  /** Adds a symlink, mode 0120777, whose body is `target`. */
  addSymlink(
    name: string,
    target: string,
    options: Omit<CpioEntryOptions, "mode"> = {},
  ): this {
    const body = symlinkBody(name, target);
    return this.#add(name, options, S_IFLNK | 0o777, 1, body.length, body);
  }

  /**
   * Ends the archive: the trailer, then zero padding. Without a trailer
   * the archive is a base that another archive completes.
   */
  finish(options: CpioFinishOptions = {}): this {
    this.#checkOpen();
    const trailer = options.trailer ?? true;
    const padTo = options.padTo ?? (trailer ? 512 : 1);
    const baseLength = options.baseLength ?? 0;
    checkFinishOptions(trailer, padTo, baseLength);
    if (trailer) this.#push(CPIO_TRAILER_NAME, trailerHeader(), 0);
    this.#finished = true;
    const pad = padLength(baseLength + this.#length, padTo);
    if (pad > 0) {
      const zeros = Buffer.alloc(pad);
      this.#entries.push({ name: "", header: zeros, size: 0 });
      this.#length += pad;
    }
    return this;
  }

  /** Yields the archive bytes; needs finish() first. */
  async *[Symbol.asyncIterator](): AsyncGenerator<Buffer> {
    if (!this.#finished) {
      throw new CpioError(
        "CPIO_NOT_FINISHED",
        "call finish() before reading the archive",
      );
    }
    const out = new Coalescer(OUTPUT_CHUNK);
    for (const entry of this.#entries) {
      yield* out.add(entry.header);
      if (entry.data === undefined) continue;
      for await (const chunk of readEntryData(entry)) yield* out.add(chunk);
      yield* out.add(ZERO_PAD.subarray(0, padLength(entry.size)));
    }
    yield* out.flush();
  }

  /** Returns the whole archive as one Buffer. */
  async toBuffer(): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const part of this) parts.push(part);
    return Buffer.concat(parts, this.#length);
  }

  /** Returns the archive as a byte-mode node:stream Readable. */
  stream(): Readable {
    return Readable.from(this, { objectMode: false });
  }

  #add(
    name: string,
    options: CpioEntryOptions,
    mode: number,
    nlink: number,
    size: number,
    data?: CpioFileData,
  ): this {
    this.#checkOpen();
    const nameBytes = checkName(name);
    if (this.#names.has(name)) {
      throw new CpioError(
        "CPIO_DUPLICATE_NAME",
        `duplicate archive path ${quoteName(name)}: each path may appear once`,
        name,
      );
    }
    const ino = options.ino ?? this.#nextIno;
    const header = encodeHeader(
      {
        c_ino: ino,
        c_mode: mode,
        c_uid: options.uid ?? this.#uid,
        c_gid: options.gid ?? this.#gid,
        c_nlink: nlink,
        c_mtime: checkMtime(
          options.mtime ?? this.#mtime,
          `mtime of ${quoteName(name)}`,
        ),
        c_filesize: size,
        c_devmajor: 0,
        c_devminor: 0,
        c_rdevmajor: 0,
        c_rdevminor: 0,
        c_namesize: nameBytes.length + 1,
        c_check: 0,
      },
      nameBytes,
    );
    if (options.ino === undefined) this.#nextIno++;
    this.#names.add(name);
    this.#push(name, header, size, data);
    return this;
  }

  #push(name: string, header: Buffer, size: number, data?: CpioFileData) {
    this.#entries.push({ name, header, size, data });
    this.#length += header.length + size + padLength(size);
  }

  #checkOpen(): void {
    if (this.#finished) {
      throw new CpioError(
        "CPIO_FINISHED",
        "the archive is finished: add entries before finish()",
      );
    }
  }
}

function sourceDateEpoch(): number {
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

function checkMtime(value: number, what: string): number {
  if (Number.isInteger(value) && value >= 0 && value <= CPIO_FIELD_MAX) {
    return value;
  }
  throw new CpioError(
    "CPIO_INVALID_MTIME",
    `invalid ${what} ${value}: newc stores 32-bit seconds, ` +
      `use an integer from 0 to ${CPIO_FIELD_MAX}`,
  );
}

function checkField(value: number, what: string): number {
  if (Number.isInteger(value) && value >= 0 && value <= CPIO_FIELD_MAX) {
    return value;
  }
  throw new CpioError(
    "CPIO_INVALID_FIELD",
    `invalid ${what} ${value}: use an integer from 0 to ${CPIO_FIELD_MAX}`,
  );
}

function fileMode(mode: number, type: number, name: string): number {
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

function formatOctal(value: number): string {
  return Number.isInteger(value) ? `0o${value.toString(8)}` : String(value);
}

function fileSize(name: string, options: CpioFileOptions): number {
  const { data } = options;
  const size =
    options.size ?? (data instanceof Uint8Array ? data.length : undefined);
  if (size === undefined) {
    throw new CpioError(
      "CPIO_INVALID_FIELD",
      `missing size for ${quoteName(name)}: streamed data needs its ` +
        `byte count`,
      name,
    );
  }
  if (size > MAX_FILE_SIZE && Number.isInteger(size)) {
    throw new CpioError(
      "CPIO_FILE_TOO_LARGE",
      `${quoteName(name)} has ${size} bytes: newc stores sizes in 32 ` +
        `bits, so files ` +
        `must be smaller than 4 GiB`,
      name,
    );
  }
  if (!Number.isInteger(size) || size < 0) {
    throw new CpioError(
      "CPIO_INVALID_FIELD",
      `invalid size ${size} for ${quoteName(name)}: use a byte count`,
      name,
    );
  }
  if (data instanceof Uint8Array && data.length !== size) {
    throw sizeMismatch(name, size, `has ${data.length}`);
  }
  return size;
}

function sizeMismatch(name: string, size: number, actual: string) {
  return new CpioError(
    "CPIO_SIZE_MISMATCH",
    `${quoteName(name)} was declared with ${size} bytes but its data ` +
      `${actual}: pass the exact size`,
    name,
  );
}

function checkName(name: string): Buffer {
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
function quoteName(name: string): string {
  const limit = 80;
  if (name.length <= limit) return JSON.stringify(name);
  return `${JSON.stringify(name.slice(0, limit))}...`;
}

function symlinkBody(name: string, target: string): Buffer {
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

function checkFinishOptions(
  trailer: boolean,
  padTo: number,
  baseLength: number,
): void {
  const fail = (reason: string) =>
    new CpioError("CPIO_INVALID_OPTION", reason);
  if (!Number.isSafeInteger(padTo) || padTo < 1) {
    throw fail(`invalid padTo ${padTo}: use a positive integer`);
  }
  if (!Number.isSafeInteger(baseLength) || baseLength < 0) {
    throw fail(`invalid baseLength ${baseLength}: use a byte count`);
  }
  // init/initramfs.c skips zero bytes only where a new archive may
  // start, so padding must follow a trailer.
  if (!trailer && padTo > 1) {
    throw fail("padTo needs the trailer: zero padding may follow only it");
  }
}

function trailerHeader(): Buffer {
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

/** Yields an entry's bytes and checks that they match its size. */
async function* readEntryData(entry: PendingEntry): AsyncGenerator<Buffer> {
  let data = entry.data as CpioFileData;
  if (typeof data === "function") data = await data();
  if (data instanceof Uint8Array) {
    if (data.length !== entry.size) {
      throw sizeMismatch(entry.name, entry.size, `has ${data.length}`);
    }
    yield toBuffer(data);
    return;
  }
  if (entry.data === data) {
    if (entry.consumed) {
      throw new CpioError(
        "CPIO_DATA_CONSUMED",
        `the data of ${entry.name} was already read: pass a Buffer or a ` +
          `function that returns fresh data to read the archive twice`,
        entry.name,
      );
    }
    entry.consumed = true;
  }
  let count = 0;
  for await (const chunk of data) {
    count += chunk.length;
    if (count > entry.size) {
      throw sizeMismatch(entry.name, entry.size, `has more`);
    }
    if (chunk.length > 0) yield toBuffer(chunk);
  }
  if (count !== entry.size) {
    throw sizeMismatch(entry.name, entry.size, `has only ${count}`);
  }
}

function toBuffer(bytes: Uint8Array): Buffer {
  if (Buffer.isBuffer(bytes)) return bytes;
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
}

/** Joins small pieces so consumers see few, large chunks. */
class Coalescer {
  #parts: Buffer[] = [];
  #length = 0;

  constructor(readonly threshold: number) {}

  add(piece: Buffer): Buffer[] {
    if (piece.length >= this.threshold) return [...this.flush(), piece];
    if (piece.length === 0) return [];
    this.#parts.push(piece);
    this.#length += piece.length;
    return this.#length >= this.threshold ? this.flush() : [];
  }

  flush(): Buffer[] {
    if (this.#length === 0) return [];
    const joined = Buffer.concat(this.#parts, this.#length);
    this.#parts = [];
    this.#length = 0;
    return [joined];
  }
}
