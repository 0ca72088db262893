import { renameSync, rmSync, statSync, type BigIntStats } from "node:fs";
import { availableParallelism } from "node:os";
import Vinyl from "vinyl";
import {
  outputIdentity,
  outputMatches,
  readRecord,
  recordPath,
  removeRecord,
  writeRecord,
  type BuildRecord,
} from "../src/build-record.js";
import type { BuildConfig } from "../src/config.js";
import { DigestCache, inputKey, statPaths } from "../src/input-key.js";
import {
  prepareOutput,
  removeOnSignal,
  removeStaleTemporaries,
  temporaryPath,
  writeFileAtomic,
} from "../src/temp-output.js";
import { Resolver } from "../src/resolve.js";
import {
  DEFAULT_SHM_DIR,
  cleanupStale,
  rustArch,
  segmentName,
  segmentPath,
  type StoreOptions,
} from "../src/shm.js";
import {
  closureHostPaths,
  inputHostPaths,
  keyInputs,
  keySources,
  type KeySource,
} from "./key-inputs.js";
import { metaOf } from "./meta.js";
import { buildThroughSegment, reuseOutput, storeReused } from "./reuse.js";
import { ARCHIVE_ROOT, archiveFile, configFiles } from "./sources.js";
import { runStages, type Build, type Product } from "./stages.js";
import type { BuildSummary } from "./summary.js";
import type { InitramfsWarning, WarningHandler } from "./transform.js";

export { writeFileAtomic };
export { BUILD_LOG_ENV } from "./stages.js";
export {
  formatBytes,
  formatSummary,
  type BuildStatus,
  type BuildSummary,
} from "./summary.js";

export const SHM_DIR_ENV = "GULP_INITRAMFS_SHM_DIR";

/**
 * Returns the segment options of a config. Without shmDir, the
 * GULP_INITRAMFS_SHM_DIR environment variable, else /dev/shm.
 */
function shmOptions(config: BuildConfig, warn: WarningHandler): StoreOptions {
  return {
    shmDir: config.shmDir ?? (process.env[SHM_DIR_ENV] || undefined),
    arch: config.arch,
    mode: config.shmMode,
    onWarning: ({ code, message, path }) =>
      warn({ code, message, fileName: path }),
  };
}

/** Throws an error with `code` and `message` unless `dir` is a directory. */
function requireDirectory(dir: string, code: string, message: string): void {
  let found = false;
  try {
    found = statSync(dir).isDirectory();
  } catch {
    // Reported below.
  }
  if (!found) throw Object.assign(new Error(message), { code, fileName: dir });
}

function writeOutput(
  build: Build,
  product: Product,
  previous: BuildRecord | null,
): void {
  const { config } = build;
  if (product.writtenTo !== undefined) {
    try {
      renameSync(product.writtenTo, config.out);
    } catch (error) {
      rmSync(product.writtenTo, { force: true });
      throw error;
    }
  } else if (product.image !== null) {
    writeFileAtomic(config.out, product.image);
  }
  if (build.key === "") {
    // An input changed during the build (see warnIfChanged).
    removeRecord(config.out);
    return;
  }
  const output = outputIdentity(config.out);
  if (output === null) throw new Error(`${config.out} vanished after writing`);
  const [base, suffix] = product.facts.parts;
  const digests = build.digests.entries();
  // An up-to-date run writes nothing, unless a touched input's new stat
  // identity is worth keeping so the next run need not hash it again.
  const unchanged =
    product.status === "up-to-date" &&
    previous !== null &&
    JSON.stringify(previous.digests) === JSON.stringify(digests);
  if (unchanged) return;
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
    digests,
  });
}

/** Digests being hashed ahead, and the host files they cover. */
interface Prefetch {
  /** Stats of the files the key covers, taken before the stages start. */
  before: Map<string, BigIntStats>;
  /** Settles once every worker is done, rejecting with the first error. */
  ready: Promise<void>;
}

/**
 * Hashes the inputs on worker threads while their libraries are resolved
 * here, then the libraries, so that buildKey() finds every large file's
 * digest.
 */
function prefetchDigests(build: Build, sources: KeySource[]): Prefetch {
  const threads = availableParallelism();
  const inputs = inputHostPaths(sources);
  const before = statPaths(inputs);
  const inputsHashed = build.digests.prefetch(inputs, threads, before);
  let libraries: string[];
  try {
    libraries = closureHostPaths(sources, build.resolver);
  } catch (error) {
    // The error is raised once the workers stop, so none outlives it.
    const raise = () => Promise.reject(error);
    return { before, ready: inputsHashed.then(raise, raise) };
  }
  const libraryStats = statPaths(libraries);
  for (const [path, stat] of libraryStats) before.set(path, stat);
  const ready = inputsHashed.then(() =>
    build.digests.prefetch(libraries, threads, libraryStats),
  );
  return { before, ready };
}

/** Returns the input key of a build whose digests are prefetched. */
function buildKey(build: Build, sources: KeySource[]): string {
  const { resolver, digests, config } = build;
  return inputKey(keyInputs(sources, resolver, digests, { level: config.level ?? 1 }));
}

/**
 * Runs the stages into a temporary output while the prefetch settles,
 * then sets the key. When a file the key covers was written during the
 * build, the key could name contents that the image does not have: the
 * image is kept, but without a key or record, so the next run builds
 * again. Removes the temporary output if anything fails.
 */
