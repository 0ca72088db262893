import assert from "node:assert/strict";
import {
  mkdirSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, beforeEach, describe, test } from "node:test";
import {
  distIsCurrent,
  SOURCES_MANIFEST,
  sourceDigests,
} from "../scripts/load-tasks.js";
import { tempDir } from "./helpers/tools.js";

const SOURCES = [
  "index.ts",
  "tsconfig.json",
  "tsconfig.build.json",
  "src/a.ts",
  "src/deep/b.ts",
  "plugins/c.ts",
];

describe("distIsCurrent", () => {
  const tmp = tempDir("load-tasks");
  const root = join(tmp.dir, "package");
  after(() => tmp.cleanup());

  const write = (path: string, text: string) => {
    mkdirSync(join(root, path, ".."), { recursive: true });
    writeFileSync(join(root, path), text);
  };
  /** Writes the compiled files and records the digests as `npm run build` does. */
  const build = () => {
    const digests = sourceDigests(root);
    for (const path of Object.keys(digests).filter((p) => p.endsWith(".ts"))) {
      write(`dist/${path.replace(/\.ts$/, ".js")}`, "");
    }
    write(SOURCES_MANIFEST, JSON.stringify(digests));
  };

  beforeEach(() => {
    rmSync(root, { recursive: true, force: true });
    for (const path of SOURCES) write(path, `// ${path}\n`);
    write("src/types.d.ts", "");
    build();
  });

  test("true right after a build", () => {
    assert.equal(distIsCurrent(root), true);
  });

  test("false after an edit with an old mtime", () => {
    write("src/deep/b.ts", "// edited\n");
    utimesSync(join(root, "src/deep/b.ts"), 1000, 1000);
    assert.equal(distIsCurrent(root), false);
  });

  test("false after a new source", () => {
    write("plugins/new.ts", "");
    assert.equal(distIsCurrent(root), false);
  });

  test("false after a tsconfig edit", () => {
    write("tsconfig.json", "{}");
    assert.equal(distIsCurrent(root), false);
  });

  test("false without a compiled file", () => {
    rmSync(join(root, "dist", "src", "deep", "b.js"));
    assert.equal(distIsCurrent(root), false);
  });

  test("false without the manifest", () => {
    rmSync(join(root, SOURCES_MANIFEST));
    assert.equal(distIsCurrent(root), false);
  });

  test("follows a symlinked directory", () => {
    write("elsewhere/linked.ts", "// one\n");
    symlinkSync(join(root, "elsewhere"), join(root, "src", "linked"));
    build();
    assert.equal(distIsCurrent(root), true);
    write("elsewhere/linked.ts", "// two\n");
    assert.equal(distIsCurrent(root), false);
  });
});
