import { readFileSync, statSync } from "node:fs";
import { open } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import Vinyl from "vinyl";
import type { SuffixParams } from "../src/config.js";
import { CpioWriter } from "../src/cpio.js";
import { contentKey, newContentHash } from "../src/key.js";
import { writeSuffix } from "../src/suffix.js";
import { planBase, type LayoutItem } from "../src/layout.js";
import {
  archivePathOf,
  hostPathOf,
  metaOf,
  type ImageFacts,
} from "./meta.js";
import { InitramfsError, pluginStream, type WarningHandler } from "./transform.js";

/** Bytes read from a host file at a time while it is packed. */
const READ_CHUNK = 4 << 20;
/** Files up to this size are read whole, synchronously. */
const SMALL_FILE = 1 << 20;

export interface CpioOptions {
  /** File name of the emitted archive. Default "initramfs.cpio". */
  name?: string;
  /**
   * Per-run files of the suffix archive. Default: an empty `/args` only,
   * which still ends the image with the trailer and 512-byte padding.
   */
  suffix?: Partial<SuffixParams>;
  /** c_mtime of every entry; default SOURCE_DATE_EPOCH, else 0. */
  mtime?: number;
  /**
   * true (default): the archive's contents are a Buffer. false: a stream,
   * so file bytes are read while the archive is consumed.
   */
  buffer?: boolean;
  /**
   * Key to set as `image.key`, such as an input key computed before the
   * build. Default: a content key of the base archive's bytes.
   */
  key?: string;
  onWarning?: WarningHandler;
}

interface Item extends LayoutItem {
  file: Vinyl;
}

function toItem(file: Vinyl): Item {
  const meta = metaOf(file);
  const item: Item = {
    archivePath: archivePathOf(file),
    role: meta.role ?? "include",
    file,
  };
  if (file.isSymbolic()) item.symlinkTarget = file.symlink!;
  if (file.stat) item.permissions = file.stat.mode & 0o7777;
  if (item.role === "library") item.hostIdentity = hostPathOf(file);
  return item;
}

/** Returns the byte count and the data source of one file. */
function fileData(file: Vinyl) {
  if (file.isBuffer()) return { size: file.contents.length, data: file.contents };
  const hostPath = hostPathOf(file);
  if (file.isStream()) {
    const size = file.stat?.size ?? statSync(hostPath).size;
    return { size, data: file.contents as AsyncIterable<Buffer> };
  }
  let size: number;
  try {
    size = statSync(hostPath).size;
  } catch (error) {
    throw new InitramfsError(
      "INPUT_NOT_FOUND",
      `${hostPath} cannot be read for ${archivePathOf(file)} ` +
        `(${(error as NodeJS.ErrnoException).code}); check the path`,
      hostPath,
    );
  }
  const archivePath = archivePathOf(file);
  return { size, data: () => readPlanned(hostPath, size, archivePath) };
}

/**
 * Yields a host file's bytes and fails, naming the host file, when it no
 * longer has the size its header was written with.
 */
async function* readPlanned(hostPath: string, size: number, archivePath: string) {
  if (size <= SMALL_FILE) {
    // One synchronous read beats four thread-pool round trips for a small
    // file, whose wait would leave this thread idle.
    const data = readFileSync(hostPath);
    if (data.length !== size) throw changedSize(hostPath, size, archivePath);
    yield data;
    return;
  }
  const handle = await open(hostPath, "r");
  let offset = 0;
  try {
    for (;;) {
      // One byte more than is left, so a file that grew is noticed.
      const length = Math.min(READ_CHUNK, size - offset + 1);
      const buffer = Buffer.allocUnsafe(length);
      const { bytesRead } = await handle.read(buffer, 0, length, offset);
      if (bytesRead === 0) break;
      offset += bytesRead;
      if (offset > size) break;
      yield buffer.subarray(0, bytesRead);
    }
  } finally {
    await handle.close();
  }
  if (offset !== size) throw changedSize(hostPath, size, archivePath);
}

function changedSize(hostPath: string, size: number, archivePath: string) {
  return new InitramfsError(
    "INPUT_CHANGED",
    `${hostPath} changed size while being packed as ${archivePath}: ` +
      `its header says ${size} bytes; rebuild once it stops changing`,
    hostPath,
  );
}

/** Writes the planned base archive (no trailer) into a new writer. */
export function writeBase(items: Item[], mtime?: number): CpioWriter {
  const writer = new CpioWriter({ mtime });
  for (const entry of planBase(items)) {
    if (entry.kind === "directory") {
      writer.addDirectory(entry.archivePath, { mode: entry.mode });
    } else if (entry.kind === "symlink") {
      writer.addSymlink(entry.archivePath, entry.target);
    } else if (entry.item === null) {
      writer.addFile(entry.archivePath, { mode: entry.mode, data: Buffer.alloc(0) });
    } else {
      const { size, data } = fileData(entry.item.file);
      writer.addFile(entry.archivePath, { mode: entry.mode, size, data });
    }
  }
  return writer.finish({ trailer: false });
}

/**
 * Packs every input file into one cpio newc image: the base archive in the
 * guest's layout (directories, `init`, busybox, extras, includes,
 * libraries, sentinel) followed by the suffix archive (`args` and the
 * other per-run files, the trailer, padding to 512 bytes). Emits one
 * Vinyl file carrying `initramfs.image` (key, part lengths, entry count).
 */
export function cpio(options: CpioOptions = {}) {
  const items: Item[] = [];
  let cwd = process.cwd();
  return pluginStream(
    () => ({
      transform(file) {
        if (file.isDirectory()) return;
        cwd = file.cwd;
        items.push(toItem(file));
      },
      async flush(push) {
        const base = writeBase(items, options.mtime);
        const suffix = writeSuffix(options.suffix ?? {}, base.length, options.mtime);
        const image: ImageFacts = {
          key: "",
          parts: [
            { name: "base", length: base.length, archiveLength: base.length },
            { name: "suffix", length: suffix.length, archiveLength: suffix.length },
          ],
          compression: "none",
          entries: base.entryCount + suffix.entryCount,
        };
        const out = new Vinyl({
          cwd,
          base: cwd,
          path: join(cwd, options.name ?? "initramfs.cpio"),
        });
        metaOf(out).image = image;
        const chunks = imageChunks(base, suffix, image, options.key);
        if (options.buffer === false) {
          out.contents = Readable.from(chunks, { objectMode: false });
        } else {
          // Both lengths are exact before any byte is read, so the image
          // is filled in place instead of concatenated.
          const contents = Buffer.allocUnsafe(base.length + suffix.length);
          let offset = 0;
          for await (const chunk of chunks) {
            contents.set(chunk, offset);
            offset += chunk.length;
          }
          out.contents = contents;
        }
        push(out);
      },
    }),
    options.onWarning,
  );
}

/**
 * Yields base then suffix. Without a given key, the base bytes are hashed
 * on the way and the key is set once the base has passed.
 */
async function* imageChunks(
  base: CpioWriter,
  suffix: CpioWriter,
  image: ImageFacts,
  key?: string,
): AsyncGenerator<Buffer> {
  const hash = key === undefined ? newContentHash() : null;
  if (key !== undefined) image.key = key;
  for await (const chunk of base) {
    hash?.update(chunk);
    yield chunk;
  }
  if (hash) image.key = contentKey(hash);
  yield* suffix;
}
