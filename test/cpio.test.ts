import assert from "node:assert/strict";
import {
  createReadStream,
  lstatSync,
  mkdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, test } from "node:test";

import {
  CpioError,
  CpioWriter,
  encodeHeader,
  type CpioFileData,
} from "../src/cpio.js";
import { iterateCpio, readCpio } from "../src/cpio-reader.js";
import { compileC, run, tempDir } from "./helpers/tools.js";

/** Concatenates latin1 pieces, with "\0" written as a JS escape. */
function bytes(...pieces: string[]): Buffer {
  return Buffer.from(pieces.join(""), "latin1");
}

const NUL = "\0";

function expectCode(fn: () => unknown, code: string, mention?: string) {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof CpioError, `expected CpioError, got ${err}`);
    assert.equal(err.code, code);
    if (mention !== undefined) assert.match(err.message, new RegExp(mention));
    return true;
  });
}

async function expectAsyncCode(fn: () => Promise<unknown>, code: string) {
  await assert.rejects(fn, (err: unknown) => {
    assert.ok(err instanceof CpioError, `expected CpioError, got ${err}`);
    assert.equal(err.code, code);
    return true;
  });
}

async function* chunks(...parts: string[]): AsyncGenerator<Buffer> {
  for (const part of parts) yield Buffer.from(part);
}

let savedEpoch: string | undefined;
beforeEach(() => {
  savedEpoch = process.env.SOURCE_DATE_EPOCH;
  delete process.env.SOURCE_DATE_EPOCH;
});
afterEach(() => {
  if (savedEpoch === undefined) delete process.env.SOURCE_DATE_EPOCH;
  else process.env.SOURCE_DATE_EPOCH = savedEpoch;
});

describe("cpio golden bytes", () => {
  test("header of a directory", () => {
    const header = encodeHeader(
      {
        c_ino: 1,
        c_mode: 0o40755,
        c_uid: 0,
        c_gid: 0,
        c_nlink: 2,
        c_mtime: 1700000000,
        c_filesize: 0,
        c_devmajor: 0,
        c_devminor: 0,
        c_rdevmajor: 0,
        c_rdevminor: 0,
        c_namesize: 4,
        c_check: 0,
      },
      Buffer.from("bin"),
    );
    // 0o40755 = 0x41ED, 1700000000 = 0x6553F100; 110 + 4 bytes of name
    // round up to 116, so two NULs of padding follow the name's NUL.
    const expected = bytes(
      "070701",
      "00000001", "000041ED", "00000000", "00000000", "00000002",
      "6553F100", "00000000", "00000000", "00000000", "00000000",
      "00000000", "00000004", "00000000",
      "bin", NUL, NUL, NUL,
    );
    assert.equal(header.length, 116);
    assert.deepEqual(header, expected);
  });

  test("tiny archive with trailer and padding", async () => {
    const writer = new CpioWriter({ mtime: 0x10 });
    writer.addDirectory("d");
    writer.addFile("d/f", { data: Buffer.from("hi"), mode: 0o600 });
    writer.addSymlink("l", "d/f");
    writer.finish();
    const archive = await writer.toBuffer();

    // d: 110 + 2 = 112, aligned. d/f: 110 + 4 = 114 -> 116, data 2 -> 4.
    // l: 110 + 2 = 112, body 3 -> 4. Trailer: 110 + 11 = 121 -> 124.
    // 112 + 120 + 116 + 124 = 472, padded with 40 zeros to 512.
    const expected = bytes(
      "070701",
      "00000001", "000041ED", "00000000", "00000000", "00000002",
      "00000010", "00000000", "00000000", "00000000", "00000000",
      "00000000", "00000002", "00000000",
      "d", NUL,
      "070701",
      "00000002", "00008180", "00000000", "00000000", "00000001",
      "00000010", "00000002", "00000000", "00000000", "00000000",
      "00000000", "00000004", "00000000",
      "d/f", NUL, NUL, NUL,
      "hi", NUL, NUL,
      "070701",
      "00000003", "0000A1FF", "00000000", "00000000", "00000001",
      "00000010", "00000003", "00000000", "00000000", "00000000",
      "00000000", "00000002", "00000000",
      "l", NUL,
      "d/f", NUL,
      "070701",
      "00000000", "00000000", "00000000", "00000000", "00000001",
      "00000000", "00000000", "00000000", "00000000", "00000000",
      "00000000", "0000000B", "00000000",
      "TRAILER!!!", NUL, NUL, NUL, NUL,
      NUL.repeat(40),
    );
    assert.equal(writer.length, 512);
    assert.equal(archive.length, 512);
    assert.deepEqual(archive, expected);
  });
});

