import {
  CPIO_ALIGN,
  CPIO_CRC_MAGIC,
  CPIO_HEADER_FIELDS,
  CPIO_HEADER_SIZE,
  CPIO_NEWC_MAGIC,
  CPIO_PATH_MAX,
  CPIO_TRAILER_NAME,
  CpioError,
  S_IFLNK,
  S_IFMT,
  padLength,
  type CpioHeader,
} from "./cpio.js";

/** One record of a newc archive as read back. */
export interface CpioEntry {
  name: string;
  /** c_mode: type and permission bits. */
  mode: number;
  /** c_filesize. */
  size: number;
  uid: number;
  gid: number;
  mtime: number;
  ino: number;
  nlink: number;
  devmajor: number;
  devminor: number;
  rdevmajor: number;
  rdevminor: number;
  check: number;
  /** File body, a view into the input (not a copy). */
  data: Buffer;
  /** Symlink target, for entries whose type is S_IFLNK. */
  target?: string;
  /** Offset of the header in the input. */
  offset: number;
  /** True for a TRAILER!!! record. */
  trailer: boolean;
}

const OLD_ASCII_MAGIC = "070707";

/**
 * Parses every record of a newc archive, or of several concatenated
 * archives, trailers included. Zero bytes are skipped after a trailer,
 * the way the kernel skips them between archives (init/initramfs.c), and
 * each record starts on a 4-byte boundary. Every length is checked
 * against the input before use, so malformed input raises a CpioError
 * naming the offset and nothing is allocated beyond the input's size.
 */
export function* iterateCpio(input: Uint8Array): Generator<CpioEntry> {
  const buf = Buffer.from(input.buffer, input.byteOffset, input.length);
  let offset = 0;
  let afterTrailer = false;
  while (offset < buf.length) {
    if (afterTrailer && buf[offset] === 0) {
      offset++;
      continue;
    }
    if (offset % CPIO_ALIGN !== 0) {
      throw malformed(
        "CPIO_BAD_MAGIC",
        "an archive after the padding does not start on a 4-byte boundary",
        offset,
      );
    }
    const { entry, next } = readEntry(buf, offset);
    afterTrailer = entry.trailer;
    offset = next;
    yield entry;
  }
}

/** Returns the entries of a newc archive without its trailers. */
export function readCpio(input: Uint8Array): CpioEntry[] {
  return [...iterateCpio(input)].filter((entry) => !entry.trailer);
}

/** Reads the record at `offset`; `next` is the offset after its padding. */
function readEntry(
  buf: Buffer,
  offset: number,
): { entry: CpioEntry; next: number } {
  if (buf.length - offset < CPIO_HEADER_SIZE) {
    throw malformed(
      "CPIO_TRUNCATED",
      `the input ends inside a header (${buf.length - offset} of ` +
        `${CPIO_HEADER_SIZE} bytes)`,
      offset,
    );
  }
  checkMagic(buf, offset);
  const header = readHeader(buf, offset);
  const nameStart = offset + CPIO_HEADER_SIZE;
  const name = readName(buf, nameStart, header.c_namesize);
  const dataStart = nameStart + header.c_namesize + padLength(
    CPIO_HEADER_SIZE + header.c_namesize,
  );
  const size = header.c_filesize;
  if (dataStart > buf.length || size > buf.length - dataStart) {
    throw malformed(
      "CPIO_TRUNCATED",
      `c_filesize ${size} of ${name} runs past the end of the input`,
      offset,
    );
  }
  const data = buf.subarray(dataStart, dataStart + size);
  const entry: CpioEntry = {
    name,
    mode: header.c_mode,
    size,
    uid: header.c_uid,
    gid: header.c_gid,
    mtime: header.c_mtime,
    ino: header.c_ino,
    nlink: header.c_nlink,
    devmajor: header.c_devmajor,
    devminor: header.c_devminor,
    rdevmajor: header.c_rdevmajor,
    rdevminor: header.c_rdevminor,
    check: header.c_check,
    data,
    offset,
    trailer: name === CPIO_TRAILER_NAME,
  };
  if ((header.c_mode & S_IFMT) === S_IFLNK) {
    entry.target = data.toString("utf8");
  }
  // The last record's data padding may be missing at the end of input.
  return { entry, next: dataStart + size + padLength(size) };
}

function checkMagic(buf: Buffer, offset: number): void {
  const magic = buf.toString("latin1", offset, offset + 6);
  if (magic === CPIO_NEWC_MAGIC || magic === CPIO_CRC_MAGIC) return;
  const hint =
    magic === OLD_ASCII_MAGIC
      ? "this is the old ASCII format; write newc (cpio -H newc)"
      : `expected ${CPIO_NEWC_MAGIC}`;
  throw malformed(
    "CPIO_BAD_MAGIC",
    `bad magic ${JSON.stringify(magic)} (${hint})`,
    offset,
  );
}

function readHeader(buf: Buffer, offset: number): CpioHeader {
  const header = {} as CpioHeader;
  let pos = offset + CPIO_NEWC_MAGIC.length;
  for (const field of CPIO_HEADER_FIELDS) {
    const digits = buf.toString("latin1", pos, pos + 8);
    if (!/^[0-9A-Fa-f]{8}$/.test(digits)) {
      throw malformed(
        "CPIO_BAD_HEX",
        `${field} ${JSON.stringify(digits)} is not 8 hex digits`,
        pos,
      );
    }
    header[field] = parseInt(digits, 16);
    pos += 8;
  }
  return header;
}

function readName(buf: Buffer, start: number, namesize: number): string {
  const offset = start - CPIO_HEADER_SIZE;
  if (namesize === 0 || namesize > CPIO_PATH_MAX) {
    throw malformed(
      "CPIO_BAD_NAMESIZE",
      `c_namesize ${namesize} is invalid: expected 1 to ${CPIO_PATH_MAX}`,
      offset,
    );
  }
  if (namesize > buf.length - start) {
    throw malformed(
      "CPIO_TRUNCATED",
      `c_namesize ${namesize} runs past the end of the input`,
      offset,
    );
  }
  const end = start + namesize - 1;
  if (buf[end] !== 0 || buf.indexOf(0, start) !== end) {
    throw malformed(
      "CPIO_BAD_NAMESIZE",
      `the name is not ${namesize - 1} bytes followed by one NUL`,
      offset,
    );
  }
  return buf.toString("utf8", start, end);
}

function malformed(code: string, reason: string, offset: number) {
  return new CpioError(
    code,
    `malformed cpio archive at offset ${offset}: ${reason}`,
    undefined,
    offset,
  );
}
