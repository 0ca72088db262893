import type { SuffixParams } from "./config.js";

/** What a file is to the image; decides its place, mode and stripping. */
export type Role = "payload" | "busybox" | "extra" | "include" | "library";

/** The guest's sign that extraction reached the end of the base archive. */
export const SENTINEL = ".ktstr_init_ok";

export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const MODE_DIR = S_IFDIR | 0o755;
export const MODE_EXEC = S_IFREG | 0o755;
export const MODE_DATA = S_IFREG | 0o644;
export const MODE_SYMLINK = S_IFLNK | 0o777;

/** Base archive order of the roles; the sentinel follows the last. */
const ROLE_ORDER: Role[] = ["payload", "busybox", "extra", "include", "library"];

/** One input to the base archive. */
export interface LayoutItem {
  archivePath: string;
  role: Role;
  /** Permission bits (0o7777) of an include; other roles get fixed modes. */
  permissions?: number;
  /** Symlink body; the item is a symlink entry when set. */
  symlinkTarget?: string;
  /**
   * Identity of the host file (its canonical path). Libraries with the same
   * identity are written once; later paths become symlinks to the first.
   */
  hostIdentity?: string;
}

/** One entry of the planned archive, in write order. */
export type LayoutEntry<T> =
  | { kind: "directory"; archivePath: string; mode: number }
  | { kind: "file"; archivePath: string; mode: number; item: T | null }
  | { kind: "symlink"; archivePath: string; mode: number; target: string };

/** Raised when two inputs claim one archive path. */
export class LayoutError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly fileName?: string,
  ) {
    super(message);
    this.name = "LayoutError";
  }
}

/** Adds every ancestor directory of `path` to `dirs`. */
function addParents(dirs: Set<string>, path: string): void {
  const parts = path.split("/");
  for (let i = 1; i < parts.length; i++) {
    dirs.add(parts.slice(0, i).join("/"));
  }
}

function modeOf(item: LayoutItem): number {
  if (item.role === "include") {
    return S_IFREG | ((item.permissions ?? 0o644) & 0o7777);
  }
  return MODE_EXEC;
}

function byPath(a: LayoutItem, b: LayoutItem): number {
  if (a.archivePath === b.archivePath) return 0;
  return a.archivePath < b.archivePath ? -1 : 1;
}

/**
 * Orders the base archive: every parent directory first (sorted, because
 * the kernel drops a file whose directory does not exist yet), then the
 * payload as `init`, busybox, extras, includes, libraries, each group
 * sorted by path, then the sentinel. Each library host file is written
 * once; later paths to it become symlinks to the first.
 */
export function planBase<T extends LayoutItem>(items: T[]): LayoutEntry<T>[] {
  const seen = new Map<string, T>();
  for (const item of items) {
    if (item.archivePath === SENTINEL) {
      throw new LayoutError(
        "LAYOUT_DUPLICATE_PATH",
        `archive path "${SENTINEL}" is reserved for the end-of-base marker; ` +
          "rename the input",
        item.archivePath,
      );
    }
    const previous = seen.get(item.archivePath);
    if (previous) {
      const sameLibrary =
        previous.role === "library" &&
        item.role === "library" &&
        previous.hostIdentity === item.hostIdentity &&
        previous.symlinkTarget === item.symlinkTarget;
      if (sameLibrary) continue;
      throw new LayoutError(
        "LAYOUT_DUPLICATE_PATH",
        `two inputs map to archive path "${item.archivePath}" ` +
          `(${previous.role} and ${item.role}); rename one of them`,
        item.archivePath,
      );
    }
    seen.set(item.archivePath, item);
  }
  const unique = [...seen.values()];
  const dirs = new Set<string>();
  for (const item of unique) addParents(dirs, item.archivePath);
  for (const dir of dirs) {
    if (seen.has(dir)) {
      throw new LayoutError(
        "LAYOUT_FILE_IS_DIRECTORY",
        `archive path "${dir}" is a file but also the parent of other ` +
          "entries; move one of them",
        dir,
      );
    }
  }
  const entries: LayoutEntry<T>[] = [...dirs]
    .sort()
    .map((archivePath) => ({ kind: "directory", archivePath, mode: MODE_DIR }));
  const firstPathOf = new Map<string, string>();
  for (const role of ROLE_ORDER) {
    const group = unique.filter((item) => item.role === role).sort(byPath);
    for (const item of group) {
      if (item.symlinkTarget !== undefined) {
        entries.push({
          kind: "symlink",
          archivePath: item.archivePath,
          mode: MODE_SYMLINK,
          target: item.symlinkTarget,
        });
        continue;
      }
      const first =
        role === "library" && item.hostIdentity !== undefined
          ? firstPathOf.get(item.hostIdentity)
          : undefined;
      if (first !== undefined) {
        entries.push({
          kind: "symlink",
          archivePath: item.archivePath,
          mode: MODE_SYMLINK,
          target: `/${first}`,
        });
        continue;
      }
      if (role === "library" && item.hostIdentity !== undefined) {
        firstPathOf.set(item.hostIdentity, item.archivePath);
      }
      entries.push({
        kind: "file",
        archivePath: item.archivePath,
        mode: modeOf(item),
        item,
      });
    }
  }
  entries.push({ kind: "file", archivePath: SENTINEL, mode: MODE_DATA, item: null });
  return entries;
}

