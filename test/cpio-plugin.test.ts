import assert from "node:assert/strict";
import {
  chmodSync,
  copyFileSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, test } from "node:test";
import Vinyl from "vinyl";
import { cpio, type CpioOptions } from "../plugins/cpio.js";
import { metaOf, type InitramfsFile } from "../plugins/meta.js";
import { archiveFile, symlinkFile } from "../plugins/sources.js";
import { iterateCpio, type CpioEntry } from "../src/cpio-reader.js";
import { readContents, runPlugin } from "./helpers/streams.js";
import { compileC, requireTool, run, tempDir } from "./helpers/tools.js";

const HELLO = `
#include <stdio.h>
int main(void) { puts("cpio plugin"); return 0; }
`;
const LIBRARY = "int foo(void) { return 42; }\n";

const tmp = tempDir("cpio-plugin");
const host = {
  init: join(tmp.dir, "init"),
  busybox: "",
  scheduler: join(tmp.dir, "scheduler"),
  data: join(tmp.dir, "data.txt"),
  script: join(tmp.dir, "run.sh"),
  library: join(tmp.dir, "libfoo.so.1"),
};

const SUFFIX: CpioOptions["suffix"] = {
  args: ["--first", "second line"],
  schedArgs: ["--slice-us=5000"],
  schedEnable: ["echo on"],
  schedDisable: ["echo off"],
  exec: "/bin/true",
  workloadRootCgroup: "/sys/fs/cgroup/work",
  schedulerCgroupParent: "/sys/fs/cgroup/sched",
  stagedSchedArgs: { x: ["-v"] },
};

/** Base and suffix entries of the full input set, in archive order. */
const EXPECTED: Array<[name: string, mode: number, target?: string]> = [
  ["bin", 0o040755],
  ["include-files", 0o040755],
  ["lib", 0o040755],
  ["lib/x86_64-linux-gnu", 0o040755],
  ["lib64", 0o040755],
  ["staging", 0o040755],
  ["staging/schedulers", 0o040755],
  ["staging/schedulers/x", 0o040755],
  ["usr", 0o040755],
  ["usr/lib", 0o040755],
  ["usr/lib/x86_64-linux-gnu", 0o040755],
  ["init", 0o100755],
  ["bin/busybox", 0o100755],
  ["scheduler", 0o100755],
  ["staging/schedulers/x/scheduler", 0o100755],
  ["include-files/data.txt", 0o100640],
  ["include-files/run.sh", 0o100750],
  ["lib/x86_64-linux-gnu/libfoo.so.1", 0o100755],
  ["lib64/libfoo.so.1", 0o120777, "/lib/x86_64-linux-gnu/libfoo.so.1"],
  [
    "usr/lib/x86_64-linux-gnu/libfoo.so.1",
    0o120777,
    "/lib/x86_64-linux-gnu/libfoo.so.1",
  ],
  [".ktstr_init_ok", 0o100644],
  ["args", 0o100644],
  ["sched_args", 0o100644],
  ["sched_enable", 0o100755],
  ["sched_disable", 0o100755],
  ["exec_cmd", 0o100644],
  ["workload_root_cgroup", 0o100644],
  ["scheduler_cgroup_parent", 0o100644],
  ["staging", 0o040755],
  ["staging/schedulers", 0o040755],
  ["staging/schedulers/x", 0o040755],
  ["staging/schedulers/x/sched_args", 0o100644],
];

/** Host file of each regular file entry of the base. */
const SOURCES: Record<string, () => string> = {
  init: () => host.init,
  "bin/busybox": () => host.busybox,
  scheduler: () => host.scheduler,
  "staging/schedulers/x/scheduler": () => host.scheduler,
  "include-files/data.txt": () => host.data,
  "include-files/run.sh": () => host.script,
  "lib/x86_64-linux-gnu/libfoo.so.1": () => host.library,
};