describe("cpio writer fields", () => {
  test("sequential inodes and nlink", async () => {
    const writer = new CpioWriter({ firstIno: 100 });
    writer.addDirectory("a");
    writer.addFile("a/x", { data: Buffer.from("1") });
    writer.addFile("a/y", { data: Buffer.from("1"), ino: 7 });
    writer.addSymlink("a/z", "x");
    assert.equal(writer.nextIno, 103);
    assert.equal(writer.entryCount, 4);
    assert.equal(writer.has("a/y"), true);
    assert.equal(writer.has("a/w"), false);
    const entries = readCpio(await writer.finish().toBuffer());
    assert.equal(writer.entryCount, 4);
    assert.deepEqual(
      entries.map((e) => [e.name, e.ino, e.nlink]),
      [
        ["a", 100, 2],
        ["a/x", 101, 1],
        ["a/y", 7, 1],
        ["a/z", 102, 1],
      ],
    );
  });

  test("mtime from SOURCE_DATE_EPOCH", async () => {
    process.env.SOURCE_DATE_EPOCH = "1234567890";
    const writer = new CpioWriter();
    writer.addDirectory("a");
    writer.addDirectory("b", { mtime: 5 });
    const [a, b] = readCpio(await writer.finish().toBuffer());
    assert.equal(a.mtime, 1234567890);
    assert.equal(b.mtime, 5);
  });

  test("mtime option wins over SOURCE_DATE_EPOCH", async () => {
    process.env.SOURCE_DATE_EPOCH = "1234567890";
    const writer = new CpioWriter({ mtime: 42 });
    writer.addDirectory("a");
    const [a] = readCpio(await writer.finish().toBuffer());
    assert.equal(a.mtime, 42);
  });

  test("defaults: mtime 0, uid and gid 0", async () => {
    const writer = new CpioWriter();
    writer.addFile("f", { data: Buffer.alloc(0) });
    const [f] = readCpio(await writer.finish().toBuffer());
    assert.equal(f.mtime, 0);
    assert.equal(f.uid, 0);
    assert.equal(f.gid, 0);
    assert.equal(f.mode, 0o100644);
  });

  test("uid, gid and mode with type bits", async () => {
    const writer = new CpioWriter({ uid: 1000, gid: 100 });
    writer.addFile("f", { data: Buffer.from("x"), mode: 0o104755 });
    writer.addDirectory("d", { uid: 1, gid: 2, mode: 0o700 });
    const [f, d] = readCpio(await writer.finish().toBuffer());
    assert.deepEqual([f.uid, f.gid, f.mode], [1000, 100, 0o104755]);
    assert.deepEqual([d.uid, d.gid, d.mode], [1, 2, 0o40700]);
  });

  test("largest mtime and longest name fit", async () => {
    const name = "n".repeat(4095);
    const writer = new CpioWriter({ mtime: 2 ** 32 - 1 });
    writer.addFile(name, { data: Buffer.from("x") });
    writer.addSymlink("s", "t".repeat(4095));
    const [f, s] = readCpio(await writer.finish().toBuffer());
    assert.equal(f.name, name);
    assert.equal(f.mtime, 2 ** 32 - 1);
    assert.equal(s.target?.length, 4095);
  });
});

