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
import { dirname } from "node:path";
import { promisify } from "node:util";
import {
  LOCK_EX,
  LOCK_SH,
  LOCK_UN,
  flock,
  posixFallocate,
} from "./libc.js";
import {
  HEAD_LENGTH,
  bufferReader,
  checkSegmentFormat,
  type SegmentKind,
} from "./segment-format.js";
import { lockDeadline, waitForLock } from "./shm-lock.js";
import {
  createExclusive,
  hasCode,
  isCurrent,
  openExisting,
  readExactly,
  rustArch,
  segmentName,
  segmentPath,
  ShmError,
  validate,
  type ShmOptions,
  type Validation,
} from "./shm-segment.js";

export type { SegmentKind };
export {
  cleanupStale,
  type CleanupOptions,
  type CleanupResult,
} from "./shm-cleanup.js";
export {
  DEFAULT_SHM_DIR,
  ShmError,
  rustArch,
  segmentName,
  segmentPath,
  type ShmOptions,
  type ShmWarning,
} from "./shm-segment.js";

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

/** Write size per event-loop turn, so a large store does not stall it. */
const WRITE_CHUNK = 4 << 20;

const writeAsync = promisify(fs.write);

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
