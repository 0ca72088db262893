import assert from "node:assert/strict";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, test } from "node:test";

import {
  CONFIG_FILE,
  isEmptyBuild,
  loadConfig,
  parseConfigObject,
  parseFlags,
  unknownFlags,
} from "../src/config.js";
import { expectCode } from "./helpers/config-errors.js";
import { tempDir } from "./helpers/tools.js";

let work: ReturnType<typeof tempDir>;
beforeEach(() => {
  work = tempDir("config");
});
afterEach(() => work.cleanup());

function writeConfig(object: unknown): void {
  writeFileSync(join(work.dir, CONFIG_FILE), JSON.stringify(object));
}

describe("parseFlags", () => {
  test("init takes next or inline value", () => {
    assert.equal(parseFlags(["--init", "a/b"]).init, "a/b");
    assert.equal(parseFlags(["--init=a/c"]).init, "a/c");
  });

  test("extra repeats and splits NAME=PATH", () => {
    const flags = parseFlags([
      "--extra",
      "scheduler=./sched",
      "--extra=staging/schedulers/x/scheduler=/opt/x=y",
    ]);
    assert.deepEqual(flags.extra, {
      scheduler: "./sched",
      "staging/schedulers/x/scheduler": "/opt/x=y",
    });
  });

  test("extra without NAME= is rejected", () => {
    expectCode(() => parseFlags(["--extra", "sched"]), "CONFIG_BAD_ASSIGNMENT");
    expectCode(() => parseFlags(["--extra", "=x"]), "CONFIG_BAD_ASSIGNMENT");
    expectCode(() => parseFlags(["--extra", "x="]), "CONFIG_BAD_ASSIGNMENT");
  });

  test("include repeats in order", () => {
    const flags = parseFlags(["--include", "b", "--include=etc/a=/x"]);
    assert.deepEqual(flags.include, ["b", "etc/a=/x"]);
  });

  test("busybox takes an explicit path", () => {
    assert.equal(parseFlags(["--busybox=/opt/bb"]).busybox, "/opt/bb");
    assert.equal(parseFlags(["--busybox", "/opt/bb2"]).busybox, "/opt/bb2");
  });

  test("bare busybox searches standard paths", () => {
    const installed = ["/bin/busybox", "/usr/bin/busybox"].find(existsSync);
    if (installed) {
      assert.equal(parseFlags(["--busybox"]).busybox, installed);
      assert.equal(parseFlags(["--busybox", "--shm"]).busybox, installed);
    } else {
      expectCode(() => parseFlags(["--busybox"]), "CONFIG_NO_BUSYBOX", "apt-get");
    }
  });

  test("list flags accumulate lines", () => {
    const flags = parseFlags([
      "--args", "one",
      "--args=two",
      "--sched-args", "-v",
      "--sched-enable", "echo on",
      "--sched-disable", "echo off",
    ]);
    assert.deepEqual(flags.args, ["one", "two"]);
    assert.deepEqual(flags.schedArgs, ["-v"]);
    assert.deepEqual(flags.schedEnable, ["echo on"]);
    assert.deepEqual(flags.schedDisable, ["echo off"]);
  });

  test("string flags set single values", () => {
    const flags = parseFlags([
      "--exec", "/bin/true",
      "--workload-root-cgroup", "/sys/fs/cgroup/w",
      "--scheduler-cgroup-parent=/sys/fs/cgroup/s",
      "--out", "x.lz4",
    ]);
    assert.equal(flags.exec, "/bin/true");
    assert.equal(flags.workloadRootCgroup, "/sys/fs/cgroup/w");
    assert.equal(flags.schedulerCgroupParent, "/sys/fs/cgroup/s");
    assert.equal(flags.out, "x.lz4");
  });

  test("sched-args-for groups lines by name", () => {
    const flags = parseFlags([
      "--sched-args-for", "alpha=--slice=5",
      "--sched-args-for=beta=-v",
      "--sched-args-for", "alpha=--verbose",
    ]);
    assert.deepEqual(flags.stagedSchedArgs, {
      alpha: ["--slice=5", "--verbose"],
      beta: ["-v"],
    });
  });

  test("sched-args-for accepts inherited property names", () => {
    const flags = parseFlags(["--sched-args-for", "constructor=-v"]);
    assert.deepEqual(flags.stagedSchedArgs?.constructor, ["-v"]);
  });

  test("shm flags set the switch", () => {
    assert.equal(parseFlags(["--shm"]).shm, true);
    assert.equal(parseFlags(["--shm=false"]).shm, false);
    assert.equal(parseFlags(["--no-shm"]).shm, false);
    assert.equal(parseFlags([]).shm, undefined);
  });

  test("level flag takes 0 to 12", () => {
    assert.equal(parseFlags(["--level", "9"]).level, 9);
    assert.equal(parseFlags(["--level=0"]).level, 0);
    expectCode(() => parseFlags(["--level", "13"]), "CONFIG_INVALID", "13");
    expectCode(() => parseFlags(["--level", "fast"]), "CONFIG_INVALID", "fast");
  });

  test("shm settings flags", () => {
    const flags = parseFlags([
      "--shm-dir", "/run/shm-test", "--shm-mode", "0644", "--arch", "aarch64",
    ]);
    assert.equal(flags.shmDir, "/run/shm-test");
    assert.equal(flags.shmMode, 0o644);
    assert.equal(flags.arch, "aarch64");
    assert.equal(parseFlags(["--shm-mode=600"]).shmMode, 0o600);
    expectCode(() => parseFlags(["--shm-mode", "0666"]), "CONFIG_INVALID", "0666");
  });

  test("unknownFlags finds typos only", () => {
    assert.deepEqual(
      unknownFlags(["initramfs", "--extras", "a=b", "--init", "x", "--color"]),
      ["--extras"],
    );
    assert.deepEqual(unknownFlags(["--args", "--not-a-flag", "--shm"]), []);
    assert.deepEqual(unknownFlags(["--gulpfile", "g.ts", "--cwd=/tmp"]), []);
    assert.deepEqual(unknownFlags(["--image", "x", "--level=3"]), ["--image"]);
    assert.deepEqual(unknownFlags(["--args", "--image"]), []);
  });

  test("unknown flags are left for gulp", () => {
    const flags = parseFlags(["initramfs", "--color", "--series", "--init", "i"]);
    assert.deepEqual(flags, { init: "i" });
  });

  test("missing value is rejected", () => {
    expectCode(() => parseFlags(["--init"]), "CONFIG_MISSING_VALUE", "--init");
    expectCode(() => parseFlags(["--args"]), "CONFIG_MISSING_VALUE", "--args");
  });

  test("path flag followed by a flag is rejected", () => {
    expectCode(() => parseFlags(["--init", "--out", "x"]), "CONFIG_MISSING_VALUE", "--out");
    expectCode(() => parseFlags(["--include", "--args", "a"]), "CONFIG_MISSING_VALUE");
    assert.deepEqual(parseFlags(["--args", "--flag"]).args, ["--flag"]);
  });

  test("empty include is rejected", () => {
    expectCode(() => parseFlags(["--include="]), "CONFIG_MISSING_VALUE", "--include");
  });

  test("empty path value is rejected", () => {
    expectCode(() => parseFlags(["--init="]), "CONFIG_MISSING_VALUE", "--init");
    expectCode(() => parseFlags(["--out="]), "CONFIG_MISSING_VALUE", "--out");
    expectCode(() => parseFlags(["--busybox="]), "CONFIG_MISSING_VALUE");
  });
});

