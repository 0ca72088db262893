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
  // Unzeroed: only the written prefix is returned.
  const out = Buffer.allocUnsafe(legacyBound(input.length));
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
 * most `concurrency` blocks are compressed at once and one more is read,
 * so memory stays bounded for any input length. The source must not modify a
 * buffer after yielding it. Option errors throw on the first `next()`.
 */
export async function* compressLegacyStream(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  options: Lz4Options = {},
): AsyncGenerator<Buffer> {
  for await (const piece of compressLegacyViews(source, options)) {
    yield Buffer.from(piece);
  }
}

/**
 * compressLegacyStream() without the copies: each yielded piece is a view
 * that stays valid only until the next one is requested, so a consumer
 * that keeps the bytes must copy them first.
 */
export async function* compressLegacyViews(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  options: Lz4Options = {},
): AsyncGenerator<Buffer> {
  const compressor = createCompressor(options);
  yield LZ4_LEGACY_MAGIC_BYTES;
  yield* compressFrames(source, compressor);
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
  const chunks = new ChunkPool();
  const inflight: Promise<[Buffer, number, Uint8Array]>[] = [];
  const start = (chunk: Uint8Array) => {
    const scratch = spare.pop() ?? Buffer.alloc(FRAME_CAPACITY);
    const framed = compressor
      .compressFrame(chunk, scratch)
      .then((n): [Buffer, number, Uint8Array] => [scratch, n, chunk]);
    // Awaited in order below; this keeps a rejection that arrives while
    // an earlier block is awaited from being reported as unhandled.
    framed.catch(() => undefined);
    inflight.push(framed);
  };
  const next = async function* () {
    const [scratch, n, chunk] = await inflight.shift()!;
    // The block is compressed, so its input buffer can take new input.
    chunks.release(chunk);
    yield scratch.subarray(0, n);
    spare.push(scratch);
  };
  // The next chunk is read while `concurrency` blocks compress, so the
  // compressors do not wait for the source.
  for await (const chunk of chunkSource(source, chunks)) {
    while (inflight.length >= compressor.concurrency) yield* next();
    start(chunk);
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
 * Buffers of LZ4_LEGACY_CHUNK_SIZE bytes that chunkSource() fills, taken
 * back once their block is compressed. Reusing them keeps V8 from running
 * a full GC for every few new 8 MiB buffers.
 */
export class ChunkPool {
  readonly #free: Buffer[] = [];
  readonly #owned = new WeakSet<Uint8Array>();

  take(): Buffer {
    const buffer = this.#free.pop() ?? Buffer.allocUnsafe(LZ4_LEGACY_CHUNK_SIZE);
    this.#owned.add(buffer);
    return buffer;
  }

  /** Takes back a buffer from take(); other buffers are ignored. */
  release(chunk: Uint8Array): void {
    if (this.#owned.has(chunk)) this.#free.push(chunk as Buffer);
  }
}

/**
 * Re-slices a sequence of buffers into chunks of exactly
 * LZ4_LEGACY_CHUNK_SIZE bytes (the last one shorter, never empty).
 * Whole chunks of a large input buffer are passed on without a copy.
 */
export async function* chunkSource(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  pool: ChunkPool = new ChunkPool(),
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
      pending ??= pool.take();
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
