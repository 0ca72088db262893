import { availableParallelism } from "node:os";
import { Readable } from "node:stream";
import { loadLibLz4, type LibLz4 } from "./liblz4.js";
import { NpmWorkerPool, npmCompressBlock, type NpmLz4 } from "./lz4-worker.js";

/**
 * LZ4 legacy format, the one the kernel's initramfs decompressor reads
 * (lib/decompress_unlz4.c): the magic, then for each chunk of input a
 * 4-byte little-endian compressed size and one independent raw LZ4 block.
 * Every chunk but the last contains exactly 8 MiB of input, as `lz4 -l`
 * writes them. The kernel decodes each block into an 8 MiB buffer, so no
 * block may decode to more. It skips the magic when it meets it again, so
 * concatenated streams decode as one.
 */
export const LZ4_LEGACY_MAGIC = 0x184c2102;
export const LZ4_LEGACY_MAGIC_BYTES = Buffer.from([0x02, 0x21, 0x4c, 0x18]);
/** Uncompressed bytes per block; the kernel's chunk size (8 << 20). */
export const LZ4_LEGACY_CHUNK_SIZE = 8 << 20;
/** The LZ4 frame format magic, which the kernel rejects. */
export const LZ4_FRAME_MAGIC = 0x184d2204;

/** LZ4_COMPRESSBOUND from lz4.h: worst-case block size for `n` bytes. */
export function lz4CompressBound(n: number): number {
  return n + Math.floor(n / 255) + 16;
}

/** Largest block size a legacy stream can contain. */
export const LZ4_LEGACY_MAX_BLOCK = lz4CompressBound(LZ4_LEGACY_CHUNK_SIZE);

export type Lz4CodecName = "liblz4" | "npm";

export interface Lz4Warning {
  code: string;
  message: string;
}

export interface Lz4Options {
  /**
   * 0 to 2: LZ4_compress_default. 3 to 12: LZ4_compress_HC at that level.
   * Default 1. As in the lz4 CLI, HC starts at level 3 (LZ4HC_CLEVEL_MIN),
   * so with liblz4 1.9.4 every level gives the bytes of `lz4 -l -N`.
   */
  level?: number;
  /**
   * "liblz4": the system liblz4.so.1 through koffi. "npm": the `lz4`
   * package. "auto" (default): liblz4, else the `lz4` package with a
   * warning.
   */
  codec?: "auto" | Lz4CodecName;
  /**
   * Blocks compressed at the same time. Default: os.availableParallelism().
   * The "npm" codec uses that many worker threads once a stream reaches a
   * full 8 MiB chunk, and the calling thread for shorter input.
   */
  concurrency?: number;
  /** Soname or path of liblz4 for dlopen. Default "liblz4.so.1". */
  liblz4Path?: string;
  /** Receives recoverable problems, such as the fallback to "npm". */
  onWarning?: (warning: Lz4Warning) => void;
}

export interface Lz4DecompressOptions {
  /** Decoded bytes allowed before LZ4_OUTPUT_TOO_LARGE. Default 4 GiB. */
  maxOutputLength?: number;
}

export class Lz4Error extends Error {
  constructor(
    readonly code: string,
    message: string,
    /** Byte offset in the compressed input, when one applies. */
    readonly offset?: number,
  ) {
    super(message);
    this.name = "Lz4Error";
  }
}

/** Level that the `lz4` package's encodeBlockHC always uses. */
const NPM_HC_LEVEL = 9;
/** Lowest HC level; lower levels use the fast compressor, as lz4 -N does. */
export const LZ4HC_CLEVEL_MIN = 3;
const MAX_LEVEL = 12;

interface BlockCompressor {
  name: Lz4CodecName;
  concurrency: number;
  /**
   * Compresses one chunk into `frame` as a 4-byte little-endian size and
   * the block, and resolves to the frame's length.
   */
  compressFrame(chunk: Uint8Array, frame: Buffer): Promise<number>;
}

