/**
 * Temporary files next to an output (`OUT.tmp-PID`), which a rename turns
 * into the output, so a reader never sees a half-written file. They are
 * removed when writing fails, when the process gets SIGINT, SIGTERM or
 * SIGHUP, and by a later build once the process that wrote them is gone.
 */
import {
  accessSync,
  constants,
  mkdirSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";

const TERMINATING_SIGNALS: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];

/** Returns the temporary path this process writes `path` through. */
export function temporaryPath(path: string): string {
  return `${path}.tmp-${process.pid}`;
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
    mkdirSync(directory, { recursive: true });
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
  mkdirSync(dirname(path), { recursive: true });
  const temporary = temporaryPath(path);
  try {
    writeFileSync(temporary, data);
    renameSync(temporary, path);
  } catch (error) {
    rmSync(temporary, { force: true });
    throw error;
  }
}

/**
 * Removes `paths` if the process gets a terminating signal, then ends the
 * process with that signal as it would have ended without the handler.
 * Returns the function that removes the handler again.
 */
export function removeOnSignal(paths: string[]): () => void {
  const handler = (signal: NodeJS.Signals) => {
    for (const path of paths) rmSync(path, { force: true });
    stop();
    process.kill(process.pid, signal);
  };
  const stop = () => {
    for (const signal of TERMINATING_SIGNALS) process.removeListener(signal, handler);
  };
  for (const signal of TERMINATING_SIGNALS) process.on(signal, handler);
  return stop;
}

/** True when a process with this id exists, even another user's. */
function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Removes the temporary files of `path` and of the files named after it
 * (`path.key.json`) that a process which no longer exists left behind,
 * for example one killed with SIGKILL. Returns the paths removed.
 */
export function removeStaleTemporaries(path: string): string[] {
  const name = basename(path);
  const directory = dirname(path);
  let entries: string[];
  try {
    entries = readdirSync(directory);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const entry of entries) {
    if (!entry.startsWith(`${name}.`)) continue;
    const match = /\.tmp-(\d+)$/.exec(entry);
    if (!match) continue;
    const pid = Number(match[1]);
    if (pid === process.pid || processExists(pid)) continue;
    rmSync(join(directory, entry), { force: true });
    removed.push(join(directory, entry));
  }
  return removed;
}
