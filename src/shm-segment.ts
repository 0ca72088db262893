/**
 * A segment's name and file: the checks that make a file in a
 * world-writable directory safe to open, and the reads that tell whether
 * a segment is complete.
 */
import * as fs from "node:fs";
import { join } from "node:path";
import {
  checkSegmentFormat,
  type ReadAt,
  type SegmentKind,
} from "./segment-format.js";

/** A problem that was handled, such as a broken segment being rebuilt. */
export interface ShmWarning {
  code: string;
  message: string;
  path: string;
}

export interface ShmOptions {
  /** Directory that contains the segments. Default `/dev/shm`. */
  shmDir?: string;
  /**
   * Target architecture as Rust names it (`x86_64`, `aarch64`). Default:
   * the host's, mapped from `process.arch`. Set it for cross builds.
   */
  arch?: string;
  /**
   * Maximum total time in milliseconds that one call waits for locks
   * held by other processes. Default 600000 (10 minutes), because a
   * reader waits for the whole of a concurrent build.
   */
  lockTimeoutMs?: number;
  /** Receives problems that were handled instead of thrown. */
  onWarning?: (warning: ShmWarning) => void;
}

export const DEFAULT_SHM_DIR = "/dev/shm";

const RUST_ARCH: Partial<Record<NodeJS.Architecture, string>> = {
  x64: "x86_64",
  arm64: "aarch64",
};

const KEY_PATTERN = /^[0-9a-f]{16}$/;
const ARCH_PATTERN = /^[a-z0-9_]+$/;
export const SEGMENT_PATTERN = /^ktstr-(base|lz4)-[a-z0-9_]+-[0-9a-f]{16}$/;

const { O_RDONLY, O_RDWR, O_CREAT, O_EXCL, O_NOFOLLOW, O_NONBLOCK } =
  fs.constants;

/** An error with a stable `code`, and the segment path when one applies. */
export class ShmError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly path?: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "ShmError";
  }
}

export function hasCode(err: unknown, code: string): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === code;
}

/** Returns the Rust name of a Node architecture (`x64` → `x86_64`). */
export function rustArch(nodeArch: string = process.arch): string {
  const arch = RUST_ARCH[nodeArch as NodeJS.Architecture];
  if (arch === undefined) {
    throw new ShmError(
      "SHM_UNKNOWN_ARCH",
      `no Rust architecture name for Node arch "${nodeArch}"; ` +
        `pass the arch option, e.g. { arch: "x86_64" }`,
    );
  }
  return arch;
}

/** Returns the segment name `ktstr-KIND-ARCH-KEY` after checking each part. */
export function segmentName(
  key: string,
  kind: SegmentKind,
  arch: string = rustArch(),
): string {
  if (!KEY_PATTERN.test(key)) {
    throw new ShmError(
      "SHM_INVALID_KEY",
      `image key "${key}" is invalid; expected 16 lower-case hex digits`,
    );
  }
  if (kind !== "base" && kind !== "lz4") {
    throw new ShmError(
      "SHM_INVALID_OPTION",
      `segment kind "${String(kind)}" is invalid; use "base" or "lz4"`,
    );
  }
  if (!ARCH_PATTERN.test(arch)) {
    throw new ShmError(
      "SHM_INVALID_OPTION",
      `arch "${arch}" is invalid; use a Rust target arch such as x86_64`,
    );
  }
  return `ktstr-${kind}-${arch}-${key}`;
}

/** Returns the path of a segment in `options.shmDir`. */
export function segmentPath(
  key: string,
  kind: SegmentKind,
  options: ShmOptions = {},
): string {
  const name = segmentName(key, kind, options.arch ?? rustArch());
  return join(options.shmDir ?? DEFAULT_SHM_DIR, name);
}

