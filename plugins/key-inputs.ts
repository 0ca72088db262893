import type Vinyl from "vinyl";
import { ElfFormatError, readElfFile } from "../src/elf.js";
import {
  hashBytes,
  type DigestCache,
  type KeyInputs,
  type KeyLibrary,
} from "../src/input-key.js";
import type { Closure, Resolver } from "../src/resolve.js";
import { archivePathOf, hostPathOf, metaOf } from "./meta.js";

/** Adds the interpreter and libraries of `closure` to `libraries`. */
function addClosure(
  closure: Closure,
  digests: DigestCache,
  libraries: Map<string, KeyLibrary>,
): void {
  const objects: Array<Omit<KeyLibrary, "digest">> = [...closure.libraries];
  if (closure.interpreter) objects.push(closure.interpreter);
  for (const { guestPath, hostPath, aliases } of objects) {
    const known = libraries.get(guestPath);
    if (known) {
      known.aliases = [...new Set([...known.aliases, ...aliases])];
      continue;
    }
    const digest = digests.digest(hostPath);
    libraries.set(guestPath, { guestPath, hostPath, digest, aliases });
  }
}

/**
 * Closures that closureOf() found, by resolver and host path, because
 * closureHostPaths() and keyInputs() ask for the same inputs.
 */
const closures = new WeakMap<Resolver, Map<string, Closure | null>>();

/** Returns the resolved closure of a dynamic ELF input, else null. */
function closureOf(hostPath: string, resolver: Resolver): Closure | null {
  let known = closures.get(resolver);
  if (known === undefined) {
    known = new Map();
    closures.set(resolver, known);
  }
  let closure = known.get(hostPath);
  if (closure === undefined) {
    closure = readClosure(hostPath, resolver);
    known.set(hostPath, closure);
  }
  return closure;
}

function readClosure(hostPath: string, resolver: Resolver): Closure | null {
  try {
    // A malformed ELF is packed as data; detectElf() warns about it.
    if (!readElfFile(hostPath)?.dynamic) return null;
  } catch (error) {
    if (error instanceof ElfFormatError) return null;
    throw error;
  }
  return resolver.resolve(hostPath);
}

/**
 * What the key covers of one input file. Taken before the stages run,
 * because they replace the contents of the binaries they strip.
 */
export interface KeySource {
  archivePath: string;
  role: string;
  mode: number;
  /** Target of a symlink input. */
  symlink?: string;
  /** Contents of an input given as a Buffer. */
  contents?: Buffer;
  /** Host file of an input read from disk. */
  hostPath?: string;
}

/** Returns the key sources of the input files. Directories have none. */
export function keySources(files: Vinyl[]): KeySource[] {
  const sources: KeySource[] = [];
  for (const file of files) {
    if (file.isDirectory()) continue;
    const source: KeySource = {
      archivePath: archivePathOf(file),
      role: metaOf(file).role ?? "include",
      mode: (file.stat?.mode ?? 0) & 0o7777,
    };
    if (file.isSymbolic()) source.symlink = file.symlink!;
    else if (file.isBuffer()) source.contents = file.contents;
    else source.hostPath = hostPathOf(file);
    sources.push(source);
  }
  return sources;
}

/** Lists the host paths of the inputs that keyInputs() reads from disk. */
export function inputHostPaths(sources: KeySource[]): string[] {
  const paths: string[] = [];
  for (const { hostPath } of sources) if (hostPath !== undefined) paths.push(hostPath);
  return paths;
}

/**
 * Lists the interpreter and libraries of each dynamic ELF input, whose
 * contents keyInputs() digests too. Resolving here fills the resolver's
 * cache for keyInputs().
 */
export function closureHostPaths(sources: KeySource[], resolver: Resolver): string[] {
  const paths: string[] = [];
  for (const { hostPath, role } of sources) {
    if (hostPath === undefined || role === "library") continue;
    const closure = closureOf(hostPath, resolver);
    if (!closure) continue;
    for (const library of closure.libraries) paths.push(library.hostPath);
    if (closure.interpreter) paths.push(closure.interpreter.hostPath);
  }
  return paths;
}

/**
 * Collects what the input key covers: each file's archive path, role,
 * permission bits and content digest, and the resolved closure of each
 * dynamic ELF file, the way resolveLibs() will pack it.
 */
export function keyInputs(
  sources: KeySource[],
  resolver: Resolver,
  digests: DigestCache,
  options: Record<string, string | number | boolean> = {},
): KeyInputs {
  const inputs: KeyInputs = {
    files: [],
    libraries: [],
    missing: [],
    options: {
      sourceDateEpoch: process.env.SOURCE_DATE_EPOCH ?? "",
      compression: "lz4-legacy",
      ...options,
    },
  };
  const libraries = new Map<string, KeyLibrary>();
  for (const { archivePath, role, mode, symlink, contents, hostPath } of sources) {
    const entry = { archivePath, role, mode };
    if (symlink !== undefined) {
      inputs.files.push({ ...entry, digest: hashBytes(symlink), symlink: true });
    } else if (contents !== undefined) {
      inputs.files.push({ ...entry, digest: hashBytes(contents) });
    } else if (hostPath !== undefined) {
      inputs.files.push({ ...entry, digest: digests.digest(hostPath) });
      const closure = role === "library" ? null : closureOf(hostPath, resolver);
      if (closure) {
        addClosure(closure, digests, libraries);
        inputs.missing.push(...closure.missing.map((m) => m.name));
      }
    }
  }
  inputs.libraries = [...libraries.values()];
  return inputs;
}
