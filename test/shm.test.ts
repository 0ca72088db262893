import assert from "node:assert/strict";
import { ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  LOCK_EX,
  LOCK_NB,
  LOCK_SH,
  flock,
  tryFlock,
} from "../src/libc.js";
import { CpioWriter } from "../src/cpio.js";
import { compressLegacy, decompressLegacy } from "../src/lz4.js";
import { appendSuffix } from "../src/suffix.js";
import {
  SegmentKind,
  ShmWarning,
  cleanupStale,
  loadImage,
  rustArch,
  segmentName,
  segmentPath,
  storeImage,
} from "../src/shm.js";
import type { ChildRequest } from "./helpers/shm-child.js";
import { seededBytes, seededImage } from "./helpers/shm-child.js";
import { requireTool, run, tempDir } from "./helpers/tools.js";

const CHILD_SCRIPT = join(__dirname, "helpers", "shm-child.ts");

/** Returns an LZ4 legacy stream of `text`: a valid ktstr-lz4 payload. */
function lz4(text: string): Promise<Buffer> {
  return compressLegacy(Buffer.from(text));
}

/** Returns the text that a stored LZ4 payload decodes to. */
function textOf(payload: Buffer | undefined): string | undefined {
  return payload && decompressLegacy(payload).toString();
}

/** Returns a newc archive (no trailer) of one file: a ktstr-base payload. */
function newc(data: Buffer): Promise<Buffer> {
  const writer = new CpioWriter().addFile("data", { data });
  return writer.finish({ trailer: false }).toBuffer();
}

function randomKey(): string {
  return randomBytes(8).toString("hex");
}

async function withDir(body: (dir: string) => Promise<void>): Promise<void> {
  const { dir, cleanup } = tempDir("shm");
  try {
    await body(dir);
  } finally {
    cleanup();
  }
}

function hasCode(code: string): (err: unknown) => boolean {
  return (err) => {
    assert.equal((err as { code?: string }).code, code, String(err));
    return true;
  };
}

/** Resolves with the first stdout line of `child` that equals `line`. */
function waitForLine(child: ChildProcess, line: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = "";
    const onData = (data: Buffer): void => {
      seen += data.toString();
      if (seen.split("\n").includes(line)) {
        child.stdout?.off("data", onData);
        resolve();
      }
    };
    child.stdout?.on("data", onData);
    child.once("exit", (code, signal) =>
      reject(new Error(`child exited (${code ?? signal}) before "${line}"`)),
    );
  });
}

function waitForExit(
  child: ChildProcess,
): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
}

/**
 * Runs `flock(1) -s|-x PATH` around a shell that prints "locked" and
 * sleeps, and resolves once the lock is held. `release()` kills the
 * process group (flock and its shell) by its id.
 */
async function holdWithFlock(
  path: string,
  mode: "-s" | "-x",
  seconds: number,
): Promise<{ child: ChildProcess; release: () => Promise<void> }> {
  const child = spawn(
    requireTool("flock"),
    [mode, path, "-c", `echo locked; exec sleep ${seconds}`],
    { detached: true, stdio: ["ignore", "pipe", "inherit"] },
  );
  await waitForLine(child, "locked");
  const release = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      process.kill(-child.pid!, "SIGKILL");
    }
    await waitForExit(child);
  };
  return { child, release };
}

function flockNonBlocking(path: string, mode: "-s" | "-x"): number | null {
  return spawnSync(requireTool("flock"), ["-n", mode, path, "true"]).status;
}

