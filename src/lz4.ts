/** Compression into LZ4 legacy streams, one block per 8 MiB of input. */
import { Readable } from "node:stream";
import {
  createCompressor,
  type BlockCompressor,
  type Lz4Options,
} from "./lz4-codec.js";
import {
  LZ4_LEGACY_CHUNK_SIZE,
  LZ4_LEGACY_MAGIC_BYTES,
  LZ4_LEGACY_MAX_BLOCK,
  lz4CompressBound,
} from "./lz4-format.js";

export {
  LZ4HC_CLEVEL_MIN,
  type Lz4CodecName,
  type Lz4Options,
  type Lz4Warning,
} from "./lz4-codec.js";
export {
  decodeBlock,
  decompressLegacy,
  type Lz4DecompressOptions,
} from "./lz4-decode.js";
export {
  LZ4_FRAME_MAGIC,
  LZ4_LEGACY_CHUNK_SIZE,
  LZ4_LEGACY_MAGIC,
  LZ4_LEGACY_MAGIC_BYTES,
  LZ4_LEGACY_MAX_BLOCK,
  Lz4Error,
  lz4CompressBound,
} from "./lz4-format.js";

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
