import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { CpioWriter } from "../src/cpio.js";
import { iterateCpio, readCpio } from "../src/cpio-reader.js";
import {
  bufferSource,
  readElfBuffer,
  readElfFile,
  readHeader,
} from "../src/elf.js";
import { readSectionTable } from "../src/elf-sections.js";
import { imageEntries, verifyImageBytes } from "../src/inspect.js";
import {
  lookupLdCache,
  parseLdCache,
  type LdCacheWarning,
} from "../src/ldcache.js";
import { compressLegacy, decompressLegacy } from "../src/lz4.js";
import { Resolver, type ResolveWarning } from "../src/resolve.js";
import { stripDebugBuffer, type StripWarning } from "../src/strip.js";
import { compileC, tempDir } from "./helpers/tools.js";

/*
 * Hostile input for every reader: valid seeds from the real writers and
 * tools, mutated by a seeded PRNG so that a failure repeats. Each reader
 * must return, or throw an error whose `code` is one the README lists.
 */

const CPIO_READ_CODES = [
  "CPIO_BAD_MAGIC",
  "CPIO_BAD_HEX",
  "CPIO_BAD_NAMESIZE",
  "CPIO_TRUNCATED",
];
const LZ4_DECODE_CODES = [
  "LZ4_BAD_MAGIC",
  "LZ4_TRUNCATED",
  "LZ4_BAD_BLOCK_SIZE",
  "LZ4_BLOCK_TOO_LARGE",
  "LZ4_CORRUPT_BLOCK",
  "LZ4_OUTPUT_TOO_LARGE",
];
const IMAGE_CODES = [
  "IMAGE_UNKNOWN_FORMAT",
  ...LZ4_DECODE_CODES,
  ...CPIO_READ_CODES,
];
const STRIP_CODES = [
  "STRIP_TRUNCATED",
  "STRIP_MALFORMED",
  "STRIP_OVERLAP",
  "STRIP_SEGMENT_LAYOUT",
  "STRIP_UNSUPPORTED",
  "STRIP_SIGNED_MODULE",
];

/** mulberry32: a small seeded PRNG, so every run mutates the same bytes. */
function prng(seed: number) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  const int = (n: number) => Math.floor(next() * n);
  return { next, int };
}
type Prng = ReturnType<typeof prng>;

/** Values that break length and offset checks most often. */
const EDGE_U32 = [
  0, 1, 2, 3, 4, 7, 8, 0x7f, 0x80, 0xff, 0x100, 0xfff, 0x1000, 0xffff,
  0x10000, 0x7fffffff, 0x80000000, 0xfffffff0, 0xfffffffe, 0xffffffff,
];

/**
 * Returns a copy of `seed` with one to four random edits: a byte set, a
 * bit flipped, an edge-case 32-bit or 64-bit value written, a range
 * zeroed, or the copy truncated. `focus` limits edits to one region.
 */
function mutate(
  seed: Buffer,
  rand: Prng,
  focus: [number, number] = [0, seed.length],
): Buffer {
  let out = Buffer.from(seed);
  const edits = 1 + rand.int(4);
  for (let e = 0; e < edits; e++) {
    const span = Math.max(1, Math.min(out.length, focus[1]) - focus[0]);
    const at = Math.min(out.length - 1, focus[0] + rand.int(span));
    if (at < 0) break;
    switch (rand.int(6)) {
      case 0:
        out[at] = rand.int(256);
        break;
      case 1:
        out[at] ^= 1 << rand.int(8);
        break;
      case 2:
        if (at + 4 <= out.length) {
          out.writeUInt32LE(EDGE_U32[rand.int(EDGE_U32.length)], at);
        }
        break;
      case 3:
        if (at + 8 <= out.length) {
          const high = rand.int(2) ? 0 : EDGE_U32[rand.int(EDGE_U32.length)];
          out.writeUInt32LE(EDGE_U32[rand.int(EDGE_U32.length)], at);
          out.writeUInt32LE(high, at + 4);
        }
        break;
      case 4:
        out.fill(0, at, Math.min(out.length, at + 1 + rand.int(64)));
        break;
      case 5:
        out = out.subarray(0, at);
        break;
    }
  }
  return out;
}