/** Returns the full input set, deliberately out of archive order. */
function inputs(): Vinyl[] {
  return [
    archiveFile("usr/lib/x86_64-linux-gnu/libfoo.so.1", host.library, "library"),
    symlinkFile(
      "lib64/libfoo.so.1",
      "/lib/x86_64-linux-gnu/libfoo.so.1",
      "library",
    ),
    archiveFile("include-files/run.sh", host.script, "include"),
    archiveFile("staging/schedulers/x/scheduler", host.scheduler, "extra"),
    archiveFile("lib/x86_64-linux-gnu/libfoo.so.1", host.library, "library"),
    archiveFile("include-files/data.txt", host.data, "include"),
    archiveFile("scheduler", host.scheduler, "extra"),
    archiveFile("bin/busybox", host.busybox, "busybox"),
    archiveFile("init", host.init, "payload"),
  ];
}

/** Runs cpio() on `files` and returns its one output file. */
async function pack(
  files: Vinyl[],
  options: CpioOptions = { suffix: SUFFIX },
): Promise<InitramfsFile> {
  const { files: out } = await runPlugin(cpio(options), files);
  assert.equal(out.length, 1);
  return out[0];
}

/** Returns the records of an archive, trailer excluded. */
function records(archive: Buffer): CpioEntry[] {
  return [...iterateCpio(archive)].filter((entry) => !entry.trailer);
}

/** Parses `cpio -itv` or `bsdtar -tvf` lines into mode, size and name. */
function parseListing(text: string) {
  const line = /^(\S{10})\s+\d+\s+\S+\s+\S+\s+(\d+)\s+\S+\s+\d+\s+\S+ (.+)$/;
  return text
    .trim()
    .split("\n")
    .map((row) => {
      const match = line.exec(row);
      assert.ok(match, `unexpected listing line: ${row}`);
      return { mode: match[1], size: Number(match[2]), name: match[3] };
    });
}

/** Formats a mode as the listings of cpio and bsdtar do. */
function lsMode(mode: number): string {
  const type = { 0o04: "d", 0o10: "-", 0o12: "l" }[mode >> 12] ?? "?";
  let bits = "";
  for (const shift of [6, 3, 0]) {
    const triple = (mode >> shift) & 7;
    bits += (triple & 4 ? "r" : "-") + (triple & 2 ? "w" : "-");
    bits += triple & 1 ? "x" : "-";
  }
  return type + bits;
}

/** Returns the name column that cpio and bsdtar print for an entry. */
function listedName([name, , target]: (typeof EXPECTED)[number]): string {
  return target === undefined ? name : `${name} -> ${target}`;
}

before(() => {
  host.busybox = requireTool("busybox");
  compileC(HELLO, host.init, ["-g"]);
  compileC(HELLO, host.scheduler);
  compileC(LIBRARY, host.library, ["-shared", "-fPIC"]);
  writeFileSync(host.data, "include data\n");
  chmodSync(host.data, 0o640);
  writeFileSync(host.script, "#!/bin/sh\necho run\n");
  chmodSync(host.script, 0o750);
});

after(() => tmp.cleanup());

