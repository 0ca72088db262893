import { existsSync, readFileSync } from "node:fs";
import { posix, relative, resolve as resolveHostPath, sep } from "node:path";

import { expandDst, splitSearchPath } from "./dst.js";
import {
  compatibleIdent,
  ElfFormatError,
  ET_DYN,
  readElfFile,
  type ElfInfo,
} from "./elf.js";
import { HostTree, type FileTree } from "./file-tree.js";
import { EMPTY_CACHE, loadLdCache, type LdCache } from "./ldcache.js";
import {
  hostPlatform,
  loaderAbiFor,
  muslArch,
  readInterpreterDirsFile,
  type LoaderAbi,
} from "./loader-abi.js";
import {
  isMuslSelfName,
  MUSL_DEFAULT_PATH,
  parseMuslPathFile,
  searchCandidates,
  type SearchObject,
  type SearchOrder,
} from "./search.js";

/** A problem that does not stop resolution, with a stable `code`. */
export interface ResolveWarning {
  code: string;
  message: string;
  path?: string;
}

export interface ResolverOptions {
  /**
   * Root that the binaries' interpreter, DT_RPATH, DT_RUNPATH, cache and
   * default directories refer to. Default "/".
   */
  sysroot?: string;
  /** Tree to search in place of `sysroot`, such as an image's entries. */
  tree?: FileTree;
  /** LD_LIBRARY_PATH directories; default `process.env.LD_LIBRARY_PATH`. */
  ldLibraryPath?: string[];
  /** ld.so.cache to read, inside the root; null for none. */
  ldCachePath?: string | null;
  /** Built-in directories; default the interpreter's own list. */
  defaultDirs?: string[];
  /** Expansion of `$PLATFORM`; default what ld.so on this CPU uses. */
  platform?: string;
  /** Directory that relative paths start from; default `process.cwd()`. */
  cwd?: string;
  onWarning?: (w: ResolveWarning) => void;
}

export interface ResolvedInterpreter {
  /** Canonical path inside the root, without the leading '/'. */
  guestPath: string;
  hostPath: string;
  /** Other guest paths of the same file, such as the PT_INTERP path. */
  aliases: string[];
}

export interface ResolvedLibrary {
  /** DT_NEEDED name that first requested the library. */
  name: string;
  /** Canonical real path on this machine. */
  hostPath: string;
  /** Canonical path inside the root, without the leading '/'. */
  guestPath: string;
  /** Other guest paths: where the search found it, through symlinks. */
  aliases: string[];
  /** Root-absolute path where the search found it, as ld.so reports it. */
  searchPath: string;
  /** Host path of the object whose DT_NEEDED requested it. */
  requestedBy: string;
}

export interface Closure {
  interpreter: ResolvedInterpreter | null;
  /** Libraries in the order ld.so loads them (breadth first). */
  libraries: ResolvedLibrary[];
  missing: Array<{ name: string; requestedBy: string }>;
}

interface LoadedObject extends SearchObject {
  canonical: string;
  names: Set<string>;
  library: ResolvedLibrary | null;
}

const EMPTY_CLOSURE: Closure = { interpreter: null, libraries: [], missing: [] };

function stripRoot(path: string): string {
  return path.replace(/^\/+/, "");
}

/**
 * Finds the shared libraries and the interpreter that a binary needs,
 * by reading ELF files, ld.so.cache and directories only: nothing is
 * executed, so a sysroot of another architecture works too. One
 * Resolver caches parsed files and closures, so create one per build.
 */
export class Resolver {
  readonly tree: FileTree;
  private readonly opts: ResolverOptions;
  private readonly ldLibraryPath: string[];
  private readonly elfCache = new Map<string, ElfInfo | null>();
  private readonly canonicalCache = new Map<string, string | null>();
  private readonly closures = new Map<string, Closure>();
  /** Default directories read out of each interpreter, by host path. */
  private readonly interpreterDirs = new Map<string, string[] | null>();
  private ldCache: LdCache | null | undefined;
  private readonly warned = new Set<string>();
  /** Canonical paths of files that failed to parse as ELF. */
  private readonly malformed = new Set<string>();

