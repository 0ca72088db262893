/** Waiting for flock(2) locks with a deadline. */
import { LOCK_EX, tryFlock } from "./libc.js";
import { ShmError, type ShmOptions } from "./shm-segment.js";

const DEFAULT_LOCK_TIMEOUT_MS = 600_000;
/** Maximum sleep between two non-blocking lock attempts, in ms. */
const MAX_POLL_MS = 50;

/** Returns the Date.now() deadline for all lock waits of one call. */
export function lockDeadline(options: ShmOptions): number {
  const timeout = options.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
  if (!Number.isFinite(timeout) || timeout < 0) {
    throw new ShmError(
      "SHM_INVALID_OPTION",
      `lockTimeoutMs ${timeout} is invalid; use a number of ms >= 0`,
    );
  }
  return Date.now() + timeout;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Waits for a lock by polling with LOCK_NB, because a blocking flock(2)
 * would stop the event loop and could not time out.
 */
export async function waitForLock(
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
