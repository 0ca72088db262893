import assert from "node:assert/strict";
import { mkdirSync, readFileSync, realpathSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, test } from "node:test";
import Vinyl from "vinyl";
import { detectElf } from "../plugins/detect-elf.js";
import {
  archivePathOf,
  hostPathOf,
  metaOf,
  type InitramfsFile,
  type Role,
} from "../plugins/meta.js";
import { resolveLibs, type ResolveLibsOptions } from "../plugins/resolve-libs.js";
import { archiveFile, symlinkFile } from "../plugins/sources.js";
import type { ImageEntry } from "../src/file-tree.js";
import { verifyImage } from "../src/guest-check.js";
import { runPlugin, type PluginOutput } from "./helpers/streams.js";
import { compileC, requireTool, run, tempDir } from "./helpers/tools.js";

const LDSO = "/lib64/ld-linux-x86-64.so.2";
const MAIN = "int main(void) { return 0; }\n";
const USES_MATH = `
#include <math.h>
#include <stdio.h>
int main(int argc, char **argv) { printf("%f\\n", cos(argc)); return 0; }
`;
const USES_LIBRARY = `
int foo(void);
int main(void) { return foo() == 42 ? 0 : 1; }
`;

const tmp = tempDir("resolve-libs");
const path = {
  math: join(tmp.dir, "math"),
  plain: join(tmp.dir, "plain"),
  static: join(tmp.dir, "static"),
  origin: join(tmp.dir, "app", "bin", "prog"),
  originLibrary: join(tmp.dir, "app", "lib", "libfoo.so"),
  broken: join(tmp.dir, "broken"),
};

/** Compiles a shared library whose soname is its file name. */
function compileLibrary(output: string): string {
  mkdirSync(dirname(output), { recursive: true });
  const soname = `-Wl,-soname,${output.split("/").pop()}`;
  return compileC("int foo(void) { return 42; }\n", output, [
    "-shared",
    "-fPIC",
    soname,
  ]);
}

/**
 * Returns the paths `ld.so --list` prints for a binary: each library's
 * path after "=>" and the interpreter, the vDSO left out.
 */
function ldsoList(binary: string): string[] {
  const text = run(LDSO, ["--list", binary]).toString();
  const paths: string[] = [];
  for (const line of text.split("\n")) {
    const library = /=> (\/\S+) \(0x[0-9a-f]+\)$/.exec(line);
    const interpreter = /^\s+(\/\S+) \(0x[0-9a-f]+\)$/.exec(line);
    if (library) paths.push(library[1]);
    else if (interpreter) paths.push(interpreter[1]);
  }
  return paths;
}

/** Runs detectElf() and then resolveLibs() on `files`. */
async function resolveFiles(
  files: Vinyl[],
  options: ResolveLibsOptions = {},
): Promise<PluginOutput> {
  const { files: detected } = await runPlugin(detectElf(), files);
  return runPlugin(resolveLibs({ ldLibraryPath: [], ...options }), detected);
}

/** Returns the library files of an output, keyed by archive path. */
function libraries(out: PluginOutput): Map<string, InitramfsFile> {
  const found = new Map<string, InitramfsFile>();
  for (const file of out.files) {
    if (metaOf(file).role !== "library") continue;
    const archivePath = archivePathOf(file);
    assert.ok(!found.has(archivePath), `${archivePath} emitted twice`);
    found.set(archivePath, file);
  }
  return found;
}

/** Returns emitted files as the entries of an image tree. */
function imageEntries(files: Vinyl[]): ImageEntry[] {
  return files.map((file) =>
    file.isSymbolic()
      ? { path: archivePathOf(file), symlink: file.symlink! }
      : { path: archivePathOf(file), hostPath: hostPathOf(file) },
  );
}

before(() => {
  requireTool("gcc");
  compileC(USES_MATH, path.math, [], ["-lm"]);
  compileC(MAIN, path.plain);
  compileC(MAIN, path.static, ["-static"]);
  compileLibrary(path.originLibrary);
  mkdirSync(dirname(path.origin));
  compileC(USES_LIBRARY, path.origin, [
    "-Wl,--disable-new-dtags,-rpath,$ORIGIN/../lib",
  ], [`-L${dirname(path.originLibrary)}`, "-lfoo"]);
  const removedLibrary = join(tmp.dir, "gone", "libgone.so");
  compileLibrary(removedLibrary);
  compileC(USES_LIBRARY, path.broken, [], [
    `-L${dirname(removedLibrary)}`,
    "-lgone",
  ]);
  rmSync(dirname(removedLibrary), { recursive: true });
});

after(() => tmp.cleanup());