/** One file of the suffix archive. */
export interface SuffixFile {
  archivePath: string;
  mode: number;
  data: Buffer;
}

const text = (lines: string[]) => Buffer.from(lines.join("\n"), "utf8");

/**
 * Returns the bytes of a file with one argument per line, rejecting an
 * argument with a newline, which the guest would read as two.
 */
function argumentLines(file: string, lines: string[]): Buffer {
  const bad = lines.find((line) => line.includes("\n"));
  if (bad !== undefined) {
    throw new LayoutError(
      "LAYOUT_ARG_HAS_NEWLINE",
      `an argument for ${file} contains a newline (${JSON.stringify(bad)}); ` +
        "the guest reads one argument per line, so pass each line separately",
    );
  }
  return text(lines);
}

/**
 * Lists the suffix archive's files in the guest's order: `args` always,
 * then the optional scheduler and cgroup files, then per-scheduler args.
 */
export function planSuffix(params: SuffixParams): SuffixFile[] {
  const out: SuffixFile[] = [
    { archivePath: "args", mode: MODE_DATA, data: argumentLines("/args", params.args) },
  ];
  const add = (archivePath: string, mode: number, data: Buffer) =>
    out.push({ archivePath, mode, data });
  if (params.schedArgs.length) {
    add("sched_args", MODE_DATA, argumentLines("/sched_args", params.schedArgs));
  }
  if (params.schedEnable.length) {
    add("sched_enable", MODE_EXEC, text(params.schedEnable));
  }
  if (params.schedDisable.length) {
    add("sched_disable", MODE_EXEC, text(params.schedDisable));
  }
  if (params.exec) {
    add("exec_cmd", MODE_DATA, Buffer.from(params.exec, "utf8"));
  }
  if (params.workloadRootCgroup) {
    add("workload_root_cgroup", MODE_DATA, Buffer.from(params.workloadRootCgroup));
  }
  if (params.schedulerCgroupParent) {
    add(
      "scheduler_cgroup_parent",
      MODE_DATA,
      Buffer.from(params.schedulerCgroupParent),
    );
  }
  const staged = Object.keys(params.stagedSchedArgs)
    .sort()
    .filter((name) => params.stagedSchedArgs[name].length > 0);
  // The base has these directories when it packs the staged scheduler.
  // The kernel ignores a directory entry for a directory that exists.
  if (staged.length) {
    add("staging", MODE_DIR, Buffer.alloc(0));
    add("staging/schedulers", MODE_DIR, Buffer.alloc(0));
  }
  for (const name of staged) {
    checkStagedName(name);
    add(`staging/schedulers/${name}`, MODE_DIR, Buffer.alloc(0));
    add(
      `staging/schedulers/${name}/sched_args`,
      MODE_DATA,
      argumentLines(`/staging/schedulers/${name}/sched_args`, params.stagedSchedArgs[name]),
    );
  }
  return out;
}

/** Rejects a staged scheduler name that could leave its directory. */
function checkStagedName(name: string): void {
  if (name === "" || name.startsWith(".") || /[/\0]/.test(name)) {
    throw new LayoutError(
      "LAYOUT_BAD_SCHEDULER_NAME",
      `staged scheduler name "${name}" is invalid: it must be non-empty, ` +
        "without '/' or NUL, and not start with '.'; fix --sched-args-for " +
        'NAME=LINE or "stagedSchedArgs" in initramfs.config.json',
    );
  }
}
