import koffi from "koffi";

/**
 * The raw LZ4 block functions of the system liblz4, called through koffi.
 * Compression runs on worker threads through koffi's async calls, so
 * several blocks compress in parallel while the event loop stays free.
 */
export interface LibLz4 {
  /** Library version as MAJOR*10000 + MINOR*100 + RELEASE. */
  version: number;
  compressBound(srcSize: number): number;
  /** Resolves to the compressed length in `dst`, or 0 when it failed. */
  compressDefault(src: Uint8Array, dst: Uint8Array): Promise<number>;
  /** Resolves to the compressed length in `dst`, or 0 when it failed. */
  compressHC(src: Uint8Array, dst: Uint8Array, level: number): Promise<number>;
  /** Returns the decoded length, or a negative number for invalid input. */
  decompressSafe(src: Uint8Array, dst: Uint8Array): number;
}

/** Soname of the library: Debian's package liblz4-1 installs it. */
export const LIBLZ4_SONAME = "liblz4.so.1";

type AsyncCallback = (err: unknown, result: number) => void;
interface AsyncFunction {
  async(...args: unknown[]): void;
}

const cache = new Map<string, LibLz4 | Error>();

/**
 * Loads liblz4 once per path and returns its binding. `path` is a soname
 * or file path for dlopen. Throws an error with code
 * `LZ4_LIBLZ4_UNAVAILABLE` when the library cannot be loaded.
 */
export function loadLibLz4(path = LIBLZ4_SONAME): LibLz4 {
  let entry = cache.get(path);
  if (entry === undefined) {
    entry = tryBind(path);
    cache.set(path, entry);
  }
  if (entry instanceof Error) throw entry;
  return entry;
}

function tryBind(path: string): LibLz4 | Error {
  try {
    return bind(koffi.load(path));
  } catch (cause) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    const err = new Error(
      `cannot load ${path} (${reason}); ` +
        `install it with: apt-get install -y liblz4-1, or pass codec "npm"`,
    ) as Error & { code: string };
    err.code = "LZ4_LIBLZ4_UNAVAILABLE";
    return err;
  }
}

function bind(lib: koffi.IKoffiLib): LibLz4 {
  const versionNumber = lib.func("int LZ4_versionNumber(void)");
  const bound = lib.func("int LZ4_compressBound(int inputSize)");
  const fast = lib.func(
    "int LZ4_compress_default(const void *src, void *dst, " +
      "int srcSize, int dstCapacity)",
  ) as unknown as AsyncFunction;
  const hc = lib.func(
    "int LZ4_compress_HC(const void *src, void *dst, " +
      "int srcSize, int dstCapacity, int compressionLevel)",
  ) as unknown as AsyncFunction;
  const safe = lib.func(
    "int LZ4_decompress_safe(const void *src, void *dst, " +
      "int compressedSize, int dstCapacity)",
  );

  return {
    version: versionNumber() as number,
    compressBound: (srcSize) => bound(srcSize) as number,
    compressDefault: (src, dst) =>
      callAsync(fast, [src, dst, src.length, dst.length]),
    compressHC: (src, dst, level) =>
      callAsync(hc, [src, dst, src.length, dst.length, level]),
    decompressSafe: (src, dst) =>
      safe(src, dst, src.length, dst.length) as number,
  };
}

// The caller keeps `src` and `dst` referenced until the promise settles,
// so the worker thread never writes into memory the GC has freed.
function callAsync(fn: AsyncFunction, args: unknown[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const done: AsyncCallback = (err, result) => {
      if (err) reject(err);
      else resolve(result);
    };
    fn.async(...args, done);
  });
}
