import { readFileSync } from "node:fs";

/*
 * Reader for glibc's /etc/ld.so.cache, as elf/dl-cache.c (glibc 2.36)
 * reads it. Three layouts exist: the new format alone
 * ("glibc-ld.so.cache1.1" at offset 0), the old libc5 format alone
 * ("ld.so-1.7.0"), and the old format followed by the new one at the
 * next 8-byte boundary ("compat", `ldconfig -c compat`).
 */

export const CACHEMAGIC = "ld.so-1.7.0";
export const CACHEMAGIC_VERSION_NEW = "glibc-ld.so.cache1.1";

/** struct cache_file: 11 magic bytes, padding to 12, nlibs. */
const OLD_HEADER_SIZE = 16;
/** struct file_entry: flags, key, value (three 32-bit words). */
const OLD_ENTRY_SIZE = 12;
/** struct cache_file_new: magic, version, nlibs, len_strings, ... */
const NEW_HEADER_SIZE = 48;
/** struct file_entry_new: flags, key, value, osversion, hwcap (u64). */
const NEW_ENTRY_SIZE = 24;
/** __alignof__ (struct cache_file_new), because of its 64-bit hwcap. */
const NEW_HEADER_ALIGN = 8;

/** Bits of cache entry flags, from glibc sysdeps/generic/ldconfig.h. */
export const FLAG_ELF = 0x0001;
export const FLAG_ELF_LIBC6 = 0x0003;
export const FLAG_X8664_LIB64 = 0x0300;
export const FLAG_S390_LIB64 = 0x0400;
export const FLAG_POWERPC_LIB64 = 0x0500;
export const FLAG_X8664_LIBX32 = 0x0800;
export const FLAG_ARM_LIBHF = 0x0900;
export const FLAG_AARCH64_LIB64 = 0x0a00;
export const FLAG_ARM_LIBSF = 0x0b00;
export const FLAG_RISCV_FLOAT_ABI_DOUBLE = 0x1000;

/** hwcap bit 62 marks an entry from a glibc-hwcaps subdirectory. */
const DL_CACHE_HWCAP_EXTENSION = 1n << 62n;
/** hwcap bit 63 is the legacy "tls" capability, which every CPU has. */
const HWCAP_TLS = 1n << 63n;

export interface LdCacheEntry {
  flags: number;
  /** Library name (the soname ldconfig found). */
  key: string;
  /** Absolute path of the library. */
  value: string;
  /** Zero for a baseline library; see DL_CACHE_HWCAP_EXTENSION. */
  hwcap: bigint;
}

export interface LdCache {
  format: "new" | "old" | "compat" | "empty";
  /** Entries in file order: descending by _dl_cache_libcmp of `key`. */
  entries: LdCacheEntry[];
  /** Whether entries come from the new-format section (they carry hwcap). */
  hasHwcap: boolean;
}

export interface LdCacheWarning {
  code: "LDCACHE_MALFORMED";
  message: string;
  path?: string;
}

export const EMPTY_CACHE: LdCache = {
  format: "empty",
  entries: [],
  hasHwcap: false,
};

class CacheFormatError extends Error {}

/** Maximum length of a key or value with its NUL, as PATH_MAX. */
const MAX_STRING = 4096;
/**
 * Limit on the characters decoded from one cache, as a multiple of its
 * size. ldconfig stores each value once and a key at most shares its
 * value's bytes, so a cache it wrote decodes to at most twice its size.
 * Without a limit, entries that all point at one long string would
 * decode to entries times the string's length.
 */
const MAX_DECODED_RATIO = 4;

/** Returns a reader of the NUL-terminated strings of one cache. */
function stringReader(buf: Buffer) {
  const budget = MAX_DECODED_RATIO * buf.length;
  let decoded = 0;
  return (tableStart: number, offset: number): string => {
    const start = tableStart + offset;
    if (offset < 0 || start >= buf.length) {
      throw new CacheFormatError(`string offset ${offset} is past the end`);
    }
    const end = buf.indexOf(0, start);
    if (end < 0) throw new CacheFormatError(`unterminated string at ${start}`);
    if (end - start >= MAX_STRING) {
      throw new CacheFormatError(
        `string at ${start} is longer than ${MAX_STRING - 1} bytes`,
      );
    }
    decoded += end - start;
    if (decoded > budget) {
      throw new CacheFormatError(
        `strings decode to more than ${MAX_DECODED_RATIO} times the ` +
          "cache size",
      );
    }
    return buf.toString("latin1", start, end);
  };
}

