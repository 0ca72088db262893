import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import { Readable, type Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { describe, it } from "node:test";
import PluginError from "plugin-error";
import Vinyl from "vinyl";
import type { ImageFacts, InitramfsFile } from "../plugins/meta.js";
import { shmStore, type StoredFile } from "../plugins/shm-store.js";
import type { InitramfsWarning } from "../plugins/transform.js";
import { CpioWriter } from "../src/cpio.js";
import { compressLegacy } from "../src/lz4.js";
import { loadImage, segmentPath, storeImage } from "../src/shm.js";
import { tempDir } from "./helpers/tools.js";

/** Returns a newc archive without a trailer holding `size` random bytes. */
function newcBase(size: number): Promise<Buffer> {
  const writer = new CpioWriter().addFile("data", { data: randomBytes(size) });
  return writer.finish({ trailer: false }).toBuffer();
}

/** Returns an LZ4 image: a compressed base, then random suffix bytes. */
async function lz4Image(
  baseSize: number,
): Promise<{ contents: Buffer; baseLength: number }> {
  const base = await compressLegacy(await newcBase(baseSize));
  const suffix = await compressLegacy(randomBytes(200));
  return { contents: Buffer.concat([base, suffix]), baseLength: base.length };
}

function randomKey(): string {
  return randomBytes(8).toString("hex");
}

async function withDir(body: (dir: string) => Promise<void>): Promise<void> {
  const { dir, cleanup } = tempDir("shm-store");
  try {
    await body(dir);
  } finally {
    cleanup();
  }
}

/** Runs `files` through `stream` and returns what comes out. */
async function runThrough(stream: Transform, files: Vinyl[]): Promise<Vinyl[]> {
  const out: Vinyl[] = [];
  await pipeline(Readable.from(files), stream, async (source) => {
    for await (const file of source) out.push(file as Vinyl);
  });
  return out;
}

/** An image file whose first `baseLength` bytes are the base part. */
function imageFile(
  contents: Buffer,
  baseLength: number,
  compression: ImageFacts["compression"],
  key = randomKey(),
): InitramfsFile {
  const file: InitramfsFile = new Vinyl({
    cwd: "/",
    base: "/out",
    path: "/out/initramfs.lz4",
    contents,
  });
  const suffixLength = contents.length - baseLength;
  file.initramfs = {
    image: {
      key,
      parts: [
        { name: "base", length: baseLength, archiveLength: baseLength },
        { name: "suffix", length: suffixLength, archiveLength: suffixLength },
      ],
      compression,
      entries: 3,
    } as ImageFacts,
  };
  return file;
}

function expectPluginError(code: string, fileName: string) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof PluginError, String(err));
    assert.equal((err as PluginError & { code?: string }).code, code);
    assert.equal(err.plugin, "gulp-initramfs");
    assert.equal(err.fileName, fileName);
    return true;
  };
}

