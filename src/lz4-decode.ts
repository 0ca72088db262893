import {
  LZ4_FRAME_MAGIC,
  LZ4_LEGACY_CHUNK_SIZE,
  LZ4_LEGACY_MAGIC,
  LZ4_LEGACY_MAX_BLOCK,
  Lz4Error,
} from "./lz4-format.js";

export interface Lz4DecompressOptions {
  /** Decoded bytes allowed before LZ4_OUTPUT_TOO_LARGE. Default 4 GiB. */
  maxOutputLength?: number;
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
