import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  existsSync,
  utimesSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { BUILD_LOG_ENV } from "../plugins/stages.js";
import { distIsCurrent, FROM_SOURCES_ENV } from "../scripts/load-tasks.js";
import { readCpio } from "../src/cpio-reader.js";
import { compileC, exitedPid, requireTool, run, tempDir } from "./helpers/tools.js";

const REPO = resolve(__dirname, "..");
const GULP = join(REPO, "node_modules", ".bin", "gulp");
const GULPFILE = join(REPO, "gulpfile.ts");
/**
 * tsx's require hook, preloaded by absolute path. gulp-cli 3.1 resolves
 * gulp from the gulpfile's directory but looks for its TypeScript loaders
 * from --cwd (liftoff 5.0.1, lib/register_loader.js), where there are none.
 */
const TSX_CJS = require.resolve("tsx/cjs");

const program = (marker: string) => `
#include <stdio.h>
int main(void) { puts("${marker}"); return 0; }
`;

const tmp = tempDir("gulp-cli");
const bin = {
  init: join(tmp.dir, "init"),
  scheduler: join(tmp.dir, "scheduler"),
  other: join(tmp.dir, "other"),
};

/** Runs gulp with `args`, from the repository unless `cwd` is given. */
function gulp(args: string[], cwd = REPO, env: NodeJS.ProcessEnv = {}) {
  return spawnSync(GULP, args, {
    cwd,
    encoding: "utf8",
    env: { ...process.env, NODE_OPTIONS: "", ...env },
  });
}

/**
 * Runs gulp so that file permissions apply to it: as root, under setpriv
 * without the capabilities that let root read and search any file.
 */
function gulpWithPermissions(args: string[]) {
  const command = process.getuid?.() === 0
    ? [requireTool("setpriv"), "--bounding-set=-dac_override,-dac_read_search", GULP]
    : [GULP];
  return spawnSync(command[0], [...command.slice(1), ...args], {
    cwd: REPO,
    encoding: "utf8",
    env: { ...process.env, NODE_OPTIONS: "" },
  });
}

/** Returns the entries of an LZ4 image, decoded by the lz4 tool. */
function imageEntries(path: string) {
  return readCpio(run("lz4", ["-d", "-c", path]));
}

/** Returns the entry of `name` in an LZ4 image, or undefined. */
function imageEntry(path: string, name: string) {
  return imageEntries(path).find((entry) => entry.name === name);
}

before(() => {
  requireTool("lz4");
  compileC(program("INIT_MARKER"), bin.init, ["-g"]);
  compileC(program("SCHEDULER_MARKER"), bin.scheduler, ["-g"]);
  compileC(program("OTHER_MARKER"), bin.other, ["-g"]);
});

after(() => tmp.cleanup());

describe("gulp initramfs from the repository", () => {
  const out = join(tmp.dir, "fresh", "x.lz4");
  let result: ReturnType<typeof gulp>;

  before(() => {
    result = gulp(["initramfs", "--init", bin.init, "--out", out]);
  });

  test("exits 0", () => {
    assert.equal(result.status, 0, result.stderr);
  });

  test("prints the summary lines", () => {
    assert.match(result.stdout, /^entries: \d+$/m);
    assert.match(
      result.stdout,
      /^binaries: [\d.]+ \S+ before stripping, [\d.]+ \S+ after$/m,
    );
    assert.match(result.stdout, /^archive: .* cpio, .* LZ4 legacy/m);
    assert.match(result.stdout, new RegExp(`^image: ${out}$`, "m"));
  });

  test("writes a bootable layout", () => {
    const names = imageEntries(out).map((entry) => entry.name);
    assert.ok(names.includes("init"));
    assert.ok(names.includes(".ktstr_init_ok"));
    assert.ok(names.includes("args"));
    assert.ok(names.some((name) => name.endsWith("libc.so.6")));
  });

  test("strips the payload", () => {
    const init = imageEntry(out, "init");
    assert.ok(init);
    assert.ok(init.data.includes("INIT_MARKER"));
    assert.ok(!init.data.includes(".debug_info"));
  });

  test("entry count matches the image", () => {
    const count = Number(/^entries: (\d+)$/m.exec(result.stdout)?.[1]);
    assert.equal(count, imageEntries(out).length);
  });
});