/**
 * Runs `fn` and returns the code of the error it threw, or null. Fails
 * when the error has no code or one outside `codes`, and names the input
 * so the failure can be repeated.
 */
function expectCoded(
  what: string,
  codes: readonly string[],
  fn: () => unknown,
): string | null {
  try {
    fn();
    return null;
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (typeof code !== "string" || !codes.includes(code)) {
      assert.fail(
        `${what}: expected success or one of ${codes.join(", ")}, got ` +
          `${(err as Error).name} ${String(code)}: ${(err as Error).message}`,
      );
    }
    return code;
  }
}

const tmp = tempDir("fuzz");
after(tmp.cleanup);

async function sampleArchive(): Promise<Buffer> {
  const writer = new CpioWriter({ mtime: 7 });
  writer.addDirectory("d");
  writer.addFile("d/f", { data: Buffer.from("hello world\n"), mode: 0o644 });
  writer.addFile("d/empty", { data: Buffer.alloc(0) });
  writer.addSymlink("l", "d/f");
  writer.addFile("odd", { data: Buffer.from("abc") });
  writer.finish();
  return writer.toBuffer();
}

describe("cpio reader fuzz", () => {
  let archive: Buffer;
  before(async () => {
    archive = await sampleArchive();
  });

  /** Reads every record and checks that no entry reaches past the input. */
  function readAll(input: Buffer): void {
    for (const entry of iterateCpio(input)) {
      assert.ok(entry.data.length <= input.length);
      assert.ok(entry.offset + entry.data.length <= input.length);
    }
    readCpio(input);
  }

  test("truncation at every offset", () => {
    for (let n = 0; n < archive.length; n++) {
      expectCoded(`truncated to ${n}`, CPIO_READ_CODES, () =>
        readAll(archive.subarray(0, n)),
      );
    }
  });

  test("every header field set to edge values", () => {
    const fieldValues = [
      "00000000", "FFFFFFFF", "7FFFFFFF", "00001001", "0000FFFF",
      "zzzzzzzz", "-0000001", " 0000001", "0x000001", "00000g00",
    ];
    const offsets = [...iterateCpio(archive)].map((e) => e.offset);
    for (const start of offsets) {
      for (let field = 0; field < 14; field++) {
        for (const value of fieldValues) {
          const input = Buffer.from(archive);
          input.write(value, start + 6 + field * 8, "latin1");
          expectCoded(
            `field ${field} of record at ${start} set to ${value}`,
            CPIO_READ_CODES,
            () => readAll(input),
          );
        }
      }
    }
  });

  test("random byte mutations", () => {
    const rand = prng(0xc0ffee);
    for (let i = 0; i < 3000; i++) {
      const input = mutate(archive, rand);
      expectCoded(`mutation ${i}`, CPIO_READ_CODES, () => readAll(input));
    }
  });

  test("zero padding in odd places", () => {
    const offsets = [...iterateCpio(archive)].map((e) => e.offset);
    for (const at of [0, ...offsets, archive.length]) {
      for (const pad of [1, 2, 3, 4, 8, 512]) {
        const input = Buffer.concat([
          archive.subarray(0, at),
          Buffer.alloc(pad),
          archive.subarray(at),
        ]);
        expectCoded(`${pad} zeros at ${at}`, CPIO_READ_CODES, () =>
          readAll(input),
        );
      }
    }
  });

  test("many concatenated trailers", () => {
    const trailer = archive.subarray(
      [...iterateCpio(archive)].at(-1)!.offset,
    );
    const input = Buffer.concat(Array(2000).fill(trailer));
    const records = [...iterateCpio(input)];
    assert.equal(records.length, 2000);
    assert.ok(records.every((r) => r.trailer));
    assert.deepEqual(readCpio(input), []);
  });
});

/** Builds a block of one literal and a match of `matchLength` bytes. */
function longMatchBlock(matchLength: number): Buffer {
  const bytes = [0x1f, 0x41, 0x01, 0x00];
  let rest = matchLength - 4 - 15;
  while (rest >= 255) {
    bytes.push(255);
    rest -= 255;
  }
  bytes.push(rest);
  // Five closing literals, as the end-of-block rules require.
  bytes.push(0x50, 0x42, 0x42, 0x42, 0x42, 0x42);
  return Buffer.from(bytes);
}

