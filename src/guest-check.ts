import { readFileSync, realpathSync } from "node:fs";
import { posix } from "node:path";

import { ElfFormatError, readElfFile, type ElfInfo } from "./elf.js";
import { ImageTree, type ImageEntry } from "./file-tree.js";
import {
  loaderAbiFor,
  muslArch,
  readInterpreterDirsFile,
} from "./loader-abi.js";
import {
  Resolver,
  type ResolverOptions,
  type ResolveWarning,
} from "./resolve.js";
import { MUSL_DEFAULT_PATH, parseMuslPathFile } from "./search.js";

/*
 * Resolution as the guest's dynamic linker sees the image: the image is
 * the root, there is no ld.so.cache unless the image has one, no
 * LD_LIBRARY_PATH, and `$ORIGIN` is the directory of each file inside
 * the image (`/` for `/init`).
 */

export interface GuestProblem {
  code: "GUEST_LIB_MISSING" | "GUEST_LIB_MISMATCH" | "GUEST_LIB_NOT_PACKED";
  /** Guest path of the ELF file that needs the library, without '/'. */
  file: string;
  /** DT_NEEDED name, or the PT_INTERP path for a missing interpreter. */
  name: string;
  message: string;
}

export interface GuestCheckOptions {
  /** Expansion of `$PLATFORM` in the guest; default the ABI's AT_PLATFORM. */
  platform?: string;
  /** Host resolver whose choices the guest must repeat (planGuestFixups). */
  hostResolver?: Resolver;
  /** Options for a host resolver when `hostResolver` is not given. */
  hostOptions?: ResolverOptions;
  onWarning?: (w: ResolveWarning) => void;
}

/** Upper bound on fix-up rounds; each round only adds symlinks. */
const MAX_ROUNDS = 8;

interface ImageElf {
  path: string;
  hostPath: string;
  info: ElfInfo;
}

function imageElfs(tree: ImageTree, opts: GuestCheckOptions): ImageElf[] {
  const out: ImageElf[] = [];
  for (const path of tree.files()) {
    // A later entry can replace a parent directory with a symlink or a
    // file, as in an image with "bin/true" and then "bin". The guest
    // cannot reach such a file by its path, so there is nothing to check.
    if (tree.canonical(path) !== path) continue;
    const node = tree.lookup(path);
    if (node?.type !== "file") continue;
    const hostPath = node.hostPath;
    let info: ElfInfo | null;
    try {
      info = node.elf !== undefined ? node.elf : readElfFile(hostPath);
    } catch (err) {
      if (!(err instanceof ElfFormatError)) throw err;
      opts.onWarning?.({
        code: "ELF_MALFORMED",
        message: `${hostPath} (image path ${path}) is a malformed ELF file ` +
          `(${err.message}); not checking it.`,
        path: hostPath,
      });
      continue;
    }
    if (info?.dynamic) out.push({ path, hostPath, info });
  }
  return out;
}

function guestResolver(tree: ImageTree, opts: GuestCheckOptions, elf?: ElfInfo) {
  const abi = elf ? loaderAbiFor(elf) : null;
  return new Resolver({
    tree,
    ldLibraryPath: [],
    ldCachePath: "/etc/ld.so.cache",
    platform: opts.platform ?? abi?.platform ?? "",
    cwd: "/",
    onWarning: opts.onWarning,
  });
}

/**
 * Lists every library that the guest's dynamic linker will not find
 * for an ELF file in the image, and a missing interpreter.
 */
export function verifyImage(
  entries: ImageEntry[],
  opts: GuestCheckOptions = {},
): GuestProblem[] {
  const tree = new ImageTree(entries);
  const problems: GuestProblem[] = [];
  const elfs = imageElfs(tree, opts);
  const resolver = guestResolver(tree, opts, elfs[0]?.info);
  for (const elf of elfs) {
    for (const miss of resolver.resolve(elf.path).missing) {
      problems.push(missingProblem(elf.path, miss.name));
    }
  }
  return problems;
}

function missingProblem(path: string, name: string): GuestProblem {
  const file = path.slice(1);
  return {
    code: "GUEST_LIB_MISSING",
    file,
    name,
    message: `/${file} needs ${name}, which the guest's dynamic linker ` +
      "does not find in the image. Add the library or a symlink to it in " +
      "a default directory.",
  };
}

/**
 * Returns the guest's built-in directories for one binary, in search
 * order. `interpreterDirs` caches what each interpreter file lists.
 */
