import {
  createReadStream,
  createWriteStream,
  lstatSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readFile } from "node:fs/promises";
import { pipeline } from "node:stream/promises";

import { CpioWriter } from "../src/cpio.js";
import { readCpio } from "../src/cpio-reader.js";
import { timed, type Timing } from "./lz4.js";

/**
 * Compares CpioWriter with `find . | cpio -o -H newc` on the tree of
 * /usr/lib/x86_64-linux-gnu, without regular files that have several
 * hard links (GNU cpio stores their data once, we store it per path).
 * Both run as child processes under /usr/bin/time and write their archive
 * to a file. The first GNU cpio run also warms the page cache for both.
 */

const TREE = "/usr/lib/x86_64-linux-gnu";
const RUNS = 2;
/** Files up to this size are read whole, larger ones streamed. */
const READ_WHOLE_MAX = 16 << 20;
const FIND_SKIPPING_LINKS = "find . -type f -links +1 -prune -o -print";

interface Measurement {
  label: string;
  seconds: number;
  maxRssKiB: number;
  archiveBytes: number;
}

function measure(
  label: string,
  command: string,
  args: string[],
  output: string,
): Measurement {
  let best: Timing = { seconds: Infinity, maxRssKiB: 0 };
  for (let i = 0; i < RUNS; i++) {
    const timing = timed(command, args);
    if (timing.seconds < best.seconds) best = timing;
  }
  const archiveBytes = lstatSync(output).size;
  return { label, ...best, archiveBytes };
}

/** Lists the tree's paths relative to `root`, parents before children. */
function walk(root: string, prefix = ""): string[] {
  const paths: string[] = [];
  const dir = prefix === "" ? root : join(root, prefix);
  for (const name of readdirSync(dir).sort()) {
    const path = prefix === "" ? name : `${prefix}/${name}`;
    const stat = lstatSync(join(root, path));
    if (stat.isFile() && stat.nlink > 1) continue;
    paths.push(path);
    if (stat.isDirectory()) paths.push(...walk(root, path));
  }
  return paths;
}

/** Writes the tree under `root` as a newc archive to `output`. */
async function archiveTree(root: string, output: string): Promise<number> {
  const writer = new CpioWriter();
  let entries = 0;
  for (const path of walk(root)) {
    const full = join(root, path);
    const stat = lstatSync(full);
    const mode = stat.mode & 0o7777;
    if (stat.isDirectory()) writer.addDirectory(path, { mode });
    else if (stat.isSymbolicLink()) {
      writer.addSymlink(path, readlinkSync(full));
    } else if (stat.isFile()) {
      const data =
        stat.size <= READ_WHOLE_MAX
          ? () => readFile(full)
          : () => createReadStream(full, { highWaterMark: 1 << 20 });
      writer.addFile(path, { mode, size: stat.size, data });
    } else continue;
    entries++;
  }
  writer.finish();
  await pipeline(writer.stream(), createWriteStream(output));
  return entries;
}

function row(m: Measurement, reference: Measurement): string {
  const mbps = m.archiveBytes / 1e6 / m.seconds;
  const speedup = reference.seconds / m.seconds;
  return (
    `| ${m.label} | ${m.seconds.toFixed(2)} | ${mbps.toFixed(0)} | ` +
    `${(m.archiveBytes / 1e6).toFixed(1)} | ` +
    `${(m.maxRssKiB / 1024).toFixed(0)} | ${speedup.toFixed(2)} |`
  );
}

/** Runs the benchmark and returns a markdown section. */
export async function run(): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), "gulp-initramfs-bench-cpio-"));
  try {
    const gnuOut = join(dir, "gnu.cpio");
    const script =
      `cd "$1" && ${FIND_SKIPPING_LINKS} | cpio -o -H newc --quiet > "$2"`;
    const gnu = measure(
      "GNU cpio -o -H newc",
      "sh",
      ["-c", script, "sh", TREE, gnuOut],
      gnuOut,
    );
    const oursOut = join(dir, "ours.cpio");
    const ours = measure(
      "CpioWriter",
      process.execPath,
      ["--import", "tsx", __filename, "child", TREE, oursOut],
      oursOut,
    );
    const entries = walk(TREE).length;
    const readBack = readCpio(readFileSync(oursOut)).length;
    return [
      `### cpio newc: ${TREE}`,
      "",
      `${entries} entries; best of ${RUNS} runs each, as child processes ` +
        "writing the archive to a file; time and peak RSS from " +
        "/usr/bin/time, ours including Node and tsx start-up. MB/s " +
        "counts archive bytes. Our archive read back with " +
        `readCpio(): ${readBack} entries. GNU cpio also writes ".". ` +
        `Files up to ${READ_WHOLE_MAX >> 20} MiB are read whole with ` +
        "readFile, larger ones streamed in 1 MiB reads.",
      "",
      "| writer | s | MB/s | archive MB | peak RSS MiB | speedup |",
      "| --- | --- | --- | --- | --- | --- |",
      row(gnu, gnu),
      row(ours, gnu),
      "",
    ].join("\n");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (require.main === module) {
  const [mode, root, output] = process.argv.slice(2);
  const task =
    mode === "child"
      ? archiveTree(root, output)
      : run().then((text) => console.log(text));
  task.catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