function legacyStream(...blocks: Buffer[]): Buffer {
  const parts: Buffer[] = [Buffer.from([0x02, 0x21, 0x4c, 0x18])];
  for (const block of blocks) {
    const size = Buffer.alloc(4);
    size.writeUInt32LE(block.length);
    parts.push(size, block);
  }
  return Buffer.concat(parts);
}

describe("LZ4 legacy decoder fuzz", () => {
  let stream: Buffer;
  let original: Buffer;
  before(async () => {
    const rand = prng(7);
    const noise = Buffer.alloc(3000);
    for (let i = 0; i < noise.length; i++) noise[i] = rand.int(256);
    original = Buffer.concat([
      Buffer.from("abcabcabcabc".repeat(200)),
      noise,
      Buffer.alloc(5000, 0x61),
    ]);
    stream = await compressLegacy(original, { level: 1 });
  });

  /** Decodes and checks the output stays within the 255:1 LZ4 bound. */
  function decode(input: Buffer): void {
    const out = decompressLegacy(input);
    assert.ok(out.length <= input.length * 255);
  }

  test("seed decodes to the original", () => {
    assert.deepEqual(decompressLegacy(stream), original);
  });

  test("truncation at every offset", () => {
    for (let n = 0; n < stream.length; n++) {
      expectCoded(`truncated to ${n}`, LZ4_DECODE_CODES, () =>
        decode(stream.subarray(0, n)),
      );
    }
  });

  test("random byte mutations", () => {
    const rand = prng(0x1234);
    for (let i = 0; i < 3000; i++) {
      const input = mutate(stream, rand);
      expectCoded(`mutation ${i}`, LZ4_DECODE_CODES, () => decode(input));
    }
  });

  test("edge block sizes", () => {
    for (const size of EDGE_U32) {
      const input = Buffer.from(stream);
      input.writeUInt32LE(size, 4);
      expectCoded(`block size ${size}`, LZ4_DECODE_CODES, () => decode(input));
    }
  });

  test("match offset before output start", () => {
    // One literal, then a match 2 bytes back: before the first byte.
    const block = Buffer.from([0x10, 0x41, 0x02, 0x00, 0x50, 1, 2, 3, 4, 5]);
    const code = expectCoded("offset 2 at output 1", LZ4_DECODE_CODES, () =>
      decode(legacyStream(block)),
    );
    assert.equal(code, "LZ4_CORRUPT_BLOCK");
  });

  test("literal length past block end", () => {
    const block = Buffer.from([0xf0, 0xff, 0xff, 0x10, 0x41]);
    const code = expectCoded("long literal run", LZ4_DECODE_CODES, () =>
      decode(legacyStream(block)),
    );
    assert.equal(code, "LZ4_CORRUPT_BLOCK");
  });

  test("block over 8 MiB of output", () => {
    const block = longMatchBlock((8 << 20) + 64);
    const code = expectCoded("8 MiB + 64 match", LZ4_DECODE_CODES, () =>
      decode(legacyStream(block)),
    );
    assert.equal(code, "LZ4_BLOCK_TOO_LARGE");
  });

  test("many magics between blocks", () => {
    const magics = Buffer.alloc(4 * 5000);
    for (let at = 0; at < magics.length; at += 4) {
      magics.writeUInt32LE(0x184c2102, at);
    }
    const input = Buffer.concat([magics, stream.subarray(4), magics]);
    assert.deepEqual(decompressLegacy(input), original);
  });
});

/** Offsets of the ELF64 header fields that readers trust most. */
const ELF64_HEADER_FIELDS = [
  { name: "e_phoff", at: 32, size: 8 },
  { name: "e_shoff", at: 40, size: 8 },
  { name: "e_ehsize", at: 52, size: 2 },
  { name: "e_phentsize", at: 54, size: 2 },
  { name: "e_phnum", at: 56, size: 2 },
  { name: "e_shentsize", at: 58, size: 2 },
  { name: "e_shnum", at: 60, size: 2 },
  { name: "e_shstrndx", at: 62, size: 2 },
];
const FIELD_VALUES = [0, 1, 0x38, 0x40, 0x7fff, 0xff00, 0xffff, 0xffffffff];

