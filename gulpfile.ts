// gulp-cli compiles this file with esbuild-register, which cannot map the
// ".js" import specifiers of our TypeScript sources to their ".ts" files.
// tsx's require hook can, so it is registered before anything else loads.
import "tsx/cjs";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { isEmptyBuild, loadConfig } from "./src/config.js";
import {
  formatListing,
  imageEntries,
  verifyImageBytes,
} from "./src/inspect.js";
import {
  buildImage,
  defaultFiles,
  formatSummary,
} from "./plugins/pipeline.js";
import type { InitramfsWarning } from "./plugins/transform.js";

function printWarning(warning: InitramfsWarning): void {
  console.warn(`warning ${warning.code}: ${warning.message}`);
}

/**
 * Builds the image from flags and initramfs.config.json; with no inputs,
 * builds the default image of Node running a short script as /init.
 */
export async function initramfs(): Promise<void> {
  const config = loadConfig(process.argv.slice(2));
  const empty = isEmptyBuild(config);
  if (empty) {
    console.log(
      "no --init, --extra, --include or --busybox given: building the " +
        `default image (${process.execPath} as bin/node, a script as /init)`,
    );
  }
  const files = empty ? defaultFiles() : undefined;
  const summary = await buildImage(config, files, printWarning);
  console.log(formatSummary(summary));
}
initramfs.description =
  "Build an LZ4 initramfs (see README for flags); with no flags, a " +
  "default image of Node";

/** Returns the value of `--image FILE`, or the configured output. */
function imagePath(): string {
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--image") return resolve(argv[i + 1] ?? "");
    if (argv[i].startsWith("--image=")) return resolve(argv[i].slice(8));
  }
  return loadConfig(argv).out;
}

function readImage(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new Error(
      `cannot read image ${path} (${reason}); build one with ` +
        "`gulp initramfs` or pass --image FILE",
    );
  }
}

/** Lists an image like `lsinitramfs -l`: mode, size, path, symlink target. */
export async function initramfsLs(): Promise<void> {
  const path = imagePath();
  console.log(formatListing(imageEntries(readImage(path))));
}
initramfsLs.displayName = "initramfs:ls";
initramfsLs.description =
  "List an image (--image FILE; compressed or not, one stream or several)";

/**
 * Checks that every ELF in an image finds its interpreter and libraries
 * inside the image; fails listing what is missing.
 */
export async function initramfsVerify(): Promise<void> {
  const path = imagePath();
  const problems = verifyImageBytes(readImage(path));
  if (problems.length === 0) {
    console.log(`${path}: every ELF file finds its interpreter and libraries`);
    return;
  }
  for (const problem of problems) console.error(problem.message);
  throw new Error(
    `${path}: ${problems.length} missing interpreter or library ` +
      "references (listed above)",
  );
}
initramfsVerify.displayName = "initramfs:verify";
initramfsVerify.description =
  "Check that every ELF in an image (--image FILE) has its interpreter " +
  "and libraries inside the image";
