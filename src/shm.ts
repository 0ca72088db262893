/**
 * Image cache in POSIX shared memory: one file per image under a tmpfs
 * directory (default /dev/shm), named `ktstr-KIND-ARCH-KEY`, guarded by
 * flock(2). Writers hold LOCK_EX while they write; readers hold LOCK_SH
 * for as long as they use the segment.
 *
 * A segment contains the payload and nothing else, so its st_size is the
 * payload length: the ktstr harness maps the whole segment into guest
 * memory and appends a suffix stream right after it. `ktstr-lz4-*`
 * contains an LZ4 legacy stream, `ktstr-base-*` a cpio newc archive.
 *
 * Without a trailer, completeness comes from the write order: the writer
 * allocates the whole length (zero-filled), writes everything except the
 * first HEAD_LENGTH bytes, then those bytes, which contain the format's
 * magic. A writer killed part way leaves zeros where the magic belongs.
 * Readers also walk the format's headers (LZ4 block sizes, newc entries)
 * and expect the walk to end exactly at st_size.
 */
import * as fs from "node:fs";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import {
  LOCK_EX,
  LOCK_SH,
  LOCK_UN,
  flock,
  posixFallocate,
  tryFlock,
} from "./libc.js";
import {
  HEAD_LENGTH,
  bufferReader,
  checkSegmentFormat,
  type ReadAt,
  type SegmentKind,
} from "./segment-format.js";

export type { SegmentKind };

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

export interface StoreOptions extends ShmOptions {
  /**
   * Permission bits of a new segment: 0o600 (default), or 0o644 so that
   * processes of other users can read it. Group or other write access is
   * never allowed.
   */
  mode?: 0o600 | 0o644;
}

/** Bytes to store, or a function that builds them on a cache miss. */
export type ImageSource =
  | Uint8Array
  | (() => Uint8Array | Promise<Uint8Array>);

export interface StoreResult {
  /** True when this call wrote the segment, false when it was valid. */
  built: boolean;
  path: string;
}

export interface LoadedImage {
  /** The payload, read into memory; it stays valid after release(). */
  bytes: Buffer;
  path: string;
  /**
   * Read-only descriptor of the segment. It holds the shared lock, so a
   * caller may mmap the first `bytes.length` bytes until release().
   */
  fd: number;
  /** Drops the shared lock and closes `fd`. Later calls do nothing. */
  release(): void;
}

export interface CleanupOptions {
  shmDir?: string;
  /** Segment names (not paths) to keep. */
  keep?: string[];
  onWarning?: (warning: ShmWarning) => void;
}

export interface CleanupResult {
  /** Names of the stale segments removed. */
  removed: string[];
  /** Names left because another process holds a lock on them. */
  inUse: string[];
  /** Names left because they are not our regular files. */
  skipped: string[];
}

export const DEFAULT_SHM_DIR = "/dev/shm";
const DEFAULT_LOCK_TIMEOUT_MS = 600_000;

/** Write size per event-loop turn, so a large store does not stall it. */
const WRITE_CHUNK = 4 << 20;
/** Maximum sleep between two non-blocking lock attempts, in ms. */
const MAX_POLL_MS = 50;

const RUST_ARCH: Partial<Record<NodeJS.Architecture, string>> = {
  x64: "x86_64",
  arm64: "aarch64",
};

const KEY_PATTERN = /^[0-9a-f]{16}$/;
const ARCH_PATTERN = /^[a-z0-9_]+$/;
const SEGMENT_PATTERN = /^ktstr-(base|lz4)-[a-z0-9_]+-[0-9a-f]{16}$/;

const { O_RDONLY, O_RDWR, O_CREAT, O_EXCL, O_NOFOLLOW, O_NONBLOCK } =
  fs.constants;

const writeAsync = promisify(fs.write);

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