/** Room for one framed block of a full chunk. */
const FRAME_CAPACITY = 4 + LZ4_LEGACY_MAX_BLOCK;

/**
 * Compresses `input` into one LZ4 legacy stream. Blocks are compressed in
 * parallel, and the output is the same for any concurrency.
 */
export async function compressLegacy(
  input: Uint8Array,
  options: Lz4Options = {},
): Promise<Buffer> {
  const compressor = createCompressor(options);
  const out = Buffer.alloc(legacyBound(input.length));
  let length = LZ4_LEGACY_MAGIC_BYTES.copy(out, 0);
  for await (const frame of compressFrames([input], compressor)) {
    length += frame.copy(out, length);
  }
  // Pages past `length` were never written, so they cost no memory.
  return out.subarray(0, length);
}

/** Largest legacy stream that `length` bytes of input can produce. */
export function legacyBound(length: number): number {
  const full = Math.floor(length / LZ4_LEGACY_CHUNK_SIZE);
  const rest = length % LZ4_LEGACY_CHUNK_SIZE;
  const last = rest > 0 ? 4 + lz4CompressBound(rest) : 0;
  return LZ4_LEGACY_MAGIC_BYTES.length + full * FRAME_CAPACITY + last;
}

/**
 * Compresses a sequence of buffers into one LZ4 legacy stream, yielding
 * the magic and then one framed block per 8 MiB of input, in order. At
 * most `concurrency` blocks are held or compressed at once, so memory
 * stays bounded for any input length. The source must not modify a
 * buffer after yielding it. Option errors throw on the first `next()`.
 */
export async function* compressLegacyStream(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  options: Lz4Options = {},
): AsyncGenerator<Buffer> {
  const compressor = createCompressor(options);
  yield Buffer.from(LZ4_LEGACY_MAGIC_BYTES);
  for await (const frame of compressFrames(source, compressor)) {
    yield Buffer.from(frame);
  }
}

/**
 * Yields the framed blocks in order. Each yielded frame is a view into a
 * scratch buffer that is reused once the consumer requests the next one,
 * so the consumer must copy it first. Reusing warm scratch buffers
 * avoids a page fault per output page on every block.
 */
async function* compressFrames(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  compressor: BlockCompressor,
): AsyncGenerator<Buffer> {
  const spare: Buffer[] = [];
  const inflight: Promise<[Buffer, number]>[] = [];
  const start = (chunk: Uint8Array) => {
    const scratch = spare.pop() ?? Buffer.alloc(FRAME_CAPACITY);
    const framed = compressor
      .compressFrame(chunk, scratch)
      .then((n): [Buffer, number] => [scratch, n]);
    // Awaited in order below; this keeps a rejection that arrives while
    // an earlier block is awaited from being reported as unhandled.
    framed.catch(() => undefined);
    inflight.push(framed);
  };
  const next = async function* () {
    const [scratch, n] = await (inflight.shift() as Promise<[Buffer, number]>);
    yield scratch.subarray(0, n);
    spare.push(scratch);
  };
  for await (const chunk of chunkSource(source)) {
    start(chunk);
    if (inflight.length >= compressor.concurrency) yield* next();
  }
  while (inflight.length > 0) yield* next();
}

/** compressLegacyStream() as a node:stream Readable. */
export function compressLegacyReadable(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  options: Lz4Options = {},
): Readable {
  return Readable.from(compressLegacyStream(source, options), {
    objectMode: false,
  });
}

/**
 * Re-slices a sequence of buffers into chunks of exactly
 * LZ4_LEGACY_CHUNK_SIZE bytes (the last one shorter, never empty).
 * Whole chunks of a large input buffer are passed on without a copy.
 */