function writeField(b: Buffer, at: number, size: number, value: number) {
  if (size === 2) b.writeUInt16LE(value & 0xffff, at);
  else if (size === 4) b.writeUInt32LE(value >>> 0, at);
  else b.writeBigUInt64LE(BigInt(value), at);
}

interface Elf64Layout {
  phoff: number;
  phnum: number;
  shoff: number;
  shnum: number;
  /** File range of PT_DYNAMIC. */
  dynamic: [number, number];
}

function elf64Layout(b: Buffer): Elf64Layout {
  const phoff = Number(b.readBigUInt64LE(32));
  const phnum = b.readUInt16LE(56);
  let dynamic: [number, number] = [0, 0];
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * 56;
    if (b.readUInt32LE(at) === 2) {
      const offset = Number(b.readBigUInt64LE(at + 8));
      dynamic = [offset, offset + Number(b.readBigUInt64LE(at + 32))];
    }
  }
  return {
    phoff,
    phnum,
    shoff: Number(b.readBigUInt64LE(40)),
    shnum: b.readUInt16LE(60),
    dynamic,
  };
}

/**
 * Runs every ELF reader on `input`. The ELF readers may only throw
 * ELF_MALFORMED; stripping must never throw and either returns the input
 * unchanged (with a STRIP_* warning when the file looked like ELF) or a
 * stripped file whose header and sections parse again.
 */
function readElfAllWays(what: string, input: Buffer): void {
  expectCoded(`${what} readElfBuffer`, ["ELF_MALFORMED"], () =>
    readElfBuffer(input),
  );
  expectCoded(`${what} readSectionTable`, ["ELF_MALFORMED"], () => {
    const source = bufferSource(input);
    readSectionTable(source, readHeader(source));
  });
  const warnings: StripWarning[] = [];
  let result: ReturnType<typeof stripDebugBuffer> | undefined;
  try {
    result = stripDebugBuffer(input, { onWarning: (w) => warnings.push(w) });
  } catch (err) {
    assert.fail(`${what} stripDebugBuffer threw: ${(err as Error).stack}`);
  }
  for (const w of warnings) {
    assert.ok(STRIP_CODES.includes(w.code), `${what}: warning ${w.code}`);
  }
  if (!result.stripped) {
    assert.equal(result.data, input, `${what}: unchanged data is the input`);
    return;
  }
  assert.equal(warnings.length, 0, `${what}: stripped with a warning`);
  const source = bufferSource(result.data);
  assert.doesNotThrow(
    () => readSectionTable(source, readHeader(source)),
    `${what}: stripped output has a readable section table`,
  );
}

