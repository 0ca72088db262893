import assert from "node:assert/strict";
import {
  chmodSync,
  mkdirSync,
  realpathSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, test } from "node:test";

import {
  INCLUDE_DIR,
  expandInclude,
  lookupInPath,
  type IncludeFile,
} from "../src/includes.js";
import { expectCode } from "./helpers/config-errors.js";
import { run, tempDir } from "./helpers/tools.js";

let work: ReturnType<typeof tempDir>;
beforeEach(() => {
  work = tempDir("includes");
});
afterEach(() => work.cleanup());

function file(relative: string, text = relative, mode = 0o644): string {
  const path = join(work.dir, relative);
  writeFileSync(path, text);
  chmodSync(path, mode);
  return path;
}

function dir(relative: string): string {
  const path = join(work.dir, relative);
  mkdirSync(path, { recursive: true });
  return path;
}

/** Creates a listening Unix socket file at `path` that outlives its process. */
function makeSocket(path: string): void {
  run("python3", [
    "-c",
    "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])",
    path,
  ]);
}

function archivePaths(files: IncludeFile[]): string[] {
  return files.map((f) => f.archivePath);
}

describe("expandInclude ARCHIVE=PATH", () => {
  test("file goes to ARCHIVE", () => {
    const host = file("conf.txt");
    const [inc, ...rest] = expandInclude(`etc/app/conf=${host}`, work.dir);
    assert.equal(rest.length, 0);
    assert.equal(inc.archivePath, "etc/app/conf");
    assert.equal(inc.hostPath, host);
    assert.ok(inc.stat.isFile());
  });

  test("slashes around ARCHIVE are trimmed", () => {
    file("conf.txt");
    const files = expandInclude("/etc/conf/=conf.txt", work.dir);
    assert.deepEqual(archivePaths(files), ["etc/conf"]);
  });

  test("relative PATH resolves against cwd", () => {
    const host = file("conf.txt");
    const [inc] = expandInclude("x=./conf.txt", work.dir);
    assert.equal(inc.hostPath, host);
  });

  test("directory files go under ARCHIVE", () => {
    dir("tree/sub");
    file("tree/a");
    file("tree/sub/b");
    const files = expandInclude(`opt/t=${join(work.dir, "tree")}`, work.dir);
    assert.deepEqual(archivePaths(files), ["opt/t/a", "opt/t/sub/b"]);
  });
});

describe("expandInclude bare PATH", () => {
  test("file goes to include-files/NAME", () => {
    dir("deep/er");
    file("deep/er/tool.sh");
    const files = expandInclude("deep/er/tool.sh", work.dir);
    assert.deepEqual(archivePaths(files), [`${INCLUDE_DIR}/tool.sh`]);
  });

  test("directory goes under include-files/DIRNAME", () => {
    dir("data/nested/more");
    file("data/top");
    file("data/nested/more/leaf");
    const files = expandInclude(join(work.dir, "data") + "/", work.dir);
    assert.deepEqual(archivePaths(files), [
      "include-files/data/nested/more/leaf",
      "include-files/data/top",
    ]);
  });

  test("permission bits come from stat", () => {
    file("run.sh", "#!/bin/sh\n", 0o750);
    const [inc] = expandInclude("./run.sh", work.dir);
    assert.equal(inc.stat.mode & 0o7777, 0o750);
  });

  test("bare name prefers the cwd", () => {
    const host = file("gcc", "not the compiler");
    const [inc] = expandInclude("gcc", work.dir);
    assert.equal(inc.hostPath, host);
  });

  test("bare name falls back to PATH", () => {
    const bin = dir("bin");
    const tool = file("bin/my-include-tool", "#!/bin/sh\n", 0o755);
    const cwd = dir("elsewhere");
    const saved = process.env.PATH;
    process.env.PATH = `/nonexistent:${bin}:${saved}`;
    try {
      const [inc] = expandInclude("my-include-tool", cwd);
      assert.equal(inc.hostPath, tool);
      assert.equal(inc.archivePath, "include-files/my-include-tool");
    } finally {
      process.env.PATH = saved;
    }
  });

  test("lookupInPath skips directories and misses", () => {
    const bin = dir("bin");
    dir("bin/sub");
    const tool = file("bin/t", "x", 0o755);
    assert.equal(lookupInPath("t", `::${bin}`), tool);
    assert.equal(lookupInPath("sub", bin), null);
    assert.equal(lookupInPath("absent", bin), null);
  });
});