describe("shmStore", () => {
  it("stores the base part of an lz4 image", () =>
    withDir(async (shmDir) => {
      const { contents, baseLength } = await lz4Image(5000);
      const file = imageFile(contents, baseLength, "lz4-legacy");
      const key = file.initramfs!.image!.key;
      const [out] = await runThrough(shmStore({ shmDir }), [file]);

      assert.equal(out, file);
      assert.ok(out.isBuffer() && out.contents.equals(contents));
      const expectedPath = segmentPath(key, "lz4", { shmDir });
      assert.equal((out as StoredFile).shmSegment, expectedPath);
      const image = await loadImage(key, "lz4", { shmDir });
      assert.ok(image);
      try {
        assert.ok(image.bytes.equals(contents.subarray(0, baseLength)));
      } finally {
        image.release();
      }
      assert.equal(await loadImage(key, "base", { shmDir }), null);
    }));

  it("uses ktstr-base for uncompressed images", () =>
    withDir(async (shmDir) => {
      const base = await newcBase(1400);
      const contents = Buffer.concat([base, randomBytes(512)]);
      const file = imageFile(contents, base.length, "none");
      const key = file.initramfs!.image!.key;
      const [out] = await runThrough(shmStore({ shmDir }), [file]);

      const expectedPath = segmentPath(key, "base", { shmDir });
      assert.equal((out as StoredFile).shmSegment, expectedPath);
      const image = await loadImage(key, "base", { shmDir });
      assert.ok(image?.bytes.equals(base));
      image?.release();
    }));

  it("keeps an existing valid segment", () =>
    withDir(async (shmDir) => {
      const key = randomKey();
      const { contents, baseLength } = await lz4Image(100);
      await storeImage(key, "lz4", contents.subarray(0, baseLength), { shmDir });
      const file = imageFile(contents, baseLength, "lz4-legacy", key);
      const path = segmentPath(key, "lz4", { shmDir });
      const before = fs.statSync(path).ino;
      const [out] = await runThrough(shmStore({ shmDir }), [file]);

      assert.equal((out as StoredFile).shmSegment, path);
      // A rebuild unlinks the segment and creates a new inode.
      assert.equal(fs.statSync(path).ino, before);
    }));

  it("passes other files through untouched", () =>
    withDir(async (shmDir) => {
      const nullImage = imageFile(Buffer.alloc(0), 0, "lz4-legacy");
      nullImage.contents = null;
      const plain = new Vinyl({ path: "/in/init", contents: Buffer.from("x") });
      const link = new Vinyl({ path: "/in/lib", symlink: "/lib64" });
      const stream = Readable.from([Buffer.from("streamed")]);
      const streamed = new Vinyl({ path: "/in/big", contents: stream });
      const inputs = [nullImage, plain, link, streamed];
      const warnings: InitramfsWarning[] = [];
      const store = shmStore({ shmDir, onWarning: (w) => warnings.push(w) });
      const outputs = await runThrough(store, inputs);

      assert.deepEqual(warnings.map((w) => w.code), ["SHM_NO_CONTENTS"]);
      assert.equal(warnings[0].fileName, "/out/initramfs.lz4");

      assert.equal(outputs.length, inputs.length);
      outputs.forEach((out, i) => assert.equal(out, inputs[i]));
      assert.equal(nullImage.contents, null);
      assert.equal(streamed.contents, stream);
      for (const out of outputs) {
        assert.equal((out as StoredFile).shmSegment, undefined);
      }
      assert.deepEqual(fs.readdirSync(shmDir), []);
    }));

  it("buffers a streaming image", () =>
    withDir(async (shmDir) => {
      const base = await newcBase(900);
      const contents = Buffer.concat([base, randomBytes(2000)]);
      const file = imageFile(Buffer.alloc(0), base.length, "none");
      const image = file.initramfs!.image!;
      const key = image.key;
      image.key = "";
      image.parts[1].length = 2000;
      // Like cpio({ buffer: false }): the key is set once the base is read.
      file.contents = Readable.from(
        (async function* () {
          yield contents.subarray(0, base.length);
          image.key = key;
          yield contents.subarray(base.length);
        })(),
      );
      const [out] = await runThrough(shmStore({ shmDir }), [file]);

      assert.ok(out.isBuffer());
      assert.ok(out.contents.equals(contents));
      const path = segmentPath(key, "base", { shmDir });
      assert.equal((out as StoredFile).shmSegment, path);
      const stored = await loadImage(key, "base", { shmDir });
      assert.ok(stored?.bytes.equals(base));
      stored?.release();
    }));

  it("rejects an image without a key", () =>
    withDir(async (shmDir) => {
      const file = imageFile(Buffer.alloc(10), 5, "lz4-legacy", "");
      await assert.rejects(
        runThrough(shmStore({ shmDir }), [file]),
        expectPluginError("SHM_INVALID_KEY", file.path),
      );
      assert.deepEqual(fs.readdirSync(shmDir), []);
    }));

  it("rejects a base that is not LZ4", () =>
    withDir(async (shmDir) => {
      const file = imageFile(randomBytes(100), 60, "lz4-legacy");
      await assert.rejects(
        runThrough(shmStore({ shmDir }), [file]),
        expectPluginError("SHM_INVALID_PAYLOAD", file.path),
      );
      assert.deepEqual(fs.readdirSync(shmDir), []);
    }));

  it("rejects parts that mismatch contents", () =>
    withDir(async (shmDir) => {
      const file = imageFile(Buffer.alloc(100), 60, "lz4-legacy");
      file.initramfs!.image!.parts[1].length = 50;
      await assert.rejects(
        runThrough(shmStore({ shmDir }), [file]),
        expectPluginError("SHM_INVALID_IMAGE", file.path),
      );
      assert.deepEqual(fs.readdirSync(shmDir), []);
    }));

  it("raises store errors with the file name", () =>
    withDir(async (shmDir) => {
      const { contents, baseLength } = await lz4Image(100);
      const file = imageFile(contents, baseLength, "lz4-legacy");
      const key = file.initramfs!.image!.key;
      const old = await compressLegacy(await newcBase(50));
      const { path } = await storeImage(key, "lz4", old, { shmDir });
      fs.chmodSync(path, 0o666);
      await assert.rejects(
        runThrough(shmStore({ shmDir }), [file]),
        expectPluginError("SHM_UNSAFE_MODE", file.path),
      );
      assert.ok(fs.readFileSync(path).equals(old));
    }));

  it("rejects invalid options at construction", () => {
    const invalid: Array<[string, Parameters<typeof shmStore>[0]]> = [
      ["SHM_INVALID_OPTION", { mode: 0o666 as 0o644 }],
      ["SHM_INVALID_OPTION", { arch: "x86/64" }],
      ["SHM_INVALID_OPTION", { lockTimeoutMs: -1 }],
      ["SHM_INVALID_OPTION", { lockTimeoutMs: Number.NaN }],
    ];
    for (const [code, options] of invalid) {
      assert.throws(
        () => shmStore(options),
        (err: { code?: string }) => err.code === code,
        JSON.stringify(options),
      );
    }
  });

  it("reports a rebuilt segment as a warning", () =>
    withDir(async (shmDir) => {
      const { contents, baseLength } = await lz4Image(100);
      const file = imageFile(contents, baseLength, "lz4-legacy");
      const key = file.initramfs!.image!.key;
      const path = segmentPath(key, "lz4", { shmDir });
      fs.writeFileSync(path, Buffer.alloc(40), { mode: 0o600 });
      const warnings: InitramfsWarning[] = [];
      const onWarning = (w: InitramfsWarning): void => void warnings.push(w);
      await runThrough(shmStore({ shmDir, onWarning }), [file]);

      assert.equal(warnings.length, 1);
      assert.equal(warnings[0].code, "SHM_SEGMENT_INVALID");
      assert.equal(warnings[0].fileName, file.path);
      const image = await loadImage(key, "lz4", { shmDir });
      assert.ok(image?.bytes.equals(contents.subarray(0, baseLength)));
      image?.release();
    }));
});
