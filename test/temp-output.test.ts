import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, describe, test } from "node:test";
import {
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

describe("removeStaleTemporaries", () => {
  test("removes only a dead writer's files", () => {
    const dir = join(tmp.dir, "stale");
    const out = join(dir, "image.lz4");
    const dead = exitedPid();
    const names = {
      deadImage: `image.lz4.tmp-${dead}`,
      deadRecord: `image.lz4.key.json.tmp-${dead}`,
      ours: `image.lz4.tmp-${process.pid}`,
      live: "image.lz4.tmp-1",
      otherImage: `other.lz4.tmp-${dead}`,
      notTemporary: "image.lz4.key.json",
    };
    for (const name of Object.values(names)) writeFileAtomic(join(dir, name), "x");

    const removed = removeStaleTemporaries(out);

    assert.deepEqual(removed.sort(), [join(dir, names.deadImage), join(dir, names.deadRecord)].sort());
    const left = readdirSync(dir).sort();
    assert.deepEqual(left, [names.live, names.notTemporary, names.ours, names.otherImage].sort());
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

test("temporaryPath names the process", () => {
  assert.equal(temporaryPath("/a/b.lz4"), `/a/b.lz4.tmp-${process.pid}`);
});
