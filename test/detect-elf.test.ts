import assert from "node:assert/strict";
import {
  createReadStream,
  lstatSync,
  readFileSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { after, before, describe, test } from "node:test";
import PluginError from "plugin-error";
import Vinyl from "vinyl";

import { detectElf } from "../plugins/detect-elf.js";
import { metaOf, type InitramfsFile } from "../plugins/meta.js";
import type { InitramfsWarning } from "../plugins/transform.js";
import { readElfFile } from "../src/elf.js";
import { compileC, run, tempDir } from "./helpers/tools.js";

let work: ReturnType<typeof tempDir>;
let binary: string;
let text: string;
let malformed: string;

before(() => {
  work = tempDir("detect-elf");
  binary = compileC("int main(void) { return 0; }\n", join(work.dir, "prog"));
  text = join(work.dir, "notes.txt");
  writeFileSync(text, "plain text\n");
  // An ELF header whose e_phoff points past the end of the file.
  const bytes = readFileSync(binary).subarray(0, 64);
  bytes.writeBigUInt64LE(1n << 40n, 32);
  malformed = join(work.dir, "broken");
  writeFileSync(malformed, bytes);
});

after(() => work.cleanup());

interface Result {
  files: InitramfsFile[];
  viaOption: InitramfsWarning[];
  viaEvent: InitramfsWarning[];
}

/** Runs `files` through detectElf() and collects files and warnings. */
async function detect(files: Vinyl[]): Promise<Result> {
  const result: Result = { files: [], viaOption: [], viaEvent: [] };
  const stage = detectElf({ onWarning: (w) => result.viaOption.push(w) });
  stage.on("warning", (w: InitramfsWarning) => result.viaEvent.push(w));
  const sink = new Writable({
    objectMode: true,
    write(file: InitramfsFile, _encoding, callback) {
      result.files.push(file);
      callback();
    },
  });
  await pipeline(Readable.from(files), stage, sink);
  return result;
}

function vinyl(path: string, contents: Buffer | null = null): Vinyl {
  return new Vinyl({ cwd: work.dir, base: work.dir, path, contents });
}

describe("detectElf", () => {
  test("buffer ELF gets parsed facts", async () => {
    const { files } = await detect([vinyl(binary, readFileSync(binary))]);
    const elf = metaOf(files[0]).elf;
    assert.ok(elf);
    assert.deepEqual(elf, readElfFile(binary));
    assert.ok(elf.needed.length > 0);
  });

  test("path-only file is read from hostPath", async () => {
    const file = vinyl(join(work.dir, "init"));
    metaOf(file).hostPath = binary;
    const { files } = await detect([file]);
    assert.ok(files[0].isNull());
    assert.deepEqual(metaOf(files[0]).elf, readElfFile(binary));
  });

  test("null file without hostPath uses path", async () => {
    const { files } = await detect([vinyl(binary)]);
    assert.deepEqual(metaOf(files[0]).elf, readElfFile(binary));
  });

  test("streaming file is read from its path", async () => {
    const file = vinyl(binary);
    file.contents = createReadStream(binary);
    const { files } = await detect([file]);
    assert.ok(files[0].isStream());
    assert.deepEqual(metaOf(files[0]).elf, readElfFile(binary));
    const chunks: Buffer[] = [];
    for await (const chunk of files[0].contents as Readable) chunks.push(chunk);
    assert.ok(Buffer.concat(chunks).equals(readFileSync(binary)));
  });

  test("non-ELF gets null without warning", async () => {
    const result = await detect([
      vinyl(text, readFileSync(text)),
      vinyl(text),
      vinyl(join(work.dir, "empty"), Buffer.alloc(0)),
    ]);
    for (const file of result.files) assert.equal(metaOf(file).elf, null);
    assert.equal(result.viaOption.length, 0);
    assert.equal(result.viaEvent.length, 0);
  });

  test("malformed ELF warns and passes", async () => {
    const result = await detect([
      vinyl(malformed, readFileSync(malformed)),
      vinyl(binary, readFileSync(binary)),
    ]);
    assert.equal(result.files.length, 2);
    assert.equal(metaOf(result.files[0]).elf, null);
    assert.ok(metaOf(result.files[1]).elf);
    assert.equal(result.viaOption.length, 1);
    assert.equal(result.viaOption[0].code, "ELF_MALFORMED");
    assert.equal(result.viaOption[0].fileName, malformed);
    assert.deepEqual(result.viaEvent, result.viaOption);
  });

  test("malformed path-only file warns", async () => {
    const file = vinyl(join(work.dir, "x"));
    metaOf(file).hostPath = malformed;
    const result = await detect([file]);
    assert.equal(metaOf(result.files[0]).elf, null);
    assert.equal(result.viaEvent[0].code, "ELF_MALFORMED");
  });

  test("symlink Vinyl passes untouched", async () => {
    const link = join(work.dir, "link");
    symlinkSync(binary, link);
    const file = vinyl(link);
    file.stat = lstatSync(link);
    file.symlink = binary;
    const { files } = await detect([file]);
    assert.ok(files[0].isSymbolic());
    assert.equal(metaOf(files[0]).elf, undefined);
  });

  test("FIFO path gets null without blocking", { timeout: 5000 }, async () => {
    const fifo = join(work.dir, "fifo");
    run("mkfifo", [fifo]);
    const { files } = await detect([vinyl(fifo)]);
    assert.equal(metaOf(files[0]).elf, null);
  });

  test("unreadable path fails the stream", async () => {
    const missing = join(work.dir, "missing");
    await assert.rejects(detect([vinyl(missing)]), (error: unknown) => {
      assert.ok(error instanceof PluginError);
      assert.equal(error.fileName, missing);
      assert.equal((error as PluginError & { code?: string }).code, "ENOENT");
      return true;
    });
  });
});