describe("expandInclude directory walk", () => {
  test("symlinks are followed", () => {
    dir("tree");
    dir("elsewhere/inner");
    const target = file("elsewhere/real", "body", 0o600);
    file("elsewhere/inner/x");
    symlinkSync(target, join(work.dir, "tree/link"));
    symlinkSync("../elsewhere/inner", join(work.dir, "tree/dirlink"));
    const files = expandInclude("tree", work.dir);
    assert.deepEqual(archivePaths(files), [
      "include-files/tree/dirlink/x",
      "include-files/tree/link",
    ]);
    const link = files[1];
    assert.ok(link.stat.isFile());
    assert.equal(link.stat.mode & 0o7777, 0o600);
    assert.equal(realpathSync(link.hostPath), target);
  });

  test("special files are skipped and reported", () => {
    dir("tree");
    file("tree/keep");
    run("mkfifo", [join(work.dir, "tree/fifo")]);
    makeSocket(join(work.dir, "tree/sock"));
    symlinkSync("/dev/null", join(work.dir, "tree/device"));
    symlinkSync("missing", join(work.dir, "tree/dangling"));
    const skipped: string[] = [];
    const files = expandInclude("tree", work.dir, (path) => skipped.push(path));
    assert.deepEqual(archivePaths(files), ["include-files/tree/keep"]);
    const names = skipped.map((p) => p.slice(join(work.dir, "tree/").length));
    assert.deepEqual(names.sort(), ["dangling", "device", "fifo", "sock"]);
  });

  test("symlink loops do not hang", { timeout: 5000 }, () => {
    dir("tree/a");
    file("tree/a/f");
    symlinkSync("..", join(work.dir, "tree/a/up"));
    symlinkSync(join(work.dir, "tree"), join(work.dir, "tree/self"));
    const reasons: string[] = [];
    const files = expandInclude("tree", work.dir, (_p, why) => reasons.push(why));
    assert.deepEqual(archivePaths(files), ["include-files/tree/a/f"]);
    assert.equal(reasons.length, 2);
  });

  test("output is sorted by archive path", () => {
    dir("tree/a");
    file("tree/a/b");
    file("tree/a.txt");
    file("tree/B");
    const files = archivePaths(expandInclude("tree", work.dir));
    assert.deepEqual(files, [
      "include-files/tree/B",
      "include-files/tree/a.txt",
      "include-files/tree/a/b",
    ]);
  });

  test("two walks give identical output", () => {
    dir("tree/x/y");
    file("tree/x/y/z");
    file("tree/x/w");
    file("tree/v");
    const first = expandInclude("tree", work.dir);
    const second = expandInclude("tree", work.dir);
    assert.deepEqual(archivePaths(first), archivePaths(second));
  });

  test("empty directory gives no files", () => {
    dir("empty");
    assert.deepEqual(expandInclude("empty", work.dir), []);
  });
});

describe("expandInclude errors", () => {
  test("missing path is INCLUDE_NOT_FOUND", () => {
    expectCode(
      () => expandInclude("./nope", work.dir),
      "INCLUDE_NOT_FOUND",
      "nope",
    );
    expectCode(
      () => expandInclude(`x=${join(work.dir, "gone")}`, work.dir),
      "INCLUDE_NOT_FOUND",
    );
  });

  test("empty side of = is rejected", () => {
    for (const spec of ["a=", "=plain.txt", "="]) {
      expectCode(() => expandInclude(spec, work.dir), "CONFIG_BAD_ASSIGNMENT", spec);
    }
  });

  test("ARCHIVE with .. is rejected", () => {
    writeFileSync(join(work.dir, "plain.txt"), "x");
    expectCode(
      () => expandInclude("etc/../../x=./plain.txt", work.dir),
      "INCLUDE_PATH_TRAVERSAL",
      "--include etc/../../x=./plain.txt",
    );
  });

  test("bare name missing everywhere", () => {
    expectCode(
      () => expandInclude("no-such-tool-anywhere", work.dir),
      "INCLUDE_NOT_FOUND",
      "PATH",
    );
  });

  test("dangling top-level symlink is INCLUDE_NOT_FOUND", () => {
    symlinkSync("missing", join(work.dir, "dangling"));
    expectCode(() => expandInclude("./dangling", work.dir), "INCLUDE_NOT_FOUND");
  });

  test("top-level FIFO is INCLUDE_NOT_REGULAR", () => {
    run("mkfifo", [join(work.dir, "fifo")]);
    expectCode(() => expandInclude("./fifo", work.dir), "INCLUDE_NOT_REGULAR");
  });

  test("top-level device is INCLUDE_NOT_REGULAR", () => {
    expectCode(() => expandInclude("/dev/null", work.dir), "INCLUDE_NOT_REGULAR");
  });
});

describe("dangling symlink include", () => {
  test("names the link and its target", () => {
    const work = tempDir("includes-dangling");
    try {
      const link = join(work.dir, "dangling");
      symlinkSync(join(work.dir, "gone"), link);
      assert.throws(
        () => expandInclude(link, work.dir),
        (error: unknown) => {
          assert.equal((error as { code?: string }).code, "INCLUDE_NOT_FOUND");
          assert.match((error as Error).message, /dangling symlink/);
          assert.match((error as Error).message, /gone/);
          return true;
        },
      );
    } finally {
      work.cleanup();
    }
  });
});