describe("resolveLibs against ld.so", () => {
  let out: PluginOutput;
  let found: Map<string, InitramfsFile>;

  before(async () => {
    out = await resolveFiles([archiveFile("init", path.math, "payload")]);
    found = libraries(out);
  });

  test("payload passes first", () => {
    assert.equal(archivePathOf(out.files[0]), "init");
    assert.equal(metaOf(out.files[0]).role, "payload");
  });

  test("every listed library at its canonical path", () => {
    const listed = ldsoList(path.math);
    assert.ok(listed.length >= 3, `ld.so listed only ${listed.join(", ")}`);
    for (const listedPath of listed) {
      const canonical = realpathSync(listedPath);
      const file = found.get(canonical.slice(1));
      assert.ok(file, `${canonical} (for ${listedPath}) was not emitted`);
      assert.ok(!file.isSymbolic(), `${canonical} is a symlink entry`);
      assert.equal(hostPathOf(file), canonical);
      assert.equal(file.contents, null);
    }
  });

  test("listed alias paths are symlinks", () => {
    for (const listedPath of ldsoList(path.math)) {
      const canonical = realpathSync(listedPath);
      if (canonical === listedPath) continue;
      const alias = found.get(listedPath.slice(1));
      assert.ok(alias, `alias ${listedPath} was not emitted`);
      assert.ok(alias.isSymbolic(), `${listedPath} is not a symlink`);
      assert.equal(alias.symlink, canonical);
    }
  });

  test("nothing beyond the listed closure", () => {
    const expected = new Set<string>();
    for (const listedPath of ldsoList(path.math)) {
      expected.add(listedPath.slice(1));
      expected.add(realpathSync(listedPath).slice(1));
    }
    const regular = [...found]
      .filter(([, file]) => !file.isSymbolic())
      .map(([archivePath]) => archivePath);
    for (const archivePath of regular) {
      assert.ok(expected.has(archivePath), `unexpected ${archivePath}`);
    }
  });

  test("guest finds every library", () => {
    assert.deepEqual(verifyImage(imageEntries(out.files)), []);
  });

  test("no warnings for a complete closure", () => {
    assert.deepEqual(out.warnings, []);
  });
});

describe("resolveLibs inputs", () => {
  test("shared libraries emitted once", async () => {
    const out = await resolveFiles([
      archiveFile("init", path.math, "payload"),
      archiveFile("scheduler", path.plain, "extra"),
      archiveFile("include-files/plain", path.plain, "include"),
    ]);
    const libc = realpathSync("/lib/x86_64-linux-gnu/libc.so.6").slice(1);
    const count = out.files.filter((f) => archivePathOf(f) === libc).length;
    assert.equal(count, 1);
  });

  test("renamed src() file keeps its host path", async () => {
    const file = new Vinyl({
      cwd: tmp.dir,
      base: tmp.dir,
      path: path.math,
      contents: readFileSync(path.math),
    });
    // What gulp-rename does: a new path whose file does not exist.
    file.path = join(tmp.dir, "renamed", "init");
    metaOf(file).role = "payload";
    assert.equal(hostPathOf(file), path.math);
    const out = await resolveFiles([file]);
    assert.ok(out.files.length > 1, "libraries were resolved");
  });

  test("script init without interpreter warns", async () => {
    const script = new Vinyl({
      cwd: "/",
      base: "/initramfs",
      path: "/initramfs/init",
      contents: Buffer.from("#!/bin/sh\necho hi\n"),
    });
    metaOf(script).role = "payload";
    const out = await resolveFiles([script]);
    const codes = out.warnings.map((w) => w.code);
    assert.deepEqual(codes, ["INIT_INTERPRETER_MISSING"]);
    assert.match(out.warnings[0].message, /\/bin\/sh/);
  });

  test("script init with its interpreter is quiet", async () => {
    const script = new Vinyl({
      cwd: "/",
      base: "/initramfs",
      path: "/initramfs/init",
      contents: Buffer.from("#!/bin/tool\n"),
    });
    metaOf(script).role = "payload";
    const tool = archiveFile("bin/tool", path.plain, "extra");
    const out = await resolveFiles([script, tool]);
    assert.deepEqual(out.warnings, []);
  });

  test("text init warns it cannot run", async () => {
    const text = new Vinyl({
      cwd: "/",
      base: "/initramfs",
      path: "/initramfs/init",
      contents: Buffer.from("just text\n"),
    });
    metaOf(text).role = "payload";
    const out = await resolveFiles([text]);
    assert.deepEqual(out.warnings.map((w) => w.code), ["INIT_NOT_EXECUTABLE"]);
  });

  test("static binary emits nothing", async () => {
    const out = await resolveFiles([archiveFile("init", path.static, "payload")]);
    assert.equal(out.files.length, 1);
    assert.equal(archivePathOf(out.files[0]), "init");
  });

  test("static busybox emits nothing", async () => {
    const busybox = requireTool("busybox");
    const out = await resolveFiles([
      archiveFile("bin/busybox", busybox, "busybox"),
    ]);
    assert.equal(out.files.length, 1);
  });

  test("non-ELF buffer passes through", async () => {
    const text = new Vinyl({
      cwd: "/",
      base: "/in",
      path: "/in/notes.txt",
      contents: Buffer.from("plain text\n"),
    });
    metaOf(text).role = "include";
    const out = await resolveFiles([text]);
    assert.equal(out.files.length, 1);
    assert.equal(out.files[0], text);
    assert.equal(metaOf(text).elf, null);
  });

  test("null file without ELF facts passes", async () => {
    const file = new Vinyl({ path: "/nowhere/file", contents: null });
    const out = await runPlugin(resolveLibs(), [file]);
    assert.equal(out.files.length, 1);
    assert.equal(out.files[0], file);
  });

  test("symlink file passes", async () => {
    const link = symlinkFile("include-files/link", "/etc/hostname", "include");
    const out = await resolveFiles([link]);
    assert.equal(out.files.length, 1);
    assert.equal(out.files[0], link);
    assert.equal(link.symlink, "/etc/hostname");
  });

  test("stream contents resolve from the path", async () => {
    const bytes = readFileSync(path.plain);
    const file = new Vinyl({
      cwd: "/",
      base: tmp.dir,
      path: path.plain,
      contents: Readable.from([bytes]),
    });
    metaOf(file).role = "payload";
    const out = await resolveFiles([file]);
    assert.equal(out.files[0], file);
    assert.ok(out.files[0].isStream());
    const interpreter = realpathSync(LDSO).slice(1);
    assert.ok(libraries(out).has(interpreter));
  });
});

