import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { before, describe, test } from "node:test";

import { CpioWriter } from "../src/cpio.js";
import { loadLibLz4 } from "../src/liblz4.js";
import {
  LZ4_LEGACY_CHUNK_SIZE,
  LZ4_LEGACY_MAGIC_BYTES,
  Lz4Error,
  compressLegacy,
  compressLegacyReadable,
  compressLegacyStream,
  decodeBlock,
  decompressLegacy,
  type Lz4Options,
} from "../src/lz4.js";
import { run } from "./helpers/tools.js";

const MiB = 1024 * 1024;
const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);

/** Concatenates ELF files from /usr/bin, sorted by name, to `length`. */
function elfCorpus(length: number): Buffer {
  const parts: Buffer[] = [];
  let total = 0;
  for (const name of readdirSync("/usr/bin").sort()) {
    const path = join("/usr/bin", name);
    const stat = statSync(path, { throwIfNoEntry: false });
    if (!stat?.isFile() || stat.size < 4096) continue;
    const bytes = readFileSync(path);
    if (!bytes.subarray(0, 4).equals(ELF_MAGIC)) continue;
    parts.push(bytes);
    total += bytes.length;
    if (total >= length) break;
  }
  assert.ok(total >= length, `only ${total} bytes of ELF files in /usr/bin`);
  return Buffer.concat(parts).subarray(0, length);
}

function lz4Cli(args: string[], input: Buffer): Buffer {
  return run("lz4", args, { input });
}

/** Splits a legacy stream into its blocks; checks magic and sizes. */
function blocksOf(stream: Buffer): Buffer[] {
  assert.deepEqual(stream.subarray(0, 4), LZ4_LEGACY_MAGIC_BYTES);
  const blocks: Buffer[] = [];
  let offset = 4;
  while (offset < stream.length) {
    const size = stream.readUInt32LE(offset);
    blocks.push(stream.subarray(offset + 4, offset + 4 + size));
    offset += 4 + size;
  }
  assert.equal(offset, stream.length);
  return blocks;
}

function expectLz4Error(fn: () => unknown, code: string, offset?: number) {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof Lz4Error, `expected Lz4Error, got ${err}`);
    assert.equal(err.code, code);
    if (offset !== undefined) {
      assert.equal(err.offset, offset);
      assert.match(err.message, new RegExp(`offset ${offset}`));
    }
    return true;
  });
}

async function expectLz4Rejection(fn: () => Promise<unknown>, code: string) {
  await assert.rejects(fn, (err: unknown) => {
    assert.ok(err instanceof Lz4Error, `expected Lz4Error, got ${err}`);
    assert.equal(err.code, code);
    return true;
  });
}

// Two whole 8 MiB chunks and a short third one.
const corpusLength = 2 * LZ4_LEGACY_CHUNK_SIZE + 123_457;
let corpus: Buffer;
before(() => {
  corpus = elfCorpus(corpusLength);
});