describe("gulp initramfs with a config file", () => {
  const project = join(tmp.dir, "project");
  const fileOut = join(project, "from-file.lz4");
  const flagOut = join(tmp.dir, "from-flag.lz4");
  let result: ReturnType<typeof gulp>;

  before(() => {
    mkdirSync(project);
    const config = {
      init: "../init",
      extra: { scheduler: "../scheduler", kept: "../scheduler" },
      args: ["from-file"],
      out: "from-file.lz4",
    };
    writeFileSync(
      join(project, "initramfs.config.json"),
      JSON.stringify(config),
    );
    result = gulp(
      [
        "--gulpfile", GULPFILE,
        "--cwd", project,
        "--preload", TSX_CJS,
        "initramfs",
        "--extra", `scheduler=${bin.other}`,
        "--args", "from-flag",
        "--out", flagOut,
      ],
      tmp.dir,
    );
  });

  test("exits 0", () => {
    assert.equal(result.status, 0, result.stderr);
  });

  test("--out wins over the file", () => {
    assert.ok(existsSync(flagOut), "no image at the --out path");
    assert.ok(!existsSync(fileOut), "an image at the file's out path");
  });

  test("--args replaces the file's args", () => {
    const args = imageEntry(flagOut, "args");
    assert.equal(args?.data.toString(), "from-flag");
  });

  test("--extra replaces an extra by name", () => {
    const scheduler = imageEntry(flagOut, "scheduler");
    assert.ok(scheduler?.data.includes("OTHER_MARKER"));
    assert.ok(!scheduler?.data.includes("SCHEDULER_MARKER"));
  });

  test("extras of the file merge", () => {
    const kept = imageEntry(flagOut, "kept");
    assert.ok(kept?.data.includes("SCHEDULER_MARKER"));
  });

  test("paths resolve from --cwd", () => {
    const init = imageEntry(flagOut, "init");
    assert.ok(init?.data.includes("INIT_MARKER"));
  });
});

describe("gulp initramfs --sysroot", () => {
  test("libraries come from the sysroot", () => {
    const root = join(tmp.dir, "sysroot");
    const libDir = join(root, "usr", "lib", "x86_64-linux-gnu");
    mkdirSync(libDir, { recursive: true });
    mkdirSync(join(root, "lib64"), { recursive: true });
    for (const name of ["libc.so.6", "ld-linux-x86-64.so.2"]) {
      writeFileSync(join(libDir, name), readFileSync(`/lib/x86_64-linux-gnu/${name}`));
    }
    symlinkSync(
      "../usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
      join(root, "lib64", "ld-linux-x86-64.so.2"),
    );
    // A library that exists only inside the sysroot.
    compileC("int only(void) { return 1; }\n", join(libDir, "libonly.so"), [
      "-shared", "-fPIC", "-Wl,-soname,libonly.so",
    ]);
    const program = join(root, "test");
    compileC("int only(void);\nint main(void) { return only(); }\n", program, [], [
      `-L${libDir}`, "-lonly",
    ]);
    const out = join(tmp.dir, "sysroot.lz4");
    const result = gulp([
      "initramfs", "--init", program, "--sysroot", root, "--out", out,
    ]);
    assert.equal(result.status, 0, result.stdout + result.stderr);
    assert.doesNotMatch(result.stdout + result.stderr, /LIB_NOT_FOUND/);
    const names = imageEntries(out).map((entry) => entry.name);
    assert.ok(names.includes("usr/lib/x86_64-linux-gnu/libonly.so"), names.join(" "));
    assert.ok(names.includes("usr/lib/x86_64-linux-gnu/libc.so.6"));
    assert.ok(!names.some((name) => name.startsWith("tmp/")), names.join(" "));
  });

  test("binary outside the sysroot is packed", () => {
    // Built outside the sysroot against a library that exists only inside.
    const root = join(tmp.dir, "sysroot");
    const libDir = join(root, "usr", "lib", "x86_64-linux-gnu");
    const program = join(tmp.dir, "outside-program");
    compileC("int only(void);\nint main(void) { return only(); }\n", program, [], [
      `-L${libDir}`, "-lonly",
    ]);
    const out = join(tmp.dir, "outside.lz4");
    const result = gulp(["initramfs", "--init", program, "--sysroot", root, "--out", out]);
    assert.equal(result.status, 0, result.stdout + result.stderr);
    assert.doesNotMatch(result.stdout + result.stderr, /LIB_NOT_FOUND/);
    const names = imageEntries(out).map((entry) => entry.name);
    assert.ok(names.includes("usr/lib/x86_64-linux-gnu/libonly.so"), names.join(" "));
    assert.ok(names.includes("init"));
    assert.ok(!names.some((name) => name.startsWith("tmp/")), names.join(" "));
  });

  test("missing sysroot is named", () => {
    const missing = join(tmp.dir, "no-sysroot");
    const result = gulp(["initramfs", "--init", bin.init, "--sysroot", missing, "--out", join(tmp.dir, "nosys.lz4")]);
    assert.notEqual(result.status, 0);
    assert.match(result.stdout + result.stderr, /--sysroot .*no-sysroot does not exist or is not a directory/);
  });
});

