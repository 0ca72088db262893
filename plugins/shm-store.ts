import type { Transform } from "node:stream";
import type Vinyl from "vinyl";
import {
  checkStoreOptions,
  storeImage,
  type SegmentKind,
  type ShmWarning,
} from "../src/shm.js";
import type { ImageFacts, InitramfsFile } from "./meta.js";
import {
  InitramfsError,
  pluginStream,
  type WarningHandler,
} from "./transform.js";

export interface ShmStoreOptions {
  /** Directory that contains the segments. Default `/dev/shm`. */
  shmDir?: string;
  /** Target architecture as Rust names it. Default: the host's. */
  arch?: string;
  /** Maximum time in milliseconds to wait for other processes' locks. */
  lockTimeoutMs?: number;
  /** Permission bits of a new segment: 0o600 (default) or 0o644. */
  mode?: 0o600 | 0o644;
  /** Receives warnings, such as a broken segment being rebuilt. */
  onWarning?: WarningHandler;
}

/** A Vinyl file after shmStore(): `shmSegment` is the segment path. */
export type StoredFile = InitramfsFile & { shmSegment?: string };

/**
 * Returns the base part of an image file, after checking that its part
 * lengths describe its contents.
 */
function basePart(file: Vinyl, contents: Buffer, image: ImageFacts): Buffer {
  const [base] = image.parts;
  const total = image.parts.reduce((sum, part) => sum + part.length, 0);
  if (base?.name !== "base" || total !== contents.length) {
    throw new InitramfsError(
      "SHM_INVALID_IMAGE",
      `image parts (${image.parts.map((p) => `${p.name}:${p.length}`)}) ` +
        `do not describe the ${contents.length} content bytes; ` +
        `run shmStore() directly after cpio() or lz4Legacy()`,
      file.path,
    );
  }
  return contents.subarray(0, base.length);
}

async function readAll(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks);
}

function segmentKind(image: ImageFacts): SegmentKind {
  return image.compression === "lz4-legacy" ? "lz4" : "base";
}

/**
 * Stores the base part of each image file in a shared-memory segment
 * (`ktstr-lz4-ARCH-KEY` when compressed, else `ktstr-base-ARCH-KEY`),
 * sets `file.shmSegment` to its path and passes the file on with the
 * same bytes. Streaming contents are read into a Buffer first, and the
 * file continues with that Buffer. Other files pass through untouched.
 * Throws a ShmError (code SHM_INVALID_OPTION or SHM_UNKNOWN_ARCH) for
 * invalid options.
 */
export function shmStore(options: ShmStoreOptions = {}): Transform {
  checkStoreOptions(options);
  return pluginStream(
    (warn) => ({
      async transform(file, push) {
        const image = (file as InitramfsFile).initramfs?.image;
        if (image !== undefined && file.isNull()) {
          warn({
            code: "SHM_NO_CONTENTS",
            message:
              `${file.path} is an image without contents, as lz4Legacy() ` +
              "leaves it with retain: false, so no segment is stored; " +
              "drop retain: false to store it",
            fileName: file.path,
          });
        }
        if (image === undefined || file.isNull()) {
          push(file);
          return;
        }
        // cpio({ buffer: false }) sets image.key only once the base has
        // been read, so a stream is read whole before the store.
        const contents = file.isStream()
          ? await readAll(file.contents as AsyncIterable<Uint8Array>)
          : (file.contents as Buffer);
        file.contents = contents;
        const onWarning = (warning: ShmWarning): void => {
          const { code, message } = warning;
          warn({ code, message, fileName: file.path });
        };
        const { path } = await storeImage(
          image.key,
          segmentKind(image),
          basePart(file, contents, image),
          { ...options, onWarning },
        );
        (file as StoredFile).shmSegment = path;
        push(file);
      },
    }),
    options.onWarning,
  );
}
