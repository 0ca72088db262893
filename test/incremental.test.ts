import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import { join, resolve } from "node:path";
import { after, before, beforeEach, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { readRecord, recordPath } from "../src/build-record.js";
import { loadConfig } from "../src/config.js";
import { segmentPath, storeImage } from "../src/shm.js";
import { compressLegacy } from "../src/lz4.js";
import { CpioWriter } from "../src/cpio.js";
import {
  BUILD_LOG_ENV,
  SHM_DIR_ENV,
  buildImage,
  formatSummary,
  type BuildSummary,
} from "../plugins/pipeline.js";
import { DigestCache } from "../src/input-key.js";
import { compileC, run, tempDir } from "./helpers/tools.js";

const REPO = resolve(__dirname, "..");
const GULP = join(REPO, "node_modules", ".bin", "gulp");

/** Longer than the digest cache's 100 ms racy margin. */
const PAST_RACY_MARGIN_MS = 250;
/** A whole second, so that utimes() can restore it exactly. */
const OLD_MTIME = 1_700_000_000;

const INIT_SOURCE = `
#include <math.h>
#include <stdio.h>
int main(int argc, char **argv) {
  printf("cbrt=%.3f\\n", cbrt((double)argc * 8.0));
  return 0;
}
`;

/** Extracts one file of an LZ4 image with lz4 -d and GNU cpio. */
function extract(image: string, name: string): string {
  const archive = run("lz4", ["-dc", image]);
  const args = ["-i", "--quiet", "--to-stdout", name];
  return run("cpio", args, { input: archive }).toString();
}

/** Lines that the build log got: "build PID" or "suffix PID". */
function logLines(log: string): string[] {
  if (!fs.existsSync(log)) return [];
  return fs.readFileSync(log, "utf8").trim().split("\n");
}

function kinds(log: string): string[] {
  return logLines(log).map((line) => line.split(" ")[0]);
}

/**
 * Creates a project in `dir`: `bin/init` (a copy of `binary`) and
 * `data/notes.txt`, with mtime `mtime`.
 */
function makeProject(dir: string, binary: string, mtime: number): void {
  fs.mkdirSync(join(dir, "bin"), { recursive: true });
  fs.mkdirSync(join(dir, "data"), { recursive: true });
  fs.copyFileSync(binary, join(dir, "bin", "init"));
  fs.writeFileSync(join(dir, "data", "notes.txt"), "notes, version 1\n");
  for (const path of ["bin/init", "data/notes.txt"]) {
    fs.utimesSync(join(dir, path), mtime, mtime);
  }
}

function projectConfig(dir: string, flags: string[] = []) {
  return loadConfig(
    ["--init", "bin/init", "--include", "data", "--out", "out/image.lz4", ...flags],
    dir,
  );
}

/** Runs `gulp initramfs` with `flags` and resolves with its output. */
function gulpInitramfs(
  flags: string[],
  env: NodeJS.ProcessEnv,
): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(GULP, ["initramfs", ...flags], {
      cwd: REPO,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (data: Buffer) => (output += data.toString()));
    child.stderr.on("data", (data: Buffer) => (output += data.toString()));
    child.once("error", reject);
    child.once("exit", (code) => {
      if (code === 0) resolvePromise(output);
      else reject(new Error(`gulp initramfs exited with ${code}:\n${output}`));
    });
  });
}

