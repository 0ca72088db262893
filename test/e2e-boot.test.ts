import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { loadConfig } from "../src/config.js";
import { appendSuffix } from "../src/suffix.js";
import { buildImage } from "../plugins/pipeline.js";
import { bootImage } from "./helpers/qemu.js";
import { compileC, requireTool, run, tempDir } from "./helpers/tools.js";

const REPO = resolve(__dirname, "..");
const GULP = join(REPO, "node_modules", ".bin", "gulp");

/** Runs `gulp initramfs` from the repository with the given flags. */
function gulpInitramfs(flags: string[]): string {
  return execFileSync(GULP, ["initramfs", ...flags], {
    cwd: REPO,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/** Lists an LZ4 image with `lz4 -d` and GNU `cpio -t`. */
function listImage(image: string): string[] {
  const archive = run("lz4", ["-dc", image]);
  return run("cpio", ["-it", "--quiet"], { input: archive })
    .toString()
    .trim()
    .split("\n");
}

describe("boot tests", () => {
  const tmp = tempDir("boot");
  const init = join(tmp.dir, "init");
  const extra = join(tmp.dir, "extra");
  const data = join(tmp.dir, "data");

  before(() => {
    requireTool("qemu-system-x86_64");
    compileC(readFileSync(join(__dirname, "fixtures/boot-init.c"), "utf8"), init, ["-g", "-O1"]);
    compileC(readFileSync(join(__dirname, "fixtures/boot-extra.c"), "utf8"), extra, ["-g"], ["-lm"]);
    mkdirSync(join(data, "nested"), { recursive: true });
    writeFileSync(join(data, "nested", "hello.txt"), "hello from an include\n");
  });
  after(() => tmp.cleanup());

  test("gulp initramfs image boots", async () => {
    const image = join(tmp.dir, "cli.cpio.lz4");
    const output = gulpInitramfs([
      "--init", init,
      "--extra", `scheduler=${extra}`,
      "--include", data,
      "--args", "first",
      "--args", "second line",
      "--out", image,
    ]);
    assert.match(output, /entries: \d+/);
    assert.match(output, new RegExp(`image: ${image}`));

    const names = listImage(image);
    for (const name of [
      "init",
      "scheduler",
      "include-files/data/nested/hello.txt",
      ".ktstr_init_ok",
      "args",
      "lib64/ld-linux-x86-64.so.2",
    ]) {
      assert.ok(names.includes(name), `${name} missing from ${names.join(" ")}`);
    }
    assert.ok(
      names.some((name) => /libm\.so\.6$/.test(name)),
      "libm of the extra is packed",
    );

    const boot = await bootImage(image);
    assert.equal(boot.timedOut, false, boot.console);
    assert.match(boot.console, /BOOT-INIT-START/);
    assert.match(boot.console, /SENTINEL-OK/);
    assert.match(boot.console, /EXTRA-OK from-init cbrt=2\.000/);
    assert.match(boot.console, /EXTRA-STATUS=7/);
    assert.match(boot.console, /INCLUDE=\[hello from an include\n\]/);
    assert.match(boot.console, /ARGS=\[first\nsecond line\]/);
    assert.match(boot.console, /BOOT-INIT-DONE/);
  });

  test("cached base with new suffix boots", async () => {
    const config = loadConfig(
      ["--init", init, "--extra", `scheduler=${extra}`, "--include", data,
        "--args", "base-run", "--out", join(tmp.dir, "base.cpio.lz4")],
      tmp.dir,
    );
    const summary = await buildImage(config);
    const [base] = summary.image.parts;
    const compressedBase = readFileSync(config.out).subarray(0, base.length);
    const image = join(tmp.dir, "second.cpio.lz4");
    writeFileSync(
      image,
      await appendSuffix(compressedBase, base.archiveLength, {
        args: ["second-run", "x"],
      }),
    );

    const names = listImage(image);
    assert.ok(names.includes("init"));
    assert.ok(names.includes("args"));

    const boot = await bootImage(image);
    assert.equal(boot.timedOut, false, boot.console);
    assert.match(boot.console, /ARGS=\[second-run\nx\]/);
    assert.doesNotMatch(boot.console, /base-run/);
    assert.match(boot.console, /BOOT-INIT-DONE/);
  });

  test("library found only through $ORIGIN loads", async () => {
    const originDir = join(tmp.dir, "origin");
    mkdirSync(join(originDir, "lib"), { recursive: true });
    compileC(
      'int origin_value(void) { return 42; }\n',
      join(originDir, "lib", "liborigin.so"),
      ["-shared", "-fPIC", "-Wl,-soname,liborigin.so"],
    );
    const program = join(originDir, "uses-origin");
    compileC(
      '#include <stdio.h>\nint origin_value(void);\n' +
        'int main(int c, char **v) { (void)c; ' +
        'printf("EXTRA-OK %s origin=%d\\n", v[1], origin_value()); return 7; }\n',
      program,
      ["-Wl,-rpath,$ORIGIN/lib"],
      [`-L${join(originDir, "lib")}`, "-lorigin"],
    );
    const image = join(tmp.dir, "origin.cpio.lz4");
    gulpInitramfs([
      "--init", init,
      "--extra", `scheduler=${program}`,
      "--include", data,
      "--out", image,
    ]);
    const names = listImage(image);
    assert.ok(
      names.some((name) => name.endsWith("/liborigin.so")),
      `liborigin.so missing from ${names.join(" ")}`,
    );

    const boot = await bootImage(image);
    assert.equal(boot.timedOut, false, boot.console);
    assert.match(boot.console, /EXTRA-OK from-init origin=42/);
    assert.match(boot.console, /EXTRA-STATUS=7/);
  });

  test("default image boots node", async () => {
    const image = join(tmp.dir, "default.cpio.lz4");
    const output = gulpInitramfs(["--out", image]);
    assert.match(output, /building the default image/);
    const names = listImage(image);
    assert.ok(names.includes("init"));
    assert.ok(names.includes("bin/node"));

    const boot = await bootImage(image, { memory: "1024", timeoutMs: 240_000 });
    assert.equal(boot.timedOut, false, boot.console);
    assert.match(
      boot.console,
      new RegExp(`default image: node ${process.version} is /init`),
    );
  });
});
