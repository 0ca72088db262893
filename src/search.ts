import { posix } from "node:path";

import type { ElfInfo } from "./elf.js";
import { splitSearchPath, type DstValues } from "./dst.js";
import { lookupLdCache, type CacheAbi, type LdCache } from "./ldcache.js";

/*
 * The directory order in which a dynamic linker looks for one DT_NEEDED
 * name. The glibc order follows _dl_map_object in elf/dl-load.c (glibc
 * 2.36); the musl order follows load_library in ldso/dynlink.c (musl
 * 1.2.3).
 */

/** An object in the closure, as far as the search order needs it. */
export interface SearchObject {
  /** Root-absolute path under which the search found the object. */
  path: string;
  /** Expansion of `$ORIGIN` in this object's paths. */
  origin: string;
  info: ElfInfo;
  /** Object whose DT_NEEDED first loaded this one; null for roots. */
  loader: SearchObject | null;
}

/** Where a candidate path came from, for messages and tests. */
export type CandidateSource =
  | "RPATH"
  | "LD_LIBRARY_PATH"
  | "RUNPATH"
  | "interpreter hint"
  | "ld.so.cache"
  | "default";

export interface Candidate {
  path: string;
  source: CandidateSource;
}

export interface GlibcSearch {
  kind: "glibc";
  dst: Omit<DstValues, "origin">;
  /** LD_LIBRARY_PATH directories, already expanded. */
  ldLibraryPath: string[];
  /** Directories next to a non-standard interpreter (not glibc behaviour). */
  hints: string[];
  cache: LdCache | null;
  cacheAbi: CacheAbi | null;
  defaultDirs: string[];
  /** The executable, whose DT_RPATH glibc tries after the loader chain. */
  main: SearchObject | null;
}

export interface MuslSearch {
  kind: "musl";
  ldLibraryPath: string[];
  hints: string[];
  /** From /etc/ld-musl-ARCH.path, or musl's built-in default. */
  sysPath: string[];
}

export type SearchOrder = GlibcSearch | MuslSearch;

/** musl's search path when /etc/ld-musl-ARCH.path does not exist. */
export const MUSL_DEFAULT_PATH = ["/lib", "/usr/local/lib", "/usr/lib"];

function inDirs(dirs: string[], name: string, source: CandidateSource) {
  return dirs.map((dir) => ({ path: posix.join(dir, name), source }));
}

/** DT_RPATH directories of `object`; glibc ignores DT_RPATH next to DT_RUNPATH. */
function rpathDirs(object: SearchObject, dst: GlibcSearch["dst"]): string[] {
  const { rpath, runpath } = object.info;
  if (rpath === null || runpath !== null) return [];
  return splitSearchPath(rpath, { ...dst, origin: object.origin });
}

function* glibcCandidates(
  order: GlibcSearch,
  name: string,
  requester: SearchObject,
): Generator<Candidate> {
  if (requester.info.runpath === null) {
    let sawMain = false;
    for (let l: SearchObject | null = requester; l; l = l.loader) {
      yield* inDirs(rpathDirs(l, order.dst), name, "RPATH");
      sawMain ||= l === order.main;
    }
    if (!sawMain && order.main) {
      yield* inDirs(rpathDirs(order.main, order.dst), name, "RPATH");
    }
  }
  yield* inDirs(order.ldLibraryPath, name, "LD_LIBRARY_PATH");
  if (requester.info.runpath !== null) {
    const origin = requester.origin;
    const dirs = splitSearchPath(requester.info.runpath, { ...order.dst, origin });
    yield* inDirs(dirs, name, "RUNPATH");
  }
  yield* inDirs(order.hints, name, "interpreter hint");
  if (order.cache && order.cacheAbi) {
    const cached = lookupLdCache(order.cache, name, order.cacheAbi);
    if (cached !== null) yield { path: cached, source: "ld.so.cache" };
  }
  yield* inDirs(order.defaultDirs, name, "default");
}

/**
 * musl uses DT_RUNPATH in place of DT_RPATH when both exist, inherits it
 * from every object up the loader chain, and expands only `$ORIGIN`.
 */
function* muslCandidates(
  order: MuslSearch,
  name: string,
  requester: SearchObject,
): Generator<Candidate> {
  yield* inDirs(order.ldLibraryPath, name, "LD_LIBRARY_PATH");
  for (let l: SearchObject | null = requester; l; l = l.loader) {
    const path = l.info.runpath ?? l.info.rpath;
    if (path === null) continue;
    const dst = { origin: l.origin, lib: "$LIB", platform: "$PLATFORM" };
    const source = l.info.runpath !== null ? "RUNPATH" : "RPATH";
    yield* inDirs(splitSearchPath(path, dst), name, source);
  }
  yield* inDirs(order.hints, name, "interpreter hint");
  yield* inDirs(order.sysPath, name, "default");
}

/** Yields the paths to try for `name` (which has no '/'), best first. */
export function searchCandidates(
  order: SearchOrder,
  name: string,
  requester: SearchObject,
): Generator<Candidate> {
  return order.kind === "glibc"
    ? glibcCandidates(order, name, requester)
    : muslCandidates(order, name, requester);
}

const MUSL_RESERVED = ["c", "pthread", "rt", "m", "dl", "util", "xnet"];

/**
 * Whether musl's dynamic linker treats `name` as itself: "libc.so",
 * "libpthread.so.0", "libm.so.6" and the like are all provided by the
 * one musl libc that is also the interpreter.
 */
export function isMuslSelfName(name: string): boolean {
  if (!name.startsWith("lib")) return false;
  return MUSL_RESERVED.some((r) => name.startsWith(`${r}.`, 3));
}

/**
 * Parses an ld-musl-ARCH.path file: directories separated by ':' or
 * newlines. musl uses an empty file as an empty path, not its default.
 */
export function parseMuslPathFile(text: string): string[] {
  return text.split(/[:\n]/).filter((d) => d !== "");
}