describe("gulp initramfs bad flags", () => {
  test("--extra without = fails", () => {
    const dir = join(tmp.dir, "bad-extra");
    const out = join(dir, "bad.lz4");
    const result = gulp([
      "initramfs", "--init", bin.init, "--extra", "noequals", "--out", out,
    ]);
    assert.notEqual(result.status, 0);
    const output = result.stdout + result.stderr;
    assert.match(output, /--extra expects NAME=PATH, got "noequals"/);
    assert.ok(!existsSync(out), `${out} was written`);
    const left = existsSync(dir) ? readdirSync(dir) : [];
    assert.deepEqual(left, []);
  });

  test("missing --init file fails", () => {
    const dir = join(tmp.dir, "bad-init");
    const missing = join(tmp.dir, "absent-binary");
    const out = join(dir, "bad.lz4");
    const result = gulp(["initramfs", "--init", missing, "--out", out]);
    assert.notEqual(result.status, 0);
    assert.match(result.stdout + result.stderr, new RegExp(missing));
    assert.ok(!existsSync(out), `${out} was written`);
    const left = existsSync(dir) ? readdirSync(dir) : [];
    assert.deepEqual(left, []);
  });

  test("misspelled flag fails", () => {
    const out = join(tmp.dir, "typo.lz4");
    const result = gulp([
      "initramfs", "--init", bin.init, "--extras", `s=${bin.init}`, "--out", out,
    ]);
    assert.notEqual(result.status, 0);
    assert.match(result.stdout + result.stderr, /unknown flag --extras \(did you mean --extra\?\)/);
    assert.ok(!existsSync(out), `${out} was written`);
  });

  test("unreadable inputs name the file", () => {
    const dir = join(tmp.dir, "unreadable");
    const secret = join(dir, "secret.bin");
    const locked = join(dir, "tree", "locked");
    mkdirSync(locked, { recursive: true });
    writeFileSync(secret, "x");
    chmodSync(secret, 0o000);
    chmodSync(locked, 0o000);
    const out = join(dir, "out", "image.lz4");
    const cases: Array<[string[], RegExp]> = [
      [["--init", secret], /init file .*secret\.bin cannot be read \(EACCES\); check its permissions/],
      [["--init", bin.init, "--include", secret], /secret\.bin cannot be read \(EACCES\); check its permissions/],
      [["--init", bin.init, "--include", join(dir, "tree")], /locked cannot be read \(EACCES\); check its permissions/],
    ];
    for (const [flags, message] of cases) {
      const result = gulpWithPermissions(["initramfs", ...flags, "--out", out]);
      assert.notEqual(result.status, 0, flags.join(" "));
      assert.match(result.stdout + result.stderr, message);
      assert.ok(!existsSync(out), `${out} was written`);
    }
  });

  test("unwritable outputs fail first", () => {
    const dir = join(tmp.dir, "bad-out");
    mkdirSync(join(dir, "a-directory"), { recursive: true });
    writeFileSync(join(dir, "a-file"), "");
    const cases: Array<[string, RegExp]> = [
      [join(dir, "a-directory"), /a-directory \(it is a directory\); name a file/],
      [join(dir, "a-file", "image.lz4"), /cannot write the image to .*a-file\/image\.lz4 \(E\w+\)/],
      ["/proc/no-such-dir/image.lz4", /cannot write the image to \/proc\/no-such-dir\/image\.lz4 \(ENOENT\)/],
    ];
    for (const [out, message] of cases) {
      const result = gulp(["initramfs", "--init", bin.init, "--out", out]);
      assert.notEqual(result.status, 0, out);
      assert.match(result.stdout + result.stderr, message);
    }
    assert.deepEqual(readdirSync(dir).sort(), ["a-directory", "a-file"]);
    assert.deepEqual(readdirSync(join(dir, "a-directory")), []);
    const readOnly = join(dir, "read-only");
    mkdirSync(readOnly);
    chmodSync(readOnly, 0o555);
    const out = join(readOnly, "image.lz4");
    const result = gulpWithPermissions(["initramfs", "--init", bin.init, "--out", out]);
    assert.notEqual(result.status, 0);
    assert.match(result.stdout + result.stderr, /image\.lz4 \(EACCES\); choose another output path or make .*read-only writable/);
    assert.deepEqual(readdirSync(readOnly), []);
  });

  test("missing --shm-dir fails first", () => {
    const missing = join(tmp.dir, "no-such-shm");
    const out = join(tmp.dir, "shm-missing", "image.lz4");
    const result = gulp(["initramfs", "--init", bin.init, "--shm", "--shm-dir", missing, "--out", out]);
    assert.notEqual(result.status, 0);
    assert.match(result.stdout + result.stderr, /shared-memory directory .*no-such-shm does not exist/);
    assert.ok(!existsSync(out), `${out} was written`);
  });

  test("--image is not a build flag", () => {
    const result = gulp(["initramfs", "--init", bin.init, "--image", join(tmp.dir, "x.lz4")]);
    assert.notEqual(result.status, 0);
    assert.match(result.stdout + result.stderr, /--image \(a flag of initramfs:ls and initramfs:verify/);
    const asValue = gulp(["initramfs", "--init", bin.init, "--args", "--image", "--out", join(tmp.dir, "image-arg", "x.lz4")]);
    assert.equal(asValue.status, 0, asValue.stderr);
  });

  test("initramfs:ls names a bad image", () => {
    const notImage = join(tmp.dir, "not-an-image.txt");
    writeFileSync(notImage, "plain text\n");
    const result = gulp(["initramfs:ls", "--image", notImage]);
    assert.notEqual(result.status, 0);
    assert.match(result.stdout + result.stderr, /not-an-image\.txt: the image is neither/);
  });

  test("user errors print no stack trace", () => {
    const result = gulp(["initramfs", "--init", join(tmp.dir, "absent")]);
    assert.notEqual(result.status, 0);
    assert.match(result.stdout + result.stderr, /init file .*absent.*--init/);
    assert.doesNotMatch(result.stdout + result.stderr, /\n\s+at /);
  });

  test("skipped include files are reported", () => {
    const dir = join(tmp.dir, "with-fifo");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "ok.txt"), "ok\n");
    run("mkfifo", [join(dir, "pipe")]);
    const out = join(tmp.dir, "fifo.lz4");
    const result = gulp(["initramfs", "--init", bin.init, "--include", dir, "--out", out]);
    assert.equal(result.status, 0, result.stderr);
    assert.match(
      result.stdout + result.stderr,
      /INCLUDE_SKIPPED: .*pipe is not packed: not a regular file/,
    );
  });

  test("failed build leaves no partial image", () => {
    const dir = join(tmp.dir, "failing-build");
    mkdirSync(dir, { recursive: true });
    // An include that needs a library that is not found fails the build
    // after the stages have started writing the image.
    const libDir = join(tmp.dir, "gone-lib");
    mkdirSync(libDir, { recursive: true });
    const lib = join(libDir, "libgone.so");
    compileC("int gone(void) { return 1; }\n", lib, ["-shared", "-fPIC"]);
    const user = join(tmp.dir, "needs-gone");
    compileC("int gone(void);\nint main(void) { return gone(); }\n", user, [], [
      `-L${libDir}`, "-lgone",
    ]);
    rmSync(lib);
    const out = join(dir, "image.lz4");
    const result = gulp([
      "initramfs", "--init", bin.init, "--include", `bin/tool=${user}`, "--out", out,
    ]);
    assert.notEqual(result.status, 0);
    assert.match(result.stdout + result.stderr, /LIB_MISSING|libgone\.so/);
    assert.deepEqual(readdirSync(dir), []);
  });

  test("SIGINT leaves no partial image", async () => {
    const dir = join(tmp.dir, "interrupted");
    mkdirSync(dir, { recursive: true });
    // Random bytes at the slowest level keep the build busy for seconds.
    const slow = join(tmp.dir, "random.bin");
    writeFileSync(slow, randomBytes(48 << 20));
    const out = join(dir, "image.lz4");
    const child = spawn(GULP, [
      "initramfs", "--init", bin.init, "--include", slow, "--level", "12", "--out", out,
    ], { cwd: REPO, env: { ...process.env, NODE_OPTIONS: "" }, stdio: "ignore" });
    const exited = new Promise<NodeJS.Signals | null>((done) =>
      child.once("exit", (_code, signal) => done(signal)),
    );
    while (!readdirSync(dir).some((name) => name.includes(".tmp-"))) {
      await new Promise((done) => setTimeout(done, 20));
    }
    child.kill("SIGINT");
    assert.equal(await exited, "SIGINT");
    assert.deepEqual(readdirSync(dir), []);
  });

  test("stale temporaries are removed", () => {
    const dir = join(tmp.dir, "stale");
    mkdirSync(dir, { recursive: true });
    const dead = exitedPid();
    writeFileSync(join(dir, `image.lz4.tmp-${dead}`), "partial");
    // Younger files may belong to a writer that has not locked them yet.
    utimesSync(join(dir, `image.lz4.tmp-${dead}`), 1_000_000_000, 1_000_000_000);
    const result = gulp(["initramfs", "--init", bin.init, "--out", join(dir, "image.lz4")]);
    assert.equal(result.status, 0, result.stderr);
    assert.deepEqual(readdirSync(dir).sort(), ["image.lz4", "image.lz4.key.json"]);
  });

  test("--init without a value fails", () => {
    const out = join(tmp.dir, "no-value.lz4");
    const result = gulp(["initramfs", "--out", out, "--init"]);
    assert.notEqual(result.status, 0);
    assert.match(result.stdout + result.stderr, /--init needs a value/);
    assert.ok(!existsSync(out), `${out} was written`);
  });
});