function hasCode(err: unknown, code: string): boolean {
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

function lockDeadline(options: ShmOptions): number {
  const timeout = options.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
  if (!Number.isFinite(timeout) || timeout < 0) {
    throw new ShmError(
      "SHM_INVALID_OPTION",
      `lockTimeoutMs ${timeout} is invalid; use a number of ms >= 0`,
    );
  }
  return Date.now() + timeout;
}

function createMode(options: StoreOptions): number {
  const mode = options.mode ?? 0o600;
  if (mode !== 0o600 && mode !== 0o644) {
    throw new ShmError(
      "SHM_INVALID_OPTION",
      `mode ${Number(mode).toString(8)} is invalid; use 0o600 or 0o644`,
    );
  }
  return mode;
}

/**
 * Throws the error storeImage() would throw for `options`, so that a
 * caller can reject bad options before any image exists.
 */
export function checkStoreOptions(options: StoreOptions): void {
  segmentName("0".repeat(16), "base", options.arch ?? rustArch());
  createMode(options);
  lockDeadline(options);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Waits for a lock by polling with LOCK_NB, because a blocking flock(2)
 * would stop the event loop and could not time out.
 */
async function waitForLock(
  fd: number,
  operation: number,
  deadline: number,
  path: string,
): Promise<void> {
  let delay = 1;
  // NOTE: polling gives no fairness, so a steady stream of overlapping
  // readers can keep an exclusive waiter out until its timeout.
  while (!tryFlock(fd, operation)) {
    const left = deadline - Date.now();
    if (left <= 0) {
      const kind = operation === LOCK_EX ? "exclusive" : "shared";
      throw new ShmError(
        "SHM_LOCK_TIMEOUT",
        `timed out waiting for a ${kind} lock on ${path}; find the ` +
          `process that holds it with: fuser -v ${path}; stop it or ` +
          `raise lockTimeoutMs`,
        path,
      );
    }
    await sleep(Math.min(delay, left));
    delay = Math.min(delay * 2, MAX_POLL_MS);
  }
}

/** True when `fd` is still the file at `path` (not unlinked or replaced). */
function isCurrent(fd: number, path: string): boolean {
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
function openExisting(path: string): number | null {
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
function createExclusive(path: string, mode: number): number | null {
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
function readExactly(
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

type Validation = { ok: true; size: number } | { ok: false; reason: string };

/**
 * Checks the segment behind `fd` by its format's headers. The caller
 * holds a lock, so only a process that ignores the lock can change it.
 */
function validate(fd: number, kind: SegmentKind): Validation {
  const size = fs.fstatSync(fd).size;
  if (size === 0) return { ok: false, reason: "it is empty" };
  const reason = checkSegmentFormat(kind, size, descriptorReader(fd));
  return reason === null ? { ok: true, size } : { ok: false, reason };
}

async function writeAll(
  fd: number,
  bytes: Uint8Array,
  position: number,
): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const end = Math.min(done + WRITE_CHUNK, bytes.length);
    const chunk = bytes.subarray(done, end);
    const { bytesWritten } = await writeAsync(
      fd,
      chunk,
      0,
      chunk.length,
      position + done,
    );
    done += bytesWritten;
  }
}

async function produce(
  source: ImageSource,
  kind: SegmentKind,
  path: string,
): Promise<Uint8Array> {
  const bytes = typeof source === "function" ? await source() : source;
  if (!(bytes instanceof Uint8Array)) {
    throw new ShmError(
      "SHM_INVALID_PAYLOAD",
      `the image producer for ${path} returned ${typeof bytes}; ` +
        `it must return a Buffer or Uint8Array`,
      path,
    );
  }
  // A payload that readers would reject would be rebuilt on every run.
  const reason =
    bytes.length === 0
      ? "it is empty"
      : checkSegmentFormat(kind, bytes.length, bufferReader(bytes));
  if (reason !== null) {
    const format = kind === "lz4" ? "an LZ4 legacy stream" : "a newc archive";
    throw new ShmError(
      "SHM_INVALID_PAYLOAD",
      `the payload for ${path} is not ${format}: ${reason}; store the ` +
        `compressed base in ktstr-lz4 and the uncompressed one in ktstr-base`,
      path,
    );
  }
  return bytes;
}

/** Maps ENOSPC from allocation or writing to SHM_NO_SPACE. */
function spaceError(err: unknown, path: string, size: number): unknown {
  if (!hasCode(err, "ENOSPC")) return err;
  return new ShmError(
    "SHM_NO_SPACE",
    `no space left to store ${size} bytes in ${path}; free space in that ` +
      `filesystem (df ${dirname(path)}) or pick a larger shmDir`,
    path,
    { cause: err },
  );
}

/**
 * Fills a segment that this process just created. Holding LOCK_EX, it
 * builds and allocates, then writes the payload from HEAD_LENGTH on and
 * its first HEAD_LENGTH bytes last, so that a segment without its magic
 * is one whose writer died. On any error it unlinks the segment before
 * the lock is released. Returns false when the segment was unlinked by
 * another process before we locked it.
 */
async function fillSegment(
  fd: number,
  path: string,
  kind: SegmentKind,
  source: ImageSource,
  deadline: number,
): Promise<boolean> {
  try {
    await waitForLock(fd, LOCK_EX, deadline, path);
    if (!isCurrent(fd, path)) return false;
    let size = 0;
    try {
      const payload = await produce(source, kind, path);
      size = payload.length;
      // Allocating first makes a full tmpfs fail here with ENOSPC before
      // any write, and leaves no hole for a reader's mapping to fault in.
      // (On tmpfs such a fault must allocate a page and raises SIGBUS when
      // it cannot.)
      posixFallocate(fd, 0, size);
      const head = Math.min(HEAD_LENGTH, size);
      await writeAll(fd, payload.subarray(head), head);
      await writeAll(fd, payload.subarray(0, head), 0);
    } catch (err) {
      fs.rmSync(path, { force: true });
      throw spaceError(err, path, size);
    }
    return true;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Checks an existing segment under LOCK_SH, and if it is invalid,
 * removes it under LOCK_EX. Returns "valid", "removed", or "retry" when
 * the name now points at another file.
 */
async function checkExisting(
  fd: number,
  path: string,
  kind: SegmentKind,
  deadline: number,
  options: ShmOptions,
): Promise<"valid" | "removed" | "retry"> {
  try {
    await waitForLock(fd, LOCK_SH, deadline, path);
    if (!isCurrent(fd, path)) return "retry";
    if (validate(fd, kind).ok) return "valid";
    // flock(2) converts a lock non-atomically, so revalidate after.
    flock(fd, LOCK_UN);
    await waitForLock(fd, LOCK_EX, deadline, path);
    if (!isCurrent(fd, path)) return "retry";
    const check = validate(fd, kind);
    if (check.ok) return "valid";
    options.onWarning?.({
      code: "SHM_SEGMENT_INVALID",
      message: `${path} is incomplete because ${check.reason}; rebuilding it`,
      path,
    });
    fs.unlinkSync(path);
    return "removed";
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Stores an image unless a valid segment for it exists. Among concurrent
 * callers with the same key, the one whose O_CREAT|O_EXCL create wins
 * calls `source` (when a function); the others wait for its lock and
 * return `built: false`.
 */
export async function storeImage(
  key: string,
  kind: SegmentKind,
  source: ImageSource,
  options: StoreOptions = {},
): Promise<StoreResult> {
  const path = segmentPath(key, kind, options);
  const mode = createMode(options);
  const deadline = lockDeadline(options);
  for (;;) {
    const created = createExclusive(path, mode);
    if (created !== null) {
      if (await fillSegment(created, path, kind, source, deadline)) {
        return { built: true, path };
      }
      continue;
    }
    const fd = openExisting(path);
    if (fd === null) continue;
    const state = await checkExisting(fd, path, kind, deadline, options);
    if (state === "valid") return { built: false, path };
  }
}

/**
 * Opens a stored image and reads its payload under a shared lock that
 * stays held until `release()`. Returns null on a miss: no segment, or
 * one that is incomplete (a crashed or still-starting writer), which a
 * later storeImage() rebuilds.
 */
export async function loadImage(
  key: string,
  kind: SegmentKind,
  options: ShmOptions = {},
): Promise<LoadedImage | null> {
  const path = segmentPath(key, kind, options);
  const deadline = lockDeadline(options);
  for (;;) {
    const fd = openExisting(path);
    if (fd === null) return null;
    let check: Validation | undefined;
    let payload: Buffer | undefined;
    try {
      await waitForLock(fd, LOCK_SH, deadline, path);
      if (isCurrent(fd, path)) check = validate(fd, kind);
      // A short read means that a process which ignores the lock
      // truncated the segment; like any incomplete segment it is a miss.
      if (check?.ok) payload = readExactly(fd, check.size, 0) ?? undefined;
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
    if (payload !== undefined) return lockedImage(fd, path, payload);
    fs.closeSync(fd);
    if (check !== undefined) return null;
  }
}

function lockedImage(fd: number, path: string, bytes: Buffer): LoadedImage {
  let open = true;
  return {
    bytes,
    path,
    fd,
    release() {
      if (!open) return;
      open = false;
      // Closing the last descriptor also drops the lock.
      fs.closeSync(fd);
    },
  };
}

/**
 * Removes segments of our name pattern (`ktstr-base-*`, `ktstr-lz4-*`)
 * that are not in `keep`, each only when a non-blocking exclusive lock
 * succeeds, so segments in use by other processes stay.
 */
export function cleanupStale(options: CleanupOptions = {}): CleanupResult {
  const dir = options.shmDir ?? DEFAULT_SHM_DIR;
  const keep = new Set(options.keep ?? []);
  const result: CleanupResult = { removed: [], inUse: [], skipped: [] };
  for (const name of fs.readdirSync(dir).sort()) {
    if (!SEGMENT_PATTERN.test(name) || keep.has(name)) continue;
    const path = join(dir, name);
    let fd: number | null;
    try {
      fd = openExisting(path);
    } catch (err) {
      if (!(err instanceof ShmError)) throw err;
      result.skipped.push(name);
      options.onWarning?.({ code: "SHM_STALE_SKIPPED", message: err.message, path });
      continue;
    }
    if (fd === null) continue;
    try {
      if (!tryFlock(fd, LOCK_EX)) {
        result.inUse.push(name);
      } else if (isCurrent(fd, path)) {
        fs.unlinkSync(path);
        result.removed.push(name);
      }
    } finally {
      fs.closeSync(fd);
    }
  }
  return result;
}
