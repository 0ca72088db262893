import assert from "node:assert/strict";
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, test } from "node:test";
import Vinyl from "vinyl";
import { cpio } from "../plugins/cpio.js";
import { lz4Legacy } from "../plugins/lz4-legacy.js";
import { metaOf, type InitramfsFile } from "../plugins/meta.js";
import { archiveFile, symlinkFile } from "../plugins/sources.js";
import { readCpio } from "../src/cpio-reader.js";
import { appendSuffix } from "../src/suffix.js";
import { readContents, runPlugin } from "./helpers/streams.js";
import { compileC, requireTool, run, tempDir } from "./helpers/tools.js";

const LEGACY_MAGIC = 0x184c2102;
const CHUNK_SIZE = 8 << 20;

const tmp = tempDir("lz4-legacy");
const init = join(tmp.dir, "init");

/** Decodes legacy LZ4 bytes with the lz4 command-line tool. */
function lz4Decode(bytes: Buffer): Buffer {
  return run("lz4", ["-d", "-c"], { input: bytes });
}

/**
 * Walks the block sizes of concatenated legacy streams and returns how
 * many streams there are; throws when a block runs past the end.
 */
function countStreams(bytes: Buffer): number {
  let streams = 0;
  let offset = 0;
  while (offset < bytes.length) {
    const word = bytes.readUInt32LE(offset);
    offset += 4;
    if (word === LEGACY_MAGIC) {
      streams++;
      continue;
    }
    assert.ok(streams > 0, "the data does not start with the legacy magic");
    offset += word;
    assert.ok(offset <= bytes.length, `block at ${offset - word} is cut`);
  }
  return streams;
}

/** Returns a cpio() image of a compiled binary and busybox. */
async function cpioImage(buffer = true): Promise<InitramfsFile> {
  const files = [
    archiveFile("init", init, "payload"),
    archiveFile("bin/busybox", requireTool("busybox"), "busybox"),
  ];
  const options = { buffer, suffix: { args: ["--flag"] } };
  const { files: out } = await runPlugin(cpio(options), files);
  return out[0];
}

/** Returns `size` bytes that compress but are not all alike. */
function sampleBytes(size: number): Buffer {
  const bytes = Buffer.alloc(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 7 + (i >> 9)) & 0xff;
  return bytes;
}

before(() => {
  requireTool("lz4");
  compileC("int main(void) { return 0; }\n", init, ["-g"]);
});

after(() => tmp.cleanup());

describe("lz4Legacy image", () => {
  let archive: Buffer;
  let archiveFacts: { key: string; entries: number; lengths: number[] };
  let file: InitramfsFile;
  let compressed: Buffer;

  before(async () => {
    const image = await cpioImage();
    archive = Buffer.from(image.contents as Buffer);
    const facts = image.initramfs!.image!;
    archiveFacts = {
      key: facts.key,
      entries: facts.entries,
      lengths: facts.parts.map((part) => part.length),
    };
    [file] = (await runPlugin(lz4Legacy(), [image])).files;
    compressed = await readContents(file);
  });

  test("whole image decodes to the archive", () => {
    assert.ok(lz4Decode(compressed).equals(archive));
  });

  test("image is two legacy streams", () => {
    assert.equal(countStreams(compressed), 2);
  });

  test("first part decodes to the base", () => {
    const [base] = file.initramfs!.image!.parts;
    const decoded = lz4Decode(compressed.subarray(0, base.length));
    assert.ok(decoded.equals(archive.subarray(0, base.archiveLength)));
  });

  test("second part decodes to the suffix", () => {
    const [base, suffix] = file.initramfs!.image!.parts;
    const decoded = lz4Decode(compressed.subarray(base.length));
    assert.equal(suffix.length, compressed.length - base.length);
    assert.ok(decoded.equals(archive.subarray(base.archiveLength)));
  });

  test("part lengths are compressed lengths", () => {
    const facts = file.initramfs!.image!;
    const total = facts.parts.reduce((sum, part) => sum + part.length, 0);
    assert.equal(total, compressed.length);
    assert.ok(facts.parts[0].length < archiveFacts.lengths[0]);
  });

  test("archive lengths and key are kept", () => {
    const facts = file.initramfs!.image!;
    assert.deepEqual(
      facts.parts.map((part) => part.archiveLength),
      archiveFacts.lengths,
    );
    assert.equal(facts.key, archiveFacts.key);
    assert.equal(facts.entries, archiveFacts.entries);
  });

  test("compression is lz4-legacy", () => {
    assert.equal(file.initramfs?.image?.compression, "lz4-legacy");
  });

  test("path gets .lz4", () => {
    assert.equal(file.relative, "initramfs.cpio.lz4");
  });

  test("appendSuffix rebuilds the same image", async () => {
    const [base] = file.initramfs!.image!.parts;
    const rebuilt = await appendSuffix(
      compressed.subarray(0, base.length),
      base.archiveLength,
      { args: ["--flag"] },
    );
    assert.ok(rebuilt.equals(compressed));
  });

  test("appendSuffix with new args decodes", async () => {
    const [base] = file.initramfs!.image!.parts;
    const rebuilt = await appendSuffix(
      compressed.subarray(0, base.length),
      base.archiveLength,
      { args: ["--other"] },
    );
    const decoded = lz4Decode(rebuilt);
    assert.equal(decoded.length % 512, 0);
    const args = readCpio(decoded).find((entry) => entry.name === "args");
    assert.equal(args?.data.toString(), "--other");
    assert.ok(decoded.subarray(0, base.archiveLength).equals(
      archive.subarray(0, base.archiveLength),
    ));
  });

  test("streamed image decodes to the archive", async () => {
    const streamed = await cpioImage(false);
    const [out] = (await runPlugin(lz4Legacy(), [streamed])).files;
    const bytes = await readContents(out);
    assert.ok(bytes.equals(compressed));
    assert.deepEqual(out.initramfs?.image, file.initramfs?.image);
  });

  test("sink receives the streamed image in order", async () => {
    const streamed = await cpioImage(false);
    const chunks: Buffer[] = [];
    const plugin = lz4Legacy({ sink: (chunk) => void chunks.push(chunk) });
    const [out] = (await runPlugin(plugin, [streamed])).files;
    assert.ok(chunks.length > 1, "more than one chunk");
    assert.ok(Buffer.concat(chunks).equals(await readContents(out)));
  });

  test("retain false leaves contents null", async () => {
    const whole = await readContents(
      (await runPlugin(lz4Legacy(), [await cpioImage(false)])).files[0],
    );
    const chunks: Buffer[] = [];
    const plugin = lz4Legacy({
      // Each chunk is a view that the compressor reuses, so it is copied.
      sink: (chunk) => void chunks.push(Buffer.from(chunk)),
      retain: false,
    });
    const [out] = (await runPlugin(plugin, [await cpioImage(false)])).files;
    assert.ok(out.isNull());
    assert.ok(Buffer.concat(chunks).equals(whole));
    assert.equal(out.initramfs?.image?.compression, "lz4-legacy");
  });

  test("buffered image reaches the sink", async () => {
    const whole = await readContents(
      (await runPlugin(lz4Legacy(), [await cpioImage()])).files[0],
    );
    const chunks: Buffer[] = [];
    const plugin = lz4Legacy({ sink: (chunk) => void chunks.push(chunk), retain: false });
    const [out] = (await runPlugin(plugin, [await cpioImage()])).files;
    assert.ok(out.isNull());
    assert.equal(chunks.length, 2, "one chunk per part");
    assert.ok(Buffer.concat(chunks).equals(whole));
  });

  test("retain false requires sink", () => {
    assert.throws(() => lz4Legacy({ retain: false }), /requires a sink/);
  });

  test("compressed image passes again whole", async () => {
    const again = await cpioImage();
    const [once] = (await runPlugin(lz4Legacy(), [again])).files;
    const onceBytes = Buffer.from(once.contents as Buffer);
    const [twice] = (await runPlugin(lz4Legacy(), [once])).files;
    assert.equal(countStreams(await readContents(twice)), 1);
    assert.ok(lz4Decode(await readContents(twice)).equals(onceBytes));
    assert.equal(twice.relative, "initramfs.cpio.lz4.lz4");
  });
});

