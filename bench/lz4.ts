import { spawnSync } from "node:child_process";
import {
  closeSync,
  lstatSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";

import { compressLegacy, type Lz4Options } from "../src/lz4.js";

/**
 * Compares our LZ4 legacy compressor with `lz4 -l` on about 300 MB of
 * ELF files from /usr/lib/x86_64-linux-gnu and /usr/bin. Every run is a
 * child process under /usr/bin/time, so wall time and peak RSS are
 * measured the same way for both. Like the CLI, our child reads the
 * input file, compresses it and writes the output.
 */

const CORPUS_BYTES = 300 * 1000 * 1000;
const CORPUS_DIRS = ["/usr/lib/x86_64-linux-gnu", "/usr/bin"];
const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);
const FAST_RUNS = 3;

interface Measurement {
  label: string;
  /** Wall time of the whole process. */
  seconds: number;
  /** Compression alone, measured inside our child; absent for the CLI. */
  compressSeconds?: number;
  maxRssKiB: number;
  outputBytes: number;
  output: string;
}

/** Writes the corpus to `path` and returns its length in bytes. */
function writeCorpus(path: string): number {
  const fd = openSync(path, "w");
  let total = 0;
  try {
    for (const dir of CORPUS_DIRS) {
      for (const name of readdirSync(dir).sort()) {
        if (total >= CORPUS_BYTES) return total;
        const file = join(dir, name);
        if (!lstatSync(file).isFile()) continue;
        const bytes = readFileSync(file);
        if (!bytes.subarray(0, 4).equals(ELF_MAGIC)) continue;
        const take = bytes.subarray(0, CORPUS_BYTES - total);
        writeSync(fd, take);
        total += take.length;
      }
    }
    return total;
  } finally {
    closeSync(fd);
  }
}

export interface Timing {
  seconds: number;
  maxRssKiB: number;
  compressSeconds?: number;
}

/**
 * Runs a command under /usr/bin/time and returns its wall time, peak RSS
 * and the `COMPRESS <seconds>` line it prints, if any.
 */
export function timed(command: string, args: string[]): Timing {
  const result = spawnSync(
    "/usr/bin/time",
    ["-f", "BENCH %e %M", command, ...args],
    { stdio: ["ignore", "pipe", "pipe"], encoding: "utf8" },
  );
  if (result.status !== 0) {
    throw new Error(`${command} failed: ${result.stderr}`);
  }
  const line = result.stderr
    .split("\n")
    .find((text) => text.startsWith("BENCH "));
  if (!line) {
    throw new Error(`missing /usr/bin/time report in: ${result.stderr}`);
  }
  const [, seconds, rss] = line.split(" ");
  const inner = /^COMPRESS (\S+)$/m.exec(result.stdout);
  return {
    seconds: Number(seconds),
    maxRssKiB: Number(rss),
    compressSeconds: inner ? Number(inner[1]) : undefined,
  };
}

function measure(
  label: string,
  command: string,
  args: string[],
  output: string,
  runs: number,
): Measurement {
  let best: Timing = { seconds: Infinity, maxRssKiB: 0 };
  for (let i = 0; i < runs; i++) {
    const timing = timed(command, args);
    if (timing.seconds < best.seconds) best = timing;
  }
  const outputBytes = lstatSync(output).size;
  return { label, ...best, outputBytes, output };
}

function ours(
  dir: string,
  input: string,
  level: number,
  codec: "liblz4" | "npm",
  runs: number,
): Measurement {
  const output = join(dir, `ours-${codec}-${level}.lz4`);
  const args = ["--import", "tsx", __filename, "child", input, output];
  args.push(String(level), codec);
  const label = `ours, ${codec}, level ${level}`;
  return measure(label, process.execPath, args, output, runs);
}

function cli(dir: string, input: string, level: number, runs: number) {
  const output = join(dir, `cli-${level}.lz4`);
  const args = ["-l", `-${level}`, "-f", "-q", input, output];
  return measure(`lz4 -l -${level}`, "lz4", args, output, runs);
}

function row(m: Measurement, inputBytes: number, reference: Measurement) {
  const mbps = (seconds: number) => (inputBytes / 1e6 / seconds).toFixed(0);
  const ratio = (m.outputBytes / inputBytes).toFixed(4);
  const speedup = (reference.seconds / m.seconds).toFixed(2);
  const same = readFileSync(m.output).equals(readFileSync(reference.output));
  const inner =
    m.compressSeconds === undefined
      ? "-"
      : `${m.compressSeconds.toFixed(2)} (${mbps(m.compressSeconds)})`;
  return (
    `| ${m.label} | ${m.seconds.toFixed(2)} | ${mbps(m.seconds)} | ` +
    `${inner} | ${ratio} | ${(m.maxRssKiB / 1024).toFixed(0)} | ` +
    `${speedup} | ${same ? "yes" : "NO"} |`
  );
}

/** Runs the benchmark and returns a markdown section. */
export async function run(): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), "gulp-initramfs-bench-lz4-"));
  try {
    const input = join(dir, "corpus.bin");
    const inputBytes = writeCorpus(input);
    const rows: string[] = [];
    const cli1 = cli(dir, input, 1, FAST_RUNS);
    for (const m of [
      cli1,
      ours(dir, input, 1, "liblz4", FAST_RUNS),
      ours(dir, input, 1, "npm", FAST_RUNS),
    ]) {
      rows.push(row(m, inputBytes, cli1));
    }
    const cli9 = cli(dir, input, 9, 1);
    for (const m of [cli9, ours(dir, input, 9, "liblz4", 1)]) {
      rows.push(row(m, inputBytes, cli9));
    }
    return [
      `### LZ4 legacy: ${(inputBytes / 1e6).toFixed(0)} MB of ELF files`,
      "",
      `${availableParallelism()} cores; best of ${FAST_RUNS} runs at ` +
        "level 1, one run at level 9. Each run is a child process that " +
        "reads the file, compresses it and writes the output; process " +
        "time and peak RSS come from /usr/bin/time, and ours includes " +
        "Node and tsx start-up. \"compress s\" is compressLegacy() " +
        "alone, timed inside our child. Speedup (process time) and " +
        "identical bytes are relative to the lz4 CLI at the same level.",
      "",
      "| compressor | process s | MB/s | compress s (MB/s) | ratio | " +
        "peak RSS MiB | speedup | identical |",
      "| --- | --- | --- | --- | --- | --- | --- | --- |",
      ...rows,
      "",
    ].join("\n");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function child(args: string[]): Promise<void> {
  const [input, output, level, codec] = args;
  const options: Lz4Options = {
    level: Number(level),
    codec: codec as Lz4Options["codec"],
  };
  const data = readFileSync(input);
  const start = performance.now();
  const compressed = await compressLegacy(data, options);
  const seconds = (performance.now() - start) / 1000;
  writeFileSync(output, compressed);
  console.log(`COMPRESS ${seconds}`);
}

if (require.main === module) {
  const [mode, ...rest] = process.argv.slice(2);
  const task = mode === "child" ? child(rest) : run().then(console.log);
  task.catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