export async function* chunkSource(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
): AsyncGenerator<Uint8Array> {
  const size = LZ4_LEGACY_CHUNK_SIZE;
  let pending: Buffer | undefined;
  let filled = 0;
  for await (const input of source) {
    let pos = 0;
    while (pos < input.length) {
      if (filled === 0 && input.length - pos >= size) {
        yield input.subarray(pos, pos + size);
        pos += size;
        continue;
      }
      pending ??= Buffer.alloc(size);
      const n = Math.min(size - filled, input.length - pos);
      pending.set(input.subarray(pos, pos + n), filled);
      filled += n;
      pos += n;
      if (filled === size) {
        yield pending;
        pending = undefined;
        filled = 0;
      }
    }
  }
  if (pending && filled > 0) yield pending.subarray(0, filled);
}

function createCompressor(options: Lz4Options): BlockCompressor {
  const level = options.level ?? 1;
  if (!Number.isInteger(level) || level < 0 || level > MAX_LEVEL) {
    throw new Lz4Error(
      "LZ4_INVALID_LEVEL",
      `invalid LZ4 level ${String(level)}: use an integer from 0 to 12`,
    );
  }
  const concurrency = options.concurrency ?? availableParallelism();
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new Lz4Error(
      "LZ4_INVALID_OPTION",
      `invalid concurrency ${String(concurrency)}: use an integer >= 1`,
    );
  }
  const codec = options.codec ?? "auto";
  if (codec === "liblz4") {
    return liblz4Compressor(loadLibLz4(options.liblz4Path), level, concurrency);
  }
  if (codec === "npm") {
    return npmCompressor(loadNpmLz4(), level, concurrency);
  }
  if (codec !== "auto") {
    throw new Lz4Error(
      "LZ4_INVALID_OPTION",
      `invalid codec ${JSON.stringify(codec)}: use "auto", "liblz4" or "npm"`,
    );
  }
  let lib: LibLz4;
  try {
    lib = loadLibLz4(options.liblz4Path);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    options.onWarning?.({
      code: "LZ4_FALLBACK_NPM",
      message: `using the lz4 npm package: ${reason}`,
    });
    return npmCompressor(loadNpmLz4(), level, concurrency);
  }
  return liblz4Compressor(lib, level, concurrency);
}

function liblz4Compressor(
  lib: LibLz4,
  level: number,
  concurrency: number,
): BlockCompressor {
  const compressFrame = async (chunk: Uint8Array, frame: Buffer) => {
    const dst = frame.subarray(4, 4 + lib.compressBound(chunk.length));
    const n =
      level < LZ4HC_CLEVEL_MIN
        ? await lib.compressDefault(chunk, dst)
        : await lib.compressHC(chunk, dst, level);
    return finishFrame(frame, n, "liblz4");
  };
  return { name: "liblz4", concurrency, compressFrame };
}

function npmCompressor(
  npm: NpmLz4,
  level: number,
  concurrency: number,
): BlockCompressor {
  // NOTE: lz4 0.6.5's native compressHC reads its level from a fourth
  // argument yet accepts at most three (lib/binding/lz4_binding.cc), so
  // every call runs at level 9 and other HC levels cannot be reproduced.
  if (level >= LZ4HC_CLEVEL_MIN && level !== NPM_HC_LEVEL) {
    throw new Lz4Error(
      "LZ4_LEVEL_UNSUPPORTED",
      `LZ4 level ${level} needs liblz4.so.1: the lz4 npm package ` +
        `compresses HC at level 9 only; use levels 0 to 2 or 9, or install ` +
        `liblz4-1`,
    );
  }
  const compressFrame = async (chunk: Uint8Array, frame: Buffer) => {
    // Only the last chunk is short, so a short chunk means one block is
    // left and starting worker threads would cost more than it saves.
    if (concurrency > 1 && chunk.length === LZ4_LEGACY_CHUNK_SIZE) {
      const block = await npmPool(concurrency).compress(chunk, level);
      frame.set(block, 4);
      return finishFrame(frame, block.length, "npm");
    }
    const dst = frame.subarray(4, 4 + lz4CompressBound(chunk.length));
    return finishFrame(frame, npmCompressBlock(npm, chunk, level, dst), "npm");
  };
  return { name: "npm", concurrency, compressFrame };
}