describe("incremental builds", () => {
  const tmp = tempDir("incremental");
  const binary = join(tmp.dir, "init-binary");
  const log = join(tmp.dir, "builds.log");
  let project = "";
  let count = 0;

  before(() => {
    compileC(INIT_SOURCE, binary, ["-g", "-O1"], ["-lm"]);
    process.env[BUILD_LOG_ENV] = log;
  });
  after(() => {
    delete process.env[BUILD_LOG_ENV];
    tmp.cleanup();
  });
  beforeEach(async () => {
    project = join(tmp.dir, `project-${count++}`);
    makeProject(project, binary, OLD_MTIME);
    fs.rmSync(log, { force: true });
    await sleep(PAST_RACY_MARGIN_MS);
  });

  it("second run is up to date", async () => {
    const config = projectConfig(project);
    const first = await buildImage(config);
    const bytes = fs.readFileSync(config.out);
    const recordFile = `${config.out}.key.json`;
    const recordBefore = fs.statSync(recordFile, { bigint: true });
    const second = await buildImage(config);
    const recordAfter = fs.statSync(recordFile, { bigint: true });

    assert.equal(first.status, "built");
    assert.equal(recordAfter.ino, recordBefore.ino, "record rewritten");
    assert.equal(recordAfter.mtimeNs, recordBefore.mtimeNs, "record rewritten");
    assert.equal(second.status, "up-to-date");
    assert.equal(second.hashedFiles, 0);
    assert.deepEqual(kinds(log), ["build"]);
    assert.equal(second.image.key, first.image.key);
    assert.deepEqual(second.image, first.image);
    assert.equal(second.entries, first.entries);
    assert.ok(fs.readFileSync(config.out).equals(bytes));
    assert.match(formatSummary(second), /^up to date \(checked in \d+ ms\)/);
  });

  it("edit during a first build rebuilds", async () => {
    const config = projectConfig(project);
    const notes = join(project, "data", "notes.txt");
    // The first digest() runs once the stages have packed version 1, so
    // the edit lands between packing and hashing.
    const digest = DigestCache.prototype.digest;
    let edited = false;
    DigestCache.prototype.digest = function (this: DigestCache, path: string) {
      if (!edited) {
        edited = true;
        fs.writeFileSync(notes, "notes, version 2\n");
      }
      return digest.call(this, path);
    };
    let first: BuildSummary;
    try {
      first = await buildImage(config);
    } finally {
      DigestCache.prototype.digest = digest;
    }
    assert.deepEqual(first.warnings.map((w) => w.code), ["INPUT_CHANGED_DURING_BUILD"]);
    assert.equal(first.image.key, "");
    assert.match(formatSummary(first), /no key: an input changed during the build/);
    assert.equal(extract(config.out, "include-files/data/notes.txt"), "notes, version 1\n");
    assert.ok(!fs.existsSync(recordPath(config.out)), "a record was written");
    await sleep(PAST_RACY_MARGIN_MS);
    const second = await buildImage(config);
    assert.equal(second.status, "built");
    assert.equal(extract(config.out, "include-files/data/notes.txt"), "notes, version 2\n");
    assert.equal(readRecord(config.out)?.key, second.image.key);
  });

  /** Makes digest() write `text` to `path` right after hashing it. */
  function editAfterDigest(path: string, text: string): () => void {
    const digest = DigestCache.prototype.digest;
    DigestCache.prototype.digest = function (this: DigestCache, file: string) {
      const result = digest.call(this, file);
      if (file === path) fs.writeFileSync(path, text);
      return result;
    };
    return () => {
      DigestCache.prototype.digest = digest;
    };
  }

  it("edit during a rebuild drops the record", async () => {
    const config = projectConfig(project);
    await buildImage(config);
    const notes = join(project, "data", "notes.txt");
    fs.writeFileSync(notes, "notes, version 2\n");
    await sleep(PAST_RACY_MARGIN_MS);
    const restore = editAfterDigest(notes, "notes, version 3\n");
    let second: BuildSummary;
    try {
      second = await buildImage(config);
    } finally {
      restore();
    }
    assert.deepEqual(second.warnings.map((w) => w.code), ["INPUT_CHANGED_DURING_BUILD"]);
    assert.ok(!fs.existsSync(recordPath(config.out)), "a record was written");
    assert.equal(extract(config.out, "include-files/data/notes.txt"), "notes, version 3\n");
    await sleep(PAST_RACY_MARGIN_MS);
    assert.equal((await buildImage(config)).status, "built");
    assert.equal((await buildImage(config)).status, "up-to-date");
  });

  it("edit during a segment build stores nothing", async () => {
    const shmDir = join(project, "shm");
    fs.mkdirSync(shmDir);
    const config = projectConfig(project, ["--shm", "--shm-dir", shmDir]);
    const notes = join(project, "data", "notes.txt");
    const restore = editAfterDigest(notes, "notes, version 2\n");
    try {
      await assert.rejects(buildImage(config), (error: Error & { code?: string }) => {
        assert.equal(error.code, "INPUT_CHANGED_DURING_BUILD");
        return true;
      });
    } finally {
      restore();
    }
    assert.deepEqual(fs.readdirSync(shmDir), []);
    assert.ok(!fs.existsSync(config.out), "an image was written");
  });

  it("concurrent calls for one output take turns", async () => {
    const config = projectConfig(project);
    const results = await Promise.all([1, 2, 3, 4].map(() => buildImage(config)));
    assert.deepEqual(results.map((r) => r.status), ["built", "up-to-date", "up-to-date", "up-to-date"]);
    const left = fs.readdirSync(join(project, "out")).sort();
    assert.deepEqual(left, ["image.lz4", "image.lz4.key.json"]);
  });

  it("status line names the reason", async () => {
    const config = projectConfig(project);
    const first = await buildImage(config);
    assert.match(formatSummary(first), /^built \(no build record; \d+ files? hashed\)$/m);
    fs.writeFileSync(join(project, "data", "notes.txt"), "notes, version 2\n");
    await sleep(PAST_RACY_MARGIN_MS);
    const second = await buildImage(config);
    assert.match(formatSummary(second), /^built \(inputs changed; checked in \d+ ms, 1 file hashed\)$/m);
  });

  it("same-size edit changes the key", async () => {
    const config = projectConfig(project);
    const first = await buildImage(config);
    const notes = join(project, "data", "notes.txt");
    fs.writeFileSync(notes, "notes, version 2\n");
    fs.utimesSync(notes, OLD_MTIME, OLD_MTIME);
    const second = await buildImage(config);

    assert.equal(second.status, "built");
    assert.notEqual(second.image.key, first.image.key);
    assert.deepEqual(kinds(log), ["build", "build"]);
    const text = extract(config.out, "include-files/data/notes.txt");
    assert.equal(text, "notes, version 2\n");
  });

  it("touch keeps the key and bytes", async () => {
    const config = projectConfig(project);
    const first = await buildImage(config);
    const bytes = fs.readFileSync(config.out);
    const later = OLD_MTIME + 3600;
    fs.utimesSync(join(project, "bin", "init"), later, later);
    const second = await buildImage(config);

    assert.equal(second.status, "up-to-date");
    assert.equal(second.hashedFiles, 1);
    assert.equal(second.image.key, first.image.key);
    assert.deepEqual(kinds(log), ["build"]);
    assert.ok(fs.readFileSync(config.out).equals(bytes));
  });

  it("new args rebuild only the suffix", async () => {
    const first = await buildImage(projectConfig(project, ["--args", "one"]));
    const config = projectConfig(project, ["--args", "two", "--args", "2b"]);
    const before = fs.readFileSync(config.out);
    const second = await buildImage(config);

    assert.equal(second.status, "suffix");
    assert.equal(second.baseSource, "output");
    assert.deepEqual(kinds(log), ["build", "suffix"]);
    assert.equal(second.image.key, first.image.key);
    const [base] = second.image.parts;
    assert.deepEqual(base, first.image.parts[0]);
    const after = fs.readFileSync(config.out);
    assert.ok(after.subarray(0, base.length).equals(before.subarray(0, base.length)));
    assert.equal(extract(config.out, "args"), "two\n2b");
    assert.equal(after.length, second.imageBytes);

    const third = await buildImage(config);
    assert.equal(third.status, "up-to-date");
    assert.equal(readRecord(config.out)?.key, first.image.key);
  });

  it("rebuilds an image changed on disk", async () => {
    const config = projectConfig(project);
    await buildImage(config);
    fs.appendFileSync(config.out, "x");
    const second = await buildImage(config);

    assert.equal(second.status, "built");
    assert.deepEqual(kinds(log), ["build", "build"]);
  });

  it("ignores an unreadable record", async () => {
    const config = projectConfig(project);
    await buildImage(config);
    fs.writeFileSync(recordPath(config.out), "{ not json");
    const second = await buildImage(config);

    assert.equal(second.status, "built");
    assert.equal(readRecord(config.out)?.key, second.image.key);
  });
});

