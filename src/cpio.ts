import { Readable } from "node:stream";
import {
  CPIO_ALIGN,
  CPIO_FIELD_MAX,
  CPIO_TRAILER_NAME,
  CpioError,
  S_IFDIR,
  S_IFLNK,
  S_IFREG,
  checkField,
  checkMtime,
  checkName,
  encodeHeader,
  fileMode,
  padLength,
  quoteName,
  sourceDateEpoch,
  symlinkBody,
  trailerHeader,
} from "./cpio-header.js";

export {
  CPIO_ALIGN,
  CPIO_CRC_MAGIC,
  CPIO_FIELD_MAX,
  CPIO_HEADER_FIELDS,
  CPIO_HEADER_SIZE,
  CPIO_NEWC_MAGIC,
  CPIO_PATH_MAX,
  CPIO_TRAILER_NAME,
  CpioError,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  encodeHeader,
  headerLength,
  padLength,
  type CpioHeader,
} from "./cpio-header.js";

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
