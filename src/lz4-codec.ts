/** The block compressors: liblz4 through koffi, or the `lz4` package. */
import { availableParallelism } from "node:os";
import { loadLibLz4, type LibLz4 } from "./liblz4.js";
import { NpmWorkerPool, npmCompressBlock, type NpmLz4 } from "./lz4-worker.js";
import {
  LZ4_LEGACY_CHUNK_SIZE,
  Lz4Error,
  lz4CompressBound,
} from "./lz4-format.js";

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
   * Blocks compressed at the same time. For liblz4 the default is twice
   * os.availableParallelism(): its calls run on libuv's thread pool (4
   * threads unless UV_THREADPOOL_SIZE sets another size), and the extra
   * blocks keep a core busy while this thread hands over the next one.
   * For the "npm" codec the default is os.availableParallelism() worker
   * threads, used once a stream reaches a full 8 MiB chunk; shorter input
   * is compressed on the calling thread.
   */
  concurrency?: number;
  /** Soname or path of liblz4 for dlopen. Default "liblz4.so.1". */
  liblz4Path?: string;
  /** Receives recoverable problems, such as the fallback to "npm". */
  onWarning?: (warning: Lz4Warning) => void;
}

/** Level that the `lz4` package's encodeBlockHC always uses. */
const NPM_HC_LEVEL = 9;
/** Lowest HC level; lower levels use the fast compressor, as lz4 -N does. */
export const LZ4HC_CLEVEL_MIN = 3;
const MAX_LEVEL = 12;

export interface BlockCompressor {
  name: Lz4CodecName;
  concurrency: number;
  /**
   * Compresses one chunk into `frame` as a 4-byte little-endian size and
   * the block, and resolves to the frame's length.
   */
  compressFrame(chunk: Uint8Array, frame: Buffer): Promise<number>;
}

/**
 * Checks `options` and creates the compressor they select. Throws
 * Lz4Error on an invalid option or a codec that cannot be loaded.
 */
export function createCompressor(options: Lz4Options): BlockCompressor {
  const level = options.level ?? 1;
  if (!Number.isInteger(level) || level < 0 || level > MAX_LEVEL) {
    throw new Lz4Error(
      "LZ4_INVALID_LEVEL",
      `invalid LZ4 level ${String(level)}: use an integer from 0 to 12`,
    );
  }
  const cores = availableParallelism();
  const concurrency = options.concurrency ?? 2 * cores;
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
    return npmCompressor(loadNpmLz4(), level, options.concurrency ?? cores);
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
    return npmCompressor(loadNpmLz4(), level, options.concurrency ?? cores);
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