  constructor(opts: ResolverOptions = {}) {
    this.opts = opts;
    this.tree = opts.tree ?? new HostTree(opts.sysroot ?? "/");
    const env = process.env.LD_LIBRARY_PATH;
    this.ldLibraryPath =
      opts.ldLibraryPath ?? (env ? env.split(/[:;]/) : []);
  }

  /** Resolves the closure of the binary at host path `binaryPath`. */
  resolve(binaryPath: string): Closure {
    const hostPath = resolveHostPath(this.workingDirectory(), binaryPath);
    const path = this.rootPath(hostPath);
    let canonical = this.canonical(path);
    const outside =
      this.tree instanceof HostTree && this.tree.sysroot !== "/" && path === hostPath;
    if (canonical === null && outside && existsSync(hostPath)) {
      // A binary built for the sysroot's system outside it, such as in a
      // build directory: its libraries still come from the sysroot.
      (this.tree as HostTree).addExternal(hostPath);
      this.canonicalCache.clear();
      canonical = this.canonical(path);
    }
    if (canonical === null) {
      const error = new Error(`${binaryPath} not found; check the path`);
      throw Object.assign(error, { code: "INPUT_NOT_FOUND", fileName: binaryPath });
    }
    const known = this.closures.get(canonical);
    if (known) return known;
    const closure = this.resolveUncached(canonical);
    this.closures.set(canonical, closure);
    return closure;
  }

  /** Directory that relative DT_NEEDED paths start from. */
  workingDirectory(): string {
    return this.opts.cwd ?? process.cwd();
  }

  /** Maps a host path into the root; paths outside it are kept as they are. */
  private rootPath(hostPath: string): string {
    if (!(this.tree instanceof HostTree) || this.tree.sysroot === "/") {
      return hostPath;
    }
    const rel = relative(this.tree.sysroot, hostPath);
    if (rel.startsWith("..") || rel === "") return hostPath;
    // NOTE: a binary outside a sysroot keeps its host directory as
    // $ORIGIN, which is then looked up inside the sysroot.
    return "/" + rel.split(sep).join("/");
  }

  private warn(code: string, message: string, path?: string): void {
    const key = `${code}\0${path ?? message}`;
    if (this.warned.has(key)) return;
    this.warned.add(key);
    this.opts.onWarning?.({ code, message, path });
  }

  private canonical(path: string): string | null {
    let result = this.canonicalCache.get(path);
    if (result === undefined) {
      result = this.tree.canonical(path);
      this.canonicalCache.set(path, result);
    }
    return result;
  }

  /** Parses the ELF file at a canonical root path; null when unusable. */
  private elf(canonical: string): ElfInfo | null {
    if (this.elfCache.has(canonical)) {
      return this.elfCache.get(canonical) ?? null;
    }
    let info: ElfInfo | null = null;
    const node = this.tree.lookup(canonical);
    if (node?.type === "file") {
      try {
        info = readElfFile(node.hostPath);
      } catch (err) {
        if (!(err instanceof ElfFormatError)) throw err;
        this.malformed.add(canonical);
        this.warn(
          "ELF_MALFORMED",
          `${node.hostPath} is a malformed ELF file (${err.message}); ` +
            "skipping it. Rebuild or remove the file.",
          node.hostPath,
        );
      }
    }
    this.elfCache.set(canonical, info);
    return info;
  }

