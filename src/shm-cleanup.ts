import * as fs from "node:fs";
import { join } from "node:path";
import { LOCK_EX, tryFlock } from "./libc.js";
import {
  DEFAULT_SHM_DIR,
  SEGMENT_PATTERN,
  ShmError,
  isCurrent,
  openExisting,
  type ShmWarning,
} from "./shm-segment.js";

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
