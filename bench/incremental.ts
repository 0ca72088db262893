/**
 * Times `gulp initramfs` on a 1 GB debug binary, a copy of the running
 * node executable with a 900 MiB `.debug_junk` section added by objcopy.
 * A cold run has no image and no build record, so every input is hashed,
 * stripped, packed and compressed. A no-change run finds a matching
 * record, so it hashes no input and runs no stage. `gulp --tasks`,
 * measured in the same run, is gulp's own start-up cost (loading the
 * gulpfile and our modules), which both runs pay. The target is a no-change run under 5% of a cold
 * one once that start-up cost is subtracted from both.
 *
 * "Cold" means no cached build; the input stays in the page cache.
 */
import { spawnSync } from "node:child_process";
import {
  mkdtempSync,
  rmSync,
  statSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { buildDebugBinary } from "./helpers/debug-binary.js";
import { join, resolve } from "node:path";
import { recordPath } from "../src/build-record.js";

const REPO = resolve(__dirname, "..");
const GULP = join(REPO, "node_modules", ".bin", "gulp");
const COLD_ROUNDS = 2;
const WARM_ROUNDS = 3;
const TARGET = 0.05;


/** Runs gulp with `args` from the repository; returns seconds and output. */
function timedGulp(args: string[]): { seconds: number; output: string } {
  const started = performance.now();
  const result = spawnSync(GULP, args, {
    cwd: REPO,
    encoding: "utf8",
    maxBuffer: 1 << 24,
  });
  const seconds = (performance.now() - started) / 1000;
  if (result.status !== 0) {
    throw new Error(`gulp ${args.join(" ")} failed:\n${result.stderr}`);
  }
  return { seconds, output: result.stdout };
}

function expectOutput(output: string, pattern: RegExp, what: string): void {
  if (!pattern.test(output)) {
    throw new Error(`the ${what} run did not print ${pattern}:\n${output}`);
  }
}

const best = (values: number[]): number => Math.min(...values);

/** Builds the input, measures the three commands, returns markdown. */
export async function run(): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), "bench-incremental-"));
  try {
    const binary = buildDebugBinary(dir);
    const out = join(dir, "image.lz4");
    const build = ["initramfs", "--init", binary, "--out", out];
    const tasks: number[] = [];
    const cold: number[] = [];
    const warm: number[] = [];
    for (let round = 0; round < COLD_ROUNDS; round++) {
      rmSync(out, { force: true });
      rmSync(recordPath(out), { force: true });
      const first = timedGulp(build);
      expectOutput(first.output, /^built /m, "cold");
      cold.push(first.seconds);
    }
    for (let round = 0; round < WARM_ROUNDS; round++) {
      tasks.push(timedGulp(["--tasks"]).seconds);
      const again = timedGulp(build);
      expectOutput(again.output, /^up to date /m, "no-change");
      warm.push(again.seconds);
    }
    const startup = best(tasks);
    const coldWork = best(cold) - startup;
    const warmWork = best(warm) - startup;
    const ratio = warmWork / coldWork;
    const row = (name: string, values: number[]) =>
      `| ${name} | ${best(values).toFixed(3)} s | ` +
      `${(best(values) - startup).toFixed(3)} s |`;
    return [
      `Input ${(statSync(binary).size / 2 ** 20).toFixed(0)} MiB ` +
        `(node + .debug_junk) as --init; best of ${COLD_ROUNDS} cold and ` +
        `${WARM_ROUNDS} no-change runs, wall time of the whole gulp process.`,
      "",
      "| command | wall | minus gulp start-up |",
      "| --- | --- | --- |",
      row("gulp --tasks (start-up)", tasks),
      row("gulp initramfs, cold", cold),
      row("gulp initramfs, no change", warm),
      "",
      `No-change / cold after start-up: ${(ratio * 100).toFixed(1)}% ` +
        `(target under ${TARGET * 100}%: ${ratio < TARGET ? "met" : "missed"}).`,
    ].join("\n");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (require.main === module) {
  run().then(
    (table) => process.stdout.write(`${table}\n`),
    (error: unknown) => {
      process.stderr.write(`bench/incremental: ${String(error)}\n`);
      process.exitCode = 1;
    },
  );
}