function guestDefaultDirs(
  tree: ImageTree,
  info: ElfInfo,
  interpreterDirs: Map<string, string[] | null>,
): string[] {
  const interp = info.interpreter;
  const arch = interp ? muslArch(interp) : null;
  if (arch !== null) {
    const file = tree.lookup(`/etc/ld-musl-${arch}.path`);
    if (file?.type !== "file") return MUSL_DEFAULT_PATH;
    return parseMuslPathFile(readFileSync(file.hostPath, "latin1"));
  }
  const canonical = interp ? tree.canonical(interp) : null;
  if (canonical !== null) {
    if (!interpreterDirs.has(canonical)) {
      interpreterDirs.set(canonical, readInterpreterDirsFile(tree.toHost(canonical)));
    }
    const dirs = interpreterDirs.get(canonical);
    if (dirs) return dirs;
  }
  return loaderAbiFor(info)?.defaultDirs ?? [];
}

function realOrSelf(path: string): string {
  try {
    // One realpath(3) call, where the JavaScript version runs an lstat
    // for each path component.
    return realpathSync.native(path);
  } catch {
    return path;
  }
}

/**
 * Returns symlink entries to add so that every DT_NEEDED name of every
 * ELF file in the image resolves, in the guest, to the same library the
 * host resolver chose. Each symlink goes into the first default
 * directory where the name is still free, for example
 * `lib/x86_64-linux-gnu/libfoo.so.1` -> `/usr/local/lib/libfoo.so.1`.
 * Names that no symlink can fix are reported through `onWarning`.
 */
export function planGuestFixups(
  entries: ImageEntry[],
  opts: GuestCheckOptions = {},
): ImageEntry[] {
  const host = opts.hostResolver ?? new Resolver(opts.hostOptions ?? {});
  const tree = new ImageTree(entries);
  const byHost = new Map<string, string>();
  for (const path of tree.files()) {
    // A file known not to be ELF cannot be a library the host chose.
    const node = tree.lookup(path);
    if (node?.type === "file" && node.elf === null) continue;
    const real = realOrSelf(tree.toHost(path));
    if (!byHost.has(real)) byHost.set(real, path);
  }
  const elfs = imageElfs(tree, opts);
  const interpreterDirs = new Map<string, string[] | null>();
  const added: ImageEntry[] = [];
  const unfixable = new Map<string, GuestProblem>();
  for (let round = 0; round < MAX_ROUNDS; round++) {
    const guest = guestResolver(tree, opts, elfs[0]?.info);
    const before = added.length;
    unfixable.clear();
    for (const elf of elfs) {
      const guestClosure = guest.resolve(elf.path);
      const found = new Map(
        guestClosure.libraries.map((l) => ["/" + l.guestPath, l.name]),
      );
      const foundByName = new Map(
        guestClosure.libraries.map((l) => [l.name, "/" + l.guestPath]),
      );
      for (const lib of host.resolve(elf.hostPath).libraries) {
        const want = byHost.get(realOrSelf(lib.hostPath));
        const problem = (code: GuestProblem["code"], message: string) =>
          unfixable.set(`${elf.path}\0${lib.name}`, {
            code,
            file: elf.path.slice(1),
            name: lib.name,
            message,
          });
        if (want === undefined) {
          problem("GUEST_LIB_NOT_PACKED",
            `${lib.hostPath}, needed by /${elf.path.slice(1)} as ` +
              `${lib.name}, is not in the image; pack it.`);
          continue;
        }
        // The guest may know the library under another first name.
        if (foundByName.get(lib.name) === want || found.has(want)) continue;
        const other = foundByName.get(lib.name);
        const link = lib.name.includes("/") || other !== undefined
          ? null
          : freeLink(tree, guestDefaultDirs(tree, elf.info, interpreterDirs), lib.name);
        if (link === null) {
          problem("GUEST_LIB_MISMATCH",
            `/${elf.path.slice(1)} needs ${lib.name}; the guest finds ` +
              `${other ?? "nothing"} instead of ${want}, and no symlink in ` +
              "a default directory can change that. Pack the library at a " +
              "path the guest searches first.");
          continue;
        }
        const entry = { path: link.slice(1), symlink: want };
        tree.add(entry);
        added.push(entry);
      }
    }
    if (added.length === before) break;
  }
  for (const p of unfixable.values()) {
    opts.onWarning?.({ code: p.code, message: p.message, path: p.file });
  }
  return added;
}

/** Returns the first `dir/name` that does not exist in the image yet. */
function freeLink(tree: ImageTree, dirs: string[], name: string): string | null {
  for (const dir of dirs) {
    const link = posix.join(dir, name);
    if (tree.lookup(link) === null) return link;
  }
  return null;
}