async function buildBesideKey(
  build: Build,
  sources: KeySource[],
  prefetch: Prefetch,
): Promise<Product> {
  const [built, hashed] = await Promise.allSettled([
    runStages(build, temporaryPath(build.config.out)),
    prefetch.ready,
  ]);
  if (built.status === "rejected") throw built.reason;
  const product = built.value;
  try {
    if (hashed.status === "rejected") throw hashed.reason;
    build.key = buildKey(build, sources);
  } catch (error) {
    if (product.writtenTo !== undefined) rmSync(product.writtenTo, { force: true });
    throw error;
  }
  warnIfChanged(build, build.digests.changedSince(prefetch.before));
  product.facts.key = build.key;
  return product;
}

/**
 * Warns when files the key covers changed during the build and clears
 * the key, so that the image gets no record and the next run builds it
 * again: the image may hold other contents than the key names.
 */
function warnIfChanged(build: Build, changed: string[]): void {
  if (changed.length === 0) return;
  build.warn({
    code: "INPUT_CHANGED_DURING_BUILD",
    message:
      `${changed[0]} changed during the build, so the image may not match ` +
      "its contents; it gets no build record, and the next run builds it again",
    fileName: changed[0],
  });
  build.key = "";
}

/**
 * Builds the image of `config` unless it is up to date, then writes it to
 * `config.out` with its build record (`OUT.key.json`). The input key
 * covers file contents (hashed only when a file's identity changed since
 * the record was written), the resolved libraries and the options. It is
 * computed first, or beside the stages when there is neither a record nor
 * a segment to reuse. With a matching record, an unchanged suffix leaves the image
 * as it is and a changed one is rewritten after the old compressed base.
 * With `config.shm`, the compressed base is stored as the segment
 * `ktstr-lz4-ARCH-KEY`. One process among concurrent ones builds it and
 * the others reuse it. Afterwards, stale segments of our prefixes are
 * removed unless another process holds a lock on them. The segment
 * directory is `config.shmDir`, else the GULP_INITRAMFS_SHM_DIR
 * environment variable, else /dev/shm. The image and record are written
 * through temporary files (src/temp-output.ts), removed on failure, on
 * SIGINT, SIGTERM or SIGHUP, and by the next build if this process dies.
 * Calls for the same output in one process run one after the other.
 */
export async function buildImage(
  config: BuildConfig,
  inputs?: Vinyl[],
  onWarning?: WarningHandler,
): Promise<BuildSummary> {
  // Builds of one output in this process take turns: they share its
  // temporary file and record.
  const previous = buildsByOutput.get(config.out) ?? Promise.resolve();
  const mine = previous.then(() => buildGuarded(config, inputs, onWarning));
  const settled = mine.then(() => undefined, () => undefined);
  buildsByOutput.set(config.out, settled);
  void settled.then(() => {
    if (buildsByOutput.get(config.out) === settled) buildsByOutput.delete(config.out);
  });
  return mine;
}

/** The last build started for each output path, settled or not. */
const buildsByOutput = new Map<string, Promise<void>>();

async function buildGuarded(
  config: BuildConfig,
  inputs?: Vinyl[],
  onWarning?: WarningHandler,
): Promise<BuildSummary> {
  removeStaleTemporaries(config.out);
  const stop = removeOnSignal([
    temporaryPath(config.out),
    temporaryPath(recordPath(config.out)),
  ]);
  try {
    return await buildAndWrite(config, inputs, onWarning);
  } finally {
    stop();
  }
}

async function buildAndWrite(
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
  if (config.sysroot !== undefined) {
    requireDirectory(
      config.sysroot,
      "CONFIG_INVALID",
      `--sysroot ${config.sysroot} does not exist or is not a directory; ` +
        "name the root of the target system's files",
    );
  }
  prepareOutput(config.out);
  const record = readRecord(config.out);
  const build: Build = {
    config,
    files,
    key: "",
    resolver: new Resolver({
      sysroot: config.sysroot,
      onWarning: (w) => warn({ code: w.code, message: w.message, fileName: w.path }),
    }),
    digests: new DigestCache(record?.digests),
    warn,
    warnings,
  };
  const shm = config.shm ? shmOptions(config, warn) : null;
  if (shm) {
    const dir = shm.shmDir ?? DEFAULT_SHM_DIR;
    requireDirectory(
      dir,
      "SHM_DIR_NOT_FOUND",
      `shared-memory directory ${dir} does not exist or is not a directory; ` +
        `create it, or set --shm-dir or ${SHM_DIR_ENV} to another one`,
    );
  }
  const sources = keySources(files);
  const prefetch = prefetchDigests(build, sources);
  // Awaited below on every path; this only keeps an early throw from
  // leaving the rejection unhandled.
  prefetch.ready.catch(() => undefined);
  let product: Product;
  let checkMs: number | null = null;
  if (record === null && shm === null) {
    // Nothing to reuse, so the stages run while the inputs are hashed: the
    // key then only names the image in its record and summary.
    product = await buildBesideKey(build, sources, prefetch);
  } else {
    await prefetch.ready;
    build.key = buildKey(build, sources);
    checkMs = performance.now() - started;
    const reusable =
      record !== null &&
      record.key === build.key &&
      outputMatches(config.out, record);
    if (reusable) product = await reuseOutput(build, record);
    else if (shm) product = await buildThroughSegment(build, shm);
    else {
      product = await runStages(build, temporaryPath(config.out));
      warnIfChanged(build, build.digests.changedSinceDigest());
    }
  }
  let segment: string | undefined;
  if (shm) {
    if (product.status !== "built") await storeReused(build, product, shm);
    segment = segmentPath(build.key, "lz4", shm);
    const keep = [segmentName(build.key, "lz4", shm.arch ?? rustArch())];
    cleanupStale({ shmDir: shm.shmDir, keep, onWarning: shm.onWarning });
  }
  writeOutput(build, product, record);
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

/** Returns the built-in default inputs: Node, with a short script as /init. */
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
