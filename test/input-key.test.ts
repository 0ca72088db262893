import assert from "node:assert/strict";
import * as fs from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import {
  DigestCache,
  hashFile,
  inputKey,
  type KeyInputs,
} from "../src/input-key.js";
import { run, tempDir } from "./helpers/tools.js";

/**
 * Longer than the cache's 100 ms racy margin: a file whose ctime is
 * older than that when it is hashed gets a cache entry.
 */
const PAST_RACY_MARGIN_MS = 250;

async function withDir(body: (dir: string) => Promise<void>): Promise<void> {
  const { dir, cleanup } = tempDir("input-key");
  try {
    await body(dir);
  } finally {
    cleanup();
  }
}

/** A whole second, so that utimes() can restore it exactly. */
const OLD_MTIME = 1_700_000_000;

/**
 * Writes `text` to `path` with mtime OLD_MTIME and waits until its digest
 * may be cached.
 */
async function settledFile(path: string, text: string): Promise<void> {
  fs.writeFileSync(path, text);
  fs.utimesSync(path, OLD_MTIME, OLD_MTIME);
  await sleep(PAST_RACY_MARGIN_MS);
}

function mtimeNs(path: string): bigint {
  return fs.statSync(path, { bigint: true }).mtimeNs;
}

/** Hashes `path` with a cache primed by a first cache's entries. */
function digestAgain(first: DigestCache, path: string): DigestCache {
  const second = new DigestCache(first.entries());
  second.digest(path);
  return second;
}

describe("DigestCache prefetch", () => {
  it("hashes like sha256sum on threads", () =>
    withDir(async (dir) => {
      const paths = [0, 1, 2].map((i) => join(dir, `big${i}`));
      paths.forEach((path, i) => fs.writeFileSync(path, Buffer.alloc(40 << 20, i + 1)));
      const cache = new DigestCache();
      await cache.prefetch(paths, 2);
      assert.equal(cache.prefetchedFiles, 3);
      for (const path of paths) {
        const expected = run("sha256sum", [path]).toString().split(" ")[0];
        assert.equal(cache.digest(path), expected);
      }
      assert.equal(cache.hashedFiles, 3);
    }));

  it("rehashes a file changed after prefetch", () =>
    withDir(async (dir) => {
      const paths = [0, 1].map((i) => join(dir, `big${i}`));
      paths.forEach((path) => fs.writeFileSync(path, Buffer.alloc(40 << 20, 1)));
      const cache = new DigestCache();
      await cache.prefetch(paths, 2);
      fs.writeFileSync(paths[0], Buffer.alloc(40 << 20, 9));
      const expected = run("sha256sum", [paths[0]]).toString().split(" ")[0];
      assert.equal(cache.digest(paths[0]), expected);
    }));

  it("skips missing paths without throwing", () =>
    withDir(async (dir) => {
      const cache = new DigestCache();
      await cache.prefetch([join(dir, "absent"), join(dir, "gone")], 2);
      assert.equal(cache.prefetchedFiles, 0);
      assert.throws(() => cache.digest(join(dir, "absent")), /ENOENT/);
    }));
});

