import assert from "node:assert/strict";
import {
  chmodSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { after, before, describe, test } from "node:test";
import PluginError from "plugin-error";
import Vinyl from "vinyl";

import { metaOf, type InitramfsFile } from "../plugins/meta.js";
import {
  checkArchivePath,
  validateIncludes,
} from "../plugins/validate-includes.js";
import { compileC, run, tempDir } from "./helpers/tools.js";

/** gulp 5's src(); gulp ships no type declarations. */
type GulpSrc = (
  globs: string | string[],
  options?: Record<string, unknown>,
) => NodeJS.ReadableStream;
const gulpSrc: GulpSrc = require("gulp").src;

let work: ReturnType<typeof tempDir>;
let binary: string;
let root: string;

before(() => {
  work = tempDir("validate");
  root = join(work.dir, "root");
  mkdirSync(join(root, "sub"), { recursive: true });
  binary = compileC("int main(void) { return 0; }\n", join(root, "prog"));
  writeFileSync(join(root, "sub/data"), "data\n");
  chmodSync(join(root, "sub/data"), 0o751);
});

after(() => work.cleanup());

/** Runs `input` through validateIncludes() and returns what comes out. */
async function validate(input: NodeJS.ReadableStream | Vinyl[]) {
  const files: InitramfsFile[] = [];
  const source = Array.isArray(input) ? Readable.from(input) : input;
  const sink = new Writable({
    objectMode: true,
    write(file: InitramfsFile, _encoding, callback) {
      files.push(file);
      callback();
    },
  });
  await pipeline(source, validateIncludes(), sink);
  return files;
}

/** Expects validation of `input` to fail with `code` naming `fileName`. */
async function expectRejected(
  input: NodeJS.ReadableStream | Vinyl[],
  code: string,
  fileName?: string,
): Promise<PluginError> {
  let caught: unknown;
  await validate(input).catch((error: unknown) => {
    caught = error;
  });
  assert.ok(caught instanceof PluginError, `expected PluginError: ${caught}`);
  assert.equal((caught as PluginError & { code?: string }).code, code);
  assert.equal(caught.plugin, "gulp-initramfs");
  if (fileName !== undefined) assert.equal(caught.fileName, fileName);
  return caught;
}

/** Reads a streaming file's contents to the end. */
async function drain(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function nullFile(relative: string): Vinyl {
  return new Vinyl({ cwd: root, base: root, path: join(root, relative) });
}

function bufferFile(relative: string, contents: Buffer): Vinyl {
  return new Vinyl({
    cwd: root,
    base: root,
    path: join(root, relative),
    contents,
  });
}

describe("checkArchivePath", () => {
  const cases: [string, string][] = [
    ["..", "INCLUDE_PATH_TRAVERSAL"],
    ["a/../b", "INCLUDE_PATH_TRAVERSAL"],
    ["a/..", "INCLUDE_PATH_TRAVERSAL"],
    ["/etc/passwd", "INCLUDE_ABSOLUTE_PATH"],
    ["", "INCLUDE_EMPTY_PATH"],
    [".", "INCLUDE_EMPTY_PATH"],
    [".ktstr_init_ok", "INCLUDE_RESERVED_NAME"],
    [".ktstr_other", "INCLUDE_RESERVED_NAME"],
  ];
  for (const [path, code] of cases) {
    test(`rejects "${path}" with ${code}`, () => {
      assert.throws(
        () => checkArchivePath(path, "host"),
        (error: { code?: string; fileName?: string }) => {
          assert.equal(error.code, code);
          assert.equal(error.fileName, "host");
          return true;
        },
      );
    });
  }

  test("accepts dotted but safe paths", () => {
    for (const path of ["..data", "a/.ktstr_x", "etc/a..b", ".hidden"]) {
      assert.doesNotThrow(() => checkArchivePath(path), path);
    }
  });
});

describe("validateIncludes archive paths", () => {
  test("traversal is a PluginError", async () => {
    const file = bufferFile("x", Buffer.from("x"));
    file.base = join(root, "sub");
    await expectRejected([file], "INCLUDE_PATH_TRAVERSAL", file.path);
  });

  test("empty path is a PluginError", async () => {
    const file = bufferFile("x", Buffer.from("x"));
    file.base = file.path;
    await expectRejected([file], "INCLUDE_EMPTY_PATH", file.path);
  });

  test("reserved name is a PluginError", async () => {
    const file = bufferFile(".ktstr_init_ok", Buffer.alloc(0));
    await expectRejected([file], "INCLUDE_RESERVED_NAME", file.path);
  });

  test("extra with traversal is rejected", async () => {
    const file = bufferFile("x", Buffer.from("x"));
    file.base = join(root, "sub");
    metaOf(file).role = "extra";
    await expectRejected([file], "INCLUDE_PATH_TRAVERSAL", file.path);
  });

  test("extra with reserved name is rejected", async () => {
    const file = bufferFile(".ktstr_x", Buffer.from("x"));
    metaOf(file).role = "extra";
    await expectRejected([file], "INCLUDE_RESERVED_NAME", file.path);
  });

  test("libraries skip the path checks", async () => {
    const file = bufferFile(".ktstr_lib", Buffer.alloc(0));
    metaOf(file).role = "library";
    const [out] = await validate([file]);
    assert.equal(out, file);
  });
});

describe("validateIncludes with gulp src", () => {
  test("decoded binary is rejected", async () => {
    const error = await expectRejected(
      gulpSrc(binary),
      "CONTENTS_DECODED",
      binary,
    );
    assert.match(error.message, /\{ encoding: false \}/);
    assert.match(error.message, /src\(\)/);
  });

  test("encoding false keeps binary bytes", async () => {
    const [out] = await validate(gulpSrc(binary, { encoding: false }));
    assert.ok(out.isBuffer());
    assert.ok(out.contents.equals(readFileSync(binary)));
    assert.equal(metaOf(out).role, "include");
  });

  test("decoded stream fails at its end", async () => {
    const [out] = await validate(gulpSrc(binary, { buffer: false }));
    assert.ok(out.isStream());
    await assert.rejects(drain(out.contents), (error: { code?: string }) => {
      assert.equal(error.code, "CONTENTS_DECODED");
      return true;
    });
  });

  test("streaming mode keeps binary bytes", async () => {
    const files = await validate(
      gulpSrc(binary, { buffer: false, encoding: false }),
    );
    assert.equal(files.length, 1);
    assert.ok(files[0].isStream());
    const bytes = await drain(files[0].contents);
    assert.ok(bytes.equals(readFileSync(binary)));
  });

  test("directories are dropped", async () => {
    const files = await validate(
      gulpSrc(join(root, "**"), { encoding: false }),
    );
    const names = files.map((f) => f.relative).sort();
    assert.deepEqual(names, ["prog", "sub/data"]);
  });

  test("permission bits are kept", async () => {
    const [out] = await validate(
      gulpSrc(join(root, "sub/data"), { encoding: false }),
    );
    assert.equal(out.stat!.mode & 0o7777, 0o751);
  });

  test("symlink is followed to its target", async () => {
    const links = join(work.dir, "links");
    mkdirSync(links);
    symlinkSync(join(root, "sub/data"), join(links, "alias"));
    const files = await validate(
      gulpSrc(join(links, "alias"), { resolveSymlinks: false }),
    );
    assert.equal(files.length, 1);
    const out = files[0];
    assert.equal(out.isSymbolic(), false);
    assert.ok(out.stat!.isFile());
    assert.equal(out.stat!.mode & 0o7777, 0o751);
    assert.equal(out.stat!.size, statSync(join(root, "sub/data")).size);
    assert.equal(metaOf(out).hostPath, join(links, "alias"));
  });

  test("read false gives path-only include", async () => {
    const [out] = await validate(gulpSrc(binary, { read: false }));
    assert.ok(out.isNull());
    assert.equal(out.stat!.size, statSync(binary).size);
  });
});

describe("validateIncludes special files", () => {
  /** A Vinyl like gulp's src() with resolveSymlinks false makes. */
  function symlinkVinyl(name: string, target: string): Vinyl {
    const path = join(work.dir, name);
    symlinkSync(target, path);
    const file = new Vinyl({ cwd: work.dir, base: work.dir, path });
    file.stat = lstatSync(path);
    file.symlink = target;
    return file;
  }

  test("symlink Vinyl to a file passes", async () => {
    const file = symlinkVinyl("to-prog", binary);
    assert.ok(file.isSymbolic());
    const [out] = await validate([file]);
    assert.ok(out.stat!.isFile());
    assert.equal(out.stat!.size, statSync(binary).size);
  });

  test("symlink to FIFO is rejected", async () => {
    const fifo = join(work.dir, "fifo");
    run("mkfifo", [fifo]);
    const file = symlinkVinyl("to-fifo", fifo);
    await expectRejected([file], "INCLUDE_NOT_REGULAR", file.path);
  });

  test("socket is rejected", async () => {
    const socket = join(work.dir, "sock");
    run("python3", [
      "-c",
      "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])",
      socket,
    ]);
    const file = new Vinyl({ cwd: work.dir, base: work.dir, path: socket });
    await expectRejected([file], "INCLUDE_NOT_REGULAR", socket);
  });

  test("device is rejected", async () => {
    const file = symlinkVinyl("to-null", "/dev/null");
    await expectRejected([file], "INCLUDE_NOT_REGULAR");
  });

  test("dangling symlink is not found", async () => {
    const file = symlinkVinyl("dangling", join(work.dir, "missing"));
    await expectRejected([file], "INCLUDE_NOT_FOUND", file.path);
  });

  test("null file gets its stat", async () => {
    const [out] = await validate([nullFile("sub/data")]);
    assert.ok(out.isNull());
    assert.equal(out.stat!.mode & 0o7777, 0o751);
  });

  test("null file at missing path fails", async () => {
    const file = nullFile("missing");
    await expectRejected([file], "INCLUDE_NOT_FOUND", file.path);
  });

  test("in-memory buffer passes without stat", async () => {
    const file = bufferFile("generated/conf", Buffer.from("k=v\n"));
    const [out] = await validate([file]);
    assert.equal(out, file);
  });

  test("payload buffer length is checked", async () => {
    const file = bufferFile("init", Buffer.from("short"));
    file.stat = statSync(binary);
    metaOf(file).role = "payload";
    await expectRejected([file], "CONTENTS_DECODED", file.path);
  });
});
