import assert from "node:assert/strict";
import { mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { HostTree } from "../src/file-tree.js";
import { tempDir } from "./helpers/tools.js";

describe("HostTree.addExternal", () => {
  const tmp = tempDir("file-tree");
  after(() => tmp.cleanup());

  test("file is found at its host path", () => {
    const root = join(tmp.dir, "root-a");
    mkdirSync(root);
    const binary = join(tmp.dir, "build", "app");
    mkdirSync(join(tmp.dir, "build"));
    writeFileSync(binary, "elf");
    const tree = new HostTree(root);
    assert.equal(tree.lookup(binary), null);
    tree.addExternal(binary);
    assert.deepEqual(tree.lookup(binary), { type: "file", hostPath: binary });
    assert.equal(tree.canonical(binary), binary);
    assert.deepEqual(tree.lookup(join(tmp.dir, "build")), { type: "dir" });
    assert.equal(tree.lookup(join(tmp.dir, "build", "next-to-app")), null);
  });

  test("sysroot entries win over its parents", () => {
    const root = join(tmp.dir, "root-b");
    // The sysroot has its own /tmp: a symlink to /real-tmp inside it.
    mkdirSync(join(root, "real-tmp"), { recursive: true });
    symlinkSync("/real-tmp", join(root, "tmp"));
    const binary = join(tmp.dir, "app-b");
    writeFileSync(binary, "elf");
    const tree = new HostTree(root);
    tree.addExternal(binary);
    assert.deepEqual(tree.lookup("/tmp"), { type: "symlink", target: "/real-tmp" });
  });
});
