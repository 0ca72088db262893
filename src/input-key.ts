/**
 * The input key of an image: a 64-bit hash of everything that changes
 * the base archive's bytes, computed before anything is stripped, packed
 * or compressed. File contents enter as SHA-256 digests that a stat cache
 * keeps between runs, so a run whose inputs did not change reads no file.
 */
import { createHash } from "node:crypto";
import {
  closeSync,
  openSync,
  readSync,
  statSync,
  type BigIntStats,
} from "node:fs";
import { availableParallelism } from "node:os";
import { hashFilesInParallel } from "./hash-pool.js";
import { contentKey, newContentHash } from "./key.js";

/** A content digest together with the file identity it was taken of. */
export interface DigestEntry {
  /** st_size, st_mtime and st_ctime (ns) as decimal strings. */
  size: string;
  mtimeNs: string;
  ctimeNs: string;
  /** SHA-256 of the contents, 64 lower-case hex digits. */
  sha256: string;
}

/** Digest entries keyed by `DEV:INO` of the file. */
export type DigestEntries = Record<string, DigestEntry>;

/** One input file of the base archive, as the key covers it. */
export interface KeyFile {
  archivePath: string;
  role: string;
  /** Permission bits (st_mode & 07777). */
  mode: number;
  /** SHA-256 of the contents, or of the target for a symlink. */
  digest: string;
  symlink?: boolean;
}

/** One library or interpreter of the resolved closure. */
export interface KeyLibrary {
  /** Archive path: the canonical path without the leading `/`. */
  guestPath: string;
  hostPath: string;
  digest: string;
  /** Other archive paths, packed as symlinks. */
  aliases: string[];
}

export interface KeyInputs {
  files: KeyFile[];
  libraries: KeyLibrary[];
  /** DT_NEEDED names that were not found. */
  missing: string[];
  /** Build options that change the base's bytes, by name. */
  options: Record<string, string | number | boolean>;
}

/** Bytes read per call while hashing a file. */
const HASH_CHUNK = 8 << 20;

/**
 * A file whose ctime is this close to the moment it was hashed may be
 * written again within the same timestamp tick, which would leave its
 * size and times unchanged, so its digest is not kept. Linux stamps files
 * with a coarse clock of one timer tick (1 to 10 ms for HZ 1000 to 100).
 */
const RACY_MARGIN_NS = 100_000_000n;

/**
 * Content digests of files, reused while a file's device, inode, size,
 * mtime and ctime stay the same. A write changes the ctime even when
 * the mtime is restored afterwards, and replacing a file changes its
 * inode, so neither goes unnoticed.
 */
export class DigestCache {
  readonly #previous: DigestEntries;
  readonly #used: DigestEntries = {};
  /** Digests hashed ahead by prefetch(), with the stat taken before. */
  readonly #prefetched = new Map<string, Prefetched>();
  /** The stat each digest() call found before hashing, by path. */
  readonly #seen = new Map<string, BigIntStats>();
  #hashed = 0;

  /** Starts from the entries a previous run saved, if any. */
  constructor(previous: DigestEntries = {}) {
    this.#previous = previous;
  }

  /** Number of files this cache read and hashed. */
  get hashedFiles(): number {
    return this.#hashed;
  }

  /** Number of files that prefetch() hashed on worker threads. */
  get prefetchedFiles(): number {
    return this.#prefetched.size;
  }

  /** Entries of the files digested through this cache, to save. */
  entries(): DigestEntries {
    return { ...this.#used };
  }

  /** Returns the saved entry for a file whose identity is unchanged. */
  #cached(stat: BigIntStats): DigestEntry | undefined {
    const id = `${stat.dev}:${stat.ino}`;
    const cached = this.#previous[id] ?? this.#used[id];
    return cached !== undefined && sameIdentity(cached, stat) ? cached : undefined;
  }

  /**
   * Hashes, on worker threads, the files among `paths` that have no valid
   * cache entry and were not prefetched yet, so that the digest() calls
   * that follow find them.
   * Below PREFETCH_MIN_BYTES in all it does nothing: starting threads
   * would cost more than hashing on this thread. `stats` are the paths'
   * stats when the caller has taken them already (see statPaths()).
   */
  async prefetch(
    paths: string[],
    threads = availableParallelism(),
    stats = statPaths(paths),
  ) {
    const wanted = new Map<string, Prefetched>();
    let bytes = 0;
    for (const path of new Set(paths)) {
      const before = stats.get(path);
      // A missing file is reported by digest() when it gets there.
      if (before === undefined) continue;
      const cached = this.#cached(before) ?? this.#prefetched.get(path);
      if (cached !== undefined || !before.isFile()) continue;
      const startedNs = BigInt(Date.now()) * 1_000_000n;
      wanted.set(path, { before, startedNs, sha256: "" });
      bytes += Number(before.size);
    }
    if (wanted.size < 2 || bytes < PREFETCH_MIN_BYTES) return;
    const files = [...wanted].map(([path, p]) => ({
      path,
      size: Number(p.before.size),
    }));
    const digests = await hashFilesInParallel(files, threads);
    for (const [path, sha256] of digests) {
      this.#prefetched.set(path, { ...wanted.get(path)!, sha256 });
    }
  }