  private loadCache(): LdCache | null {
    if (this.ldCache !== undefined) return this.ldCache;
    const path = this.opts.ldCachePath;
    if (path === null) {
      this.ldCache = null;
    } else {
      // Only a file inside the root counts: an image without a cache
      // must not fall back to the host's /etc/ld.so.cache.
      const canonical = this.canonical(path ?? "/etc/ld.so.cache");
      const node = canonical === null ? null : this.tree.lookup(canonical);
      this.ldCache =
        node?.type === "file"
          ? loadLdCache(node.hostPath, (w) => this.warn(w.code, w.message, w.path))
          : EMPTY_CACHE;
    }
    return this.ldCache;
  }

  private resolveUncached(mainPath: string): Closure {
    const info = this.elf(mainPath);
    if (info === null || !info.dynamic) return EMPTY_CLOSURE;
    const requestedBy = this.tree.toHost(mainPath);
    const main: LoadedObject = {
      path: mainPath,
      canonical: mainPath,
      origin: posix.dirname(mainPath),
      info,
      loader: null,
      names: new Set(),
      library: null,
    };
    const state = new ClosureState(this, main, requestedBy);
    const interp = info.interpreter;
    if (interp === null) {
      // A static-PIE binary has PT_DYNAMIC but no DT_NEEDED. A shared
      // library given as the root is searched as glibc would search it
      // for a program, with the standard ld.so already loaded.
      if (info.needed.length === 0) return EMPTY_CLOSURE;
      const standard = loaderAbiFor(info)?.standardInterpreters[0] ?? null;
      if (standard !== null) state.loadInterpreter(standard, false);
      state.order = this.glibcOrder(info, standard, [], main);
      state.walk([main]);
      return state.closure;
    }
    const interpObject = state.loadInterpreter(interp);
    state.order = this.searchOrder(info, interp, main);
    state.walk([main]);
    if (interpObject && interpObject.info.needed.length > 0) {
      state.order = this.searchOrder(info, interp, main);
      state.walk([interpObject]);
    }
    return state.closure;
  }

  /** Directories next to a non-standard interpreter, used as hints. */
  interpreterHints(interp: string): string[] {
    const dir = posix.dirname(interp);
    const parent = posix.dirname(dir);
    const dirs = [dir, posix.join(parent, "lib"), posix.join(parent, "lib64")];
    return [...new Set(dirs)];
  }

  private searchOrder(
    info: ElfInfo,
    interp: string,
    main: LoadedObject,
  ): SearchOrder {
    const arch = muslArch(interp);
    const abi = loaderAbiFor(info);
    const standard = abi?.standardInterpreters.includes(interp) ?? false;
    const hints = arch !== null || standard ? [] : this.interpreterHints(interp);
    if (arch === null) return this.glibcOrder(info, interp, hints, main);
    const pathFile = this.tree.lookup(`/etc/ld-musl-${arch}.path`);
    let sysPath = MUSL_DEFAULT_PATH;
    if (pathFile?.type === "file") {
      sysPath = parseMuslPathFile(readFileSync(pathFile.hostPath, "latin1"));
    }
    const ldLibraryPath = this.expandLdLibraryPath(abi, main);
    return { kind: "musl", ldLibraryPath, hints, sysPath };
  }

  private expandLdLibraryPath(abi: LoaderAbi | null, main: LoadedObject) {
    const dst = {
      origin: main.origin,
      lib: abi?.lib ?? "lib",
      platform: this.platform(abi),
    };
    return splitSearchPath(this.ldLibraryPath.join(":"), dst);
  }

  private platform(abi: LoaderAbi | null): string {
    return this.opts.platform ?? (abi ? hostPlatform(abi) : "");
  }