/** Writes the block size before the block; returns the frame length. */
function finishFrame(frame: Buffer, n: number, codec: string): number {
  if (!(n > 0)) {
    throw new Lz4Error(
      "LZ4_COMPRESS_FAILED",
      `${codec} failed to compress a block (result ${n})`,
    );
  }
  frame.writeUInt32LE(n, 0);
  return 4 + n;
}

let npmCached: NpmLz4 | undefined;
let poolCached: NpmWorkerPool | undefined;

/** Returns the shared worker pool, replaced only by a larger one. */
function npmPool(size: number): NpmWorkerPool {
  if (poolCached && poolCached.size >= size) return poolCached;
  void poolCached?.close();
  poolCached = new NpmWorkerPool(size);
  return poolCached;
}

function loadNpmLz4(): NpmLz4 {
  if (npmCached) return npmCached;
  try {
    npmCached = require("lz4") as NpmLz4;
    return npmCached;
  } catch (cause) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    throw new Lz4Error(
      "LZ4_NPM_UNAVAILABLE",
      `cannot load the lz4 npm package (${reason}); install it with: ` +
        `npm install lz4, or install liblz4-1 and use codec "liblz4"`,
    );
  }
}

/**
 * Decodes an LZ4 legacy stream, or several concatenated ones, into the
 * original bytes. Each block must decode to at most 8 MiB, the size of
 * the kernel's buffer, and follow the end-of-block rules of the LZ4 block
 * format.
 */
export function decompressLegacy(
  input: Uint8Array,
  options: Lz4DecompressOptions = {},
): Buffer {
  const maxOutput = options.maxOutputLength ?? 2 ** 32;
  const view = Buffer.from(input.buffer, input.byteOffset, input.length);
  checkMagic(view);

  const scratch = Buffer.alloc(LZ4_LEGACY_CHUNK_SIZE);
  const parts: Buffer[] = [];
  let total = 0;
  let offset = 4;
  while (offset < view.length) {
    if (view.length - offset < 4) {
      throw new Lz4Error(
        "LZ4_TRUNCATED",
        `LZ4 stream ends inside a block size at offset ${offset}`,
        offset,
      );
    }
    const size = view.readUInt32LE(offset);
    if (size === LZ4_LEGACY_MAGIC) {
      offset += 4;
      continue;
    }
    checkBlockSize(view, offset, size);
    const block = view.subarray(offset + 4, offset + 4 + size);
    const n = decodeBlockAt(block, scratch, offset);
    total += n;
    if (total > maxOutput) {
      throw new Lz4Error(
        "LZ4_OUTPUT_TOO_LARGE",
        `LZ4 stream decodes to more than ${maxOutput} bytes at offset ` +
          `${offset}; raise maxOutputLength if that is expected`,
        offset,
      );
    }
    parts.push(Buffer.from(scratch.subarray(0, n)));
    offset += 4 + size;
  }
  return Buffer.concat(parts, total);
}

function checkMagic(view: Buffer): void {
  const magic = view.length >= 4 ? view.readUInt32LE(0) : -1;
  if (magic === LZ4_LEGACY_MAGIC) return;
  const hint =
    magic === LZ4_FRAME_MAGIC
      ? "this is the LZ4 frame format; compress with lz4 -l"
      : "expected 02 21 4c 18";
  throw new Lz4Error(
    "LZ4_BAD_MAGIC",
    `not an LZ4 legacy stream at offset 0 (${hint})`,
    0,
  );
}

function checkBlockSize(view: Buffer, offset: number, size: number): void {
  if (size === 0 || size > LZ4_LEGACY_MAX_BLOCK) {
    throw new Lz4Error(
      "LZ4_BAD_BLOCK_SIZE",
      `invalid LZ4 block size ${size} at offset ${offset}: ` +
        `expected 1 to ${LZ4_LEGACY_MAX_BLOCK}`,
      offset,
    );
  }
  if (offset + 4 + size > view.length) {
    throw new Lz4Error(
      "LZ4_TRUNCATED",
      `LZ4 block at offset ${offset} needs ${size} bytes but only ` +
        `${view.length - offset - 4} remain; the stream is truncated`,
      offset,
    );
  }
}

