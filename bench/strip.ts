/**
 * Times stripDebug against `strip --strip-debug -o` on a 1 GB binary: a
 * copy of the running node executable with a 900 MiB `.debug_junk`
 * section added by objcopy. Each tool runs in a child process under
 * GNU time (Debian package `time`), which reports wall time and peak RSS.
 * Our child is this file bundled by esbuild, without esbuild itself, so
 * neither TypeScript nor esbuild loading is part of the time. The child
 * also times its own work, from the strip call until the output file is
 * written, and an empty `node -e 0` row shows Node's startup share of the
 * wall time. Every run writes a new output file: overwriting the previous
 * one would add the file system's truncation and writeback of it.
 */
import { spawnSync } from "node:child_process";
import {
  existsSync,
  mkdtempSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { buildDebugBinary } from "./helpers/debug-binary.js";
import { join } from "node:path";
import { stripDebugFile, stripDebugToFile } from "../src/strip.js";

const GNU_TIME = "/usr/bin/time";
/** Rounds per tool. The table shows medians because the host is shared. */
const ROUNDS = 3;
/** Prefix of the line a child prints with its in-process time. */
const CHILD_TIME = "strip-seconds ";

interface Measure {
  /** Wall time of the whole process, startup included. */
  seconds: number;
  maxRssBytes: number;
  /** Time the child measured around the strip and the output write. */
  inProcessSeconds?: number;
}


/**
 * Runs a command under GNU time and parses wall time and peak RSS, plus
 * the in-process time when the command prints one.
 */
function timed(command: string[]): Measure {
  const result = spawnSync(GNU_TIME, ["-v", ...command], {
    encoding: "utf8",
    maxBuffer: 1 << 24,
  });
  if (result.status !== 0) {
    throw new Error(`${command.join(" ")} failed: ${result.stderr}`);
  }
  const wall = /Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)/.exec(
    result.stderr,
  );
  const rss = /Maximum resident set size \(kbytes\): (\d+)/.exec(result.stderr);
  if (!wall || !rss) throw new Error("cannot parse GNU time output");
  const seconds =
    Number(wall[1] ?? 0) * 3600 + Number(wall[2]) * 60 + Number(wall[3]);
  const measure: Measure = { seconds, maxRssBytes: Number(rss[1]) * 1024 };
  const line = result.stdout
    .split("\n")
    .find((text) => text.startsWith(CHILD_TIME));
  if (line) measure.inProcessSeconds = Number(line.slice(CHILD_TIME.length));
  return measure;
}

/** Returns the median of `values`, the upper one for an even count. */
function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/** Takes the median of each field separately over the rounds. */
function medianOf(runs: Measure[]): Measure {
  const inProcess = runs.flatMap((m) => m.inProcessSeconds ?? []);
  return {
    seconds: median(runs.map((m) => m.seconds)),
    maxRssBytes: median(runs.map((m) => m.maxRssBytes)),
    inProcessSeconds: inProcess.length > 0 ? median(inProcess) : undefined,
  };
}

const mib = (bytes: number) => `${(bytes / (1 << 20)).toFixed(0)} MiB`;

/** Builds the input, measures both tools and returns a markdown table. */
export async function run(): Promise<string> {
  if (!existsSync(GNU_TIME)) {
    throw new Error("GNU time not found; install it with: apt-get install -y time");
  }
  const dir = mkdtempSync(join(tmpdir(), "bench-strip-"));
  try {
    const input = buildDebugBinary(dir);
    const ours = join(dir, "ours");
    const theirs = join(dir, "theirs");
    const bundle = join(dir, "child.js");
    // Imported here so that the child, which never calls run(), does not
    // load esbuild at startup.
    const { buildSync } = await import("esbuild");
    buildSync({
      entryPoints: [__filename],
      bundle: true,
      platform: "node",
      format: "cjs",
      outfile: bundle,
      external: ["esbuild"],
      logLevel: "error",
    });
    const self = [process.execPath, bundle];
    const modes = ["buffer", "file"] as const;
    const results = new Map<string, Measure[]>();
    for (let round = 0; round < ROUNDS; round++) {
      const idle = results.get("node -e 0") ?? [];
      idle.push(timed([process.execPath, "-e", "0"]));
      results.set("node -e 0", idle);
      for (const mode of modes) {
        const list = results.get(mode) ?? [];
        rmSync(ours, { force: true });
        list.push(timed([...self, "--child", mode, input, ours]));
        results.set(mode, list);
      }
      const list = results.get("binutils") ?? [];
      rmSync(theirs, { force: true });
      list.push(timed(["strip", "--strip-debug", "-o", theirs, input]));
      results.set("binutils", list);
    }
    const inputSize = statSync(input).size;
    const kept = statSync(ours).size;
    const binutils = medianOf(results.get("binutils") ?? []);
    const rows = [...results.entries()].map(([name, runs]) => {
      const m = medianOf(runs);
      const inProcess =
        m.inProcessSeconds === undefined
          ? "-"
          : `${m.inProcessSeconds.toFixed(3)} s`;
      const label = modes.some((mode) => mode === name)
        ? `stripDebug (${name})`
        : name === "binutils"
          ? "strip --strip-debug -o"
          : name;
      return (
        `| ${label} | ${m.seconds.toFixed(2)} s | ` +
        `${(m.seconds / binutils.seconds).toFixed(2)} | ${inProcess} | ` +
        `${mib(m.maxRssBytes)} | ${(m.maxRssBytes / kept).toFixed(2)} |`
      );
    });
    return [
      `Input ${mib(inputSize)} (node + .debug_junk), kept ${mib(kept)}, ` +
        `binutils output ${mib(statSync(theirs).size)}; median of ` +
        `${ROUNDS} rounds. Wall time is the whole process under GNU time; ` +
        `in-process time runs from the strip call until the output file ` +
        `is written.`,
      "",
      "| tool | wall | wall / binutils | in-process | peak RSS | RSS / kept |",
      "| --- | --- | --- | --- | --- | --- |",
      ...rows,
    ].join("\n");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Child mode: strips one file the way the plugin or the writer does and
 * prints the seconds that took, output write included.
 */
function child(mode: string, input: string, output: string): void {
  const started = process.hrtime.bigint();
  if (mode === "buffer") {
    writeFileSync(output, stripDebugFile(input).data);
  } else {
    stripDebugToFile(input, output);
  }
  const nanoseconds = Number(process.hrtime.bigint() - started);
  process.stdout.write(`${CHILD_TIME}${(nanoseconds / 1e9).toFixed(4)}\n`);
}

if (require.main === module) {
  const [flag, mode, input, output] = process.argv.slice(2);
  if (flag === "--child") {
    child(mode, input, output);
  } else {
    run().then(
      (table) => process.stdout.write(`${table}\n`),
      (error: unknown) => {
        process.stderr.write(`bench/strip: ${String(error)}\n`);
        process.exitCode = 1;
      },
    );
  }
}