function checkedCount(buf: Buffer, start: number, size: number, n: number) {
  if ((buf.length - start) / size < n) {
    throw new CacheFormatError(`${n} entries do not fit in ${buf.length} bytes`);
  }
}

/** Parses the new-format section that starts at `base`. */
function parseNew(buf: Buffer, base: number, le: boolean): LdCacheEntry[] {
  const u32 = (at: number) => (le ? buf.readUInt32LE(at) : buf.readUInt32BE(at));
  const nlibs = u32(base + 20);
  checkedCount(buf, base + NEW_HEADER_SIZE, NEW_ENTRY_SIZE, nlibs);
  const readString = stringReader(buf);
  const entries: LdCacheEntry[] = [];
  for (let i = 0; i < nlibs; i++) {
    const at = base + NEW_HEADER_SIZE + i * NEW_ENTRY_SIZE;
    const hwcap = le ? buf.readBigUInt64LE(at + 16) : buf.readBigUInt64BE(at + 16);
    // dl-cache.c: new-format string offsets count from the start of the
    // new header, not from the start of the file.
    entries.push({
      flags: le ? buf.readInt32LE(at) : buf.readInt32BE(at),
      key: readString(base, u32(at + 4)),
      value: readString(base, u32(at + 8)),
      hwcap,
    });
  }
  return entries;
}

/** Parses the old-format entries; their strings follow the entry table. */
function parseOld(buf: Buffer): LdCacheEntry[] {
  const nlibs = buf.readUInt32LE(12);
  checkedCount(buf, OLD_HEADER_SIZE - 4, OLD_ENTRY_SIZE, nlibs);
  const table = OLD_HEADER_SIZE - 4 + nlibs * OLD_ENTRY_SIZE;
  const readString = stringReader(buf);
  const entries: LdCacheEntry[] = [];
  for (let i = 0; i < nlibs; i++) {
    const at = OLD_HEADER_SIZE - 4 + i * OLD_ENTRY_SIZE;
    entries.push({
      flags: buf.readInt32LE(at),
      key: readString(table, buf.readUInt32LE(at + 4)),
      value: readString(table, buf.readUInt32LE(at + 8)),
      hwcap: 0n,
    });
  }
  return entries;
}

function startsWith(buf: Buffer, at: number, magic: string): boolean {
  return buf.toString("latin1", at, at + magic.length) === magic;
}

/**
 * Tells the byte order of a new-format header. ldconfig (glibc 2.36 on
 * this host writes 2) stores it in the low bits of the `flags` byte at
 * offset 28: 2 little, 3 big, 1 invalid, 0 unset. For 0 we take the
 * order that gives the smaller nlibs, because the other is implausible.
 */
function newFormatLittleEndian(buf: Buffer, base: number): boolean {
  const order = buf[base + 28] & 3;
  if (order === 2) return true;
  if (order === 3) return false;
  if (order === 1) throw new CacheFormatError("byte order marked invalid");
  return buf.readUInt32LE(base + 20) <= buf.readUInt32BE(base + 20);
}

function parseLayout(buf: Buffer): LdCache {
  if (buf.length > NEW_HEADER_SIZE && startsWith(buf, 0, CACHEMAGIC_VERSION_NEW)) {
    const entries = parseNew(buf, 0, newFormatLittleEndian(buf, 0));
    return { format: "new", entries, hasHwcap: true };
  }
  if (buf.length > OLD_HEADER_SIZE - 4 && startsWith(buf, 0, CACHEMAGIC)) {
    const nlibs = buf.readUInt32LE(12);
    checkedCount(buf, OLD_HEADER_SIZE - 4, OLD_ENTRY_SIZE, nlibs);
    const end = OLD_HEADER_SIZE - 4 + nlibs * OLD_ENTRY_SIZE;
    const base = Math.ceil(end / NEW_HEADER_ALIGN) * NEW_HEADER_ALIGN;
    const hasNew =
      buf.length >= base + NEW_HEADER_SIZE &&
      startsWith(buf, base, CACHEMAGIC_VERSION_NEW);
    // glibc prefers the new-format section when one follows the old one.
    if (hasNew) {
      const le = newFormatLittleEndian(buf, base);
      return { format: "compat", entries: parseNew(buf, base, le), hasHwcap: true };
    }
    return { format: "old", entries: parseOld(buf), hasHwcap: false };
  }
  throw new CacheFormatError("no ld.so.cache magic at offset 0");
}

