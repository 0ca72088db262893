import { appendFileSync, closeSync, openSync, readSync } from "node:fs";
import { Transform, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import Vinyl from "vinyl";
import {
  outputIdentity,
  outputMatches,
  readRecord,
  writeFileAtomic,
  writeRecord,
  type BuildRecord,
} from "../src/build-record.js";
import type { BuildConfig } from "../src/config.js";
import { readCpio } from "../src/cpio-reader.js";
import { DigestCache, hashBytes, inputKey } from "../src/input-key.js";
import { decompressLegacy } from "../src/lz4.js";
import { Resolver } from "../src/resolve.js";
import {
  cleanupStale,
  loadImage,
  rustArch,
  segmentName,
  segmentPath,
  storeImage,
  type StoreOptions,
} from "../src/shm.js";
import { appendSuffix, writeSuffix } from "../src/suffix.js";
import { cpio } from "./cpio.js";
import { detectElf } from "./detect-elf.js";
import { lz4Legacy } from "./lz4-legacy.js";
import { keyInputs } from "./key-inputs.js";
import { metaOf, type ImageFacts } from "./meta.js";
import { resolveLibs } from "./resolve-libs.js";
import {
  ARCHIVE_ROOT,
  archiveFile,
  configFiles,
  fromFiles,
} from "./sources.js";
import { stripDebug } from "./strip-debug.js";
import type { InitramfsWarning, WarningHandler } from "./transform.js";
import { validateIncludes } from "./validate-includes.js";

export { writeFileAtomic };

/**
 * Outcome of buildImage(). "built": every stage ran. "suffix": the
 * compressed base was reused (from the old image or a segment) and only
 * a new suffix was compressed. "up-to-date": the image on disk already
 * matched its inputs and suffix, so nothing was written.
 */
export type BuildStatus = "built" | "suffix" | "up-to-date";

/** Facts about one build, for the closing summary. */
export interface BuildSummary {
  status: BuildStatus;
  /** Source of a reused base; unset when built. */
  baseSource?: "output" | "segment";
  /** Milliseconds until the input key was computed and compared. */
  checkMs: number;
  /** Input files hashed for the key; 0 when the stat cache had all. */
  hashedFiles: number;
  /** Entries of base and suffix archives, trailer excluded. */
  entries: number;
  /**
   * Bytes of payload and extras before and after debug stripping; 0
   * when the base came from a segment built by another process.
   */
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

/**
 * Shared-memory settings that a BuildConfig may carry. Without shmDir,
 * the GULP_INITRAMFS_SHM_DIR environment variable, else /dev/shm.
 */
interface ShmSettings {
  shmDir?: string;
  arch?: string;
  shmMode?: 0o600 | 0o644;
}

/**
 * Environment variable naming a file that gets one line per build that
 * ran the stages ("build PID") or compressed only a suffix ("suffix
 * PID"), so tests and benchmarks can count real builds.
 */
export const BUILD_LOG_ENV = "GULP_INITRAMFS_BUILD_LOG";
export const SHM_DIR_ENV = "GULP_INITRAMFS_SHM_DIR";

/** State shared by the steps of one buildImage() call. */
interface Build {
  config: BuildConfig;
  files: Vinyl[];
  key: string;
  resolver: Resolver;
  digests: DigestCache;
  warn: WarningHandler;
  warnings: InitramfsWarning[];
}

/** An image and the facts for its summary and record. */
interface Product {
  status: BuildStatus;
  baseSource?: "output" | "segment";
  /** The whole image, or null when the file on disk is already it. */
  image: Buffer | null;
  facts: ImageFacts;
  baseEntries: number;
  strippedBefore: number;
  strippedAfter: number;
  /** SHA-256 of the uncompressed suffix, which the record keeps. */
  suffixDigest: string;
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

function logBuild(kind: "build" | "suffix"): void {
  const log = process.env[BUILD_LOG_ENV];
  if (log) appendFileSync(log, `${kind} ${process.pid}\n`);
}

function shmOptions(config: BuildConfig, warn: WarningHandler): StoreOptions {
  const settings = config as BuildConfig & ShmSettings;
  return {
    shmDir: settings.shmDir ?? (process.env[SHM_DIR_ENV] || undefined),
    arch: settings.arch,
    mode: settings.shmMode,
    onWarning: ({ code, message, path }) =>
      warn({ code, message, fileName: path }),
  };
}

/** Runs every stage on the inputs and returns the whole image. */
async function runStages(build: Build): Promise<Product> {
  const { config, warn } = build;
  let strippedBefore = 0;
  let strippedAfter = 0;
  let result: Vinyl | null = null;
  const sizeOf = (file: Vinyl): number => {
    const role = metaOf(file).role;
    if (role !== "payload" && role !== "extra") return 0;
    return file.isBuffer() ? file.contents.length : (file.stat?.size ?? 0);
  };
  const stages: (Readable | Transform)[] = [
    fromFiles(build.files),
    validateIncludes({ onWarning: warn }),
    detectElf({ onWarning: warn }),
    resolveLibs({ resolver: build.resolver, onWarning: warn }),
    tap((file) => (strippedBefore += sizeOf(file))),
    stripDebug({ onWarning: warn }),
    tap((file) => (strippedAfter += sizeOf(file))),
    // Streamed, so the uncompressed archive is never held whole.
    cpio({ key: build.key, suffix: config, buffer: false, onWarning: warn }),
    lz4Legacy({ level: config.level, onWarning: warn }),
    tap((file) => (result = file)),
  ];
  logBuild("build");
  await pipeline(stages);
  const image = result as Vinyl | null;
  if (!image || !image.isBuffer()) {
    throw new Error("the pipeline emitted no image");
  }
  const facts = metaOf(image).image!;
  const suffix = await suffixOf(config, facts.parts[0].archiveLength);
  return {
    status: "built",
    image: image.contents,
    facts,
    baseEntries: facts.entries - suffix.entries,
    strippedBefore,
    strippedAfter,
    suffixDigest: suffix.digest,
  };
}

/** Returns the digest and entry count of the suffix for this config. */
async function suffixOf(config: BuildConfig, baseArchiveLength: number) {
  const writer = writeSuffix(config, baseArchiveLength);
  const digest = hashBytes(await writer.toBuffer());
  return { digest, entries: writer.entryCount };
}

/** Facts of an image made of a reused base and a new suffix. */
function imageFacts(
  key: string,
  base: { length: number; archiveLength: number; entries: number },
  suffix: { length: number; archiveLength: number; entries: number },
): ImageFacts {
  return {
    key,
    parts: [
      { name: "base", length: base.length, archiveLength: base.archiveLength },
      {
        name: "suffix",
        length: suffix.length,
        archiveLength: suffix.archiveLength,
      },
    ],
    compression: "lz4-legacy",
    entries: base.entries + suffix.entries,
  };
}

/**
 * Completes a reused compressed base with this config's suffix. The
 * kernel restarts its LZ4 decoder at the suffix stream's magic.
 */
async function withSuffix(
  build: Build,
  compressedBase: Buffer,
  base: { archiveLength: number; entries: number },
): Promise<Omit<Product, "baseSource" | "strippedBefore" | "strippedAfter">> {
  const { config } = build;
  logBuild("suffix");
  const image = await appendSuffix(compressedBase, base.archiveLength, config, {
    level: config.level,
  });
  const writer = writeSuffix(config, base.archiveLength);
  const suffixArchive = await writer.toBuffer();
  const facts = imageFacts(
    build.key,
    { ...base, length: compressedBase.length },
    {
      length: image.length - compressedBase.length,
      archiveLength: suffixArchive.length,
      entries: writer.entryCount,
    },
  );
  return {
    status: "suffix",
    image,
    facts,
    baseEntries: base.entries,
    suffixDigest: hashBytes(suffixArchive),
  };
}

/** Reads the first `length` bytes of the file at `path`. */
function readHead(path: string, length: number): Buffer {
  const buffer = Buffer.alloc(length);
  const fd = openSync(path, "r");
  try {
    let done = 0;
    while (done < length) {
      const n = readSync(fd, buffer, done, length - done, done);
      if (n === 0) throw new Error(`${path} is shorter than ${length} bytes`);
      done += n;
    }
  } finally {
    closeSync(fd);
  }
  return buffer;
}

/**
 * Reuses the image on disk, whose record matches the input key: keeps
 * it when its suffix matches too, else writes a new suffix after its
 * compressed base.
 */
async function reuseOutput(build: Build, record: BuildRecord): Promise<Product> {
  const { config } = build;
  const stripped = {
    strippedBefore: record.strippedBefore,
    strippedAfter: record.strippedAfter,
  };
  const suffix = await suffixOf(config, record.baseArchiveLength);
  if (suffix.digest === record.suffixDigest) {
    const facts = imageFacts(
      build.key,
      {
        length: record.baseLength,
        archiveLength: record.baseArchiveLength,
        entries: record.baseEntries,
      },
      {
        length: record.suffixLength,
        archiveLength: record.suffixArchiveLength,
        entries: record.entries - record.baseEntries,
      },
    );
    return {
      status: "up-to-date",
      baseSource: "output",
      image: null,
      facts,
      baseEntries: record.baseEntries,
      suffixDigest: suffix.digest,
      ...stripped,
    };
  }
  const base = readHead(config.out, record.baseLength);
  const product = await withSuffix(build, base, {
    archiveLength: record.baseArchiveLength,
    entries: record.baseEntries,
  });
  return { ...product, baseSource: "output", ...stripped };
}

/**
 * Builds through the shared-memory segment of the input key. Among
 * concurrent processes only the one that creates the segment runs the
 * stages, and the others wait for it and add their suffix to its base.
 */
async function buildThroughSegment(
  build: Build,
  options: StoreOptions,
): Promise<Product> {
  for (;;) {
    let built: Product | null = null;
    await storeImage(
      build.key,
      "lz4",
      async () => {
        built = await runStages(build);
        return built.image!.subarray(0, built.facts.parts[0].length);
      },
      options,
    );
    if (built !== null) return built;
    const loaded = await loadImage(build.key, "lz4", options);
    // Another process's cleanupStale() may remove the segment in between.
    if (loaded === null) continue;
    let compressedBase: Buffer;
    try {
      compressedBase = Buffer.from(loaded.bytes);
    } finally {
      loaded.release();
    }
    const archive = decompressLegacy(compressedBase);
    const base = {
      archiveLength: archive.length,
      entries: readCpio(archive).length,
    };
    const product = await withSuffix(build, compressedBase, base);
    return {
      ...product,
      baseSource: "segment",
      strippedBefore: 0,
      strippedAfter: 0,
    };
  }
}

/** Stores the base of an image that was not built by this call. */
async function storeReused(
  build: Build,
  product: Product,
  options: StoreOptions,
): Promise<void> {
  const baseLength = product.facts.parts[0].length;
  await storeImage(
    build.key,
    "lz4",
    () =>
      product.image === null
        ? readHead(build.config.out, baseLength)
        : product.image.subarray(0, baseLength),
    options,
  );
}

function writeOutput(build: Build, product: Product): void {
  const { config } = build;
  if (product.image !== null) writeFileAtomic(config.out, product.image);
  const output = outputIdentity(config.out);
  if (output === null) throw new Error(`${config.out} vanished after writing`);
  const [base, suffix] = product.facts.parts;
  writeRecord(config.out, {
    version: 1,
    key: build.key,
    suffixDigest: product.suffixDigest,
    baseLength: base.length,
    baseArchiveLength: base.archiveLength,
    suffixLength: suffix.length,
    suffixArchiveLength: suffix.archiveLength,
    baseEntries: product.baseEntries,
    entries: product.facts.entries,
    strippedBefore: product.strippedBefore,
    strippedAfter: product.strippedAfter,
    output,
    digests: build.digests.entries(),
  });
}

/**
 * Builds the image of `config` unless it is up to date, then writes it to
 * `config.out` with its build record (`OUT.key.json`). The input key is
 * computed first, from file contents (hashed only when a file's identity
 * changed since the record was written), the resolved libraries and the
 * options. With a matching record, an unchanged suffix leaves the image
 * as it is and a changed one is rewritten after the old compressed base.
 * With `config.shm`, the compressed base is stored as the segment
 * `ktstr-lz4-ARCH-KEY`. One process among concurrent ones builds it and
 * the others reuse it. Afterwards, stale segments of our prefixes are
 * removed unless another process holds a lock on them. The segment directory is `config.shmDir`, else the
 * GULP_INITRAMFS_SHM_DIR environment variable, else /dev/shm.
 */
export async function buildImage(
  config: BuildConfig,
  inputs?: Vinyl[],
  onWarning?: WarningHandler,
): Promise<BuildSummary> {
  const started = performance.now();
  const warnings: InitramfsWarning[] = [];
  const warn: WarningHandler = (w) => {
    warnings.push(w);
    onWarning?.(w);
  };
  const files =
    inputs ??
    configFiles(config, (hostPath, reason) =>
      warn({
        code: "INCLUDE_SKIPPED",
        message: `${hostPath} is not packed: ${reason}`,
        fileName: hostPath,
      }),
    );
  const record = readRecord(config.out);
  const build: Build = {
    config,
    files,
    key: "",
    resolver: new Resolver({
      onWarning: (w) => warn({ code: w.code, message: w.message, fileName: w.path }),
    }),
    digests: new DigestCache(record?.digests),
    warn,
    warnings,
  };
  build.key = inputKey(
    keyInputs(files, build.resolver, build.digests, { level: config.level ?? 1 }),
  );
  const reusable =
    record !== null &&
    record.key === build.key &&
    outputMatches(config.out, record);
  const checkMs = performance.now() - started;
  const shm = config.shm ? shmOptions(config, warn) : null;
  let product: Product;
  if (reusable) product = await reuseOutput(build, record);
  else if (shm) product = await buildThroughSegment(build, shm);
  else product = await runStages(build);
  let segment: string | undefined;
  if (shm) {
    if (product.status !== "built") await storeReused(build, product, shm);
    segment = segmentPath(build.key, "lz4", shm);
    const keep = [segmentName(build.key, "lz4", shm.arch ?? rustArch())];
    cleanupStale({ shmDir: shm.shmDir, keep, onWarning: shm.onWarning });
  }
  writeOutput(build, product);
  const [base, suffix] = product.facts.parts;
  return {
    status: product.status,
    baseSource: product.baseSource,
    checkMs,
    hashedFiles: build.digests.hashedFiles,
    entries: product.facts.entries,
    strippedBefore: product.strippedBefore,
    strippedAfter: product.strippedAfter,
    archiveBytes: base.archiveLength + suffix.archiveLength,
    imageBytes: base.length + suffix.length,
    image: product.facts,
    out: config.out,
    segment,
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

/** Returns the first line of the summary: how the image was made. */
function statusLine(summary: BuildSummary): string {
  const check = `checked in ${summary.checkMs.toFixed(0)} ms`;
  if (summary.status === "up-to-date") return `up to date (${check})`;
  if (summary.status === "built") {
    return `built (inputs changed; ${check}, ${summary.hashedFiles} files hashed)`;
  }
  const from =
    summary.baseSource === "segment" ? "shared memory" : "the previous image";
  return `base up to date, taken from ${from} (${check}); new suffix written`;
}

/** Returns the closing lines of a build, one fact a line. */
export function formatSummary(summary: BuildSummary): string {
  const lines = [statusLine(summary), `entries: ${summary.entries}`];
  // Zero when nothing was stripped or the base came from a segment.
  if (summary.strippedBefore > 0) {
    lines.push(
      `binaries: ${formatBytes(summary.strippedBefore)} before stripping, ` +
        `${formatBytes(summary.strippedAfter)} after`,
    );
  }
  lines.push(
    `archive: ${formatBytes(summary.archiveBytes)} cpio, ` +
      `${formatBytes(summary.imageBytes)} LZ4 legacy (key ${summary.image.key})`,
    `image: ${summary.out}`,
  );
  if (summary.segment) lines.push(`shared memory: ${summary.segment}`);
  return lines.join("\n");
}