  private glibcOrder(
    info: ElfInfo,
    interp: string | null,
    hints: string[],
    main: LoadedObject,
  ): SearchOrder {
    const abi = loaderAbiFor(info);
    if (abi === null) {
      this.warn(
        "ABI_UNKNOWN",
        `${this.tree.toHost(main.path)} has e_machine ${info.e_machine}, ` +
          "for which the ld.so.cache flags are unknown; not using the " +
          "cache. Pass defaultDirs to set the search directories.",
        this.tree.toHost(main.path),
      );
    }
    return {
      kind: "glibc",
      dst: { lib: abi?.lib ?? "lib", platform: this.platform(abi) },
      ldLibraryPath: this.expandLdLibraryPath(abi, main),
      hints,
      cache: abi ? this.loadCache() : null,
      cacheAbi: abi?.cache ?? null,
      defaultDirs: this.defaultDirs(abi, interp),
      main,
    };
  }

  private defaultDirs(abi: LoaderAbi | null, interp: string | null) {
    if (this.opts.defaultDirs) return this.opts.defaultDirs;
    if (interp !== null) {
      const canonical = this.canonical(interp);
      const node = canonical === null ? null : this.tree.lookup(canonical);
      if (node?.type === "file") {
        let dirs = this.interpreterDirs.get(node.hostPath);
        if (dirs === undefined) {
          dirs = readInterpreterDirsFile(node.hostPath);
          this.interpreterDirs.set(node.hostPath, dirs);
        }
        if (dirs) return dirs;
      }
    }
    return abi?.defaultDirs ?? [];
  }

  /**
   * Opens a candidate as ld.so's open_verify does; null to keep looking.
   * NOTE: glibc abandons a whole directory list when opening a candidate
   * fails with an error other than ENOENT or EACCES (a symlink loop, for
   * example); here such a candidate is skipped like a missing one.
   */
  openCandidate(path: string, root: ElfInfo): [string, ElfInfo] | null {
    const canonical = this.canonical(path);
    if (canonical === null) return null;
    const info = this.elf(canonical);
    if (info === null) {
      const node = this.tree.lookup(canonical);
      if (node?.type === "file" && !this.malformed.has(canonical)) {
        this.warn(
          "LIB_NOT_ELF",
          `${node.hostPath} is not an ELF file but has the name of a ` +
            "needed library; skipping it, but glibc's ld.so stops here " +
            "with \"invalid ELF header\". Rename or move the file.",
          node.hostPath,
        );
      }
      return null;
    }
    if (info.e_type !== ET_DYN) return null;
    if (!compatibleIdent(root, info)) return null;
    return [canonical, info];
  }
}

/** The objects loaded so far for one closure, and what they produce. */
class ClosureState {
  readonly closure: Closure = { interpreter: null, libraries: [], missing: [] };
  order: SearchOrder | null = null;
  private readonly loaded: LoadedObject[];
  private muslSelf: LoadedObject | null = null;

  constructor(
    private readonly resolver: Resolver,
    private readonly main: LoadedObject,
    private readonly mainHost: string,
  ) {
    this.loaded = [main];
  }

  /** Adds PT_INTERP as loaded: ld.so is in the namespace before anything. */
  loadInterpreter(interp: string, required = true): LoadedObject | null {
    const tree = this.resolver.tree;
    const found = this.resolver.openCandidate(interp, this.main.info);
    if (found === null) {
      if (required) {
        this.closure.missing.push({ name: interp, requestedBy: this.mainHost });
      }
      return null;
    }
    const [canonical, info] = found;
    const aliases = posix.normalize(interp) === canonical ? [] : [stripRoot(interp)];
    this.closure.interpreter = {
      guestPath: stripRoot(canonical),
      hostPath: tree.toHost(canonical),
      aliases,
    };
    const names = new Set([interp]);
    if (info.soname !== null) names.add(info.soname);
    const object: LoadedObject = {
      path: interp,
      canonical,
      origin: posix.dirname(interp),
      info,
      loader: null,
      names,
      library: null,
    };
    this.loaded.push(object);
    if (muslArch(interp) !== null) {
      this.muslSelf = object;
    }
    return object;
  }