describe("cpio plugin layout", () => {
  let image: InitramfsFile;
  let archive: Buffer;

  before(async () => {
    image = await pack(inputs());
    archive = await readContents(image);
  });

  test("entry order and modes", () => {
    const got = records(archive).map((e) => [e.name, e.mode, e.target]);
    const want = EXPECTED.map(([name, mode, target]) => [name, mode, target]);
    assert.deepEqual(got, want);
  });

  const listers: Array<[tool: string, args: string[]]> = [
    ["cpio", ["-itv", "--quiet"]],
    ["bsdtar", ["-tvf", "-"]],
  ];
  for (const [tool, args] of listers) {
    test(`${tool} lists the same entries`, () => {
      const listing = parseListing(
        run(tool, args, { input: archive }).toString(),
      );
      assert.deepEqual(
        listing.map((row) => row.name),
        EXPECTED.map(listedName),
      );
      assert.deepEqual(
        listing.map((row) => row.mode),
        EXPECTED.map(([, mode]) => lsMode(mode)),
      );
    });
  }

  test("cpio -idm extracts the host bytes", () => {
    const out = join(tmp.dir, "extracted");
    mkdirSync(out);
    run("cpio", ["-idm", "--quiet"], { cwd: out, input: archive });
    for (const [name, source] of Object.entries(SOURCES)) {
      assert.ok(
        readFileSync(join(out, name)).equals(readFileSync(source())),
        `${name} differs from ${source()}`,
      );
    }
    for (const [name, mode, target] of EXPECTED) {
      const stat = lstatSync(join(out, name));
      if (target !== undefined) {
        assert.equal(readlinkSync(join(out, name)), target, name);
      } else if (!stat.isDirectory()) {
        assert.equal(stat.mode & 0o7777, mode & 0o7777, `mode of ${name}`);
      }
    }
    assert.equal(statSync(join(out, ".ktstr_init_ok")).size, 0);
  });

  test("suffix files hold their lines", () => {
    const byName = new Map(records(archive).map((e) => [e.name, e]));
    const text = (name: string) => byName.get(name)?.data.toString();
    assert.equal(text("args"), "--first\nsecond line");
    assert.equal(text("sched_args"), "--slice-us=5000");
    assert.equal(text("sched_enable"), "echo on");
    assert.equal(text("sched_disable"), "echo off");
    assert.equal(text("exec_cmd"), "/bin/true");
    assert.equal(text("workload_root_cgroup"), "/sys/fs/cgroup/work");
    assert.equal(text("scheduler_cgroup_parent"), "/sys/fs/cgroup/sched");
    assert.equal(text("staging/schedulers/x/sched_args"), "-v");
  });

  test("trailer ends a 512-byte multiple", () => {
    const all = [...iterateCpio(archive)];
    assert.equal(all[all.length - 1].name, "TRAILER!!!");
    assert.equal(archive.length % 512, 0);
    const end = all[all.length - 1].offset + 124;
    assert.ok(archive.subarray(end).every((byte) => byte === 0));
  });

  test("regular files have own inodes", () => {
    const files = records(archive).filter((e) => e.mode >> 12 === 0o10);
    const inodes = new Set(files.map((e) => e.ino));
    assert.equal(inodes.size, files.length);
    for (const file of files) assert.equal(file.nlink, 1, file.name);
  });

  test("uid, gid and mtime are zero", () => {
    for (const entry of records(archive)) {
      assert.equal(entry.uid, 0, entry.name);
      assert.equal(entry.gid, 0, entry.name);
      assert.equal(entry.mtime, 0, entry.name);
    }
  });

  test("image facts match the contents", () => {
    const facts = image.initramfs?.image;
    assert.ok(facts);
    const [base, suffix] = facts.parts;
    assert.equal(base.name, "base");
    assert.equal(suffix.name, "suffix");
    assert.equal(base.length + suffix.length, archive.length);
    assert.equal(base.archiveLength, base.length);
    assert.equal(suffix.archiveLength, suffix.length);
    assert.equal(facts.compression, "none");
    assert.equal(facts.entries, EXPECTED.length);
    assert.match(facts.key, /^[0-9a-f]{16}$/);
  });

  test("base part ends after the sentinel", () => {
    const [base] = image.initramfs!.image!.parts;
    const names = records(archive.subarray(0, base.length)).map((e) => e.name);
    assert.equal(names[names.length - 1], ".ktstr_init_ok");
    const sentinel = EXPECTED.findIndex(([name]) => name === ".ktstr_init_ok");
    assert.equal(names.length, sentinel + 1);
  });

  test("output is a buffer named initramfs.cpio", () => {
    assert.equal(image.relative, "initramfs.cpio");
    assert.ok(image.isBuffer());
  });
});

