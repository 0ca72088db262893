import { lstatSync, readlinkSync, realpathSync } from "node:fs";
import { join, posix } from "node:path";
import type { ElfInfo } from "./elf.js";

/** One node of a directory tree, as lstat reports it. */
export type TreeNode =
  | { type: "file"; hostPath: string; elf?: ElfInfo | null }
  | { type: "dir" }
  | { type: "symlink"; target: string }
  | { type: "other" };

/**
 * A root directory that the resolver searches: the host, a sysroot, or
 * the entries of an initramfs image. Paths are absolute inside the root.
 */
export interface FileTree {
  /** Returns the node at `path` without following a final symlink. */
  lookup(path: string): TreeNode | null;
  /** Returns the canonical path of `path`, or null when it is missing. */
  canonical(path: string): string | null;
  /** Host path of a root-absolute path, for messages and `hostPath`. */
  toHost(path: string): string;
}

/** Symlinks followed in one path before giving up, as Linux's MAXSYMLINKS. */
const MAX_SYMLINKS = 40;

/**
 * Resolves every symlink in `path` through `lookup`, treating absolute
 * targets as relative to the root. Returns null for a missing component,
 * a file used as a directory, or a symlink loop.
 */
export function canonicalize(
  path: string,
  lookup: (path: string) => TreeNode | null,
): string | null {
  const pending = path.split("/");
  const resolved: string[] = [];
  let links = 0;
  while (pending.length > 0) {
    const part = pending.shift() as string;
    if (part === "" || part === ".") continue;
    if (part === "..") {
      resolved.pop();
      continue;
    }
    const node = lookup("/" + [...resolved, part].join("/"));
    if (node === null) return null;
    if (node.type === "symlink") {
      if (++links > MAX_SYMLINKS) return null;
      if (node.target.startsWith("/")) resolved.length = 0;
      pending.unshift(...node.target.split("/"));
      continue;
    }
    const more = pending.some((p) => p !== "" && p !== ".");
    if (more && node.type !== "dir") return null;
    resolved.push(part);
  }
  return "/" + resolved.join("/");
}

/** The host file system seen from `sysroot` ("/" for the host itself). */
export class HostTree implements FileTree {
  readonly sysroot: string;
  /** Host files outside the sysroot, by the path they are known by inside it. */
  private readonly external = new Map<string, string>();
  /** Directories above the external files' paths. */
  private readonly externalDirs = new Set<string>();

  constructor(sysroot = "/") {
    this.sysroot = realpathSync(sysroot);
  }

  /**
   * Makes the host file at absolute `path`, outside the sysroot, visible
   * at that same path inside it, as a binary built for the sysroot's
   * system in a host directory is. Only the file and its parent
   * directories are added; files next to it stay unknown.
   * NOTE: its `$ORIGIN` is therefore looked up inside the sysroot, so a
   * RUNPATH such as `$ORIGIN/../lib` finds nothing next to the binary.
   */
  addExternal(path: string): void {
    this.external.set(path, realpathSync(path));
    for (let dir = posix.dirname(path); dir !== "/"; dir = posix.dirname(dir)) {
      this.externalDirs.add(dir);
    }
  }

  toHost(path: string): string {
    return this.sysroot === "/" ? path : join(this.sysroot, path);
  }

  lookup(path: string): TreeNode | null {
    const external = this.external.get(path);
    if (external !== undefined) return { type: "file", hostPath: external };
    const node = this.lookupInRoot(path);
    // The sysroot's own entries win over the external files' parents.
    if (node === null && this.externalDirs.has(path)) return { type: "dir" };
    return node;
  }

  private lookupInRoot(path: string): TreeNode | null {
    const host = this.toHost(path);
    try {
      const st = lstatSync(host);
      if (st.isSymbolicLink()) {
        return { type: "symlink", target: readlinkSync(host) };
      }
      if (st.isDirectory()) return { type: "dir" };
      if (st.isFile()) return { type: "file", hostPath: host };
      return { type: "other" };
    } catch {
      return null;
    }
  }

  canonical(path: string): string | null {
    if (this.sysroot !== "/") return canonicalize(path, (p) => this.lookup(p));
    try {
      return realpathSync(posix.resolve(path));
    } catch {
      return null;
    }
  }
}

/** One entry of an image: a file with its host source, or a symlink. */
export interface ImageEntry {
  /** Path inside the image, without a leading '/'. */
  path: string;
  /** Host file that supplies the bytes of a regular file entry. */
  hostPath?: string;
  /** Target of a symlink entry, as stored in the archive. */
  symlink?: string;
  /**
   * The host file's ELF facts when the caller has parsed them already,
   * null when it is not an ELF file. Left out, readers parse the file.
   */
  elf?: ElfInfo | null;
}

/** The tree an initramfs image unpacks to; parent directories are implied. */
export class ImageTree implements FileTree {
  private readonly nodes = new Map<string, TreeNode>();

  constructor(entries: Iterable<ImageEntry>) {
    this.nodes.set("/", { type: "dir" });
    for (const e of entries) this.add(e);
  }

  add(entry: ImageEntry): void {
    const path = posix.resolve("/", entry.path);
    let node: TreeNode;
    if (entry.symlink !== undefined) {
      node = { type: "symlink", target: entry.symlink };
    } else if (entry.hostPath !== undefined) {
      node = { type: "file", hostPath: entry.hostPath };
      if (entry.elf !== undefined) node.elf = entry.elf;
    } else {
      node = { type: "dir" };
    }
    this.nodes.set(path, node);
    for (let dir = posix.dirname(path); dir !== "/"; dir = posix.dirname(dir)) {
      if (!this.nodes.has(dir)) this.nodes.set(dir, { type: "dir" });
    }
  }

  lookup(path: string): TreeNode | null {
    return this.nodes.get(posix.resolve("/", path)) ?? null;
  }

  canonical(path: string): string | null {
    return canonicalize(path, (p) => this.lookup(p));
  }

  toHost(path: string): string {
    const canonical = this.canonical(path);
    const node = canonical === null ? null : this.lookup(canonical);
    return node?.type === "file" ? node.hostPath : path;
  }

  /** Root-absolute paths of every regular file. */
  files(): string[] {
    return [...this.nodes].filter(([, n]) => n.type === "file").map(([p]) => p);
  }
}