describe("lz4Legacy plain files", () => {
  test("buffer becomes one stream", async () => {
    const input = sampleBytes(CHUNK_SIZE + 1000);
    const file = new Vinyl({ path: "/out/data.bin", contents: input });
    const [out] = (await runPlugin(lz4Legacy(), [file])).files;
    const bytes = await readContents(out);
    assert.equal(countStreams(bytes), 1);
    assert.ok(lz4Decode(bytes).equals(input));
    assert.equal(out.initramfs?.image, undefined);
  });

  test("stream stays a stream", async () => {
    const input = sampleBytes(CHUNK_SIZE + 5000);
    const pieces = [input.subarray(0, 1234), input.subarray(1234)];
    const file = new Vinyl({
      path: "/out/data.bin",
      contents: Readable.from(pieces),
    });
    const [out] = (await runPlugin(lz4Legacy(), [file])).files;
    assert.ok(out.isStream());
    const bytes = await readContents(out);
    assert.equal(countStreams(bytes), 1);
    assert.ok(lz4Decode(bytes).equals(input));
  });

  test("path-only file passes unchanged", async () => {
    const file = archiveFile("init", init, "payload");
    const [out] = (await runPlugin(lz4Legacy(), [file])).files;
    assert.equal(out, file);
    assert.equal(out.contents, null);
    assert.equal(out.relative, "init");
  });

  test("directory passes unchanged", async () => {
    const file = new Vinyl({
      path: "/out/dir",
      contents: null,
      stat: statSync(tmp.dir),
    });
    const [out] = (await runPlugin(lz4Legacy(), [file])).files;
    assert.equal(out, file);
    assert.equal(out.path, "/out/dir");
  });

  test("symlink passes unchanged", async () => {
    const file = symlinkFile("lib64/ld.so", "/lib/ld.so", "library");
    const [out] = (await runPlugin(lz4Legacy(), [file])).files;
    assert.equal(out, file);
    assert.equal(out.symlink, "/lib/ld.so");
    assert.equal(out.relative, "lib64/ld.so");
  });

  test("extension option names the output", async () => {
    const file = new Vinyl({ path: "/out/a.cpio", contents: Buffer.from("x") });
    const [out] = (await runPlugin(lz4Legacy({ extension: ".z" }), [file]))
      .files;
    assert.equal(out.path, "/out/a.cpio.z");
  });

  test("level option still decodes", async () => {
    const input = readFileSync(init);
    const file = new Vinyl({ path: "/out/init", contents: input });
    metaOf(file).role = "payload";
    const [out] = (await runPlugin(lz4Legacy({ level: 9 }), [file])).files;
    assert.ok(lz4Decode(await readContents(out)).equals(input));
  });
});
