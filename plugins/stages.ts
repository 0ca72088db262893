/** The stages of a full build, from the input files to the image. */
import { appendFileSync } from "node:fs";
import { open, rm, type FileHandle } from "node:fs/promises";
import { dirname } from "node:path";
import { Transform, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import Vinyl from "vinyl";
import type { BuildConfig } from "../src/config.js";
import { DigestCache, hashBytes } from "../src/input-key.js";
import { Resolver } from "../src/resolve.js";
import { writeSuffix } from "../src/suffix.js";
import { lockTemporary, makeDirectories } from "../src/temp-output.js";
import { cpio } from "./cpio.js";
import { detectElf } from "./detect-elf.js";
import { lz4Legacy } from "./lz4-legacy.js";
import { metaOf, type ImageFacts } from "./meta.js";
import { resolveLibs } from "./resolve-libs.js";
import { fromFiles } from "./sources.js";
import { stripDebug } from "./strip-debug.js";
import type { BuildStatus } from "./summary.js";
import type { InitramfsWarning, WarningHandler } from "./transform.js";
import { validateIncludes } from "./validate-includes.js";

/**
 * Environment variable naming a file that gets one line per build that
 * ran the stages ("build PID FROM") or compressed only a suffix ("suffix
 * PID FROM"), so tests and benchmarks can count real builds. FROM is
 * "dist" for the compiled package and "sources" for the TypeScript files.
 */
export const BUILD_LOG_ENV = "GULP_INITRAMFS_BUILD_LOG";

/** State shared by the steps of one buildImage() call. */
export interface Build {
  config: BuildConfig;
  files: Vinyl[];
  key: string;
  resolver: Resolver;
  digests: DigestCache;
  warn: WarningHandler;
  warnings: InitramfsWarning[];
}

/** An image and the facts for its summary and record. */
export interface Product {
  status: BuildStatus;
  baseSource?: "output" | "segment";
  /** The whole image, or null when a file on disk (the output or `writtenTo`) is already it. */
  image: Buffer | null;
  facts: ImageFacts;
  baseEntries: number;
  strippedBefore: number;
  strippedAfter: number;
  /** SHA-256 of the uncompressed suffix, which the record keeps. */
  suffixDigest: string;
  /**
   * Temporary file next to the output that already contains `image`,
   * written during compression. Renaming it finishes the output.
   */
  writtenTo?: string;
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

export function logBuild(kind: "build" | "suffix"): void {
  const log = process.env[BUILD_LOG_ENV];
  const from = __filename.endsWith(".ts") ? "sources" : "dist";
  if (log) appendFileSync(log, `${kind} ${process.pid} ${from}\n`);
}

/**
 * Runs every stage on the inputs and returns the whole image. With
 * `streamTo`, the compressed image is also written to that file while it
 * is produced, so the disk write overlaps compression. The file is
 * removed if the build fails.
 */
export async function runStages(
  build: Build,
  streamTo?: string,
): Promise<Product> {
  let handle: FileHandle | undefined;
  if (streamTo !== undefined) {
    makeDirectories(dirname(streamTo));
    handle = await open(streamTo, "w");
  }
  try {
    if (handle) lockTemporary(handle.fd);
    const product = await runStagesTo(build, handle);
    await handle?.close();
    handle = undefined;
    return streamTo === undefined ? product : { ...product, writtenTo: streamTo };
  } catch (error) {
    await handle?.close();
    if (streamTo !== undefined) await rm(streamTo, { force: true });
    throw error;
  }
}

async function runStagesTo(
  build: Build,
  handle: FileHandle | undefined,
): Promise<Product> {
  const { config, warn } = build;
  const sink = handle && (async (chunk: Buffer) => {
    await handle.write(chunk);
  });
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
    // Streamed to a file, the image is not kept in memory as well.
    lz4Legacy({ level: config.level, sink, retain: !sink, onWarning: warn }),
    tap((file) => (result = file)),
  ];
  logBuild("build");
  await pipeline(stages);
  const image = result as Vinyl | null;
  if (!image || !(image.isBuffer() || (sink && image.isNull()))) {
    throw new Error("the pipeline emitted no image");
  }
  const facts = metaOf(image).image!;
  const suffix = await suffixOf(config, facts.parts[0].archiveLength);
  return {
    status: "built",
    image: image.isBuffer() ? image.contents : null,
    facts,
    baseEntries: facts.entries - suffix.entries,
    strippedBefore,
    strippedAfter,
    suffixDigest: suffix.digest,
  };
}

/** Returns the digest, length and entry count of this config's suffix. */
export async function suffixOf(
  config: BuildConfig,
  baseArchiveLength: number,
) {
  const writer = writeSuffix(config, baseArchiveLength);
  const archive = await writer.toBuffer();
  return {
    digest: hashBytes(archive),
    archiveLength: archive.length,
    entries: writer.entryCount,
  };
}