describe("DigestCache", () => {
  it("matches sha256sum", () =>
    withDir(async (dir) => {
      const path = join(dir, "data");
      fs.writeFileSync(path, Buffer.alloc(20 << 20, 7));
      const expected = run("sha256sum", [path]).toString().split(" ")[0];
      assert.equal(hashFile(path), expected);
      assert.equal(new DigestCache().digest(path), expected);
    }));

  it("reuses a digest of an unchanged file", () =>
    withDir(async (dir) => {
      const path = join(dir, "data");
      await settledFile(path, "contents");
      const first = new DigestCache();
      const digest = first.digest(path);
      assert.equal(first.hashedFiles, 1);
      const second = digestAgain(first, path);
      assert.equal(second.hashedFiles, 0);
      assert.equal(second.digest(path), digest);
      assert.deepEqual(second.entries(), first.entries());
    }));

  it("rehashes a same-size write with mtime restored", () =>
    withDir(async (dir) => {
      const path = join(dir, "data");
      await settledFile(path, "version 1");
      const first = new DigestCache();
      const before = first.digest(path);
      fs.writeFileSync(path, "version 2");
      fs.utimesSync(path, OLD_MTIME, OLD_MTIME);
      assert.equal(mtimeNs(path), BigInt(OLD_MTIME) * 1_000_000_000n);
      const second = digestAgain(first, path);
      assert.equal(second.hashedFiles, 1);
      assert.notEqual(second.digest(path), before);
    }));

  it("rehashes a replaced file", () =>
    withDir(async (dir) => {
      const path = join(dir, "data");
      await settledFile(path, "version 1");
      const first = new DigestCache();
      const before = first.digest(path);
      fs.writeFileSync(`${path}.new`, "version 2");
      fs.utimesSync(`${path}.new`, OLD_MTIME, OLD_MTIME);
      fs.renameSync(`${path}.new`, path);
      const second = digestAgain(first, path);
      assert.equal(second.hashedFiles, 1);
      assert.notEqual(second.digest(path), before);
    }));

  it("keeps the digest after a touch", () =>
    withDir(async (dir) => {
      const path = join(dir, "data");
      await settledFile(path, "contents");
      const first = new DigestCache();
      const before = first.digest(path);
      const later = new Date(Date.now() + 60_000);
      fs.utimesSync(path, later, later);
      const second = digestAgain(first, path);
      assert.equal(second.hashedFiles, 1);
      assert.equal(second.digest(path), before);
    }));

  it("keeps no entry for a just-written file", () =>
    withDir(async (dir) => {
      const path = join(dir, "data");
      fs.writeFileSync(path, "written now");
      const first = new DigestCache();
      first.digest(path);
      assert.deepEqual(first.entries(), {});
      assert.equal(digestAgain(first, path).hashedFiles, 1);
    }));

  it("follows symlinks", () =>
    withDir(async (dir) => {
      const path = join(dir, "data");
      fs.writeFileSync(path, "target contents");
      fs.symlinkSync(path, join(dir, "link"));
      const cache = new DigestCache();
      assert.equal(cache.digest(join(dir, "link")), cache.digest(path));
    }));

  it("raises ENOENT for a missing file", () => {
    assert.throws(
      () => new DigestCache().digest("/nonexistent/input"),
      (err: NodeJS.ErrnoException) => err.code === "ENOENT",
    );
  });
});

function sampleInputs(): KeyInputs {
  return {
    files: [
      { archivePath: "init", role: "payload", mode: 0o755, digest: "a1" },
      { archivePath: "data/x", role: "include", mode: 0o644, digest: "b2" },
    ],
    libraries: [
      {
        guestPath: "usr/lib/libc.so.6",
        hostPath: "/usr/lib/libc.so.6",
        digest: "c3",
        aliases: ["lib/libc.so.6", "lib64/libc.so.6"],
      },
    ],
    missing: ["libgone.so.1"],
    options: { sourceDateEpoch: "", compression: "lz4-legacy" },
  };
}

describe("inputKey", () => {
  it("is 16 lower-case hex digits", () => {
    assert.match(inputKey(sampleInputs()), /^[0-9a-f]{16}$/);
  });

  it("ignores the order of inputs", () => {
    const inputs = sampleInputs();
    const reordered: KeyInputs = {
      files: [...inputs.files].reverse(),
      libraries: inputs.libraries.map((lib) => ({
        ...lib,
        aliases: [...lib.aliases].reverse(),
      })),
      missing: [...inputs.missing, ...inputs.missing],
      options: { compression: "lz4-legacy", sourceDateEpoch: "" },
    };
    assert.equal(inputKey(reordered), inputKey(inputs));
  });

  const changes: Array<[string, (inputs: KeyInputs) => void]> = [
    ["archive path", (i) => (i.files[0].archivePath = "init2")],
    ["role", (i) => (i.files[1].role = "extra")],
    ["mode", (i) => (i.files[1].mode = 0o600)],
    ["file digest", (i) => (i.files[0].digest = "a2")],
    ["symlink flag", (i) => (i.files[1].symlink = true)],
    ["library path", (i) => (i.libraries[0].guestPath = "lib/libc.so.6")],
    ["library host path", (i) => (i.libraries[0].hostPath = "/lib/libc.so.6")],
    ["library digest", (i) => (i.libraries[0].digest = "c4")],
    ["library alias", (i) => i.libraries[0].aliases.pop()],
    ["missing name", (i) => (i.missing = [])],
    ["option", (i) => (i.options.sourceDateEpoch = "1700000000")],
  ];
  for (const [what, change] of changes) {
    it(`changes with the ${what}`, () => {
      const inputs = sampleInputs();
      change(inputs);
      assert.notEqual(inputKey(inputs), inputKey(sampleInputs()));
    });
  }
});
