import assert from "node:assert/strict";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readlinkSync,
  statSync,
} from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";

import { CpioWriter } from "../src/cpio.js";
import {
  LayoutError,
  SENTINEL,
  planBase,
  planSuffix,
  type LayoutEntry,
  type LayoutItem,
} from "../src/layout.js";
import type { SuffixParams } from "../src/config.js";
import { run, tempDir } from "./helpers/tools.js";

const EMPTY: SuffixParams = {
  args: [],
  schedArgs: [],
  schedEnable: [],
  schedDisable: [],
  stagedSchedArgs: {},
};

/** Items of a full build, deliberately out of order. */
const ITEMS: LayoutItem[] = [
  {
    archivePath: "usr/lib/x86_64-linux-gnu/libc.so.6",
    role: "library",
    hostIdentity: "/usr/lib/x86_64-linux-gnu/libc.so.6",
  },
  { archivePath: "include-files/run.sh", role: "include", permissions: 0o750 },
  {
    archivePath: "lib/x86_64-linux-gnu/libc.so.6",
    role: "library",
    hostIdentity: "/usr/lib/x86_64-linux-gnu/libc.so.6",
  },
  { archivePath: "staging/schedulers/b/scheduler", role: "extra" },
  { archivePath: "bin/busybox", role: "busybox" },
  { archivePath: "etc/data", role: "include" },
  { archivePath: "scheduler", role: "extra" },
  { archivePath: "init", role: "payload" },
  {
    archivePath: "lib64/ld-linux-x86-64.so.2",
    role: "library",
    hostIdentity: "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
  },
];

/** Writes `entry` as "kind path mode [target]" for whole-list compares. */
function describeEntry(entry: LayoutEntry<LayoutItem>): string {
  const mode = entry.mode.toString(8);
  if (entry.kind === "symlink") {
    return `symlink ${entry.archivePath} ${mode} ${entry.target}`;
  }
  return `${entry.kind} ${entry.archivePath} ${mode}`;
}

function expectLayoutError(fn: () => unknown, code: string, fileName?: string) {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof LayoutError, `expected LayoutError: ${error}`);
    assert.equal(error.code, code);
    if (fileName !== undefined) assert.equal(error.fileName, fileName);
    return true;
  });
}

