import type Vinyl from "vinyl";
import {
  compressLegacy,
  compressLegacyReadable,
  compressLegacyViews,
  legacyBound,
  type Lz4Options,
} from "../src/lz4.js";
import { metaOf, type ImageFacts } from "./meta.js";
import {
  InitramfsError,
  pluginStream,
  type WarningHandler,
} from "./transform.js";

export interface Lz4LegacyOptions extends Omit<Lz4Options, "onWarning"> {
  /**
   * Receives the compressed bytes of each image from cpio() and of each
   * Buffer file in order, as they are produced, so a caller can write
   * them out while compression goes on. Each chunk is valid only until
   * the returned promise settles. Files with stream contents that did
   * not come from cpio() stay streams and do not reach the sink.
   */
  sink?: (chunk: Buffer) => Promise<void> | void;
  /**
   * With a sink: true (default) also gives the file the whole compressed
   * image as a Buffer. false leaves its contents null, so the image is
   * never held in memory. The sink then gets views into buffers that the
   * compressor reuses once the sink's promise settles. A sink that keeps
   * a chunk (for example `stream.write(chunk)`) must copy it.
   */
  retain?: boolean;
  /** Appended to the file name. Default ".lz4". */
  extension?: string;
  onWarning?: WarningHandler;
}

/**
 * Compresses each file in the LZ4 legacy format that the kernel's
 * initramfs decompressor reads. An image from cpio() has its base and
 * suffix compressed as two streams and concatenated, so a cached base
 * stream can be reused with a new suffix. The kernel restarts its decoder
 * at each legacy magic. A streamed image is read part by part and never
 * held uncompressed. Its compressed bytes become a Buffer, or only reach
 * the sink with `retain: false`. Other stream contents stay a stream.
 */
export function lz4Legacy(options: Lz4LegacyOptions = {}) {
  const { extension = ".lz4", onWarning, sink, retain = true, ...codec } = options;
  if (!retain && !sink) {
    throw new TypeError("lz4Legacy: retain: false requires a sink option to receive the image");
  }
  return pluginStream(
    (warn) => ({
      async transform(file, push) {
        if (file.isNull() || file.isDirectory() || file.isSymbolic()) {
          return push(file);
        }
        const lz4: Lz4Options = {
          ...codec,
          onWarning: (w) => warn({ ...w, fileName: file.path }),
        };
        const image = metaOf(file).image;
        if (file.isStream()) {
          const source = file.contents as unknown as AsyncIterable<Buffer>;
          (file as Vinyl).contents =
            image && image.compression === "none"
              ? await compressStreamParts(source, image, lz4, sink, retain)
              : compressLegacyReadable(source, lz4);
        } else if (image && image.compression === "none") {
          const compressed = await compressParts(file, lz4, sink);
          (file as Vinyl).contents = retain ? compressed : null;
        } else {
          const compressed = await compressLegacy(file.contents as Buffer, lz4);
          await sink?.(compressed);
          (file as Vinyl).contents = retain ? compressed : null;
        }
        file.path += extension;
        push(file);
      },
    }),
    onWarning,
  );
}

/**
 * Compresses each part of an image as its own legacy stream, passing
 * each compressed part to `sink`.
 */
async function compressParts(
  file: Vinyl,
  options: Lz4Options,
  sink?: (chunk: Buffer) => Promise<void> | void,
) {
  const image = metaOf(file).image!;
  const contents = file.contents as Buffer;
  const out: Buffer[] = [];
  let offset = 0;
  for (const part of image.parts) {
    const bytes = contents.subarray(offset, offset + part.length);
    offset += part.length;
    const compressed = await compressLegacy(bytes, options);
    part.length = compressed.length;
    await sink?.(compressed);
    out.push(compressed);
  }
  image.compression = "lz4-legacy";
  return Buffer.concat(out);
}

/** Yields exactly `length` bytes from `iterator`, keeping any excess. */
class ByteSplitter {
  #carry: Buffer | null = null;
  constructor(private readonly iterator: AsyncIterator<Buffer>) {}

  async *take(length: number): AsyncGenerator<Buffer> {
    let left = length;
    while (left > 0) {
      let chunk = this.#carry;
      this.#carry = null;
      if (chunk === null) {
        const next = await this.iterator.next();
        if (next.done) {
          throw new InitramfsError(
            "LZ4_IMAGE_TRUNCATED",
            `the image stream ended ${left} bytes before its part ends`,
          );
        }
        const value: Uint8Array = next.value;
        chunk = Buffer.from(value.buffer, value.byteOffset, value.length);
      }
      if (chunk.length > left) {
        this.#carry = chunk.subarray(left);
        chunk = chunk.subarray(0, left);
      }
      left -= chunk.length;
      yield chunk;
    }
  }

  async hasMore(): Promise<boolean> {
    if (this.#carry !== null && this.#carry.length > 0) return true;
    const next = await this.iterator.next();
    return !next.done && next.value.length > 0;
  }
}

/**
 * Compresses a streamed image part by part, passing each piece to `sink`.
 * Returns the whole compressed image when `retain` is true, else null.
 */
async function compressStreamParts(
  source: AsyncIterable<Buffer>,
  image: ImageFacts,
  options: Lz4Options,
  sink?: (chunk: Buffer) => Promise<void> | void,
  retain = true,
): Promise<Buffer | null> {
  const splitter = new ByteSplitter(source[Symbol.asyncIterator]());
  // One allocation of the worst case, filled in place: a separate buffer
  // per chunk made V8 run a full GC every few tens of milliseconds for
  // their external memory. Pages never written cost no memory.
  const bound = image.parts.reduce((n, p) => n + legacyBound(p.archiveLength), 0);
  const out = retain ? Buffer.allocUnsafe(bound) : null;
  let offset = 0;
  for (const part of image.parts) {
    const start = offset;
    const stream = compressLegacyViews(splitter.take(part.archiveLength), options);
    for await (const chunk of stream) {
      // The compressor reuses its buffers once the next chunk is read.
      let piece = chunk;
      if (out !== null) {
        piece = out.subarray(offset, offset + chunk.length);
        chunk.copy(piece);
      }
      offset += chunk.length;
      await sink?.(piece);
    }
    part.length = offset - start;
  }
  if (await splitter.hasMore()) {
    throw new InitramfsError(
      "LZ4_IMAGE_TRUNCATED",
      "the image stream is longer than its parts; its image facts are stale",
    );
  }
  image.compression = "lz4-legacy";
  return out === null ? null : out.subarray(0, offset);
}