  /** Loads the DT_NEEDED entries of `roots` and everything they pull in. */
  walk(roots: LoadedObject[]): void {
    const queue = [...roots];
    for (let i = 0; i < queue.length; i++) {
      const object = queue[i];
      for (const name of object.info.needed) {
        const added = this.request(name, object);
        if (added) queue.push(added);
      }
    }
  }

  private findLoaded(name: string): LoadedObject | undefined {
    return this.loaded.find((l) => l.names.has(name));
  }

  /** Handles one DT_NEEDED entry; returns a newly loaded object. */
  private request(name: string, requester: LoadedObject): LoadedObject | null {
    if (this.findLoaded(name)) return null;
    if (this.muslSelf && isMuslSelfName(name)) {
      this.muslSelf.names.add(name);
      return null;
    }
    const found = this.search(name, requester);
    if (found === null) {
      this.closure.missing.push({
        name,
        requestedBy: this.resolver.tree.toHost(requester.canonical),
      });
      // ld.so --list records a missing name once, as a placeholder.
      this.loaded.push({
        ...requester,
        canonical: "",
        names: new Set([name]),
        library: null,
      });
      return null;
    }
    const [path, canonical, info] = found;
    const same = this.loaded.find((l) => l.canonical === canonical);
    if (same) {
      same.names.add(name);
      same.names.add(path);
      same.library?.aliases.push(...this.aliasFor(path, same.library));
      return null;
    }
    return this.addLibrary(name, path, canonical, info, requester);
  }

  private aliasFor(path: string, library: ResolvedLibrary): string[] {
    const alias = stripRoot(posix.normalize(path));
    if (alias === library.guestPath || library.aliases.includes(alias)) {
      return [];
    }
    return [alias];
  }

  private addLibrary(
    name: string,
    path: string,
    canonical: string,
    info: ElfInfo,
    requester: LoadedObject,
  ): LoadedObject {
    const tree = this.resolver.tree;
    const library: ResolvedLibrary = {
      name,
      hostPath: tree.toHost(canonical),
      guestPath: stripRoot(canonical),
      aliases: [],
      searchPath: posix.normalize(path),
      requestedBy: tree.toHost(requester.canonical),
    };
    library.aliases.push(...this.aliasFor(path, library));
    const names = new Set([name, path]);
    if (info.soname !== null) names.add(info.soname);
    const object: LoadedObject = {
      path,
      canonical,
      origin: posix.dirname(path),
      info,
      loader: requester,
      names,
      library,
    };
    this.loaded.push(object);
    this.closure.libraries.push(library);
    return object;
  }

  /** Returns [found path, canonical path, ELF] for `name`, or null. */
  private search(
    name: string,
    requester: LoadedObject,
  ): [string, string, ElfInfo] | null {
    const root = this.main.info;
    if (name.includes("/")) {
      // A name with '/' is a path: DSTs expand, and a relative path
      // starts at the working directory, not at the requester.
      const order = this.order;
      const dst = order?.kind === "glibc" ? order.dst : { lib: "lib", platform: "" };
      const expanded = expandDst(name, { ...dst, origin: requester.origin });
      if (expanded === null) return null;
      const path = posix.resolve(this.resolver.workingDirectory(), expanded);
      const found = this.resolver.openCandidate(path, root);
      return found ? [path, ...found] : null;
    }
    if (this.order === null) return null;
    for (const candidate of searchCandidates(this.order, name, requester)) {
      const found = this.resolver.openCandidate(candidate.path, root);
      if (found) return [candidate.path, ...found];
    }
    return null;
  }
}

/**
 * Returns the plain map of a closure that `ld.so --list` also prints:
 * each loaded library's first DT_NEEDED name to the path where the
 * search found it, and each missing name to null.
 */
export function libraryMap(closure: Closure): Map<string, string | null> {
  const map = new Map<string, string | null>();
  for (const lib of closure.libraries) map.set(lib.name, lib.searchPath);
  for (const miss of closure.missing) map.set(miss.name, null);
  return map;
}