describe("cpio padding and concatenation", () => {
  test("pads to 512 after baseLength", async () => {
    for (const baseLength of [0, 4, 100, 508, 512, 1000]) {
      const writer = new CpioWriter();
      writer.addFile("args", { data: Buffer.from("a b c") });
      writer.finish({ baseLength });
      const archive = await writer.toBuffer();
      assert.equal(archive.length, writer.length);
      const total = baseLength + archive.length;
      assert.equal(total % 512, 0, `base ${baseLength}`);
    }
  });

  test("padTo 1 writes no padding", async () => {
    const writer = new CpioWriter();
    writer.addDirectory("d");
    writer.finish({ padTo: 1 });
    assert.equal((await writer.toBuffer()).length, 112 + 124);
  });

  test("base without trailer plus suffix", async (t) => {
    const base = new CpioWriter();
    base.addDirectory("bin");
    base.addFile("bin/tool", { data: Buffer.from("#!/bin/sh\n"), mode: 0o755 });
    base.finish({ trailer: false });
    const baseBytes = await base.toBuffer();
    assert.equal(baseBytes.length, base.length);
    assert.equal(baseBytes.includes("TRAILER!!!"), false);

    const suffix = new CpioWriter({ firstIno: base.nextIno });
    suffix.addFile("args", { data: Buffer.from("one\ntwo") });
    suffix.finish({ baseLength: base.length });
    const image = Buffer.concat([baseBytes, await suffix.toBuffer()]);
    assert.equal(image.length % 512, 0);

    const names = readCpio(image).map((e) => e.name);
    assert.deepEqual(names, ["bin", "bin/tool", "args"]);
    const listed = run("cpio", ["-t", "--quiet"], { input: image });
    assert.deepEqual(listed.toString().trim().split("\n"), names);
    t.diagnostic(`image ${image.length} bytes`);
  });

  test("reader walks concatenated archives", async () => {
    const first = new CpioWriter();
    first.addFile("a", { data: Buffer.from("1") });
    const second = new CpioWriter();
    second.addFile("b", { data: Buffer.from("22") });
    const image = Buffer.concat([
      await first.finish().toBuffer(),
      Buffer.alloc(64),
      await second.finish().toBuffer(),
    ]);
    const all = [...iterateCpio(image)];
    assert.deepEqual(
      all.map((e) => [e.name, e.trailer]),
      [
        ["a", false],
        ["TRAILER!!!", true],
        ["b", false],
        ["TRAILER!!!", true],
      ],
    );
    assert.equal(all[2].offset, 512 + 64);
    assert.equal(readCpio(image)[1].data.toString(), "22");
  });
});

describe("cpio round trip through real tools", () => {
  test("GNU cpio and bsdtar extract our archive", async (t) => {
    const { dir, cleanup } = tempDir("cpio");
    t.after(cleanup);
    const elf = compileC(
      '#include <stdio.h>\nint main(void){puts("ok from cpio");return 0;}\n',
      join(dir, "hello"),
    );
    const elfSize = statSync(elf).size;
    const text = Buffer.from("line one\nline two\n");

    const writer = new CpioWriter({ mtime: 1600000000 });
    writer.addDirectory("usr");
    writer.addDirectory("usr/bin", { mode: 0o750 });
    writer.addFile("usr/bin/hello", {
      mode: 0o755,
      size: elfSize,
      data: () => createReadStream(elf, { highWaterMark: 4096 }),
    });
    writer.addFile("usr/notes.txt", { data: text, mode: 0o640 });
    writer.addFile("usr/empty", { data: Buffer.alloc(0) });
    writer.addSymlink("usr/bin/hi", "hello");
    writer.addSymlink("usr/abs", "/usr/bin/hello");
    writer.finish();
    const archive = await writer.toBuffer();
    const archivePath = join(dir, "image.cpio");
    writeFileSync(archivePath, archive);

    const out = join(dir, "gnu");
    mkdirSync(out);
    run("cpio", ["-idm", "--quiet", "-F", archivePath], { cwd: out });
    const hello = join(out, "usr/bin/hello");
    assert.deepEqual(readFileSync(hello), readFileSync(elf));
    assert.equal(statSync(hello).mode & 0o7777, 0o755);
    assert.equal(statSync(hello).mtimeMs, 1600000000 * 1000);
    assert.equal(run(hello, []).toString(), "ok from cpio\n");
    assert.deepEqual(readFileSync(join(out, "usr/notes.txt")), text);
    assert.equal(statSync(join(out, "usr/notes.txt")).mode & 0o7777, 0o640);
    assert.equal(statSync(join(out, "usr/empty")).size, 0);
    assert.equal(statSync(join(out, "usr/bin")).mode & 0o7777, 0o750);
    assert.ok(lstatSync(join(out, "usr/bin/hi")).isSymbolicLink());
    assert.equal(readlinkSync(join(out, "usr/bin/hi")), "hello");
    assert.equal(readlinkSync(join(out, "usr/abs")), "/usr/bin/hello");

    const listing = run("cpio", ["-t", "--quiet", "-F", archivePath]);
    assert.deepEqual(listing.toString().trim().split("\n"), [
      "usr",
      "usr/bin",
      "usr/bin/hello",
      "usr/notes.txt",
      "usr/empty",
      "usr/bin/hi",
      "usr/abs",
    ]);

    const verbose = run("bsdtar", ["-tvf", archivePath]).toString();
    assert.match(verbose, /^lrwxrwxrwx .* usr\/bin\/hi -> hello$/m);
    assert.match(verbose, /^-rwxr-xr-x .* usr\/bin\/hello$/m);
    assert.match(verbose, /^drwxr-x--- .* usr\/bin$/m);
    const bsd = join(dir, "bsd");
    mkdirSync(bsd);
    run("bsdtar", ["-xf", archivePath, "-C", bsd]);
    const bsdHello = readFileSync(join(bsd, "usr/bin/hello"));
    assert.deepEqual(bsdHello, readFileSync(elf));
    assert.equal(readlinkSync(join(bsd, "usr/abs")), "/usr/bin/hello");
  });

  test("reader reads GNU cpio output", (t) => {
    const { dir, cleanup } = tempDir("cpio-gnu");
    t.after(cleanup);
    mkdirSync(join(dir, "tree/sub"), { recursive: true });
    writeFileSync(join(dir, "tree/sub/file"), "content\n");
    symlinkSync("sub/file", join(dir, "tree/link"));
    const archive = run("cpio", ["-o", "-H", "newc", "--quiet"], {
      cwd: join(dir, "tree"),
      input: "sub\nsub/file\nlink\n",
    });
    const entries = readCpio(archive);
    assert.deepEqual(
      entries.map((e) => e.name),
      ["sub", "sub/file", "link"],
    );
    assert.equal(entries[1].data.toString(), "content\n");
    assert.equal(entries[2].target, "sub/file");
    assert.equal(entries[2].mode & 0o170000, 0o120000);
  });
});