describe("resolveLibs missing libraries", () => {
  test("include without library fails", async () => {
    const file = archiveFile("include-files/broken", path.broken, "include");
    await assert.rejects(
      resolveFiles([file]),
      (error: Error & { code?: string; fileName?: string }) => {
        assert.equal(error.code, "LIB_MISSING");
        assert.equal(error.fileName, path.broken);
        assert.match(error.message, /libgone\.so/);
        return true;
      },
    );
  });

  test("file without role fails like an include", async () => {
    const file = new Vinyl({
      cwd: "/",
      base: tmp.dir,
      path: path.broken,
      contents: readFileSync(path.broken),
    });
    await assert.rejects(
      resolveFiles([file]),
      (error: Error & { code?: string }) => error.code === "LIB_MISSING",
    );
  });

  for (const role of ["payload", "extra"] as Role[]) {
    test(`${role} without library warns`, async () => {
      const seen: string[] = [];
      const out = await resolveFiles(
        [archiveFile("init", path.broken, role)],
        { onWarning: (w) => seen.push(w.code) },
      );
      const codes = out.warnings.map((w) => w.code);
      assert.ok(codes.includes("LIB_NOT_FOUND"), codes.join(", "));
      assert.ok(seen.includes("LIB_NOT_FOUND"), seen.join(", "));
      const warning = out.warnings.find((w) => w.code === "LIB_NOT_FOUND");
      assert.match(warning!.message, /libgone\.so/);
      assert.equal(warning!.fileName, path.broken);
      const libc = realpathSync("/lib/x86_64-linux-gnu/libc.so.6").slice(1);
      assert.ok(libraries(out).has(libc));
    });
  }
});

describe("resolveLibs guest fixups", () => {
  const originPath = () => realpathSync(path.originLibrary).slice(1);

  test("$ORIGIN library gets a guest symlink", async () => {
    const out = await resolveFiles([archiveFile("init", path.origin, "payload")]);
    const found = libraries(out);
    assert.ok(found.has(originPath()), `${originPath()} not emitted`);
    const links = [...found.values()].filter(
      (file) => file.isSymbolic() && file.symlink === `/${originPath()}`,
    );
    assert.equal(links.length, 1);
    assert.match(archivePathOf(links[0]), /^(usr\/)?lib(64)?\/.*libfoo\.so$/);
  });

  test("verifyImage passes with fixups", async () => {
    const out = await resolveFiles([archiveFile("init", path.origin, "payload")]);
    assert.deepEqual(verifyImage(imageEntries(out.files)), []);
  });

  test("verifyImage fails without fixups", async () => {
    const out = await resolveFiles(
      [archiveFile("init", path.origin, "payload")],
      { guestFixups: false },
    );
    const problems = verifyImage(imageEntries(out.files));
    assert.equal(problems.length, 1);
    assert.equal(problems[0].code, "GUEST_LIB_MISSING");
    assert.equal(problems[0].name, "libfoo.so");
  });
});