describe("planBase", () => {
  test("full build has the image order", () => {
    const entries = planBase(ITEMS).map(describeEntry);
    assert.deepEqual(entries, [
      "directory bin 40755",
      "directory etc 40755",
      "directory include-files 40755",
      "directory lib 40755",
      "directory lib/x86_64-linux-gnu 40755",
      "directory lib64 40755",
      "directory staging 40755",
      "directory staging/schedulers 40755",
      "directory staging/schedulers/b 40755",
      "directory usr 40755",
      "directory usr/lib 40755",
      "directory usr/lib/x86_64-linux-gnu 40755",
      "file init 100755",
      "file bin/busybox 100755",
      "file scheduler 100755",
      "file staging/schedulers/b/scheduler 100755",
      "file etc/data 100644",
      "file include-files/run.sh 100750",
      "file lib/x86_64-linux-gnu/libc.so.6 100755",
      "file lib64/ld-linux-x86-64.so.2 100755",
      "symlink usr/lib/x86_64-linux-gnu/libc.so.6 120777 " +
        "/lib/x86_64-linux-gnu/libc.so.6",
      `file ${SENTINEL} 100644`,
    ]);
  });

  test("every parent precedes its entries", () => {
    const written = new Set<string>();
    for (const entry of planBase(ITEMS)) {
      const parts = entry.archivePath.split("/");
      for (let i = 1; i < parts.length; i++) {
        const parent = parts.slice(0, i).join("/");
        assert.ok(written.has(parent), `${parent} after ${entry.archivePath}`);
      }
      written.add(entry.archivePath);
    }
  });

  test("order ignores input order", () => {
    const reversed = planBase([...ITEMS].reverse()).map(describeEntry);
    assert.deepEqual(reversed, planBase(ITEMS).map(describeEntry));
  });

  test("file entries carry their item", () => {
    const init = planBase(ITEMS).find((e) => e.archivePath === "init");
    assert.ok(init?.kind === "file");
    assert.equal(init.item, ITEMS[7]);
  });

  test("sentinel is last and empty", () => {
    const entries = planBase(ITEMS);
    const last = entries[entries.length - 1];
    assert.equal(last.archivePath, SENTINEL);
    assert.ok(last.kind === "file");
    assert.equal(last.item, null);
    assert.equal(last.mode, 0o100644);
  });

  test("include keeps setuid and permission bits", () => {
    const [entry] = planBase([
      { archivePath: "tool", role: "include", permissions: 0o104755 },
    ]);
    assert.equal(entry.mode, 0o104755);
  });

  test("include without permissions gets 0644", () => {
    const [entry] = planBase([{ archivePath: "data", role: "include" }]);
    assert.equal(entry.mode, 0o100644);
  });

  test("given symlink target becomes symlink entry", () => {
    const [entry] = planBase([
      { archivePath: "lib64", role: "library", symlinkTarget: "lib" },
    ]);
    assert.equal(describeEntry(entry), "symlink lib64 120777 lib");
  });

  test("same library path twice is one entry", () => {
    const lib: LayoutItem = {
      archivePath: "lib/libz.so.1",
      role: "library",
      hostIdentity: "/lib/libz.so.1",
    };
    const entries = planBase([lib, { ...lib }]);
    const paths = entries.map((e) => e.archivePath);
    assert.deepEqual(paths, ["lib", "lib/libz.so.1", SENTINEL]);
  });

  test("empty build has only sentinel", () => {
    assert.deepEqual(planBase([]).map(describeEntry), [`file ${SENTINEL} 100644`]);
  });
});

describe("planBase errors", () => {
  test("duplicate archive path is rejected", () => {
    expectLayoutError(
      () =>
        planBase([
          { archivePath: "scheduler", role: "extra" },
          { archivePath: "scheduler", role: "include" },
        ]),
      "LAYOUT_DUPLICATE_PATH",
      "scheduler",
    );
  });

  test("library paths with different hosts clash", () => {
    expectLayoutError(
      () =>
        planBase([
          { archivePath: "lib/a.so", role: "library", hostIdentity: "/x" },
          { archivePath: "lib/a.so", role: "library", hostIdentity: "/y" },
        ]),
      "LAYOUT_DUPLICATE_PATH",
    );
  });

  test("file that is also a parent is rejected", () => {
    expectLayoutError(
      () =>
        planBase([
          { archivePath: "etc", role: "include" },
          { archivePath: "etc/passwd", role: "include" },
        ]),
      "LAYOUT_FILE_IS_DIRECTORY",
      "etc",
    );
  });

  test("input at sentinel path is rejected", () => {
    expectLayoutError(
      () => planBase([{ archivePath: SENTINEL, role: "extra" }]),
      "LAYOUT_DUPLICATE_PATH",
      SENTINEL,
    );
  });
});

