/**
 * Temporary files next to an output (`OUT.tmp-PID`), which a rename turns
 * into the output, so a reader never sees a half-written file. Writers
 * hold a flock(2) on them. They are removed when writing fails, when
 * SIGINT, SIGTERM or SIGHUP ends the process, and by a later build once
 * no process has them locked.
 */
import {
  accessSync,
  closeSync,
  constants,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import { flock, LOCK_EX, LOCK_NB, tryFlock } from "./libc.js";

const TERMINATING_SIGNALS: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];

/** Returns the temporary path this process writes `path` through. */
export function temporaryPath(path: string): string {
  return `${path}.tmp-${process.pid}`;
}

/**
 * Creates `directory` and its missing parents one by one. Node 20's
 * mkdirSync({ recursive: true }) never returns for a path under /proc,
 * where mkdir(2) fails with ENOENT for a parent that exists.
 */
export function makeDirectories(directory: string): void {
  const missing: string[] = [];
  for (let dir = directory; dirname(dir) !== dir; dir = dirname(dir)) {
    try {
      statSync(dir);
      break;
    } catch {
      // Missing: created below, parents first.
    }
    missing.unshift(dir);
  }
  for (const dir of missing) {
    try {
      mkdirSync(dir);
    } catch (error) {
      // Another build may have created it since the check above.
      const exists = (error as NodeJS.ErrnoException).code === "EEXIST";
      if (!exists || !statSync(dir).isDirectory()) throw error;
    }
  }
}

/**
 * Creates the directory of output `path` and checks that the output can
 * be written there through a temporary file, before any work is done.
 * Throws OUTPUT_NOT_WRITABLE naming the path and what to change.
 */
export function prepareOutput(path: string): void {
  const fail = (reason: string, fix: string) =>
    Object.assign(new Error(`cannot write the image to ${path} (${reason}); ${fix}`), {
      code: "OUTPUT_NOT_WRITABLE",
      fileName: path,
    });
  const errorCode = (error: unknown) =>
    (error as NodeJS.ErrnoException).code ?? String(error);
  let isDirectory = false;
  try {
    isDirectory = statSync(path).isDirectory();
  } catch {
    // A missing output is the usual case.
  }
  if (isDirectory) {
    throw fail("it is a directory", `name a file, such as ${join(path, "initramfs.cpio.lz4")}`);
  }
  const directory = dirname(path);
  try {
    makeDirectories(directory);
  } catch (error) {
    throw fail(errorCode(error), `${directory} cannot be created: a part of it is a file, or not writable`);
  }
  try {
    accessSync(directory, constants.W_OK | constants.X_OK);
  } catch (error) {
    throw fail(errorCode(error), `choose another output path or make ${directory} writable`);
  }
}

/** Writes `path` through a temporary file and a rename. */
export function writeFileAtomic(path: string, data: Uint8Array | string): void {
  makeDirectories(dirname(path));
  const temporary = temporaryPath(path);
  try {
    const fd = openSync(temporary, "w");
    try {
      lockTemporary(fd);
      writeFileSync(fd, data);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, path);
  } catch (error) {
    rmSync(temporary, { force: true });
    throw error;
  }
}

/**
 * Takes an exclusive flock(2) on an open temporary file, so that
 * removeStaleTemporaries() in any process leaves it alone.
 */
export function lockTemporary(fd: number): void {
  try {
    flock(fd, LOCK_EX | LOCK_NB);
  } catch {
    // Best effort: without glibc, or on a file system without flock(2)
    // such as NFS without lockd, the file's age protects it instead.
  }
}

/** Paths that the signal handler removes, with a count per path. */
const guarded = new Map<string, number>();

function onTerminatingSignal(signal: NodeJS.Signals): void {
  // Another listener means the signal does not end the process: leave
  // the build and its files to that listener.
  if (process.listenerCount(signal) > 1) return;
  for (const path of guarded.keys()) rmSync(path, { force: true });
  guarded.clear();
  for (const other of TERMINATING_SIGNALS) {
    process.removeListener(other, onTerminatingSignal);
  }
  process.kill(process.pid, signal);
}

/**
 * Removes `paths` if a terminating signal would end the process, then ends
 * it with that signal as it would have ended without the handler. When
 * the program has its own listener for the signal, nothing is removed.
 * One handler serves every build of the process. Returns the function
 * that stops guarding these paths.
 */
export function removeOnSignal(paths: string[]): () => void {
  if (guarded.size === 0) {
    // First in line, so that its count of listeners still includes the
    // program's own, even those added with once(), which Node removes
    // before calling them.
    for (const signal of TERMINATING_SIGNALS) {
      process.prependListener(signal, onTerminatingSignal);
    }
  }
  for (const path of paths) guarded.set(path, (guarded.get(path) ?? 0) + 1);
  let stopped = false;
  return () => {
    if (stopped) return;
    stopped = true;
    for (const path of paths) {
      const count = (guarded.get(path) ?? 1) - 1;
      if (count > 0) guarded.set(path, count);
      else guarded.delete(path);
    }
    if (guarded.size === 0) {
      for (const signal of TERMINATING_SIGNALS) {
        process.removeListener(signal, onTerminatingSignal);
      }
    }
  };
}

/** True when a process with this id exists here, even another user's. */
function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Age below which a temporary file is never removed, because a writer
 * may have created it and not locked it yet. A long build's file is kept
 * by its writer's lock, so this only has to cover open(2) to flock(2).
 */
const STALE_AFTER_MS = 60_000;

/** Escapes `text` for use inside a regular expression. */
function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * True when the temporary file at `path` is left over: a regular file, a
 * minute old or more, whose writer is not a process of this PID namespace
 * and that no process holds a flock(2) on.
 */
function isStale(path: string, pid: number): boolean {
  if (pid === process.pid || processExists(pid)) return false;
  let fd: number;
  try {
    const stat = lstatSync(path);
    if (!stat.isFile() || Date.now() - stat.mtimeMs < STALE_AFTER_MS) return false;
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return false;
  }
  try {
    return tryFlock(fd, LOCK_EX);
  } catch {
    // Without flock(2) nothing proves the file is unused.
    return false;
  } finally {
    closeSync(fd);
  }
}

/**
 * Removes the temporary files of `path` and of its record
 * (`path.key.json`) that an ended build left behind, for example one
 * killed with SIGKILL: `NAME.tmp-PID` and `NAME.key.json.tmp-PID` only,
 * and only stale ones (see isStale). A file that cannot be removed, such
 * as another user's in a sticky directory, is left. Returns the paths
 * removed.
 */
export function removeStaleTemporaries(path: string): string[] {
  const directory = dirname(path);
  const pattern = new RegExp(`^${escapeRegExp(basename(path))}(?:\\.key\\.json)?\\.tmp-(\\d+)$`);
  let entries: string[];
  try {
    entries = readdirSync(directory);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const entry of entries) {
    const match = pattern.exec(entry);
    if (!match) continue;
    const candidate = join(directory, entry);
    if (!isStale(candidate, Number(match[1]))) continue;
    try {
      unlinkSync(candidate);
      removed.push(candidate);
    } catch {
      // Another user's file, or already gone.
    }
  }
  return removed;
}
