import type Vinyl from "vinyl";
import {
  compressLegacy,
  compressLegacyReadable,
  type Lz4Options,
} from "../src/lz4.js";
import { metaOf } from "./meta.js";
import { pluginStream, type WarningHandler } from "./transform.js";

export interface Lz4LegacyOptions extends Omit<Lz4Options, "onWarning"> {
  /** Appended to the file name. Default ".lz4". */
  extension?: string;
  onWarning?: WarningHandler;
}

/**
 * Compresses each file in the LZ4 legacy format that the kernel's
 * initramfs decompressor reads. An image from cpio() has its base and
 * suffix compressed as two streams and concatenated, so a cached base
 * stream can be reused with a new suffix; the kernel restarts its decoder
 * at each legacy magic. Stream contents stay a stream.
 */
export function lz4Legacy(options: Lz4LegacyOptions = {}) {
  const { extension = ".lz4", onWarning, ...codec } = options;
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
          if (image) {
            throw new Error(
              "lz4Legacy() needs buffer contents for a split image; use " +
                "cpio({ buffer: true }) or compress the whole stream",
            );
          }
          const source = file.contents as unknown as AsyncIterable<Buffer>;
          file.contents = compressLegacyReadable(source, lz4);
        } else if (image && image.compression === "none") {
          file.contents = await compressParts(file, lz4);
        } else {
          file.contents = await compressLegacy(file.contents as Buffer, lz4);
        }
        file.path += extension;
        push(file);
      },
    }),
    onWarning,
  );
}

/** Compresses each part of an image as its own legacy stream. */
async function compressParts(file: Vinyl, options: Lz4Options) {
  const image = metaOf(file).image!;
  const contents = file.contents as Buffer;
  const out: Buffer[] = [];
  let offset = 0;
  for (const part of image.parts) {
    const bytes = contents.subarray(offset, offset + part.length);
    offset += part.length;
    const compressed = await compressLegacy(bytes, options);
    part.length = compressed.length;
    out.push(compressed);
  }
  image.compression = "lz4-legacy";
  return Buffer.concat(out);
}
