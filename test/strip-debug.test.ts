import assert from "node:assert/strict";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Readable, type Transform } from "node:stream";
import { after, before, describe, it } from "node:test";
import Vinyl from "vinyl";
import type { InitramfsWarning } from "../plugins/transform.js";
import type { Role } from "../plugins/meta.js";
import { stripDebug, type StripData } from "../plugins/strip-debug.js";
import { compileC, requireTool, run, tempDir } from "./helpers/tools.js";

const HELLO = `
#include <stdio.h>
int main(void) { puts("plugin ok"); return 0; }
`;

let dir: string;
let cleanup: () => void;
let exe: string;
let exeBytes: Buffer;

before(() => {
  requireTool("gcc");
  ({ dir, cleanup } = tempDir("strip-debug"));
  exe = compileC(HELLO, join(dir, "hello"), ["-g3"]);
  exeBytes = readFileSync(exe);
});

after(() => cleanup());

type TestFile = Vinyl & { initramfs?: StripData };

function vinyl(
  contents: Buffer | NodeJS.ReadableStream | null,
  role: Role | undefined,
  extra: Partial<StripData> = {},
): TestFile {
  const file = new Vinyl({
    cwd: "/",
    base: dir,
    path: exe,
    contents,
    stat: statSync(exe),
  }) as TestFile;
  file.initramfs = { role, ...extra };
  return file;
}

/** Runs files through a stream and returns what comes out, in order. */
async function through(stream: Transform, files: Vinyl[]): Promise<TestFile[]> {
  const out: TestFile[] = [];
  stream.on("data", (f: TestFile) => out.push(f));
  const done = new Promise<void>((resolve, reject) => {
    stream.on("end", resolve);
    stream.on("error", reject);
  });
  for (const f of files) stream.write(f);
  stream.end();
  await done;
  return out;
}

function assertStripped(file: TestFile) {
  assert.ok(file.isBuffer());
  assert.ok(file.contents.length < exeBytes.length, "not smaller");
  assert.equal(file.stat?.size, file.contents.length);
  assert.deepEqual(file.initramfs?.strip, {
    before: exeBytes.length,
    after: file.contents.length,
  });
}

describe("stripDebug plugin", () => {
  it("strips a payload buffer", async () => {
    const [file] = await through(stripDebug(), [vinyl(exeBytes, "payload")]);
    assertStripped(file);
    const out = join(dir, "from-buffer");
    writeFileSync(out, file.contents as Buffer, { mode: 0o755 });
    assert.equal(run(out, []).toString(), "plugin ok\n");
  });

  it("strips a path-only file", async () => {
    const [file] = await through(stripDebug(), [vinyl(null, "extra")]);
    assertStripped(file);
  });

  it("strips stream contents", async () => {
    const stream = Readable.from([exeBytes.subarray(0, 1000), exeBytes.subarray(1000)]);
    const [file] = await through(stripDebug(), [vinyl(stream, "payload")]);
    assertStripped(file);
  });

  it("leaves includes and libraries alone", async () => {
    const files = [vinyl(exeBytes, "include"), vinyl(exeBytes, "library")];
    const out = await through(stripDebug(), files);
    for (const file of out) {
      assert.equal(file.contents, exeBytes);
      assert.equal(file.initramfs?.strip, undefined);
    }
  });

  it("honours the roles option", async () => {
    const [file] = await through(stripDebug({ roles: ["include"] }), [
      vinyl(exeBytes, "include"),
    ]);
    assertStripped(file);
  });

  it("passes non-ELF and null files", async () => {
    const text = Buffer.from("not an elf\n");
    const nonElf = vinyl(text, "payload", { elf: null });
    const empty = new Vinyl({ path: "/nowhere/empty", contents: null });
    (empty as TestFile).initramfs = { role: "payload", hostPath: undefined };
    const out = await through(stripDebug(), [nonElf, empty]);
    assert.equal(out[0].contents, text);
    assert.equal(out[1].contents, null);
    assert.equal(out.length, 2);
  });

  it("warns and passes a truncated ELF", async () => {
    const cut = exeBytes.subarray(0, exeBytes.length - 100);
    const file = vinyl(cut, "payload");
    file.stat = null;
    const seen: InitramfsWarning[] = [];
    const events: InitramfsWarning[] = [];
    const stream = stripDebug({ onWarning: (w) => seen.push(w) });
    stream.on("warning", (w: InitramfsWarning) => events.push(w));
    const [out] = await through(stream, [file]);
    assert.equal(out.contents, cut);
    assert.equal(seen.length, 1);
    assert.equal(seen[0].code, "STRIP_TRUNCATED");
    assert.deepEqual(events, seen);
  });

  it("warns and passes an unreadable path", async () => {
    const file = vinyl(null, "payload", { hostPath: join(dir, "missing") });
    const seen: InitramfsWarning[] = [];
    const [out] = await through(stripDebug({ onWarning: (w) => seen.push(w) }), [file]);
    assert.equal(out.contents, null);
    assert.equal(seen[0]?.code, "STRIP_FAILED");
  });

  it("rejects a buffer that differs from stat.size", async () => {
    const decoded = Buffer.from(exeBytes.toString("utf8"));
    await assert.rejects(
      through(stripDebug(), [vinyl(decoded, "payload")]),
      /encoding: false/,
    );
  });
});
