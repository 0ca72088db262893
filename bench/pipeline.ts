import { execFileSync, spawnSync } from "node:child_process";
import {
  copyFileSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { distIsCurrent } from "../scripts/load-tasks.js";

/**
 * Compares the whole `gulp initramfs` task with the shell pipeline people
 * use today: `strip --strip-debug` of the binaries, a copy of the
 * libraries that `ldd` lists, then `find . | cpio -o -H newc | lz4 -l`.
 * The input is about 300 MB: a `gcc -g` test binary as /init, debug
 * builds of real programs as extras, and an include tree of ELF
 * libraries and small text files. Both run as child processes under
 * /usr/bin/time, so wall time and peak RSS are measured alike.
 */

const REPO = resolve(__dirname, "..");
const INCLUDE_ELF_BYTES = 220 * 1000 * 1000;
const SMALL_FILES = 2000;
const EXTRA_DEBUG_BYTES = 24 * 1000 * 1000;
const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);
const RUNS = 5;

interface Timed {
  seconds: number;
  maxRssKiB: number;
}

/** Runs a command under /usr/bin/time and returns wall time and peak RSS. */
function timed(command: string[], cwd: string): Timed {
  const result = spawnSync(
    "/usr/bin/time",
    ["-f", "TIME %e %M", ...command],
    { cwd, encoding: "utf8", maxBuffer: 1 << 26 },
  );
  if (result.status !== 0) {
    throw new Error(`${command.join(" ")} failed: ${result.stderr}`);
  }
  const match = /TIME ([\d.]+) (\d+)/.exec(result.stderr);
  if (!match) throw new Error(`no /usr/bin/time output: ${result.stderr}`);
  return { seconds: Number(match[1]), maxRssKiB: Number(match[2]) };
}

/** Copies ELF libraries and writes small files into `dir`. */
function makeIncludeTree(dir: string): void {
  const libDir = join(dir, "lib");
  mkdirSync(libDir, { recursive: true });
  let total = 0;
  const source = "/usr/lib/x86_64-linux-gnu";
  for (const name of readdirSync(source).sort()) {
    if (total >= INCLUDE_ELF_BYTES) break;
    const path = join(source, name);
    if (!lstatSync(path).isFile()) continue;
    const head = readFileSync(path).subarray(0, 4);
    if (!head.equals(ELF_MAGIC)) continue;
    copyFileSync(path, join(libDir, name));
    total += statSync(path).size;
  }
  const textDir = join(dir, "etc");
  for (let i = 0; i < SMALL_FILES; i++) {
    const sub = join(textDir, `d${i % 40}`);
    mkdirSync(sub, { recursive: true });
    writeFileSync(join(sub, `f${i}.conf`), `setting_${i} = ${i * 7}\n`.repeat(20));
  }
}

/** Makes a debug build of a small program padded with DWARF-like bulk. */
function makeDebugBinary(dir: string, name: string, bulk: number): string {
  const source = join(dir, `${name}.c`);
  const out = join(dir, name);
  writeFileSync(
    source,
    `#include <stdio.h>\n#include <math.h>\n` +
      `int main(int c, char **v) { printf("%s %f\\n", v[0], cbrt(c)); return 0; }\n`,
  );
  execFileSync("gcc", ["-g3", "-O1", source, "-o", out, "-lm"]);
  const junk = join(dir, `${name}.junk`);
  writeFileSync(junk, Buffer.alloc(bulk, 0x5a));
  execFileSync("objcopy", [
    "--add-section", `.debug_junk=${junk}`,
    "--set-section-flags", ".debug_junk=noload,readonly",
    out,
  ]);
  rmSync(junk);
  return out;
}