describe("planSuffix", () => {
  test("empty params give only args", () => {
    const files = planSuffix(EMPTY);
    assert.equal(files.length, 1);
    assert.equal(files[0].archivePath, "args");
    assert.equal(files[0].mode, 0o100644);
    assert.equal(files[0].data.length, 0);
  });

  test("argument with a newline is rejected", () => {
    const cases: Array<[Partial<typeof EMPTY>, string]> = [
      [{ args: ["a\nb"] }, "/args"],
      [{ schedArgs: ["x", "y\n"] }, "/sched_args"],
      [{ stagedSchedArgs: { scx: ["p\nq"] } }, "/staging/schedulers/scx/sched_args"],
    ];
    for (const [params, file] of cases) {
      assert.throws(
        () => planSuffix({ ...EMPTY, ...params }),
        (error: Error & { code?: string }) =>
          error.code === "LAYOUT_ARG_HAS_NEWLINE" && error.message.includes(file),
      );
    }
  });

  test("all params give the guest order", () => {
    const files = planSuffix({
      args: ["run", "--fast"],
      schedArgs: ["-v", "--slice=3"],
      schedEnable: ["#!/bin/sh", "echo on"],
      schedDisable: ["#!/bin/sh", "echo off"],
      exec: "/bin/true",
      workloadRootCgroup: "/sys/fs/cgroup/work",
      schedulerCgroupParent: "/sys/fs/cgroup/sched",
      stagedSchedArgs: { zeta: ["-z"], alpha: ["-a", "-b"] },
    });
    const summary = files.map(
      (f) => `${f.archivePath} ${f.mode.toString(8)} ${JSON.stringify(f.data.toString())}`,
    );
    assert.deepEqual(summary, [
      'args 100644 "run\\n--fast"',
      'sched_args 100644 "-v\\n--slice=3"',
      'sched_enable 100755 "#!/bin/sh\\necho on"',
      'sched_disable 100755 "#!/bin/sh\\necho off"',
      'exec_cmd 100644 "/bin/true"',
      'workload_root_cgroup 100644 "/sys/fs/cgroup/work"',
      'scheduler_cgroup_parent 100644 "/sys/fs/cgroup/sched"',
      'staging 40755 ""',
      'staging/schedulers 40755 ""',
      'staging/schedulers/alpha 40755 ""',
      'staging/schedulers/alpha/sched_args 100644 "-a\\n-b"',
      'staging/schedulers/zeta 40755 ""',
      'staging/schedulers/zeta/sched_args 100644 "-z"',
    ]);
  });

  test("empty strings and lists are omitted", () => {
    const files = planSuffix({
      ...EMPTY,
      exec: "",
      workloadRootCgroup: "",
      schedulerCgroupParent: "",
      stagedSchedArgs: { idle: [] },
    });
    assert.deepEqual(
      files.map((f) => f.archivePath),
      ["args"],
    );
  });

  test("bad staged names are rejected", () => {
    for (const name of ["", ".", "..", ".hidden", "a/b", "a\0b"]) {
      expectLayoutError(
        () => planSuffix({ ...EMPTY, stagedSchedArgs: { [name]: ["-v"] } }),
        "LAYOUT_BAD_SCHEDULER_NAME",
      );
    }
  });
});

describe("planBase through real cpio", () => {
  test("extracted tree matches the plan", async () => {
    const work = tempDir("layout");
    try {
      const writer = new CpioWriter();
      for (const entry of planBase(ITEMS)) {
        if (entry.kind === "directory") {
          writer.addDirectory(entry.archivePath, { mode: entry.mode });
        } else if (entry.kind === "symlink") {
          writer.addSymlink(entry.archivePath, entry.target);
        } else {
          const data = Buffer.from(entry.archivePath);
          writer.addFile(entry.archivePath, { mode: entry.mode, data });
        }
      }
      const archive = await writer.finish({ trailer: true }).toBuffer();
      const root = join(work.dir, "root");
      mkdirSync(root);
      run("cpio", ["-id", "--quiet", "--no-absolute-filenames"], {
        cwd: root,
        input: archive,
      });
      const libc = join(root, "usr/lib/x86_64-linux-gnu/libc.so.6");
      assert.ok(lstatSync(libc).isSymbolicLink());
      assert.equal(readlinkSync(libc), "/lib/x86_64-linux-gnu/libc.so.6");
      assert.equal(statSync(join(root, "init")).mode & 0o7777, 0o755);
      assert.equal(
        readFileSync(join(root, "staging/schedulers/b/scheduler"), "utf8"),
        "staging/schedulers/b/scheduler",
      );
      assert.ok(existsSync(join(root, SENTINEL)));
    } finally {
      work.cleanup();
    }
  });
});