describe("cpio streaming", () => {
  test("stream() and toBuffer() give the same bytes", async () => {
    const build = () => {
      const writer = new CpioWriter();
      writer.addFile("big", {
        size: 300_000,
        data: () => chunks("x".repeat(100_000), "y".repeat(200_000)),
      });
      writer.addFile("small", { data: Buffer.from("s") });
      return writer.finish();
    };
    const viaBuffer = await build().toBuffer();
    const parts: Buffer[] = [];
    for await (const part of build().stream()) parts.push(part as Buffer);
    assert.deepEqual(Buffer.concat(parts), viaBuffer);
  });

  test("data functions run only while reading", async () => {
    const calls: string[] = [];
    const lazy = (name: string): CpioFileData => () => {
      calls.push(name);
      return Buffer.from(name);
    };
    const writer = new CpioWriter();
    writer.addFile("one", { size: 3, data: lazy("one") });
    writer.addFile("two", { size: 3, data: lazy("two") });
    writer.finish();
    assert.deepEqual(calls, []);
    const iterator = writer[Symbol.asyncIterator]();
    await iterator.next();
    assert.deepEqual(calls, ["one", "two"]);
  });

  test("large stream keeps chunks bounded", async () => {
    const size = 32 * 1024 * 1024;
    async function* source(): AsyncGenerator<Buffer> {
      const block = Buffer.alloc(1 << 20, 0xab);
      for (let done = 0; done < size; done += block.length) yield block;
    }
    const writer = new CpioWriter();
    writer.addFile("blob", { size, data: source() });
    writer.finish();
    let total = 0;
    let largest = 0;
    for await (const part of writer) {
      total += part.length;
      largest = Math.max(largest, part.length);
    }
    assert.equal(total, writer.length);
    assert.equal(largest, 1 << 20);
  });

  test("build twice gives identical bytes", async () => {
    const build = async () => {
      const writer = new CpioWriter({ mtime: 99 });
      writer.addDirectory("etc");
      writer.addFile("etc/a", { data: Buffer.from("alpha") });
      writer.addSymlink("etc/b", "a");
      return writer.finish({ baseLength: 7 }).toBuffer();
    };
    assert.deepEqual(await build(), await build());
  });
});