describe("ELF reader and strip fuzz", () => {
  const dir = join(tmp.dir, "elf");
  let binary: Buffer;
  let library: Buffer;
  let layout: Elf64Layout;
  before(() => {
    mkdirSync(dir);
    const lib = compileC(
      "int helper(int x) { return x * 3; }\n",
      join(dir, "libhelper.so"),
      ["-shared", "-fPIC", "-g", "-Wl,-soname,libhelper.so"],
    );
    const exe = compileC(
      "int helper(int);\nint main(void) { return helper(1); }\n",
      join(dir, "main"),
      ["-g", `-Wl,--disable-new-dtags,-rpath,${dir}`],
      [`-L${dir}`, "-lhelper"],
    );
    binary = readFileSync(exe);
    library = readFileSync(lib);
    layout = elf64Layout(binary);
  });

  test("seeds parse and strip", () => {
    const info = readElfBuffer(binary);
    assert.deepEqual(info?.needed.includes("libhelper.so"), true);
    assert.equal(stripDebugBuffer(binary).stripped, true);
    assert.equal(stripDebugBuffer(library).stripped, true);
  });

  test("header fields set to edge values", () => {
    for (const field of ELF64_HEADER_FIELDS) {
      for (const value of FIELD_VALUES) {
        const input = Buffer.from(binary);
        writeField(input, field.at, field.size, value);
        readElfAllWays(`${field.name} = ${value}`, input);
      }
    }
  });

  test("truncation at every 64th offset", () => {
    for (let n = 0; n < binary.length; n += 64) {
      readElfAllWays(`truncated to ${n}`, binary.subarray(0, n));
    }
  });

  test("random mutations of program headers", () => {
    const rand = prng(0xe1f);
    const end = layout.phoff + layout.phnum * 56;
    for (let i = 0; i < 1500; i++) {
      const input = mutate(binary, rand, [layout.phoff, end]);
      readElfAllWays(`phdr mutation ${i}`, input);
    }
  });

  test("random mutations of the dynamic section", () => {
    const rand = prng(0xd1);
    for (let i = 0; i < 1500; i++) {
      const input = mutate(binary, rand, layout.dynamic);
      readElfAllWays(`dynamic mutation ${i}`, input);
    }
  });

  test("random mutations of section headers", () => {
    const rand = prng(0x5ec);
    const sh = elf64Layout(library);
    const end = sh.shoff + sh.shnum * 64;
    for (let i = 0; i < 1500; i++) {
      const input = mutate(library, rand, [sh.shoff, end]);
      readElfAllWays(`shdr mutation ${i}`, input);
    }
  });

  test("random mutations anywhere", () => {
    const rand = prng(0xa11);
    for (let i = 0; i < 1000; i++) {
      const input = mutate(library, rand);
      readElfAllWays(`mutation ${i}`, input);
    }
  });

  test("every section header field set to edge values", () => {
    const sh = elf64Layout(library);
    // sh_name, sh_type, sh_flags, sh_offset, sh_size, sh_link, sh_info,
    // sh_addralign, sh_entsize, as offsets and sizes in Elf64_Shdr.
    const fields = [
      [0, 4], [4, 4], [8, 8], [24, 8], [32, 8], [40, 4], [44, 4],
      [48, 8], [56, 8],
    ];
    for (let i = 0; i < sh.shnum; i++) {
      for (const [at, size] of fields) {
        for (const value of FIELD_VALUES) {
          const input = Buffer.from(library);
          writeField(input, sh.shoff + i * 64 + at, size, value);
          readElfAllWays(`section ${i} field +${at} = ${value}`, input);
        }
      }
    }
  });

  test("PT_DYNAMIC pointing anywhere", () => {
    const dynamicIndex = [...Array(layout.phnum).keys()].find(
      (i) => binary.readUInt32LE(layout.phoff + i * 56) === 2,
    )!;
    const at = layout.phoff + dynamicIndex * 56;
    for (let offset = 0; offset < binary.length + 64; offset += 8) {
      const input = Buffer.from(binary);
      input.writeBigUInt64LE(BigInt(offset), at + 8);
      readElfAllWays(`PT_DYNAMIC at ${offset}`, input);
    }
    for (const size of FIELD_VALUES) {
      const input = Buffer.from(binary);
      input.writeBigUInt64LE(BigInt(size), at + 32);
      readElfAllWays(`PT_DYNAMIC p_filesz ${size}`, input);
    }
  });

  test("dynamic entry values set to edge values", () => {
    const [start, end] = layout.dynamic;
    for (let entry = start; entry + 16 <= end; entry += 16) {
      for (const value of [...FIELD_VALUES, 2 ** 53, 2 ** 62]) {
        const input = Buffer.from(binary);
        input.writeBigUInt64LE(BigInt(value), entry + 8);
        readElfAllWays(`d_val at ${entry} = ${value}`, input);
      }
      // Every entry DT_NEEDED pointing at the same unterminated bytes.
      const input = Buffer.from(binary);
      input.writeBigUInt64LE(1n, entry);
      readElfAllWays(`DT_NEEDED at ${entry}`, input);
    }
  });

  test("readElfFile on mutated files", () => {
    const rand = prng(0xf11e);
    const path = join(dir, "mutant");
    for (let i = 0; i < 200; i++) {
      const input = mutate(binary, rand, [0, layout.dynamic[1]]);
      writeFileSync(path, input);
      expectCoded(`file mutation ${i}`, ["ELF_MALFORMED"], () =>
        readElfFile(path),
      );
    }
  });
});

/** Looks a few names up, so a parsed cache is also walked. */
const CACHE_ABI = { defaultId: 0x303, accepts: () => true };