describe("parseConfigObject", () => {
  test("level and shm settings keys", () => {
    const parsed = parseConfigObject({
      level: 12,
      shmMode: "0644",
      shmDir: "shm",
      arch: "x86_64",
    });
    assert.equal(parsed.level, 12);
    assert.equal(parsed.shmMode, 0o644);
    assert.equal(parsed.shmDir, "shm");
    assert.equal(parsed.arch, "x86_64");
    expectCode(() => parseConfigObject({ level: true }), "CONFIG_INVALID", "level");
  });

  test("relative shmDir resolves against cwd", () => {
    writeConfig({ shmDir: "segments" });
    assert.equal(loadConfig([], work.dir).shmDir, join(work.dir, "segments"));
  });

  test("unknown key is rejected by name", () => {
    expectCode(() => parseConfigObject({ inti: "x" }), "CONFIG_UNKNOWN_KEY", '"inti"');
  });

  test("wrong types name the key", () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ init: 3 }, '"init"'],
      [{ out: [] }, '"out"'],
      [{ args: [1] }, '"args"'],
      [{ include: { a: 1 } }, '"include"'],
      [{ shm: "yes" }, '"shm"'],
      [{ extra: ["a"] }, '"extra"'],
      [{ extra: { sched: 1 } }, '"extra.sched"'],
      [{ stagedSchedArgs: { a: [2] } }, '"stagedSchedArgs.a"'],
      [{ busybox: 1 }, '"busybox"'],
      [{ init: "" }, '"init"'],
    ];
    for (const [object, mention] of cases) {
      expectCode(() => parseConfigObject(object), "CONFIG_INVALID", mention);
    }
  });

  test("top level must be an object", () => {
    expectCode(() => parseConfigObject([]), "CONFIG_INVALID");
    expectCode(() => parseConfigObject(null), "CONFIG_INVALID");
  });

  test("string list keys accept one string", () => {
    assert.deepEqual(parseConfigObject({ args: "only" }).args, ["only"]);
  });

  test("busybox false means none", () => {
    assert.equal(parseConfigObject({ busybox: false }).busybox, undefined);
  });
});