describe("cpio writer errors", () => {
  const writer = () => new CpioWriter();
  const data = Buffer.from("x");

  test("file of 4 GiB", () => {
    expectCode(
      () => writer().addFile("huge", { size: 2 ** 32, data: chunks() }),
      "CPIO_FILE_TOO_LARGE",
      "huge",
    );
  });

  test("name of 4096 bytes", () => {
    expectCode(
      () => writer().addFile("n".repeat(4096), { data }),
      "CPIO_NAME_TOO_LONG",
      "4096 bytes",
    );
    expectCode(
      () => writer().addDirectory("é".repeat(2048)),
      "CPIO_NAME_TOO_LONG",
    );
  });

  test("name with NUL", () => {
    expectCode(() => writer().addFile("a\0b", { data }), "CPIO_NAME_HAS_NUL");
  });

  test("duplicate path", () => {
    const w = writer().addDirectory("dup");
    expectCode(() => w.addFile("dup", { data }), "CPIO_DUPLICATE_NAME", "dup");
  });

  test("symlink body of 4096 bytes", () => {
    expectCode(
      () => writer().addSymlink("link", "t".repeat(4096)),
      "CPIO_SYMLINK_TOO_LONG",
      "link",
    );
  });

  test("empty or NUL symlink target", () => {
    expectCode(() => writer().addSymlink("l", ""), "CPIO_INVALID_SYMLINK");
    expectCode(() => writer().addSymlink("l", "a\0"), "CPIO_INVALID_SYMLINK");
  });

  test("empty, absolute and reserved names", () => {
    expectCode(() => writer().addDirectory(""), "CPIO_EMPTY_NAME");
    expectCode(() => writer().addDirectory("/etc"), "CPIO_ABSOLUTE_NAME");
    expectCode(() => writer().addDirectory("TRAILER!!!"), "CPIO_RESERVED_NAME");
    expectCode(() => writer().addDirectory("a\ud800"), "CPIO_INVALID_NAME");
  });

  test("mtime out of range", () => {
    for (const mtime of [-1, 2 ** 32, 1.5, Number.NaN]) {
      expectCode(() => new CpioWriter({ mtime }), "CPIO_INVALID_MTIME");
      expectCode(
        () => writer().addDirectory("d", { mtime }),
        "CPIO_INVALID_MTIME",
        'mtime of "d"',
      );
    }
  });

  test("invalid SOURCE_DATE_EPOCH", () => {
    for (const value of ["abc", "-5", "1e3", "4294967296"]) {
      process.env.SOURCE_DATE_EPOCH = value;
      expectCode(
        () => new CpioWriter(),
        "CPIO_INVALID_MTIME",
        "SOURCE_DATE_EPOCH",
      );
    }
  });

  test("invalid fields", () => {
    expectCode(() => new CpioWriter({ uid: -1 }), "CPIO_INVALID_FIELD");
    expectCode(
      () => new CpioWriter({ firstIno: 2 ** 32 }),
      "CPIO_INVALID_FIELD",
    );
    expectCode(
      () => writer().addDirectory("d", { gid: 2 ** 32 }),
      "CPIO_INVALID_FIELD",
    );
    expectCode(
      () => writer().addFile("f", { data: chunks("x") }),
      "CPIO_INVALID_FIELD",
      "missing size",
    );
    expectCode(
      () => writer().addFile("f", { size: -1, data: chunks() }),
      "CPIO_INVALID_FIELD",
    );
  });

  test("mode of another file type", () => {
    expectCode(
      () => writer().addFile("f", { data, mode: 0o40755 }),
      "CPIO_INVALID_MODE",
      "f",
    );
    expectCode(
      () => writer().addDirectory("d", { mode: 0o200000 }),
      "CPIO_INVALID_MODE",
    );
  });

  test("declared size differs from a Buffer", () => {
    expectCode(
      () => writer().addFile("f", { size: 2, data }),
      "CPIO_SIZE_MISMATCH",
      '"f" was declared with 2 bytes',
    );
  });

  test("stream shorter or longer than declared", async () => {
    const short = writer().addFile("short", { size: 5, data: chunks("abc") });
    await expectAsyncCode(
      () => short.finish().toBuffer(),
      "CPIO_SIZE_MISMATCH",
    );
    const long = writer().addFile("long", { size: 2, data: chunks("a", "bc") });
    await expectAsyncCode(() => long.finish().toBuffer(), "CPIO_SIZE_MISMATCH");
    const fn = writer().addFile("fn", { size: 2, data: () => data });
    await expectAsyncCode(() => fn.finish().toBuffer(), "CPIO_SIZE_MISMATCH");
  });

  test("finish state", async () => {
    const w = writer().addDirectory("d");
    await expectAsyncCode(() => w.toBuffer(), "CPIO_NOT_FINISHED");
    w.finish();
    expectCode(() => w.addDirectory("e"), "CPIO_FINISHED");
    expectCode(() => w.finish(), "CPIO_FINISHED");
  });

  test("plain iterable read twice", async () => {
    const w = writer().addFile("once", { size: 1, data: chunks("x") });
    w.finish();
    await w.toBuffer();
    await expectAsyncCode(() => w.toBuffer(), "CPIO_DATA_CONSUMED");
  });

  test("invalid finish options", () => {
    const fail = (options: object) =>
      expectCode(() => writer().finish(options), "CPIO_INVALID_OPTION");
    fail({ padTo: 0 });
    fail({ padTo: 1.5 });
    fail({ baseLength: -1 });
    fail({ trailer: false, padTo: 512 });
  });
});

