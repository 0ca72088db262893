/**
 * The few libc calls Node lacks, bound with koffi: flock(2) and
 * posix_fallocate(3). Files are opened with `fs.openSync` and numeric
 * flags, which returns a real descriptor that these calls accept.
 */
import koffi from "koffi";
import { constants as osConstants } from "node:os";
import { getSystemErrorName } from "node:util";

/** flock(2) operations, from <sys/file.h> (the same on every Linux arch). */
export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;

const { EINTR, EWOULDBLOCK } = osConstants.errno;

/** A failed libc call, shaped like Node's own system errors. */
export interface ErrnoError extends Error {
  code: string;
  errno: number;
  syscall: string;
}

interface Bindings {
  flock: (fd: number, operation: number) => number;
  posixFallocate: (fd: number, offset: number, length: number) => number;
}

let bindings: Bindings | undefined;

function libc(): Bindings {
  if (bindings !== undefined) return bindings;
  let lib: koffi.IKoffiLib;
  try {
    lib = koffi.load("libc.so.6");
  } catch (cause) {
    // NOTE: only glibc is supported; musl names its libc differently.
    const err = new Error(
      "failed to load libc.so.6 for flock(2); gulp-initramfs requires glibc",
      { cause },
    );
    throw Object.assign(err, { code: "LIBC_UNAVAILABLE" });
  }
  bindings = {
    flock: lib.func("int flock(int fd, int operation)"),
    // The 64 suffix keeps off_t 64-bit on 32-bit targets too.
    posixFallocate: lib.func(
      "int posix_fallocate64(int fd, int64_t offset, int64_t len)",
    ),
  };
  return bindings;
}

function errnoError(syscall: string, errno: number): ErrnoError {
  // EAGAIN and EWOULDBLOCK share a number; flock(2) documents the latter.
  const code =
    syscall === "flock" && errno === EWOULDBLOCK
      ? "EWOULDBLOCK"
      : getSystemErrorName(-errno);
  const err = new Error(`${syscall} failed: ${code}`);
  return Object.assign(err, { code, errno, syscall });
}

/**
 * Applies or removes an advisory lock with flock(2), retrying on EINTR.
 * Throws an ErrnoError; with LOCK_NB a held lock gives code EWOULDBLOCK.
 * Without LOCK_NB the call blocks the whole event loop, so callers wait
 * with `tryFlock` and a timer instead.
 */
export function flock(fd: number, operation: number): void {
  const { flock: call } = libc();
  for (;;) {
    if (call(fd, operation) === 0) return;
    const errno = koffi.errno();
    if (errno !== EINTR) throw errnoError("flock", errno);
  }
}

/**
 * Tries to take a lock without blocking. Returns false when another open
 * file description holds a conflicting lock.
 */
export function tryFlock(fd: number, operation: number): boolean {
  try {
    flock(fd, operation | LOCK_NB);
    return true;
  } catch (err) {
    if ((err as ErrnoError).code === "EWOULDBLOCK") return false;
    throw err;
  }
}

/**
 * Allocates `length` bytes at `offset` so that later writes to that
 * range do not fail with ENOSPC. Throws an ErrnoError (code ENOSPC on a full filesystem).
 */
export function posixFallocate(
  fd: number,
  offset: number,
  length: number,
): void {
  const { posixFallocate: call } = libc();
  for (;;) {
    // posix_fallocate returns the error number instead of setting errno.
    // tmpfs returns EINTR when a signal arrives during a large request.
    const result = call(fd, offset, length);
    if (result === 0) return;
    if (result !== EINTR) throw errnoError("posix_fallocate", result);
  }
}
