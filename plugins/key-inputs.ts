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

/** Returns the resolved closure of a dynamic ELF input, else null. */
function closureOf(hostPath: string, resolver: Resolver): Closure | null {
  try {
    // A malformed ELF is packed as data; detectElf() warns about it.
    if (!readElfFile(hostPath)?.dynamic) return null;
  } catch (error) {
    if (error instanceof ElfFormatError) return null;
    throw error;
  }
  return resolver.resolve(hostPath);
}

/** Lists the host paths of the inputs that keyInputs() reads from disk. */
export function inputHostPaths(files: Vinyl[]): string[] {
  const paths: string[] = [];
  for (const file of files) {
    if (file.isDirectory() || file.isSymbolic() || file.isBuffer()) continue;
    paths.push(hostPathOf(file));
  }
  return paths;
}

/**
 * Lists the interpreter and libraries of each dynamic ELF input, whose
 * contents keyInputs() digests too. Resolving here fills the resolver's
 * cache for keyInputs().
 */
export function closureHostPaths(files: Vinyl[], resolver: Resolver): string[] {
  const paths: string[] = [];
  for (const file of files) {
    if (file.isDirectory() || file.isSymbolic() || file.isBuffer()) continue;
    if (metaOf(file).role === "library") continue;
    const closure = closureOf(hostPathOf(file), resolver);
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
  files: Vinyl[],
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
  for (const file of files) {
    if (file.isDirectory()) continue;
    const role = metaOf(file).role ?? "include";
    const entry = {
      archivePath: archivePathOf(file),
      role,
      mode: (file.stat?.mode ?? 0) & 0o7777,
    };
    if (file.isSymbolic()) {
      const digest = hashBytes(file.symlink!);
      inputs.files.push({ ...entry, digest, symlink: true });
    } else if (file.isBuffer()) {
      inputs.files.push({ ...entry, digest: hashBytes(file.contents) });
    } else {
      const hostPath = hostPathOf(file);
      const digest = digests.digest(hostPath);
      inputs.files.push({ ...entry, digest });
      const closure =
        role === "library" ? null : closureOf(hostPath, resolver);
      if (closure) {
        addClosure(closure, digests, libraries);
        inputs.missing.push(...closure.missing.map((m) => m.name));
      }
    }
  }
  inputs.libraries = [...libraries.values()];
  return inputs;
}
