import { mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { Transform, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import Vinyl from "vinyl";
import type { BuildConfig } from "../src/config.js";
import { cpio } from "./cpio.js";
import { detectElf } from "./detect-elf.js";
import { lz4Legacy } from "./lz4-legacy.js";
import { metaOf, type ImageFacts } from "./meta.js";
import { resolveLibs } from "./resolve-libs.js";
import { shmStore } from "./shm-store.js";
import {
  ARCHIVE_ROOT,
  archiveFile,
  configFiles,
  fromFiles,
} from "./sources.js";
import { stripDebug } from "./strip-debug.js";
import type { InitramfsWarning, WarningHandler } from "./transform.js";
import { validateIncludes } from "./validate-includes.js";

/** What one build produced, for the closing summary. */
export interface BuildSummary {
  /** Entries of base and suffix archives, trailer excluded. */
  entries: number;
  /** Bytes of payload and extras before and after debug stripping. */
  strippedBefore: number;
  strippedAfter: number;
  /** Bytes of the uncompressed archive and of the compressed image. */
  archiveBytes: number;
  imageBytes: number;
  image: ImageFacts;
  /** Where the image was written. */
  out: string;
  /** The shared-memory segment path, when stored there. */
  segment?: string;
  warnings: InitramfsWarning[];
}

/** Calls `inspect` on every file that passes, changing nothing. */
function tap(inspect: (file: Vinyl) => void): Transform {
  return new Transform({
    objectMode: true,
    transform(file: Vinyl, _encoding, callback) {
      inspect(file);
      callback(null, file);
    },
  });
}

/** Writes `data` to `path` through a temporary file and a rename. */
export function writeFileAtomic(path: string, data: Buffer): void {
  mkdirSync(dirname(path), { recursive: true });
  const temporary = `${path}.tmp-${process.pid}`;
  try {
    writeFileSync(temporary, data);
    renameSync(temporary, path);
  } catch (error) {
    rmSync(temporary, { force: true });
    throw error;
  }
}

/**
 * Runs the whole pipeline on `files`: validate, detect ELF, resolve
 * libraries, strip, pack, compress, optionally store in shared memory,
 * then write the image to `config.out`.
 */
export async function buildImage(
  config: BuildConfig,
  files: Vinyl[] = configFiles(config),
  onWarning?: WarningHandler,
): Promise<BuildSummary> {
  const warnings: InitramfsWarning[] = [];
  const warn: WarningHandler = (w) => {
    warnings.push(w);
    onWarning?.(w);
  };
  let strippedBefore = 0;
  let strippedAfter = 0;
  let archiveBytes = 0;
  let result: Vinyl | null = null;
  const stages: (Readable | Transform)[] = [
    fromFiles(files),
    validateIncludes({ onWarning: warn }),
    detectElf({ onWarning: warn }),
    resolveLibs({ onWarning: warn }),
    tap((file) => {
      const role = metaOf(file).role;
      if (role !== "payload" && role !== "extra") return;
      strippedBefore += file.isBuffer()
        ? file.contents.length
        : (file.stat?.size ?? 0);
    }),
    stripDebug({ onWarning: warn }),
    tap((file) => {
      const role = metaOf(file).role;
      if (role !== "payload" && role !== "extra") return;
      strippedAfter += file.isBuffer()
        ? file.contents.length
        : (file.stat?.size ?? 0);
    }),
    cpio({ suffix: config, onWarning: warn }),
    tap((file) => {
      archiveBytes = (file.contents as Buffer).length;
    }),
    lz4Legacy({ onWarning: warn }),
  ];
  if (config.shm) stages.push(shmStore({ onWarning: warn }));
  stages.push(
    tap((file) => {
      result = file;
    }),
  );
  await pipeline(stages);
  const image = result as Vinyl | null;
  if (!image || !image.isBuffer()) throw new Error("the pipeline emitted no image");
  writeFileAtomic(config.out, image.contents);
  const facts = metaOf(image).image!;
  return {
    entries: facts.entries,
    strippedBefore,
    strippedAfter,
    archiveBytes,
    imageBytes: image.contents.length,
    image: facts,
    out: config.out,
    segment: (image as Vinyl & { shmSegment?: string }).shmSegment,
    warnings,
  };
}

/** The built-in default: Node itself, running a short script as /init. */
export function defaultFiles(): Vinyl[] {
  const script = [
    "#!/bin/node",
    "// The default gulp-initramfs image: Node as the only program.",
    'const os = require("node:os");',
    "console.log(",
    '  `gulp-initramfs default image: node ${process.version} is /init ` +',
    '    `(pid ${process.pid}) on Linux ${os.release()}`,',
    ");",
    'console.log("gulp-initramfs: init done, exiting (the kernel then panics or reboots)");',
    "",
  ].join("\n");
  const init = new Vinyl({
    cwd: "/",
    base: ARCHIVE_ROOT,
    path: `${ARCHIVE_ROOT}/init`,
    contents: Buffer.from(script),
  });
  metaOf(init).role = "payload";
  return [init, archiveFile("bin/node", process.execPath, "extra")];
}

/** Formats a byte count with a binary unit. */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** Returns the closing lines of a build, one fact a line. */
export function formatSummary(summary: BuildSummary): string {
  const lines = [
    `entries: ${summary.entries}`,
    `binaries: ${formatBytes(summary.strippedBefore)} before stripping, ` +
      `${formatBytes(summary.strippedAfter)} after`,
    `archive: ${formatBytes(summary.archiveBytes)} cpio, ` +
      `${formatBytes(summary.imageBytes)} LZ4 legacy (key ${summary.image.key})`,
    `image: ${summary.out}`,
  ];
  if (summary.segment) lines.push(`shared memory: ${summary.segment}`);
  return lines.join("\n");
}