describe("cpio plugin inputs", () => {
  test("path-only file read lazily", async () => {
    const path = join(tmp.dir, "lazy.txt");
    writeFileSync(path, "before");
    const file = archiveFile("lazy.txt", path, "include");
    const { files } = await runPlugin(cpio(), [file], () =>
      writeFileSync(path, "after!"),
    );
    const [image] = files;
    const entry = records(await readContents(image)).find(
      (e) => e.name === "lazy.txt",
    );
    assert.equal(entry?.data.toString(), "after!");
  });

  test("stream contents are packed", async () => {
    const bytes = readFileSync(host.init);
    const file = new Vinyl({
      cwd: "/",
      base: "/in",
      path: "/in/init",
      contents: Readable.from([bytes.subarray(0, 100), bytes.subarray(100)]),
      stat: statSync(host.init),
    });
    metaOf(file).role = "payload";
    const image = await pack([file]);
    const entry = records(await readContents(image)).find(
      (e) => e.name === "init",
    );
    assert.ok(entry?.data.equals(bytes));
    assert.equal(entry?.mode, 0o100755);
  });

  test("buffer contents are packed", async () => {
    const file = new Vinyl({
      cwd: "/",
      base: "/in",
      path: "/in/include-files/note",
      contents: Buffer.from("note"),
    });
    const image = await pack([file]);
    const entry = records(await readContents(image)).find(
      (e) => e.name === "include-files/note",
    );
    assert.equal(entry?.data.toString(), "note");
    assert.equal(entry?.mode, 0o100644);
  });

  test("symlink file becomes a symlink entry", async () => {
    const link = symlinkFile("include-files/link", "/etc/target", "include");
    const image = await pack([link]);
    const entry = records(await readContents(image)).find(
      (e) => e.name === "include-files/link",
    );
    assert.equal(entry?.mode, 0o120777);
    assert.equal(entry?.target, "/etc/target");
  });

  test("null file without host file fails", async () => {
    const file = new Vinyl({
      cwd: "/",
      base: "/absent",
      path: "/absent/missing",
      contents: null,
    });
    await assert.rejects(pack([file]), (error: Error & { code?: string }) => {
      assert.equal(error.code, "INPUT_NOT_FOUND");
      assert.match(error.message, /\/absent\/missing/);
      return true;
    });
  });

  test("directory files are left out", async () => {
    const dir = new Vinyl({
      cwd: "/",
      base: "/in",
      path: "/in/some-dir",
      contents: null,
      stat: statSync(tmp.dir),
    });
    const image = await pack([dir, archiveFile("init", host.init, "payload")]);
    const names = records(await readContents(image)).map((e) => e.name);
    assert.ok(!names.includes("some-dir"));
    assert.ok(names.includes("init"));
  });

  test("duplicate archive path fails", async () => {
    const files = [
      archiveFile("scheduler", host.scheduler, "extra"),
      archiveFile("scheduler", host.data, "include"),
    ];
    await assert.rejects(pack(files), (error: Error & { code?: string }) => {
      assert.equal(error.code, "LAYOUT_DUPLICATE_PATH");
      assert.match(error.message, /"scheduler"/);
      return true;
    });
  });
});

describe("cpio plugin suffix", () => {
  test("undefined suffix keys keep defaults", async () => {
    const suffix = { args: undefined, schedArgs: ["--x"], exec: undefined };
    const image = await pack([], { suffix });
    const names = records(await readContents(image)).map((e) => e.name);
    assert.deepEqual(names, [".ktstr_init_ok", "args", "sched_args"]);
  });

  test("no suffix option writes empty args", async () => {
    const image = await pack([], {});
    const entries = records(await readContents(image));
    assert.deepEqual(
      entries.map((e) => e.name),
      [".ktstr_init_ok", "args"],
    );
    assert.equal(entries[1].size, 0);
  });
});