function decodeBlockAt(block: Buffer, dst: Buffer, offset: number): number {
  try {
    return decodeBlock(block, dst);
  } catch (err) {
    if (!(err instanceof Lz4Error)) throw err;
    const at = offset + 4 + (err.offset ?? 0);
    throw new Lz4Error(
      err.code,
      `LZ4 block at offset ${offset}: ${err.message} (byte ${at})`,
      at,
    );
  }
}

/** Bytes at the end of a block that must be literals (LZ4 block spec). */
const LAST_LITERALS = 5;
/** A match must start at least this many bytes before the block's end. */
const MFLIMIT = 12;
const MIN_MATCH = 4;

/**
 * Decodes one raw LZ4 block into `dst` and returns the decoded length.
 * Throws Lz4Error, with an offset relative to `src`, on malformed input
 * and on output longer than `dst` (LZ4_BLOCK_TOO_LARGE). It also rejects
 * a block that breaks the end-of-block rules of the LZ4 block format: the
 * last match must start at least 12 bytes, and end at least 5 bytes,
 * before the end of the decoded block.
 */
export function decodeBlock(src: Uint8Array, dst: Uint8Array): number {
  let ip = 0;
  let op = 0;
  let lastMatchStart = -1;
  let lastMatchEnd = 0;
  for (;;) {
    if (ip >= src.length) throw corrupt("block ends before a token", ip);
    const token = src[ip++];
    let literals = token >>> 4;
    if (literals === 15) [literals, ip] = readLength(src, ip, literals);
    if (literals > src.length - ip) {
      throw corrupt(`${literals} literals run past the block end`, ip);
    }
    if (literals > dst.length - op) throw overflow(dst.length, ip);
    dst.set(src.subarray(ip, ip + literals), op);
    ip += literals;
    op += literals;
    if (ip === src.length) break;

    if (src.length - ip < 2) throw corrupt("block ends inside an offset", ip);
    const distance = src[ip] | (src[ip + 1] << 8);
    if (distance === 0 || distance > op) {
      throw corrupt(`match offset ${distance} is invalid at output ${op}`, ip);
    }
    ip += 2;
    let length = token & 15;
    if (length === 15) [length, ip] = readLength(src, ip, length);
    length += MIN_MATCH;
    if (length > dst.length - op) throw overflow(dst.length, ip);
    lastMatchStart = op;
    copyMatch(dst, op, distance, length);
    op += length;
    lastMatchEnd = op;
  }
  if (lastMatchStart >= 0 && (op - lastMatchStart < MFLIMIT ||
      op - lastMatchEnd < LAST_LITERALS)) {
    throw corrupt(
      "the last match is too close to the block end " +
        "(LZ4 needs 12 bytes after its start and 5 literals at the end)",
      ip,
    );
  }
  return op;
}

function readLength(
  src: Uint8Array,
  ip: number,
  base: number,
): [number, number] {
  let length = base;
  for (;;) {
    if (ip >= src.length) throw corrupt("block ends inside a length", ip);
    const byte = src[ip++];
    length += byte;
    if (byte !== 255) return [length, ip];
  }
}

function copyMatch(
  dst: Uint8Array,
  op: number,
  distance: number,
  length: number,
): void {
  const from = op - distance;
  if (distance >= length && length > 32) {
    dst.copyWithin(op, from, from + length);
    return;
  }
  for (let i = 0; i < length; i++) dst[op + i] = dst[from + i];
}

function corrupt(reason: string, at: number): Lz4Error {
  return new Lz4Error("LZ4_CORRUPT_BLOCK", reason, at);
}

function overflow(capacity: number, at: number): Lz4Error {
  return new Lz4Error(
    "LZ4_BLOCK_TOO_LARGE",
    `block decodes to more than ${capacity} bytes`,
    at,
  );
}