/** True when `fd` is still the file at `path` (not unlinked or replaced). */
export function isCurrent(fd: number, path: string): boolean {
  const opened = fs.fstatSync(fd, { bigint: true });
  let named: fs.BigIntStats;
  try {
    named = fs.lstatSync(path, { bigint: true });
  } catch (err) {
    if (hasCode(err, "ENOENT")) return false;
    throw err;
  }
  return opened.ino === named.ino && opened.dev === named.dev;
}

/**
 * Throws unless `stat` is a regular file of this user that no other user
 * can write, because /dev/shm is world-writable and any user can plant a
 * segment name.
 */
function checkTrusted(stat: fs.Stats, path: string): void {
  const remove = `remove it with: rm ${path}`;
  if (stat.isSymbolicLink()) {
    throw new ShmError(
      "SHM_SYMLINK",
      `${path} is a symbolic link, not a segment; ${remove}`,
      path,
    );
  }
  if (!stat.isFile()) {
    throw new ShmError(
      "SHM_NOT_REGULAR",
      `${path} is not a regular file; ${remove}`,
      path,
    );
  }
  const uid = process.getuid?.();
  if (uid !== undefined && stat.uid !== uid) {
    throw new ShmError(
      "SHM_FOREIGN_OWNER",
      `${path} is owned by uid ${stat.uid}, not by this user ` +
        `(uid ${uid}); ${remove} (as its owner or root)`,
      path,
    );
  }
  if ((stat.mode & 0o022) !== 0) {
    const mode = (stat.mode & 0o777).toString(8);
    throw new ShmError(
      "SHM_UNSAFE_MODE",
      `${path} has mode ${mode}, writable by group or others; ${remove}`,
      path,
    );
  }
}

/**
 * Opens an existing segment read-only after checking that it can be
 * trusted. Returns null when it does not exist.
 */
export function openExisting(path: string): number | null {
  let stat: fs.Stats;
  try {
    // lstat first, so nothing is opened through a symlink, FIFO or device.
    stat = fs.lstatSync(path);
  } catch (err) {
    if (hasCode(err, "ENOENT")) return null;
    throw err;
  }
  checkTrusted(stat, path);
  let fd: number;
  try {
    fd = fs.openSync(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
  } catch (err) {
    if (hasCode(err, "ENOENT")) return null;
    if (hasCode(err, "ELOOP")) checkTrusted(fs.lstatSync(path), path);
    throw err;
  }
  try {
    // The name may have been swapped between lstat and open.
    checkTrusted(fs.fstatSync(fd), path);
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
  return fd;
}

/** Creates a new segment; returns null when the name already exists. */
export function createExclusive(path: string, mode: number): number | null {
  let fd: number;
  try {
    fd = fs.openSync(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, mode);
  } catch (err) {
    if (hasCode(err, "EEXIST")) return null;
    throw err;
  }
  try {
    // open(2) applies the umask; the requested mode must hold exactly.
    fs.fchmodSync(fd, mode);
  } catch (err) {
    fs.closeSync(fd);
    fs.rmSync(path, { force: true });
    throw err;
  }
  return fd;
}

/** Reads `length` bytes at `position`; returns null at end of file. */
export function readExactly(
  fd: number,
  length: number,
  position: number,
): Buffer | null {
  const buffer = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, buffer, done, length - done, position + done);
    if (n === 0) return null;
    done += n;
  }
  return buffer;
}

/** Returns a ReadAt over a descriptor, for checkSegmentFormat(). */
function descriptorReader(fd: number): ReadAt {
  return (position, length) => readExactly(fd, length, position);
}

export type Validation = { ok: true; size: number } | { ok: false; reason: string };

/**
 * Checks the segment behind `fd` by its format's headers. The caller
 * holds a lock, so only a process that ignores the lock can change it.
 */
export function validate(fd: number, kind: SegmentKind): Validation {
  const size = fs.fstatSync(fd).size;
  if (size === 0) return { ok: false, reason: "it is empty" };
  const reason = checkSegmentFormat(kind, size, descriptorReader(fd));
  return reason === null ? { ok: true, size } : { ok: false, reason };
}