/**
 * Parses ld.so.cache bytes. A malformed cache (bad magic, truncated
 * table, string offset past the end) is reported through `onWarning`
 * and returned as an empty cache, which is how ld.so treats it too.
 */
export function parseLdCache(
  buf: Buffer,
  onWarning?: (w: LdCacheWarning) => void,
  path?: string,
): LdCache {
  try {
    return parseLayout(buf);
  } catch (err) {
    if (!(err instanceof CacheFormatError || err instanceof RangeError)) {
      throw err;
    }
    onWarning?.({
      code: "LDCACHE_MALFORMED",
      message:
        `${path ?? "ld.so.cache"} is malformed (${err.message}); ignoring ` +
        "it. Regenerate it with ldconfig.",
      path,
    });
    return EMPTY_CACHE;
  }
}

/** Reads and parses a cache file; a missing file is an empty cache. */
export function loadLdCache(
  path: string,
  onWarning?: (w: LdCacheWarning) => void,
): LdCache {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return EMPTY_CACHE;
    throw err;
  }
  return parseLdCache(buf, onWarning, path);
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

/**
 * Compares two library names as glibc's _dl_cache_libcmp does: runs of
 * digits compare by numeric value, so "libx.so.010" equals "libx.so.10".
 */
export function cacheLibCompare(a: string, b: string): number {
  let i = 0;
  let j = 0;
  while (i < a.length) {
    const ca = a.charCodeAt(i);
    const cb = j < b.length ? b.charCodeAt(j) : 0;
    if (isDigit(ca)) {
      if (!isDigit(cb)) return 1;
      let va = 0;
      let vb = 0;
      while (i < a.length && isDigit(a.charCodeAt(i))) {
        va = va * 10 + a.charCodeAt(i++) - 0x30;
      }
      while (j < b.length && isDigit(b.charCodeAt(j))) {
        vb = vb * 10 + b.charCodeAt(j++) - 0x30;
      }
      if (va !== vb) return va - vb;
    } else if (isDigit(cb)) {
      return -1;
    } else if (ca !== cb) {
      return ca - cb;
    } else {
      i++;
      j++;
    }
  }
  return 0 - (j < b.length ? b.charCodeAt(j) : 0);
}

/** Cache entry filter of one ABI's ld.so (`_dl_cache_check_flags`). */
export interface CacheAbi {
  /** `_DL_CACHE_DEFAULT_ID`: an entry with these flags ends the search. */
  defaultId: number;
  accepts(flags: number): boolean;
}

/**
 * Whether an entry is usable as a baseline library: glibc-hwcaps entries
 * and legacy hwcap entries (other than "tls") need a CPU check that we
 * do not make, so the baseline library is always chosen instead.
 */
function isBaseline(entry: LdCacheEntry): boolean {
  if ((entry.hwcap & DL_CACHE_HWCAP_EXTENSION) !== 0n) return false;
  return (entry.hwcap & ~HWCAP_TLS) === 0n;
}

/**
 * Looks `name` up with the binary search of glibc's search_cache and
 * returns the library path, or null. Among entries of the same name it
 * takes the first one whose flags `abi` accepts, stopping early at one
 * whose flags equal the ABI's default id, as glibc does.
 */
export function lookupLdCache(
  cache: LdCache,
  name: string,
  abi: CacheAbi,
): string | null {
  const libs = cache.entries;
  let left = 0;
  let right = libs.length - 1;
  while (left <= right) {
    let middle = (left + right) >> 1;
    const cmp = cacheLibCompare(name, libs[middle].key);
    if (cmp !== 0) {
      // ldconfig sorts entries in descending _dl_cache_libcmp order.
      if (cmp < 0) left = middle + 1;
      else right = middle - 1;
      continue;
    }
    while (middle > 0 && cacheLibCompare(name, libs[middle - 1].key) === 0) {
      middle--;
    }
    let best: string | null = null;
    for (; middle < libs.length; middle++) {
      const lib = libs[middle];
      if (cacheLibCompare(name, lib.key) !== 0) break;
      if (!abi.accepts(lib.flags) || !isBaseline(lib)) continue;
      // In the new format the first acceptable baseline entry wins; in
      // the old format a later entry may still replace it.
      if (cache.hasHwcap && best !== null) break;
      best = lib.value;
      if (lib.flags === abi.defaultId) break;
    }
    return best;
  }
  return null;
}