describe("loadConfig", () => {
  test("defaults without flags or file", () => {
    const config = loadConfig([], work.dir);
    assert.equal(config.out, join(work.dir, "dist/initramfs.cpio.lz4"));
    assert.equal(config.shm, false);
    assert.equal(config.init, undefined);
    assert.deepEqual(config.args, []);
    assert.deepEqual(config.extra, {});
    assert.deepEqual(config.include, []);
    assert.deepEqual(config.stagedSchedArgs, {});
    assert.equal(config.cwd, work.dir);
  });

  test("relative paths resolve against cwd", () => {
    const config = loadConfig(
      ["--init", "bin/t", "--extra", "s=../s", "--busybox=bb", "--out", "o"],
      work.dir,
    );
    assert.equal(config.init, join(work.dir, "bin/t"));
    assert.equal(config.extra.s, join(work.dir, "../s"));
    assert.equal(config.busybox, join(work.dir, "bb"));
    assert.equal(config.out, join(work.dir, "o"));
  });

  test("absolute paths stay unchanged", () => {
    const config = loadConfig(["--init", "/opt/t"], work.dir);
    assert.equal(config.init, "/opt/t");
  });

  test("config file supplies values", () => {
    writeConfig({
      init: "t",
      args: ["a", "b"],
      exec: "run",
      workloadRootCgroup: "/w",
      schedulerCgroupParent: "/p",
      include: ["x"],
      shm: true,
    });
    const config = loadConfig([], work.dir);
    assert.equal(config.init, join(work.dir, "t"));
    assert.deepEqual(config.args, ["a", "b"]);
    assert.equal(config.exec, "run");
    assert.equal(config.workloadRootCgroup, "/w");
    assert.equal(config.schedulerCgroupParent, "/p");
    assert.deepEqual(config.include, ["x"]);
    assert.equal(config.shm, true);
  });

  test("flags win over config file", () => {
    writeConfig({ init: "file-init", out: "file-out", args: ["file"], shm: true });
    const config = loadConfig(
      ["--init", "flag-init", "--args", "flag", "--no-shm"],
      work.dir,
    );
    assert.equal(config.init, join(work.dir, "flag-init"));
    assert.deepEqual(config.args, ["flag"]);
    assert.equal(config.shm, false);
    assert.equal(config.out, join(work.dir, "file-out"));
  });

  test("extras merge by name", () => {
    writeConfig({ extra: { a: "file-a", b: "file-b" } });
    const config = loadConfig(["--extra", "b=flag-b", "--extra", "c=flag-c"], work.dir);
    assert.deepEqual(config.extra, {
      a: join(work.dir, "file-a"),
      b: join(work.dir, "flag-b"),
      c: join(work.dir, "flag-c"),
    });
  });

  test("staged sched args merge by name", () => {
    writeConfig({ stagedSchedArgs: { a: ["1"], b: ["2"] } });
    const config = loadConfig(["--sched-args-for", "b=3"], work.dir);
    assert.deepEqual(config.stagedSchedArgs, { a: ["1"], b: ["3"] });
  });

  test("invalid JSON names the file", () => {
    writeFileSync(join(work.dir, CONFIG_FILE), "{ init: ");
    expectCode(() => loadConfig([], work.dir), "CONFIG_INVALID", CONFIG_FILE);
  });

  test("unknown file key is rejected", () => {
    writeConfig({ scheduler: "x" });
    expectCode(() => loadConfig([], work.dir), "CONFIG_UNKNOWN_KEY", '"scheduler"');
  });
});

describe("isEmptyBuild", () => {
  test("nothing to pack is empty", () => {
    const config = loadConfig(["--args", "x", "--shm"], work.dir);
    assert.equal(isEmptyBuild(config), true);
  });

  test("each input makes it non-empty", () => {
    const cases = [
      ["--init", "t"],
      ["--extra", "s=x"],
      ["--include", "x"],
      ["--busybox=bb"],
    ];
    for (const argv of cases) {
      assert.equal(isEmptyBuild(loadConfig(argv, work.dir)), false, argv.join(" "));
    }
  });
});