describe("cpio reader errors", () => {
  async function sample(): Promise<Buffer> {
    const writer = new CpioWriter();
    writer.addDirectory("dir");
    writer.addFile("dir/file", { data: Buffer.from("hello world") });
    writer.addSymlink("link", "dir/file");
    return writer.finish().toBuffer();
  }

  function expectMalformed(input: Buffer, code: string, offset: number) {
    assert.throws(
      () => readCpio(input),
      (err: unknown) => {
        assert.ok(err instanceof CpioError, `expected CpioError, got ${err}`);
        assert.equal(err.code, code);
        assert.equal(err.offset, offset);
        assert.match(err.message, new RegExp(`offset ${offset}`));
        return true;
      },
    );
  }

  test("bad magic", async () => {
    const archive = await sample();
    archive.write("070707", 0, "latin1");
    expectMalformed(archive, "CPIO_BAD_MAGIC", 0);
    assert.throws(() => readCpio(archive), /old ASCII format/);
    expectMalformed(Buffer.from("x".repeat(200)), "CPIO_BAD_MAGIC", 0);
  });

  test("non-hex digit", async () => {
    const archive = await sample();
    archive.write("g", 6 + 8 + 3, "latin1");
    expectMalformed(archive, "CPIO_BAD_HEX", 14);
  });

  test("namesize zero or past the end", async () => {
    const archive = await sample();
    const namesizeAt = 6 + 11 * 8;
    archive.write("00000000", namesizeAt, "latin1");
    expectMalformed(archive, "CPIO_BAD_NAMESIZE", 0);
    archive.write("00001001", namesizeAt, "latin1");
    expectMalformed(archive, "CPIO_BAD_NAMESIZE", 0);
    const short = (await sample()).subarray(0, 112);
    short.write("00000FFF", namesizeAt, "latin1");
    expectMalformed(short, "CPIO_TRUNCATED", 0);
  });

  test("name without its NUL", async () => {
    const archive = await sample();
    archive[110 + 3] = 0x41;
    expectMalformed(archive, "CPIO_BAD_NAMESIZE", 0);
  });

  test("filesize past the end", async () => {
    const archive = await sample();
    const second = 116;
    archive.write("7FFFFFFF", second + 6 + 6 * 8, "latin1");
    expectMalformed(archive, "CPIO_TRUNCATED", second);
  });

  test("truncated header", async () => {
    const archive = await sample();
    expectMalformed(archive.subarray(0, 50), "CPIO_TRUNCATED", 0);
    expectMalformed(archive.subarray(0, 116 + 60), "CPIO_TRUNCATED", 116);
  });

  test("garbage after the trailer", async () => {
    const archive = Buffer.concat([await sample(), Buffer.from([0, 0, 7])]);
    expectMalformed(archive, "CPIO_BAD_MAGIC", 514);
  });

  test("random corruption ends in entries or CpioError", async () => {
    const archive = await sample();
    let seed = 12345;
    const random = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed;
    };
    for (let round = 0; round < 2000; round++) {
      const input = Buffer.from(archive.subarray(0, random() % archive.length));
      for (let flips = random() % 4; flips > 0; flips--) {
        input[random() % Math.max(1, input.length)] = random() & 0xff;
      }
      try {
        readCpio(input);
      } catch (err) {
        assert.ok(err instanceof CpioError, `round ${round}: ${err}`);
      }
    }
  });
});