describe("cpio plugin streaming output", () => {
  test("buffer false equals buffer mode", async () => {
    const buffered = await pack(inputs());
    const streamed = await pack(inputs(), { suffix: SUFFIX, buffer: false });
    assert.ok(streamed.isStream());
    const bytes = await readContents(streamed);
    assert.ok(bytes.equals(buffered.contents as Buffer));
    assert.equal(streamed.initramfs?.image?.key, buffered.initramfs?.image?.key);
    assert.deepEqual(
      streamed.initramfs?.image?.parts,
      buffered.initramfs?.image?.parts,
    );
  });

  test("file growing after planning fails", async () => {
    const path = join(tmp.dir, "growing");
    copyFileSync(host.init, path);
    const image = await pack([archiveFile("init", path, "payload")], {
      buffer: false,
    });
    writeFileSync(path, Buffer.concat([readFileSync(host.init), Buffer.alloc(9)]));
    await assert.rejects(readContents(image), (error: Error & { code?: string }) => {
      assert.equal(error.code, "INPUT_CHANGED");
      assert.match(error.message, / init: /);
      assert.match(error.message, new RegExp(path));
      return true;
    });
  });

  test("file shrinking after planning fails", async () => {
    const path = join(tmp.dir, "shrinking");
    copyFileSync(host.init, path);
    const image = await pack([archiveFile("init", path, "payload")], {
      buffer: false,
    });
    writeFileSync(path, "short");
    await assert.rejects(readContents(image), (error: Error & { code?: string }) => {
      assert.equal(error.code, "INPUT_CHANGED");
      assert.match(error.message, new RegExp(path));
      return true;
    });
  });
});

describe("cpio plugin determinism", () => {
  test("same inputs give same bytes", async () => {
    const first = await pack(inputs());
    const second = await pack(inputs());
    assert.ok((first.contents as Buffer).equals(second.contents as Buffer));
    assert.equal(first.initramfs?.image?.key, second.initramfs?.image?.key);
  });

  test("mtime option sets every entry", async () => {
    const image = await pack(inputs(), { suffix: SUFFIX, mtime: 1234567 });
    for (const entry of records(await readContents(image))) {
      assert.equal(entry.mtime, 1234567, entry.name);
    }
  });

  test("SOURCE_DATE_EPOCH sets every entry", async () => {
    const saved = process.env.SOURCE_DATE_EPOCH;
    process.env.SOURCE_DATE_EPOCH = "1700000000";
    try {
      const image = await pack(inputs());
      for (const entry of records(await readContents(image))) {
        assert.equal(entry.mtime, 1700000000, entry.name);
      }
    } finally {
      if (saved === undefined) delete process.env.SOURCE_DATE_EPOCH;
      else process.env.SOURCE_DATE_EPOCH = saved;
    }
  });

  test("mtime option wins over SOURCE_DATE_EPOCH", async () => {
    const saved = process.env.SOURCE_DATE_EPOCH;
    process.env.SOURCE_DATE_EPOCH = "1700000000";
    try {
      const image = await pack(inputs(), { suffix: SUFFIX, mtime: 5 });
      const mtimes = new Set(
        records(await readContents(image)).map((e) => e.mtime),
      );
      assert.deepEqual([...mtimes], [5]);
    } finally {
      if (saved === undefined) delete process.env.SOURCE_DATE_EPOCH;
      else process.env.SOURCE_DATE_EPOCH = saved;
    }
  });

  test("key changes with base bytes", async () => {
    const first = await pack(inputs());
    const other = await pack([
      ...inputs(),
      archiveFile("include-files/more.txt", host.data, "include"),
    ]);
    assert.notEqual(first.initramfs?.image?.key, other.initramfs?.image?.key);
  });

  test("key ignores the suffix", async () => {
    const first = await pack(inputs());
    const other = await pack(inputs(), { suffix: { args: ["other"] } });
    assert.equal(first.initramfs?.image?.key, other.initramfs?.image?.key);
  });
});