describe("lz4 legacy against the lz4 CLI", () => {
  for (const level of [1, 9]) {
    test(`level ${level} matches lz4 -l -${level} byte for byte`, async () => {
      const ours = await compressLegacy(corpus, { level, codec: "liblz4" });
      const cli = lz4Cli(["-l", `-${level}`, "-c"], corpus);
      assert.equal(ours.length, cli.length);
      assert.ok(ours.equals(cli), "compressed bytes differ from the CLI");
    });
  }

  test("levels 0 to 12 match lz4 -l on 1 MiB", async () => {
    const input = corpus.subarray(0, MiB);
    for (let level = 0; level <= 12; level++) {
      const ours = await compressLegacy(input, { level, codec: "liblz4" });
      const cli = lz4Cli(["-l", `-${level}`, "-c"], input);
      assert.ok(ours.equals(cli), `level ${level} differs from the CLI`);
    }
  });

  test("level 0 matches lz4 -l -1", async () => {
    const input = corpus.subarray(0, MiB);
    const ours = await compressLegacy(input, { level: 0 });
    assert.ok(ours.equals(lz4Cli(["-l", "-1", "-c"], input)));
  });

  test("lz4 -d decodes a multi-chunk stream", async () => {
    const ours = await compressLegacy(corpus);
    assert.ok(lz4Cli(["-d", "-c"], ours).equals(corpus));
  });

  test("blocks hold exactly 8 MiB, the last one less", async () => {
    const blocks = blocksOf(await compressLegacy(corpus));
    assert.equal(blocks.length, 3);
    const scratch = Buffer.alloc(LZ4_LEGACY_CHUNK_SIZE);
    const sizes = blocks.map((block) => decodeBlock(block, scratch));
    assert.deepEqual(sizes, [
      LZ4_LEGACY_CHUNK_SIZE,
      LZ4_LEGACY_CHUNK_SIZE,
      123_457,
    ]);
  });

  test("input of exactly 8 MiB is one block", async () => {
    const input = corpus.subarray(0, LZ4_LEGACY_CHUNK_SIZE);
    const stream = await compressLegacy(input);
    assert.equal(blocksOf(stream).length, 1);
    assert.ok(lz4Cli(["-d", "-c"], stream).equals(input));
  });

  test("empty input is the magic alone", async () => {
    const ours = await compressLegacy(Buffer.alloc(0));
    assert.deepEqual(ours, LZ4_LEGACY_MAGIC_BYTES);
    assert.deepEqual(ours, lz4Cli(["-l", "-c"], Buffer.alloc(0)));
    assert.equal(lz4Cli(["-d", "-c"], ours).length, 0);
    assert.equal(decompressLegacy(ours).length, 0);
  });

  test("incompressible random data", async () => {
    const input = randomBytes(LZ4_LEGACY_CHUNK_SIZE + 5000);
    const ours = await compressLegacy(input);
    assert.ok(ours.length > input.length);
    assert.ok(lz4Cli(["-d", "-c"], ours).equals(input));
    assert.ok(decompressLegacy(ours).equals(input));
  });

  test("concatenated base and suffix streams", async () => {
    const base = corpus.subarray(0, LZ4_LEGACY_CHUNK_SIZE + 999);
    const suffix = Buffer.from("args\nmore args\n".repeat(10));
    const image = Buffer.concat([
      await compressLegacy(base),
      await compressLegacy(suffix),
    ]);
    const whole = Buffer.concat([base, suffix]);
    assert.ok(lz4Cli(["-d", "-c"], image).equals(whole));
    assert.ok(decompressLegacy(image).equals(whole));
  });

  test("our decoder reads lz4 -l output", () => {
    for (const level of ["-1", "-9"]) {
      const cli = lz4Cli(["-l", level, "-c"], corpus);
      assert.ok(decompressLegacy(cli).equals(corpus), `level ${level}`);
    }
  });
});

