import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  utimesSync,
} from "node:fs";
import { join, resolve } from "node:path";
import { after, describe, test } from "node:test";
import {
  lockTemporary,
  removeOnSignal,
  removeStaleTemporaries,
  temporaryPath,
  writeFileAtomic,
} from "../src/temp-output.js";
import { exitedPid, tempDir } from "./helpers/tools.js";

const tmp = tempDir("temp-output");
after(() => tmp.cleanup());

describe("writeFileAtomic", () => {
  test("writes and leaves no temporary", () => {
    const dir = join(tmp.dir, "atomic");
    const path = join(dir, "nested", "image.lz4");
    writeFileAtomic(path, "bytes");
    assert.equal(readFileSync(path, "utf8"), "bytes");
    assert.deepEqual(readdirSync(join(dir, "nested")), ["image.lz4"]);
  });
});

test("writeFileAtomic fails under /proc", { timeout: 5000 }, () => {
  assert.throws(() => writeFileAtomic("/proc/no-such-dir/image.lz4", "x"), { code: "ENOENT" });
});

describe("removeStaleTemporaries", () => {
  /** Writes `name` in `dir` with an mtime an hour ago, or now. */
  const plant = (dir: string, name: string, old = true) => {
    writeFileAtomic(join(dir, name), "x");
    if (old) utimesSync(join(dir, name), Date.now() / 1000 - 3600, Date.now() / 1000 - 3600);
  };

  test("removes only stale files of the output", () => {
    const dir = join(tmp.dir, "stale");
    const out = join(dir, "image.lz4");
    const dead = exitedPid();
    const removable = [`image.lz4.tmp-${dead}`, `image.lz4.key.json.tmp-${dead}`];
    const kept = [
      `image.lz4.tmp-${process.pid}`,
      "image.lz4.tmp-1",
      `other.lz4.tmp-${dead}`,
      `image.lz4.orig.tmp-${dead}`,
      "image.lz4.key.json",
    ];
    for (const name of [...removable, ...kept]) plant(dir, name);
    plant(dir, `image.lz4.tmp-${dead + 1}`, false);
    kept.push(`image.lz4.tmp-${dead + 1}`);

    const removed = removeStaleTemporaries(out);

    assert.deepEqual(removed.sort(), removable.map((name) => join(dir, name)).sort());
    assert.deepEqual(readdirSync(dir).sort(), kept.sort());
  });

  test("keeps a locked file", () => {
    const dir = join(tmp.dir, "locked");
    const name = `image.lz4.tmp-${exitedPid()}`;
    plant(dir, name);
    const fd = openSync(join(dir, name), "r");
    try {
      lockTemporary(fd);
      assert.deepEqual(removeStaleTemporaries(join(dir, "image.lz4")), []);
    } finally {
      closeSync(fd);
    }
    assert.deepEqual(removeStaleTemporaries(join(dir, "image.lz4")), [join(dir, name)]);
  });

  test("skips a directory of that name", () => {
    const dir = join(tmp.dir, "with-directory");
    const name = `image.lz4.tmp-${exitedPid()}`;
    mkdirSync(join(dir, name), { recursive: true });
    utimesSync(join(dir, name), 1000, 1000);
    assert.deepEqual(removeStaleTemporaries(join(dir, "image.lz4")), []);
  });

  test("missing directory removes nothing", () => {
    assert.deepEqual(removeStaleTemporaries(join(tmp.dir, "absent", "x.lz4")), []);
  });
});

describe("removeOnSignal", () => {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    test(`${signal} removes the files`, async () => {
      const file = join(tmp.dir, `signal-${signal}.lz4`);
      const module = resolve(__dirname, "..", "src", "temp-output.ts");
      const script = `
        const { removeOnSignal, temporaryPath } = require(${JSON.stringify(module)});
        const fs = require("node:fs");
        const path = temporaryPath(${JSON.stringify(file)});
        fs.writeFileSync(path, "partial");
        removeOnSignal([path]);
        console.log(path);
        setInterval(() => {}, 1000);
      `;
      const child = spawn(process.execPath, ["--require", "tsx/cjs", "-e", script], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      const path = await new Promise<string>((done) =>
        child.stdout.once("data", (data: Buffer) => done(data.toString().trim())),
      );
      assert.ok(existsSync(path), `${path} was not written`);
      const exited = new Promise<NodeJS.Signals | null>((done) =>
        child.once("exit", (_code, received) => done(received)),
      );
      child.kill(signal);
      assert.equal(await exited, signal);
      assert.ok(!existsSync(path), `${path} is left behind`);
      assert.equal(path, temporaryPath(file).replace(String(process.pid), String(child.pid)));
    });
  }
});

describe("removeOnSignal with other listeners", () => {
  for (const add of ["on", "once"] as const) test(`SIGINT ${add}() listener keeps the files`, async () => {
    const file = join(tmp.dir, "own-listener.lz4");
    const module = resolve(__dirname, "..", "src", "temp-output.ts");
    const script = `
      const { removeOnSignal, temporaryPath } = require(${JSON.stringify(module)});
      const fs = require("node:fs");
      const path = temporaryPath(${JSON.stringify(file)});
      fs.writeFileSync(path, "partial");
      // The program's listener comes first and shuts down a moment later.
      process.${add}("SIGINT", () => setTimeout(() => {
        console.log(fs.existsSync(path) ? "kept" : "removed");
        process.exit(0);
      }, 100));
      removeOnSignal([path]);
      console.log("ready");
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ["--require", "tsx/cjs", "-e", script], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    const lines: string[] = [];
    child.stdout.on("data", (data: Buffer) => lines.push(...data.toString().trim().split("\n")));
    while (!lines.includes("ready")) await new Promise((done) => setTimeout(done, 20));
    const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)));
    child.kill("SIGINT");
    assert.equal(await exited, 0);
    assert.deepEqual(lines, ["ready", "kept"]);
  });

  test("many guards share one listener", () => {
    const before = process.listenerCount("SIGINT");
    const stops = Array.from({ length: 20 }, (_, n) => removeOnSignal([`/nonexistent/${n}`]));
    assert.equal(process.listenerCount("SIGINT"), before + 1);
    for (const stop of stops) stop();
    assert.equal(process.listenerCount("SIGINT"), before);
  });
});

test("temporaryPath names the process", () => {
  assert.equal(temporaryPath("/a/b.lz4"), `/a/b.lz4.tmp-${process.pid}`);
});