/** Returns the shell pipeline as a script, so `time` measures all of it. */
function shellScript(init: string, extras: string[], include: string): string {
  const lines = [
    "set -eu",
    "stage=$(mktemp -d)",
    `strip --strip-debug -o "$stage/init" "${init}"`,
    ...extras.map((e, i) => `strip --strip-debug -o "$stage/extra${i}" "${e}"`),
    `mkdir -p "$stage/include-files"`,
    `cp -rL "${include}" "$stage/include-files/"`,
    // The libraries of every ELF, as ldd lists them, at their own paths.
    `for f in "${init}" ${extras.map((e) => `"${e}"`).join(" ")} "${include}"/lib/*; do`,
    `  ldd "$f" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do`,
    `    mkdir -p "$stage$(dirname "$lib")"; cp -L "$lib" "$stage$lib"`,
    "  done",
    "done",
    `(cd "$stage" && find . | cpio -o -H newc --quiet | lz4 -l -1 -q > "$OUT")`,
    `rm -rf "$stage"`,
  ];
  return lines.join("\n");
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

export async function run(): Promise<string> {
  // gulpfile.ts falls back to the slower TypeScript sources when dist/ is
  // stale, so build it: users get dist/ from npm ci.
  if (!distIsCurrent(REPO)) execFileSync("npm", ["run", "build"], { cwd: REPO });
  const dir = mkdtempSync(join(tmpdir(), "gulp-initramfs-bench-pipeline-"));
  try {
    const init = makeDebugBinary(dir, "test-init", EXTRA_DEBUG_BYTES);
    const extras = ["sched-a", "sched-b"].map((name) =>
      makeDebugBinary(dir, name, EXTRA_DEBUG_BYTES),
    );
    const include = join(dir, "tree");
    makeIncludeTree(include);
    const inputBytes = Number(
      execFileSync("du", ["-sb", dir], { encoding: "utf8" }).split("\t")[0],
    );
    const script = join(dir, "pipeline.sh");
    writeFileSync(script, shellScript(init, extras, include));

    const ours: Timed[] = [];
    const shell: Timed[] = [];
    const gulp = join(REPO, "node_modules", ".bin", "gulp");
    const flags = [
      "--init", init,
      ...extras.flatMap((e, i) => ["--extra", `extra${i}=${e}`]),
      "--include", include,
    ];
    for (let i = 0; i < RUNS; i++) {
      const ourOut = join(dir, `ours-${i}.lz4`);
      ours.push(timed([gulp, "initramfs", ...flags, "--out", ourOut], REPO));
      process.env.OUT = join(dir, `shell-${i}.lz4`);
      shell.push(timed(["bash", script], dir));
    }
    delete process.env.OUT;
    const ourBytes = statSync(join(dir, "ours-0.lz4")).size;
    const shellBytes = statSync(join(dir, "shell-0.lz4")).size;
    const ourTime = median(ours.map((t) => t.seconds));
    const shellTime = median(shell.map((t) => t.seconds));
    const mib = (kib: number) => (kib / 1024).toFixed(0);
    return [
      `Input: ${(inputBytes / 1e6).toFixed(0)} MB (3 debug binaries, ` +
        `an include tree of ELF libraries and ${SMALL_FILES} small files). ` +
        `Median of ${RUNS} runs each.`,
      "",
      "| pipeline | wall s | peak RSS MiB | image MB |",
      "| --- | ---: | ---: | ---: |",
      `| gulp initramfs (whole task, gulp start included) | ${ourTime.toFixed(2)} | ` +
        `${mib(Math.max(...ours.map((t) => t.maxRssKiB)))} | ${(ourBytes / 1e6).toFixed(1)} |`,
      `| strip + cp libs + cpio + lz4 -l -1 | ${shellTime.toFixed(2)} | ` +
        `${mib(Math.max(...shell.map((t) => t.maxRssKiB)))} | ${(shellBytes / 1e6).toFixed(1)} |`,
      "",
      `Ratio of wall times, ours / shell: ${(ourTime / shellTime).toFixed(2)} ` +
        "(target: at most 0.50).",
    ].join("\n");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