describe("lz4 codecs", () => {
  test("liblz4 loads with version 1.x", () => {
    const lib = loadLibLz4();
    assert.ok(lib.version >= 10900, `liblz4 version ${lib.version}`);
  });

  for (const level of [0, 1, 9]) {
    test(`npm and liblz4 agree at level ${level}`, async () => {
      const input = corpus.subarray(0, LZ4_LEGACY_CHUNK_SIZE + 77_777);
      const lib = await compressLegacy(input, { level, codec: "liblz4" });
      // Concurrency 1 compresses on this thread, 2 on worker threads.
      for (const concurrency of [1, 2]) {
        const options = { level, codec: "npm" as const, concurrency };
        const npm = await compressLegacy(input, options);
        assert.ok(lib.equals(npm), `concurrency ${concurrency} differs`);
      }
    });
  }

  test("auto falls back to npm with a warning", async () => {
    const warnings: string[] = [];
    const input = corpus.subarray(0, MiB);
    const fallback = await compressLegacy(input, {
      liblz4Path: "/nonexistent/liblz4.so.1",
      onWarning: (warning) => warnings.push(warning.code),
    });
    assert.deepEqual(warnings, ["LZ4_FALLBACK_NPM"]);
    const lib = await compressLegacy(input, { codec: "liblz4" });
    assert.ok(fallback.equals(lib));
  });

  test("missing liblz4 with codec liblz4", async () => {
    await assert.rejects(
      () =>
        compressLegacy(corpus, {
          codec: "liblz4",
          liblz4Path: "/nonexistent/liblz4.so.1",
        }),
      (err: unknown) => {
        assert.ok(err instanceof Error);
        const code = (err as Error & { code?: string }).code;
        assert.equal(code, "LZ4_LIBLZ4_UNAVAILABLE");
        assert.match(err.message, /apt-get install -y liblz4-1/);
        return true;
      },
    );
  });

  test("npm codec rejects HC levels other than 9", async () => {
    for (const level of [3, 5, 12]) {
      await expectLz4Rejection(
        () => compressLegacy(corpus, { level, codec: "npm" }),
        "LZ4_LEVEL_UNSUPPORTED",
      );
    }
  });

  test("output does not depend on concurrency", async () => {
    const one = await compressLegacy(corpus, { concurrency: 1 });
    const four = await compressLegacy(corpus, { concurrency: 4 });
    assert.ok(one.equals(four));
  });

  test("build twice gives identical bytes", async () => {
    const first = await compressLegacy(corpus, { level: 1 });
    const second = await compressLegacy(corpus, { level: 1 });
    assert.ok(first.equals(second));
  });

  test("invalid options", async () => {
    const bad: Lz4Options[] = [
      { level: 13 },
      { level: -1 },
      { level: 1.5 },
      { concurrency: 0 },
      { codec: "zstd" as "npm" },
    ];
    const codes = [
      "LZ4_INVALID_LEVEL",
      "LZ4_INVALID_LEVEL",
      "LZ4_INVALID_LEVEL",
      "LZ4_INVALID_OPTION",
      "LZ4_INVALID_OPTION",
    ];
    for (const [i, options] of bad.entries()) {
      await expectLz4Rejection(() => compressLegacy(corpus, options), codes[i]);
    }
  });
});

describe("lz4 streaming", () => {
  async function* pieces(input: Buffer, size: number): AsyncGenerator<Buffer> {
    for (let pos = 0; pos < input.length; pos += size) {
      yield input.subarray(pos, pos + size);
    }
  }

  test("odd-sized pieces give the same stream", async () => {
    const whole = await compressLegacy(corpus);
    for (const size of [MiB + 3, 3 * LZ4_LEGACY_CHUNK_SIZE]) {
      const parts: Buffer[] = [];
      for await (const part of compressLegacyStream(pieces(corpus, size))) {
        parts.push(part);
      }
      assert.ok(Buffer.concat(parts).equals(whole), `piece size ${size}`);
      assert.equal(parts.length, 1 + 3);
    }
  });

  test("Readable output decodes with lz4 -d", async () => {
    const parts: Buffer[] = [];
    const readable = compressLegacyReadable(pieces(corpus, 65536), {
      level: 1,
    });
    for await (const part of readable) parts.push(part as Buffer);
    assert.ok(lz4Cli(["-d", "-c"], Buffer.concat(parts)).equals(corpus));
  });

  test("cpio writer output streams through", async () => {
    const writer = new CpioWriter({ mtime: 1 });
    writer.addDirectory("bin");
    writer.addFile("bin/big", {
      size: corpusLength,
      data: () => pieces(corpus, 3 * MiB + 1),
    });
    writer.addSymlink("big", "bin/big");
    writer.finish();
    const parts: Buffer[] = [];
    for await (const part of compressLegacyStream(writer)) parts.push(part);
    const archive = lz4Cli(["-d", "-c"], Buffer.concat(parts));
    assert.equal(archive.length, writer.length);
    const listing = run("cpio", ["-t", "--quiet"], { input: archive });
    assert.deepEqual(listing.toString().split("\n").slice(0, 3), [
      "bin",
      "bin/big",
      "big",
    ]);
  });

  test("a failing source rejects the stream", async () => {
    async function* failing(): AsyncGenerator<Buffer> {
      yield Buffer.alloc(10);
      throw new Error("source failed");
    }
    const drain = async () => {
      for await (const part of compressLegacyStream(failing())) void part;
    };
    await assert.rejects(drain, /source failed/);
  });
});