describe("reproducible keys", () => {
  const tmp = tempDir("reproducible");
  const binary = join(tmp.dir, "init-binary");
  before(() => compileC(INIT_SOURCE, binary, ["-g"], ["-lm"]));
  after(() => tmp.cleanup());

  it("two working directories agree", async () => {
    const second = join(tmp.dir, "elsewhere", "deeper");
    const first = join(tmp.dir, "first");
    // Created in the opposite order, with different mtimes.
    makeProject(second, binary, OLD_MTIME + 86_400);
    await sleep(20);
    makeProject(first, binary, OLD_MTIME);
    const a = await buildImage(projectConfig(first));
    const b = await buildImage(projectConfig(second));

    assert.equal(a.image.key, b.image.key);
    const bytesA = fs.readFileSync(join(first, "out", "image.lz4"));
    const bytesB = fs.readFileSync(join(second, "out", "image.lz4"));
    assert.ok(bytesA.equals(bytesB), "images differ");
  });
});

/** Runs buildImage() with GULP_INITRAMFS_SHM_DIR set to `shmDir`. */
async function buildWithShmDir(
  shmDir: string,
  body: () => Promise<BuildSummary>,
): Promise<BuildSummary> {
  process.env[SHM_DIR_ENV] = shmDir;
  try {
    return await body();
  } finally {
    delete process.env[SHM_DIR_ENV];
  }
}