describe("gulp initramfs from dist and sources", () => {
  const log = join(tmp.dir, "load.log");
  const fromDist = join(tmp.dir, "load", "dist.lz4");
  const fromSources = join(tmp.dir, "load", "sources.lz4");

  before(() => {
    const env = { [BUILD_LOG_ENV]: log };
    gulp(["initramfs", "--init", bin.init, "--out", fromDist], REPO, env);
    gulp(["initramfs", "--init", bin.init, "--out", fromSources], REPO, {
      ...env,
      [FROM_SOURCES_ENV]: "1",
    });
  });

  test("dist is built", () => {
    assert.ok(distIsCurrent(REPO), "dist/ was not compiled from the current sources: run npm run build");
  });

  test("loads dist, then sources", () => {
    const from = readFileSync(log, "utf8").trim().split("\n").map((l) => l.split(" ")[2]);
    assert.deepEqual(from, ["dist", "sources"]);
  });

  test("both give the same bytes", () => {
    assert.ok(readFileSync(fromDist).equals(readFileSync(fromSources)));
  });
});

describe("gulp --tasks", () => {
  test("lists the three tasks", () => {
    const result = gulp(["--tasks"]);
    assert.equal(result.status, 0, result.stderr);
    for (const task of ["initramfs", "initramfs:ls", "initramfs:verify"]) {
      const line = new RegExp(`[─└├]+ ${task} `, "m");
      assert.match(result.stdout, line, `${task} is not listed`);
    }
  });
});