describe("ld.so.cache reader fuzz", () => {
  const seed = readFileSync("/etc/ld.so.cache");

  /** Parses `input`; the parser may warn but never throw. */
  function parseQuietly(what: string, input: Buffer): LdCacheWarning[] {
    const warnings: LdCacheWarning[] = [];
    let cache: ReturnType<typeof parseLdCache> | undefined;
    try {
      cache = parseLdCache(input, (w) => warnings.push(w));
    } catch (err) {
      assert.fail(`${what}: parseLdCache threw ${(err as Error).stack}`);
    }
    for (const w of warnings) assert.equal(w.code, "LDCACHE_MALFORMED");
    for (const name of ["libc.so.6", "libm.so.6", "x"]) {
      lookupLdCache(cache, name, CACHE_ABI);
    }
    return warnings;
  }

  test("seed parses without warnings", () => {
    assert.deepEqual(parseQuietly("seed", seed), []);
  });

  test("truncation at every 16th offset", () => {
    for (let n = 0; n < seed.length; n += 16) {
      parseQuietly(`truncated to ${n}`, seed.subarray(0, n));
    }
  });

  test("random mutations of header and entries", () => {
    const rand = prng(0x1d50);
    for (let i = 0; i < 1500; i++) {
      parseQuietly(`mutation ${i}`, mutate(seed, rand, [0, 4096]));
    }
  });

  test("random mutations anywhere", () => {
    const rand = prng(0x1d51);
    for (let i = 0; i < 500; i++) {
      parseQuietly(`mutation ${i}`, mutate(seed, rand));
    }
  });
});

describe("image reader fuzz", () => {
  let image: Buffer;
  let archive: Buffer;
  before(async () => {
    const writer = new CpioWriter();
    writer.addDirectory("bin");
    writer.addFile("bin/true", { data: readFileSync("/bin/true"), mode: 0o755 });
    writer.addSymlink("bin/loop1", "loop2");
    writer.addSymlink("bin/loop2", "loop1");
    writer.addFile("init", { data: Buffer.from("#!/bin/sh\n"), mode: 0o755 });
    writer.finish();
    archive = await writer.toBuffer();
    image = await compressLegacy(archive, { level: 1 });
  });

  test("garbage is rejected with a code", () => {
    const rand = prng(0x9a9);
    for (let i = 0; i < 500; i++) {
      const garbage = Buffer.alloc(rand.int(300));
      for (let j = 0; j < garbage.length; j++) garbage[j] = rand.int(256);
      // Half of the inputs start like an image, to reach the decoders.
      if (i % 2 === 0 && garbage.length >= 6) {
        const magic = i % 4 === 0 ? "070701" : "\x02\x21\x4c\x18";
        garbage.write(magic, 0, "latin1");
      }
      expectCoded(`garbage ${i}`, IMAGE_CODES, () => imageEntries(garbage));
    }
  });

  test("mutated images list or fail with a code", () => {
    const rand = prng(0x1a6e);
    for (let i = 0; i < 1000; i++) {
      const input = mutate(i % 2 ? image : archive, rand);
      expectCoded(`mutation ${i}`, IMAGE_CODES, () => imageEntries(input));
    }
  });

  test("verify of mutated images", () => {
    const rand = prng(0x7e51);
    for (let i = 0; i < 150; i++) {
      const input = mutate(archive, rand);
      expectCoded(`verify mutation ${i}`, IMAGE_CODES, () =>
        verifyImageBytes(input),
      );
    }
  });
});

