import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";

import {
  cacheLibCompare,
  FLAG_ELF_LIBC6,
  FLAG_X8664_LIB64,
  loadLdCache,
  lookupLdCache,
  parseLdCache,
  type CacheAbi,
  type LdCacheWarning,
} from "../src/ldcache.js";
import { loaderAbiFor } from "../src/loader-abi.js";
import { EM_386, EM_X86_64, type ElfIdent } from "../src/elf.js";
import { compileC, requireTool, run, tempDir } from "./helpers/tools.js";

const { dir: T, cleanup } = tempDir("ldcache");
after(cleanup);

const ident = (bits: 32 | 64, e_machine: number): ElfIdent => ({
  bits,
  littleEndian: true,
  osabi: 0,
  e_type: 3,
  e_machine,
  e_flags: 0,
});
const X86_64 = loaderAbiFor(ident(64, EM_X86_64))?.cache as CacheAbi;
const I386 = loaderAbiFor(ident(32, EM_386))?.cache as CacheAbi;

/** Runs ldconfig on a private configuration into a private cache. */
function ldconfig(cache: string, dirs: string[], format: string) {
  const conf = `${cache}.conf`;
  writeFileSync(conf, dirs.join("\n") + "\n");
  run("ldconfig", ["-X", "-c", format, "-C", cache, "-f", conf]);
}

/** Entries that `ldconfig -p` prints for a cache: name → first path. */
function ldconfigPrint(cache: string, tag: string): Map<string, string> {
  const out = run("ldconfig", ["-p", "-C", cache]).toString();
  const map = new Map<string, string>();
  for (const m of out.matchAll(/^\s+(\S+) \(([^)]*)\) => (\S+)$/gm)) {
    const tags = m[2].split(",");
    const baseline = !m[2].includes("hwcap");
    if (baseline && tags.includes(tag) && !map.has(m[1])) map.set(m[1], m[3]);
  }
  return map;
}

before(() => {
  requireTool("gcc");
  for (const d of ["a", "b", "c"]) mkdirSync(`${T}/${d}`, { recursive: true });
  const body = "int f(void){return 0;}";
  const so = (out: string, flags: string[]) =>
    compileC(body, out, ["-shared", "-fPIC", "-Wl,-soname,libmix.so.1", ...flags]);
  so(`${T}/a/libmix.so.1`, ["-m32"]);
  so(`${T}/b/libmix.so.1`, []);
  compileC(body, `${T}/c/libonly.so.2`, ["-shared", "-fPIC", "-Wl,-soname,libonly.so.2"]);
});

describe("ld.so.cache formats", () => {
  test("host cache agrees with ldconfig -p", () => {
    const cache = loadLdCache("/etc/ld.so.cache");
    const expected = ldconfigPrint("/etc/ld.so.cache", "x86-64");
    assert.ok(expected.size > 100);
    for (const [name, path] of expected) {
      assert.equal(lookupLdCache(cache, name, X86_64), path, name);
    }
  });

  for (const format of ["new", "compat"]) {
    test(`${format} format written by ldconfig`, () => {
      const file = `${T}/${format}.cache`;
      ldconfig(file, [`${T}/a`, `${T}/b`, `${T}/c`], format);
      const warnings: LdCacheWarning[] = [];
      const cache = loadLdCache(file, (w) => warnings.push(w));
      assert.deepEqual(warnings, []);
      assert.equal(cache.format, format);
      assert.equal(lookupLdCache(cache, "libonly.so.2", X86_64), `${T}/c/libonly.so.2`);
      assert.equal(lookupLdCache(cache, "libmix.so.1", X86_64), `${T}/b/libmix.so.1`);
      assert.equal(lookupLdCache(cache, "libmix.so.1", I386), `${T}/a/libmix.so.1`);
      assert.equal(lookupLdCache(cache, "libnone.so", X86_64), null);
    });
  }
});

/** Builds a new-format cache from entries, strings after the table. */
function synthetic(entries: Array<[number, string, string, bigint]>): Buffer {
  const header = 48;
  const table = header + entries.length * 24;
  const strings: Buffer[] = [];
  let offset = table;
  const at = (s: string) => {
    const o = offset;
    strings.push(Buffer.from(s + "\0", "latin1"));
    offset += s.length + 1;
    return o;
  };
  const head = Buffer.alloc(table);
  head.write("glibc-ld.so.cache1.1", 0, "latin1");
  head.writeUInt32LE(entries.length, 20);
  head[28] = 2;
  entries.forEach(([flags, key, value, hwcap], i) => {
    const e = header + i * 24;
    head.writeInt32LE(flags, e);
    head.writeUInt32LE(at(key), e + 4);
    head.writeUInt32LE(at(value), e + 8);
    head.writeBigUInt64LE(hwcap, e + 16);
  });
  const body = Buffer.concat([head, ...strings]);
  body.writeUInt32LE(offset - table, 24);
  return body;
}