  /** Returns the SHA-256 (hex) of the file at `path`, symlinks followed. */
  digest(path: string): string {
    const before = statSync(path, { bigint: true });
    this.#seen.set(path, before);
    const id = `${before.dev}:${before.ino}`;
    const cached = this.#cached(before);
    if (cached !== undefined) {
      this.#used[id] = cached;
      return cached.sha256;
    }
    const ahead = this.#prefetched.get(path);
    let startedNs = BigInt(Date.now()) * 1_000_000n;
    let sha256: string;
    if (ahead !== undefined && sameStat(ahead.before, before)) {
      ({ startedNs, sha256 } = ahead);
    } else {
      sha256 = hashFile(path);
    }
    this.#hashed += 1;
    const after = statSync(path, { bigint: true });
    const entry = identityOf(after, sha256);
    const changed = !sameIdentity(entry, before);
    const racy = after.ctimeNs + RACY_MARGIN_NS > startedNs;
    if (!changed && !racy) this.#used[id] = entry;
    return sha256;
  }

  /**
   * Lists the files digested so far that have another stat now: files
   * written after their digest, for example while the stages read them.
   */
  changedSinceDigest(): string[] {
    const now = statPaths(this.#seen.keys());
    const changed: string[] = [];
    for (const [path, seen] of this.#seen) {
      const stat = now.get(path);
      if (stat === undefined || !sameStat(seen, stat)) changed.push(path);
    }
    return changed;
  }

  /**
   * Lists the paths of `before` that digest() found with another stat:
   * files written between that snapshot and their digest.
   */
  changedSince(before: Map<string, BigIntStats>): string[] {
    const changed: string[] = [];
    for (const [path, stat] of before) {
      const seen = this.#seen.get(path);
      if (seen !== undefined && !sameStat(seen, stat)) changed.push(path);
    }
    return changed;
  }
}

/**
 * Returns the stat of each path that exists, to compare later with
 * DigestCache.changedSince().
 */
export function statPaths(paths: Iterable<string>): Map<string, BigIntStats> {
  const stats = new Map<string, BigIntStats>();
  for (const path of paths) {
    try {
      stats.set(path, statSync(path, { bigint: true }));
    } catch {
      // digest() reports a missing file when it gets there.
    }
  }
  return stats;
}

/** A digest hashed by prefetch(), with what was known when it started. */
interface Prefetched {
  before: BigIntStats;
  startedNs: bigint;
  sha256: string;
}

/**
 * Bytes to hash below which prefetch() leaves the work to digest(); an
 * estimate of what starting two worker threads costs (about 30 ms each).
 */
const PREFETCH_MIN_BYTES = 64 << 20;

function sameStat(a: BigIntStats, b: BigIntStats): boolean {
  return (
    a.dev === b.dev &&
    a.ino === b.ino &&
    a.size === b.size &&
    a.mtimeNs === b.mtimeNs &&
    a.ctimeNs === b.ctimeNs
  );
}

function identityOf(stat: BigIntStats, sha256: string): DigestEntry {
  return {
    size: String(stat.size),
    mtimeNs: String(stat.mtimeNs),
    ctimeNs: String(stat.ctimeNs),
    sha256,
  };
}

function sameIdentity(entry: DigestEntry, stat: BigIntStats): boolean {
  return (
    entry.size === String(stat.size) &&
    entry.mtimeNs === String(stat.mtimeNs) &&
    entry.ctimeNs === String(stat.ctimeNs)
  );
}

/** Returns the SHA-256 (hex) of a file, read in 8 MiB pieces. */
export function hashFile(path: string): string {
  const hash = createHash("sha256");
  const buffer = Buffer.allocUnsafe(HASH_CHUNK);
  const fd = openSync(path, "r");
  try {
    for (;;) {
      const n = readSync(fd, buffer, 0, buffer.length, null);
      if (n === 0) break;
      hash.update(buffer.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
  return hash.digest("hex");
}

/** Returns the SHA-256 (hex) of bytes in memory. */
export function hashBytes(bytes: Uint8Array | string): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Orders by a string in code-unit order, independent of the locale. */
function byPath<T>(key: (item: T) => string) {
  return (a: T, b: T): number => {
    const [x, y] = [key(a), key(b)];
    if (x === y) return 0;
    return x < y ? -1 : 1;
  };
}

/**
 * Returns the 16-hex-digit input key of `inputs`. Files and libraries
 * enter sorted by archive path and options by name, so the order in
 * which they were listed does not matter. Host paths of the input files
 * never enter, so the same files elsewhere give the same key.
 */
export function inputKey(inputs: KeyInputs): string {
  const hash = newContentHash();
  const record = (fields: unknown[]): void => {
    hash.update(JSON.stringify(fields) + "\n");
  };
  for (const name of Object.keys(inputs.options).sort()) {
    record(["option", name, inputs.options[name]]);
  }
  const files = [...inputs.files].sort(byPath((f) => f.archivePath));
  for (const file of files) {
    const kind = file.symlink ? "symlink" : "file";
    record([kind, file.archivePath, file.role, file.mode, file.digest]);
  }
  const libraries = [...inputs.libraries].sort(byPath((l) => l.guestPath));
  for (const lib of libraries) {
    const aliases = [...lib.aliases].sort();
    record(["library", lib.guestPath, lib.hostPath, lib.digest, aliases]);
  }
  for (const name of [...new Set(inputs.missing)].sort()) {
    record(["missing", name]);
  }
  return contentKey(hash);
}