describe("image tree fuzz", () => {
  /** Each archive path with the entries that may stand at it. */
  const CHOICES: Array<[string, Array<(w: CpioWriter) => void>]> = [
    ["bin", [
      (w) => w.addDirectory("bin"),
      (w) => w.addSymlink("bin", "/nowhere"),
      (w) => w.addSymlink("bin", "bin"),
      (w) => w.addFile("bin", { data: Buffer.from("x") }),
    ]],
    ["bin/true", [
      (w) => w.addFile("bin/true", { data: readFileSync("/bin/true") }),
      (w) => w.addSymlink("bin/true", "../lib64/ld-linux-x86-64.so.2"),
    ]],
    ["lib64", [
      (w) => w.addSymlink("lib64", "lib64"),
      (w) => w.addSymlink("lib64", "/bin"),
      (w) => w.addFile("lib64", { data: Buffer.alloc(0) }),
    ]],
    ["lib64/ld-linux-x86-64.so.2", [
      (w) => w.addSymlink("lib64/ld-linux-x86-64.so.2", "/bin/true"),
      (w) =>
        w.addFile("lib64/ld-linux-x86-64.so.2", {
          data: readFileSync("/lib64/ld-linux-x86-64.so.2"),
        }),
    ]],
    ["etc/ld.so.cache", [
      (w) =>
        w.addFile("etc/ld.so.cache", {
          data: readFileSync("/etc/ld.so.cache"),
        }),
      (w) => w.addFile("etc/ld.so.cache", { data: Buffer.from("garbage") }),
      (w) => w.addSymlink("etc/ld.so.cache", "/etc/ld.so.cache"),
    ]],
    ["a", [(w) => w.addSymlink("a", "b/c"), (w) => w.addDirectory("a")]],
    ["b", [(w) => w.addSymlink("b", "a/c"), (w) => w.addDirectory("b")]],
  ];

  test("verify of shuffled hostile trees", async () => {
    const rand = prng(0x7ee);
    for (let i = 0; i < 150; i++) {
      const order = [...CHOICES].sort(() => rand.next() - 0.5);
      const writer = new CpioWriter();
      for (const [, options] of order) {
        if (rand.int(4) > 0) options[rand.int(options.length)](writer);
      }
      writer.finish();
      const archive = await writer.toBuffer();
      expectCoded(`tree ${i}`, IMAGE_CODES, () => verifyImageBytes(archive));
    }
  });
});

describe("resolver fuzz", () => {
  const dir = join(tmp.dir, "resolve");
  const libDir = join(dir, "lib");
  let library: Buffer;
  let main: string;
  before(() => {
    mkdirSync(libDir, { recursive: true });
    const lib = compileC(
      "int helper(int x) { return x + 1; }\n",
      join(libDir, "libhelper.so"),
      ["-shared", "-fPIC", "-Wl,-soname,libhelper.so"],
    );
    library = readFileSync(lib);
    main = compileC(
      "int helper(int);\nint main(void) { return helper(1); }\n",
      join(dir, "main"),
      ["-Wl,--disable-new-dtags,-rpath,$ORIGIN/lib"],
      [`-L${libDir}`, "-lhelper"],
    );
    copyFileSync(lib, join(libDir, "libhelper.so.seed"));
  });

  /** Resolves the binary against a fresh cache of parsed files. */
  function resolveQuietly(what: string) {
    const warnings: ResolveWarning[] = [];
    const resolver = new Resolver({
      ldLibraryPath: [],
      onWarning: (w) => warnings.push(w),
    });
    try {
      return { closure: resolver.resolve(main), warnings };
    } catch (err) {
      assert.fail(`${what}: resolve threw ${(err as Error).stack}`);
    }
  }

  test("seed library resolves", () => {
    const { closure } = resolveQuietly("seed");
    const names = closure.libraries.map((l) => l.name);
    assert.ok(names.includes("libhelper.so"), names.join(", "));
  });

  test("mutated libraries are reported and skipped", () => {
    const rand = prng(0x11b);
    const codes = ["ELF_MALFORMED", "LIB_NOT_ELF", "ABI_UNKNOWN"];
    const path = join(libDir, "libhelper.so");
    const head = elf64Layout(library);
    for (let i = 0; i < 300; i++) {
      const focus: [number, number] =
        i % 2 ? [0, 64] : [head.phoff, head.phoff + head.phnum * 56];
      writeFileSync(path, mutate(library, rand, focus));
      const { closure, warnings } = resolveQuietly(`mutation ${i}`);
      for (const w of warnings) {
        assert.ok(codes.includes(w.code), `mutation ${i}: ${w.code}`);
      }
      const found = closure.libraries.some((l) => l.name === "libhelper.so");
      const missing = closure.missing.some((m) => m.name === "libhelper.so");
      assert.ok(found !== missing, `mutation ${i}: found or missing`);
    }
  });
});