describe("lz4 decoder errors", () => {
  let small: Buffer;
  let tiny: Buffer;
  before(async () => {
    small = await compressLegacy(corpus.subarray(0, 100_000));
    tiny = await compressLegacy(corpus.subarray(50_000, 54_000));
  });

  test("bad magic", () => {
    const text = Buffer.from("hello");
    expectLz4Error(() => decompressLegacy(text), "LZ4_BAD_MAGIC", 0);
    expectLz4Error(() => decompressLegacy(Buffer.alloc(2)), "LZ4_BAD_MAGIC", 0);
    const frame = lz4Cli(["-c"], Buffer.from("frame format"));
    assert.throws(
      () => decompressLegacy(frame),
      /frame format; compress with lz4 -l/,
    );
  });

  test("block size past the end", () => {
    expectLz4Error(
      () => decompressLegacy(small.subarray(0, small.length - 1)),
      "LZ4_TRUNCATED",
      4,
    );
    expectLz4Error(
      () => decompressLegacy(Buffer.concat([small, Buffer.from([1, 0])])),
      "LZ4_TRUNCATED",
      small.length,
    );
  });

  test("block size zero or above the bound", () => {
    const zero = Buffer.concat([LZ4_LEGACY_MAGIC_BYTES, Buffer.alloc(4)]);
    expectLz4Error(() => decompressLegacy(zero), "LZ4_BAD_BLOCK_SIZE", 4);
    const huge = Buffer.from(zero);
    huge.writeUInt32LE(LZ4_LEGACY_CHUNK_SIZE * 2, 4);
    expectLz4Error(() => decompressLegacy(huge), "LZ4_BAD_BLOCK_SIZE", 4);
  });

  test("block that decodes to more than 8 MiB", async () => {
    const lib = loadLibLz4();
    const input = Buffer.alloc(LZ4_LEGACY_CHUNK_SIZE + 1, 0x5a);
    const block = Buffer.alloc(lib.compressBound(input.length));
    const n = await lib.compressDefault(input, block);
    const header = Buffer.alloc(4);
    header.writeUInt32LE(n, 0);
    const stream = Buffer.concat([
      LZ4_LEGACY_MAGIC_BYTES,
      header,
      block.subarray(0, n),
    ]);
    assert.throws(
      () => decompressLegacy(stream),
      (err: unknown) => {
        assert.ok(err instanceof Lz4Error);
        assert.equal(err.code, "LZ4_BLOCK_TOO_LARGE");
        assert.match(err.message, /block at offset 4: .* 8388608 bytes/);
        // The offset points at the sequence that overflows the buffer.
        assert.ok(err.offset !== undefined);
        assert.ok(err.offset > 8);
        assert.ok(err.offset < stream.length);
        return true;
      },
    );
  });

  test("match closer than 12 bytes to the block end", () => {
    // Literal "a", a match of 8 bytes at distance 1, then an empty final
    // sequence: decodes to 9 bytes, but the match starts 8 before the end.
    const block = Buffer.from([0x14, 0x61, 0x01, 0x00, 0x00]);
    expectLz4Error(
      () => decodeBlock(block, Buffer.alloc(64)),
      "LZ4_CORRUPT_BLOCK",
    );
    assert.throws(() => decodeBlock(block, Buffer.alloc(64)), /last match/);
  });

  test("match offset before the output start", () => {
    // Literal "a", then a match at distance 2 with one byte decoded.
    const block = Buffer.from([0x10, 0x61, 0x02, 0x00, 0x50, 0x62]);
    expectLz4Error(
      () => decodeBlock(block, Buffer.alloc(64)),
      "LZ4_CORRUPT_BLOCK",
    );
  });

  test("output limit", () => {
    expectLz4Error(
      () => decompressLegacy(small, { maxOutputLength: 1000 }),
      "LZ4_OUTPUT_TOO_LARGE",
      4,
    );
  });

  test("random corruption ends in bytes or Lz4Error", () => {
    let seed = 777;
    const random = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed;
    };
    let decoded = 0;
    for (let round = 0; round < 3000; round++) {
      const input = Buffer.from(tiny);
      for (let flips = 1 + (random() % 3); flips > 0; flips--) {
        input[8 + (random() % (input.length - 8))] = random() & 0xff;
      }
      try {
        decompressLegacy(input);
        decoded++;
      } catch (err) {
        assert.ok(err instanceof Lz4Error, `round ${round}: ${err}`);
      }
    }
    assert.ok(decoded < 3000, "corruption was never detected");
  });
});
