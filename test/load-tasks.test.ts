import assert from "node:assert/strict";
import { mkdirSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, beforeEach, describe, test } from "node:test";
import { distIsCurrent } from "../scripts/load-tasks.js";
import { tempDir } from "./helpers/tools.js";

const SOURCES = ["index.ts", "src/a.ts", "src/deep/b.ts", "plugins/c.ts"];

describe("distIsCurrent", () => {
  const tmp = tempDir("load-tasks");
  const root = join(tmp.dir, "package");
  after(() => tmp.cleanup());

  /** Sets the modification time of `path` to `seconds` after the epoch. */
  const touch = (path: string, seconds: number) =>
    utimesSync(join(root, path), seconds, seconds);

  beforeEach(() => {
    rmSync(root, { recursive: true, force: true });
    for (const source of SOURCES) {
      const compiled = `dist/${source.replace(/\.ts$/, ".js")}`;
      for (const path of [source, compiled]) {
        mkdirSync(join(root, path, ".."), { recursive: true });
        writeFileSync(join(root, path), "");
      }
      touch(source, 1000);
      touch(compiled, 2000);
    }
    writeFileSync(join(root, "src", "types.d.ts"), "");
  });

  test("true when every output is newer", () => {
    assert.equal(distIsCurrent(root), true);
  });

  test("false when a source is newer", () => {
    touch("src/deep/b.ts", 3000);
    assert.equal(distIsCurrent(root), false);
  });

  test("false when an output is missing", () => {
    rmSync(join(root, "dist", "plugins", "c.js"));
    assert.equal(distIsCurrent(root), false);
  });

  test("false without dist", () => {
    rmSync(join(root, "dist"), { recursive: true });
    assert.equal(distIsCurrent(root), false);
  });
});