function spawnChild(request: ChildRequest): ChildProcess {
  return spawn(
    process.execPath,
    ["--import", "tsx", CHILD_SCRIPT, JSON.stringify(request)],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
}

async function collectStdout(child: ChildProcess): Promise<string> {
  let out = "";
  child.stdout?.on("data", (data: Buffer) => (out += data.toString()));
  const { code, signal } = await waitForExit(child);
  assert.equal(code, 0, `child failed (${signal ?? code}): ${out}`);
  return out;
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

describe("segment names", () => {
  it("maps Node arches to Rust names", () => {
    assert.equal(rustArch("x64"), "x86_64");
    assert.equal(rustArch("arm64"), "aarch64");
    assert.throws(() => rustArch("mips"), hasCode("SHM_UNKNOWN_ARCH"));
  });

  it("builds ktstr-KIND-ARCH-KEY", () => {
    const key = "00112233aabbccdd";
    assert.equal(
      segmentName(key, "base", "x86_64"),
      "ktstr-base-x86_64-00112233aabbccdd",
    );
    assert.equal(
      segmentName(key, "lz4", "aarch64"),
      "ktstr-lz4-aarch64-00112233aabbccdd",
    );
    assert.equal(
      segmentPath(key, "lz4", { shmDir: "/x", arch: "aarch64" }),
      "/x/ktstr-lz4-aarch64-00112233aabbccdd",
    );
  });

  it("rejects malformed keys and arches", () => {
    for (const key of ["00112233AABBCCDD", "0011", "../../etc/passwd0"]) {
      assert.throws(
        () => segmentName(key, "lz4", "x86_64"),
        hasCode("SHM_INVALID_KEY"),
      );
    }
    assert.throws(
      () => segmentName("00112233aabbccdd", "lz4", "x86/64"),
      hasCode("SHM_INVALID_OPTION"),
    );
  });
});

describe("store and load", () => {
  it("round-trips the exact payload", () =>
    withDir(async (shmDir) => {
      const key = randomKey();
      const payload = await newc(seededBytes("round-trip", 100_000));
      const stored = await storeImage(key, "base", payload, { shmDir });
      assert.equal(stored.built, true);
      assert.equal(stored.path, join(shmDir, segmentName(key, "base")));
      const image = await loadImage(key, "base", { shmDir });
      assert.ok(image);
      try {
        assert.ok(image.bytes.equals(payload));
      } finally {
        image.release();
      }
      image.release();
    }));

  it("segment is exactly the payload", () =>
    withDir(async (shmDir) => {
      const payload = await seededImage("exact", 20 << 20);
      const { path } = await storeImage(randomKey(), "lz4", payload, {
        shmDir,
      });
      assert.equal(fs.statSync(path).size, payload.length);
      assert.ok(fs.readFileSync(path).equals(payload));
    }));

  it("segment plus suffix decodes with lz4 -d", () =>
    withDir(async (shmDir) => {
      const base = await newc(Buffer.from("from the base\n"));
      const key = randomKey();
      const { path } = await storeImage(key, "lz4", await compressLegacy(base), {
        shmDir,
      });
      // As the ktstr harness does: the whole segment, then a suffix.
      const segment = fs.readFileSync(path);
      const image = await appendSuffix(segment, base.length, {
        args: ["from the suffix"],
      });
      const archive = run("lz4", ["-dc"], { input: image });
      const cpio = ["-i", "--quiet", "--to-stdout"];
      const data = run("cpio", [...cpio, "data"], { input: archive });
      const args = run("cpio", [...cpio, "args"], { input: archive });
      assert.equal(data.toString(), "from the base\n");
      assert.equal(args.toString(), "from the suffix");
    }));

  it("rejects a payload of the wrong format", () =>
    withDir(async (shmDir) => {
      const archive = await newc(Buffer.from("plain"));
      const cases: Array<[SegmentKind, Buffer]> = [
        ["lz4", archive],
        ["lz4", Buffer.alloc(0)],
        ["lz4", (await lz4("cut")).subarray(0, 6)],
        ["base", await compressLegacy(archive)],
        ["base", archive.subarray(0, archive.length - 4)],
      ];
      for (const [kind, payload] of cases) {
        await assert.rejects(
          storeImage(randomKey(), kind, payload, { shmDir }),
          hasCode("SHM_INVALID_PAYLOAD"),
        );
      }
      assert.deepEqual(fs.readdirSync(shmDir), []);
    }));

  it("returns null on a miss", () =>
    withDir(async (shmDir) => {
      assert.equal(await loadImage(randomKey(), "lz4", { shmDir }), null);
    }));

  it("skips the producer when valid", () =>
    withDir(async (shmDir) => {
      const key = randomKey();
      let calls = 0;
      const payload = await lz4("built once");
      const producer = (): Buffer => {
        calls += 1;
        return payload;
      };
      assert.equal((await storeImage(key, "lz4", producer, { shmDir })).built, true);
      assert.equal((await storeImage(key, "lz4", producer, { shmDir })).built, false);
      assert.equal(calls, 1);
    }));

  it("creates mode 0600 or 0644 despite umask", () =>
    withDir(async (shmDir) => {
      const previous = process.umask(0o077);
      try {
        const first = await storeImage(randomKey(), "lz4", await lz4("a"), {
          shmDir,
        });
        const second = await storeImage(randomKey(), "lz4", await lz4("b"), {
          shmDir,
          mode: 0o644,
        });
        assert.equal(fs.statSync(first.path).mode & 0o777, 0o600);
        assert.equal(fs.statSync(second.path).mode & 0o777, 0o644);
      } finally {
        process.umask(previous);
      }
    }));

  const damages: Array<[string, RegExp, (path: string) => void]> = [
    [
      "a zeroed magic",
      /LZ4 legacy magic/,
      (path) => {
        const fd = fs.openSync(path, "r+");
        fs.writeSync(fd, Buffer.alloc(4), 0, 4, 0);
        fs.closeSync(fd);
      },
    ],
    [
      "a bad block size",
      /block size 0 at 4/,
      (path) => {
        const fd = fs.openSync(path, "r+");
        fs.writeSync(fd, Buffer.alloc(4), 0, 4, 4);
        fs.closeSync(fd);
      },
    ],
    [
      "a cut last block",
      /past its/,
      (path) => fs.truncateSync(path, fs.statSync(path).size - 1),
    ],
    [
      "bytes after the last block",
      /block size/,
      (path) => fs.appendFileSync(path, Buffer.from("KTSTRSHM")),
    ],
  ];

  for (const [what, reason, damage] of damages) {
    it(`rebuilds a segment with ${what}`, () =>
      withDir(async (shmDir) => {
        const key = randomKey();
        const payload = await seededImage("damaged", 9 << 20);
        const { path } = await storeImage(key, "lz4", payload, { shmDir });
        damage(path);
        assert.equal(await loadImage(key, "lz4", { shmDir }), null);

        const warnings: ShmWarning[] = [];
        const onWarning = (w: ShmWarning): void => void warnings.push(w);
        const result = await storeImage(key, "lz4", payload, {
          shmDir,
          onWarning,
        });
        assert.equal(result.built, true);
        assert.equal(warnings.length, 1);
        assert.equal(warnings[0].code, "SHM_SEGMENT_INVALID");
        assert.match(warnings[0].message, reason);
        const image = await loadImage(key, "lz4", { shmDir });
        assert.ok(image?.bytes.equals(payload));
        image?.release();
      }));
  }

  it("rebuilds a base segment that ends mid-entry", () =>
    withDir(async (shmDir) => {
      const key = randomKey();
      const payload = await newc(seededBytes("base", 5000));
      const { path } = await storeImage(key, "base", payload, { shmDir });
      fs.truncateSync(path, payload.length - 8);
      assert.equal(await loadImage(key, "base", { shmDir }), null);
      const result = await storeImage(key, "base", payload, { shmDir });
      assert.equal(result.built, true);
      assert.equal(fs.statSync(path).size, payload.length);
    }));

  it("removes the segment when the producer throws", () =>
    withDir(async (shmDir) => {
      const key = randomKey();
      const failure = new Error("compiler crashed");
      await assert.rejects(
        storeImage(key, "lz4", () => Promise.reject(failure), { shmDir }),
        (err) => err === failure,
      );
      assert.deepEqual(fs.readdirSync(shmDir), []);
    }));

  it("rejects a producer returning a string", () =>
    withDir(async (shmDir) => {
      const producer = (() => "text") as unknown as () => Buffer;
      await assert.rejects(
        storeImage(randomKey(), "lz4", producer, { shmDir }),
        hasCode("SHM_INVALID_PAYLOAD"),
      );
      assert.deepEqual(fs.readdirSync(shmDir), []);
    }));
});

describe("flock(1) interop", () => {
  it("store waits for flock -s to rebuild", () =>
    withDir(async (shmDir) => {
      const key = randomKey();
      const path = segmentPath(key, "lz4", { shmDir });
      // The store must take LOCK_EX to replace this incomplete segment.
      fs.writeFileSync(path, Buffer.alloc(10), { mode: 0o600 });
      const payload = await lz4("new");
      const holder = await holdWithFlock(path, "-s", 3);
      try {
        const fd = fs.openSync(path, "r");
        assert.equal(tryFlock(fd, LOCK_EX), false);
        assert.throws(() => flock(fd, LOCK_EX | LOCK_NB), hasCode("EWOULDBLOCK"));
        assert.equal(tryFlock(fd, LOCK_SH), true);
        fs.closeSync(fd);

        const started = Date.now();
        const result = await storeImage(key, "lz4", payload, { shmDir });
        const waited = Date.now() - started;
        assert.equal(result.built, true);
        // flock(1) releases after its 3 s sleep, less the setup above.
        assert.ok(waited >= 1500, `store returned after ${waited} ms`);
      } finally {
        await holder.release();
      }
      const image = await loadImage(key, "lz4", { shmDir });
      assert.equal(textOf(image?.bytes), "new");
      image?.release();
    }));

  it("retries when the segment is replaced", () =>
    withDir(async (shmDir) => {
      const key = randomKey();
      const path = segmentPath(key, "lz4", { shmDir });
      fs.writeFileSync(path, Buffer.alloc(10), { mode: 0o600 });
      const waitingPayload = await lz4("from the waiting store");
      const payload = await lz4("new");
      // flock(1) plays a failed writer that keeps LOCK_EX on an unlinked file.
      const holder = await holdWithFlock(path, "-x", 30);
      let producerCalls = 0;
      const waitingStore = storeImage(
        key,
        "lz4",
        () => {
          producerCalls += 1;
          return waitingPayload;
        },
        { shmDir },
      );
      const waitingLoad = loadImage(key, "lz4", { shmDir });
      try {
        await new Promise((resolve) => setTimeout(resolve, 200));
        fs.unlinkSync(path);
        const replaced = await storeImage(key, "lz4", payload, { shmDir });
        assert.equal(replaced.built, true);
      } finally {
        await holder.release();
      }

      assert.equal((await waitingStore).built, false);
      assert.equal(producerCalls, 0);
      const loaded = await waitingLoad;
      assert.equal(textOf(loaded?.bytes), "new");
      loaded?.release();
      assert.ok(fs.readFileSync(path).equals(payload));
    }));

  it("times out behind flock -x", () =>
    withDir(async (shmDir) => {
      const key = randomKey();
      const { path } = await storeImage(key, "lz4", await lz4("x"), {
        shmDir,
      });
      const holder = await holdWithFlock(path, "-x", 30);
      try {
        const options = { shmDir, lockTimeoutMs: 200 };
        await assert.rejects(loadImage(key, "lz4", options), hasCode("SHM_LOCK_TIMEOUT"));
        await assert.rejects(
          storeImage(key, "lz4", await lz4("y"), options),
          hasCode("SHM_LOCK_TIMEOUT"),
        );
      } finally {
        await holder.release();
      }
      assert.ok(fs.existsSync(path));
    }));

  it("flock -n fails while we write", () =>
    withDir(async (shmDir) => {
      const key = randomKey();
      const path = segmentPath(key, "lz4", { shmDir });
      let status: number | null = -1;
      const payload = await lz4("payload");
      await storeImage(
        key,
        "lz4",
        () => {
          status = flockNonBlocking(path, "-s");
          return payload;
        },
        { shmDir },
      );
      assert.equal(status, 1);
      assert.equal(flockNonBlocking(path, "-x"), 0);
    }));

  it("reader holds LOCK_SH until release", () =>
    withDir(async (shmDir) => {
      const key = randomKey();
      const { path } = await storeImage(key, "lz4", await lz4("p"), {
        shmDir,
      });
      const image = await loadImage(key, "lz4", { shmDir });
      assert.ok(image);
      assert.equal(flockNonBlocking(path, "-x"), 1);
      assert.equal(flockNonBlocking(path, "-s"), 0);
      image.release();
      assert.equal(flockNonBlocking(path, "-x"), 0);
    }));
});

describe("concurrent processes", () => {
  it("eight stores build exactly once", { timeout: 120_000 }, () =>
    withDir(async (shmDir) => {
      const key = randomKey();
      const counterFile = join(shmDir, "builds.log");
      const barrierFile = join(shmDir, "go");
      const size = 1 << 20;
      const children = Array.from({ length: 8 }, () =>
        spawnChild({
          shmDir,
          key,
          size,
          seed: "concurrent",
          counterFile,
          barrierFile,
          producerDelayMs: 200,
        }),
      );
      const outputs = children.map(collectStdout);
      await Promise.all(children.map((c) => waitForLine(c, "ready")));
      fs.writeFileSync(barrierFile, "");
      const results = (await Promise.all(outputs)).map((out) => {
        const lines = out.trim().split("\n");
        return JSON.parse(lines[lines.length - 1]) as {
          built: boolean;
          sha256: string;
        };
      });

      const builds = fs.readFileSync(counterFile, "utf8").trim().split("\n");
      assert.equal(builds.length, 1, `builders: ${builds.join(", ")}`);
      assert.equal(results.filter((r) => r.built).length, 1);
      const expected = sha256(await seededImage("concurrent", size));
      for (const result of results) assert.equal(result.sha256, expected);
    }));

  it("rebuilds after kill -9 in producer", { timeout: 60_000 }, () =>
    withDir(async (shmDir) => {
      const key = randomKey();
      const path = segmentPath(key, "lz4", { shmDir });
      const child = spawnChild({
        shmDir,
        key,
        size: 1000,
        seed: "killed",
        die: "producer",
      });
      await waitForLine(child, "building");
      assert.equal(flockNonBlocking(path, "-s"), 1);
      child.kill("SIGKILL");
      assert.equal((await waitForExit(child)).signal, "SIGKILL");
      assert.equal(fs.statSync(path).size, 0);
      assert.equal(await loadImage(key, "lz4", { shmDir }), null);

      const payload = await seededImage("killed", 1000);
      const result = await storeImage(key, "lz4", payload, { shmDir });
      assert.equal(result.built, true);
      const image = await loadImage(key, "lz4", { shmDir });
      assert.ok(image?.bytes.equals(payload));
      image?.release();
    }));

  it("rebuilds after kill -9 mid-write", { timeout: 60_000 }, () =>
    withDir(async (shmDir) => {
      const key = randomKey();
      const size = 16 << 20;
      const child = spawnChild({ shmDir, key, size, seed: "torn", die: "write" });
      assert.equal((await waitForExit(child)).signal, "SIGKILL");

      const path = segmentPath(key, "lz4", { shmDir });
      const torn = fs.readFileSync(path);
      const payload = await seededImage("torn", size);
      assert.equal(torn.length, payload.length, "space not allocated");
      assert.ok(torn.subarray(8, 72).equals(payload.subarray(8, 72)));
      // The head, and with it the magic, is written last.
      assert.ok(torn.subarray(0, 8).equals(Buffer.alloc(8)));
      assert.equal(await loadImage(key, "lz4", { shmDir }), null);

      const warnings: ShmWarning[] = [];
      const onWarning = (w: ShmWarning): void => void warnings.push(w);
      const result = await storeImage(key, "lz4", payload, { shmDir, onWarning });
      assert.equal(result.built, true);
      assert.equal(warnings[0]?.code, "SHM_SEGMENT_INVALID");
      assert.match(warnings[0]?.message ?? "", /magic/);
      const image = await loadImage(key, "lz4", { shmDir });
      assert.ok(image?.bytes.equals(payload));
      image?.release();
    }));
});

describe("full tmpfs", () => {
  it("fails with SHM_NO_SPACE and leaves nothing", () =>
    withDir(async (dir) => {
      const shmDir = join(dir, "tiny");
      fs.mkdirSync(shmDir);
      const mounted = spawnSync("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", shmDir], {
        encoding: "utf8",
      });
      assert.equal(mounted.status, 0, `mount failed: ${mounted.stderr}`);
      try {
        const payload = await seededImage("big", 1 << 20);
        await assert.rejects(
          storeImage(randomKey(), "lz4", payload, { shmDir }),
          (err: Error & { code?: string; cause?: { code?: string } }) => {
            assert.equal(err.code, "SHM_NO_SPACE");
            assert.equal(err.cause?.code, "ENOSPC");
            assert.match(err.message, /no space left/);
            return true;
          },
        );
        assert.deepEqual(fs.readdirSync(shmDir), []);
      } finally {
        const unmounted = spawnSync("umount", [shmDir], { encoding: "utf8" });
        assert.equal(unmounted.status, 0, `umount failed: ${unmounted.stderr}`);
      }
    }));
});

describe("untrusted segments", () => {
  const plants: Array<[string, string, (path: string, dir: string) => void]> = [
    ["SHM_FOREIGN_OWNER", "segment owned by nobody", (path) => fs.chownSync(path, 65534, 65534)],
    ["SHM_UNSAFE_MODE", "segment with mode 0666", (path) => fs.chmodSync(path, 0o666)],
    ["SHM_UNSAFE_MODE", "segment with mode 0620", (path) => fs.chmodSync(path, 0o620)],
    [
      "SHM_SYMLINK",
      "symlink to a valid segment",
      (path, dir) => {
        const target = join(dir, "elsewhere");
        fs.renameSync(path, target);
        fs.symlinkSync(target, path);
      },
    ],
    [
      "SHM_NOT_REGULAR",
      "FIFO",
      (path) => {
        fs.rmSync(path);
        const made = spawnSync("mkfifo", ["-m", "600", path]);
        assert.equal(made.status, 0);
      },
    ],
    [
      "SHM_NOT_REGULAR",
      "directory",
      (path) => {
        fs.rmSync(path);
        fs.mkdirSync(path, { mode: 0o700 });
      },
    ],
  ];

  for (const [code, what, plant] of plants) {
    it(`rejects ${what}`, () =>
      withDir(async (shmDir) => {
        const key = randomKey();
        const { path } = await storeImage(key, "lz4", await lz4("secret"), {
          shmDir,
        });
        plant(path, shmDir);
        await assert.rejects(loadImage(key, "lz4", { shmDir }), (err: Error) => {
          hasCode(code)(err);
          assert.ok(err.message.includes(`rm ${path}`), err.message);
          return true;
        });
        let called = false;
        const replacement = await lz4("replacement");
        const producer = (): Buffer => {
          called = true;
          return replacement;
        };
        await assert.rejects(storeImage(key, "lz4", producer, { shmDir }), hasCode(code));
        assert.equal(called, false);
      }));
  }
});

describe("cleanupStale", () => {
  it("removes only unlocked stale segments", () =>
    withDir(async (shmDir) => {
      const [kept, stale, locked, foreign] = [1, 2, 3, 4].map(randomKey);
      const paths = new Map<string, string>();
      for (const key of [kept, stale, locked, foreign]) {
        const { path } = await storeImage(key, "lz4", await lz4(key), {
          shmDir,
        });
        paths.set(key, path);
      }
      const baseStale = await storeImage(stale, "base", await newc(Buffer.from("b")), {
        shmDir,
      });
      fs.chownSync(paths.get(foreign)!, 65534, 65534);
      fs.writeFileSync(join(shmDir, "ktstr-other-file"), "not ours");
      const name = (key: string): string => segmentName(key, "lz4");

      const holder = await holdWithFlock(paths.get(locked)!, "-s", 30);
      const warnings: ShmWarning[] = [];
      try {
        const result = cleanupStale({
          shmDir,
          keep: [name(kept)],
          onWarning: (w) => void warnings.push(w),
        });
        assert.deepEqual(
          result.removed.sort(),
          [name(stale), segmentName(stale, "base")].sort(),
        );
        assert.deepEqual(result.inUse, [name(locked)]);
        assert.deepEqual(result.skipped, [name(foreign)]);
      } finally {
        await holder.release();
      }
      assert.equal(warnings.length, 1);
      assert.equal(warnings[0].code, "SHM_STALE_SKIPPED");
      assert.equal(fs.existsSync(paths.get(stale)!), false);
      assert.equal(fs.existsSync(baseStale.path), false);
      assert.equal(fs.existsSync(paths.get(kept)!), true);
      assert.equal(fs.existsSync(paths.get(locked)!), true);
      assert.equal(fs.existsSync(join(shmDir, "ktstr-other-file")), true);
    }));
});

describe("real /dev/shm", () => {
  it("stores and loads a unique segment", async () => {
    const key = randomKey();
    const path = segmentPath(key, "lz4");
    assert.equal(fs.existsSync(path), false);
    try {
      const payload = await seededImage("dev-shm", 65_536);
      assert.equal((await storeImage(key, "lz4", payload)).path, path);
      const image = await loadImage(key, "lz4");
      assert.ok(image?.bytes.equals(payload));
      image?.release();
    } finally {
      fs.rmSync(path, { force: true });
    }
  });
});