describe("gulp initramfs --shm", () => {
  const tmp = tempDir("incremental-shm");
  const binary = join(tmp.dir, "init-binary");
  const shmDir = join(tmp.dir, "shm");
  const log = join(tmp.dir, "builds.log");
  const env = { [SHM_DIR_ENV]: shmDir, [BUILD_LOG_ENV]: log };

  before(() => {
    compileC(INIT_SOURCE, binary, ["-g"], ["-lm"]);
    fs.mkdirSync(shmDir);
  });
  after(() => tmp.cleanup());

  it("eight processes build once", { timeout: 300_000 }, async () => {
    const outputs = Array.from({ length: 8 }, (_, n) =>
      join(tmp.dir, "out", `${n}.lz4`),
    );
    const runs = outputs.map((out) =>
      gulpInitramfs(["--init", binary, "--shm", "--out", out], env),
    );
    const texts = await Promise.all(runs);

    assert.deepEqual(kinds(log).filter((k) => k === "build"), ["build"]);
    assert.equal(logLines(log).length, 8);
    const first = fs.readFileSync(outputs[0]);
    for (const out of outputs) {
      assert.ok(fs.readFileSync(out).equals(first), `${out} differs`);
    }
    const key = readRecord(outputs[0])!.key;
    const segment = segmentPath(key, "lz4", { shmDir });
    const baseLength = readRecord(outputs[0])!.baseLength;
    assert.equal(fs.statSync(segment).size, baseLength);
    assert.ok(fs.readFileSync(segment).equals(first.subarray(0, baseLength)));
    for (const text of texts) assert.match(text, /shared memory: /);
    assert.deepEqual(fs.readdirSync(shmDir), [segment.split("/").pop()]);

    fs.rmSync(log);
    const again = await gulpInitramfs(
      ["--init", binary, "--shm", "--out", outputs[0]],
      env,
    );
    assert.match(again, /up to date \(checked in \d+ ms\)/);
    assert.deepEqual(logLines(log), []);
  });

  it("restores a removed segment without building", async () => {
    const config = loadConfig(
      ["--init", binary, "--shm", "--out", join(tmp.dir, "restore.lz4")],
      tmp.dir,
    );
    const summary = await buildWithShmDir(shmDir, async () => {
      await buildImage(config);
      fs.rmSync(segmentPath(readRecord(config.out)!.key, "lz4", { shmDir }));
      return buildImage(config);
    });
    assert.equal(summary.status, "up-to-date");
    const bytes = fs.readFileSync(config.out);
    const segment = fs.readFileSync(summary.segment!);
    assert.ok(segment.equals(bytes.subarray(0, summary.image.parts[0].length)));
  });

  it("removes stale segments after storing", async () => {
    const writer = new CpioWriter().addFile("old", { data: Buffer.from("x") });
    const stale = await compressLegacy(
      await writer.finish({ trailer: false }).toBuffer(),
    );
    const staleKey = "00000000000000aa";
    const { path: stalePath } = await storeImage(staleKey, "lz4", stale, {
      shmDir,
    });
    const config = loadConfig(
      ["--init", binary, "--shm", "--out", join(tmp.dir, "cleanup.lz4")],
      tmp.dir,
    );
    const summary = await buildWithShmDir(shmDir, () => buildImage(config));
    assert.equal(fs.existsSync(stalePath), false);
    assert.ok(fs.existsSync(summary.segment!));
  });
});