describe("entry selection", () => {
  const X64 = FLAG_X8664_LIB64 | FLAG_ELF_LIBC6;
  test("i386 entry first is skipped for x86_64", () => {
    const cache = parseLdCache(synthetic([
      [FLAG_ELF_LIBC6, "libz.so.1", "/lib32/libz.so.1", 0n],
      [X64, "libz.so.1", "/lib64/libz.so.1", 0n],
    ]));
    assert.equal(lookupLdCache(cache, "libz.so.1", X86_64), "/lib64/libz.so.1");
    assert.equal(lookupLdCache(cache, "libz.so.1", I386), "/lib32/libz.so.1");
  });
  test("glibc-hwcaps entry never beats baseline", () => {
    const cache = parseLdCache(synthetic([
      [X64, "libz.so.1", "/v3/libz.so.1", (1n << 62n) | 1n],
      [X64, "libz.so.1", "/base/libz.so.1", 0n],
    ]));
    assert.equal(lookupLdCache(cache, "libz.so.1", X86_64), "/base/libz.so.1");
  });
  test("names compare numerically like _dl_cache_libcmp", () => {
    assert.equal(cacheLibCompare("libx.so.010", "libx.so.10"), 0);
    assert.ok(cacheLibCompare("libx.so.9", "libx.so.10") < 0);
    assert.ok(cacheLibCompare("liba.so", "libb.so") < 0);
    assert.ok(cacheLibCompare("libx.so", "libx.so.1") < 0);
  });
});

describe("malformed caches", () => {
  const collect = (buf: Buffer) => {
    const warnings: LdCacheWarning[] = [];
    const cache = parseLdCache(buf, (w) => warnings.push(w), "/x/ld.so.cache");
    return { cache, warnings };
  };
  test("string offset past the end", () => {
    const buf = synthetic([[0x303, "libz.so.1", "/l/libz.so.1", 0n]]);
    buf.writeUInt32LE(1 << 30, 48 + 8);
    const { cache, warnings } = collect(buf);
    assert.equal(cache.entries.length, 0);
    assert.equal(warnings[0].code, "LDCACHE_MALFORMED");
    assert.equal(warnings[0].path, "/x/ld.so.cache");
  });
  test("nlibs larger than the file", () => {
    const buf = synthetic([[0x303, "libz.so.1", "/l/libz.so.1", 0n]]);
    buf.writeUInt32LE(0xffffffff, 20);
    assert.equal(collect(buf).warnings[0].code, "LDCACHE_MALFORMED");
  });
  test("every truncation of the host cache", () => {
    const host = readFileSync("/etc/ld.so.cache");
    const step = Math.max(1, Math.floor(host.length / 997));
    for (let n = 0; n < host.length; n += step) {
      const { cache, warnings } = collect(host.subarray(0, n));
      // A cut inside the string table is still caught as unterminated
      // or out of range, so every prefix is either empty or complete.
      assert.ok(cache.entries.length === 0 || warnings.length === 0, `${n}`);
    }
  });
  test("not a cache", () => {
    assert.equal(collect(Buffer.from("hello")).warnings.length, 1);
  });
  test("string longer than PATH_MAX", () => {
    const long = "/l/" + "x".repeat(4093);
    const { cache, warnings } = collect(
      synthetic([[0x303, "libz.so.1", long, 0n]]),
    );
    assert.equal(cache.entries.length, 0);
    assert.equal(warnings[0].code, "LDCACHE_MALFORMED");
    const fits = collect(synthetic([[0x303, "libz.so.1", long.slice(1), 0n]]));
    assert.equal(fits.cache.entries.length, 1);
  });
  test("entries sharing one long string", () => {
    // 2000 entries whose key and value all point at one 4000-byte
    // string would decode to 16 MB from 52 KB of cache.
    const buf = synthetic([[0x303, "x".repeat(4000), "y", 0n]]);
    const count = 2000;
    const table = 48 + count * 24;
    const copy = Buffer.alloc(table + buf.length - 72);
    buf.copy(copy, 0, 0, 48);
    buf.copy(copy, table, 72);
    copy.writeUInt32LE(count, 20);
    for (let i = 0; i < count; i++) {
      copy.writeInt32LE(0x303, 48 + i * 24);
      copy.writeUInt32LE(table, 48 + i * 24 + 4);
      copy.writeUInt32LE(table, 48 + i * 24 + 8);
    }
    const { cache, warnings } = collect(copy);
    assert.equal(cache.entries.length, 0);
    assert.equal(warnings[0].code, "LDCACHE_MALFORMED");
    assert.match(warnings[0].message, /times the cache size/);
  });
});
