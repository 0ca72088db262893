// Public API of gulp-initramfs: the seven plugins, the task's pipeline,
// and the codecs and system code they are built on.

export { validateIncludes } from "./plugins/validate-includes.js";
export { detectElf } from "./plugins/detect-elf.js";
export { resolveLibs } from "./plugins/resolve-libs.js";
export { stripDebug } from "./plugins/strip-debug.js";
export { cpio } from "./plugins/cpio.js";
export { lz4Legacy } from "./plugins/lz4-legacy.js";
export { shmStore } from "./plugins/shm-store.js";
export type { ValidateIncludesOptions } from "./plugins/validate-includes.js";
export type { DetectElfOptions } from "./plugins/detect-elf.js";
export type { ResolveLibsOptions } from "./plugins/resolve-libs.js";
export type { StripDebugOptions } from "./plugins/strip-debug.js";
export type { CpioOptions } from "./plugins/cpio.js";
export type { Lz4LegacyOptions } from "./plugins/lz4-legacy.js";
export type { ShmStoreOptions } from "./plugins/shm-store.js";

export { initramfs, initramfsLs, initramfsVerify } from "./plugins/tasks.js";

export {
  archiveFile,
  configFiles,
  fromFiles,
  symlinkFile,
} from "./plugins/sources.js";
export {
  buildImage,
  defaultFiles,
  formatSummary,
  type BuildSummary,
} from "./plugins/pipeline.js";
export {
  metaOf,
  type ImageFacts,
  type ImagePart,
  type InitramfsData,
  type InitramfsFile,
} from "./plugins/meta.js";
export {
  InitramfsError,
  type InitramfsWarning,
  type WarningHandler,
} from "./plugins/transform.js";

export {
  loadConfig,
  type BuildConfig,
  type SuffixParams,
} from "./src/config.js";
export {
  compatibleIdent,
  readElfBuffer,
  readElfFile,
  type ElfInfo,
} from "./src/elf.js";
export { Resolver, type Closure, type ResolverOptions } from "./src/resolve.js";
export { parseLdCache, loadLdCache } from "./src/ldcache.js";
export { planGuestFixups, verifyImage } from "./src/guest-check.js";
export {
  stripDebugBuffer,
  stripDebugFile,
  type StripOptions,
  type StripResult,
} from "./src/strip.js";
export { CpioWriter, CpioError } from "./src/cpio.js";
export { readCpio, iterateCpio, type CpioEntry } from "./src/cpio-reader.js";
export { planBase, planSuffix, SENTINEL } from "./src/layout.js";
export { writeSuffix, appendSuffix } from "./src/suffix.js";
export {
  compressLegacy,
  compressLegacyStream,
  decompressLegacy,
  Lz4Error,
  type Lz4Options,
} from "./src/lz4.js";
export {
  storeImage,
  loadImage,
  cleanupStale,
  segmentName,
  segmentPath,
  ShmError,
} from "./src/shm.js";
