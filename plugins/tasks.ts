import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import {
  closestFlag,
  isEmptyBuild,
  loadConfig,
  unknownFlags,
} from "../src/config.js";
import {
  formatListing,
  imageEntries,
  verifyImageBytes,
} from "../src/inspect.js";
import { buildImage, defaultFiles, formatSummary } from "./pipeline.js";
import type { InitramfsWarning } from "./transform.js";

/*
 * The gulp tasks, exported so that another project's gulpfile can offer
 * them too: `export { initramfs } from "gulp-initramfs"`. Errors that
 * carry a code are a user's mistake, so gulp prints their message
 * without a stack trace.
 */

/** Marks a coded error so that gulp-cli prints only its message. */
function withoutStack(error: unknown): unknown {
  if (error instanceof Error && typeof (error as { code?: unknown }).code === "string") {
    (error as Error & { showStack?: boolean }).showStack = false;
  }
  return error;
}

/**
 * Runs `work` outside the Node domain that gulp's async-done runs each
 * task in. The domain module's async hooks fire for every promise created
 * inside a domain, which cost about 0.25 s on a build of 2000 files
 * (measured by alternating runs on the input of `npm run bench --
 * pipeline`). Errors still reach gulp through the returned promise.
 */
export function outsideDomain<T>(work: () => Promise<T>): Promise<T> {
  const domain = (process as { domain?: { enter(): void; exit(): void } | null }).domain;
  domain?.exit();
  try {
    return work();
  } finally {
    // Promises that work() made keep no domain, while the caller's own
    // code goes on in its domain.
    domain?.enter();
  }
}

function printWarning(warning: InitramfsWarning): void {
  console.warn(`warning ${warning.code}: ${warning.message}`);
}

/**
 * Builds the image from flags and initramfs.config.json; with no inputs,
 * builds the default image of Node running a short script as /init.
 */
export async function initramfs(): Promise<void> {
  try {
    await outsideDomain(buildTask);
  } catch (error) {
    throw withoutStack(error);
  }
}
initramfs.description =
  "Build an LZ4 initramfs (see README for flags); with no flags, a " +
  "default image of Node";

async function buildTask(): Promise<void> {
  const argv = process.argv.slice(2);
  const unknown = unknownFlags(argv);
  if (unknown.length) {
    const named = unknown.map((flag) => {
      if (flag === "--image") {
        return "--image (a flag of initramfs:ls and initramfs:verify; the build writes to --out)";
      }
      const closest = closestFlag(flag);
      return closest ? `${flag} (did you mean ${closest}?)` : flag;
    });
    const error = new Error(
      `unknown flag ${named.join(", ")}; the README lists the flags of ` +
        "gulp initramfs",
    );
    throw Object.assign(error, { code: "CONFIG_UNKNOWN_FLAG" });
  }
  const config = loadConfig(argv);
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
    const missing = new Error(
      `cannot read image ${path} (${reason}); build one with ` +
        "`gulp initramfs` or pass --image FILE",
    );
    throw Object.assign(missing, { code: "IMAGE_NOT_FOUND" });
  }
}

/** Runs `read` on the image at `path`, naming the file in its errors. */
function fromImage<T>(path: string, read: (bytes: Buffer) => T): T {
  const bytes = readImage(path);
  try {
    return read(bytes);
  } catch (error) {
    if (error instanceof Error) error.message = `${path}: ${error.message}`;
    throw error;
  }
}

/** Lists an image like `lsinitramfs -l`: mode, size, path, symlink target. */
export async function initramfsLs(): Promise<void> {
  try {
    const path = imagePath();
    console.log(formatListing(fromImage(path, imageEntries)));
  } catch (error) {
    throw withoutStack(error);
  }
}
initramfsLs.displayName = "initramfs:ls";
initramfsLs.description =
  "List an image (--image FILE; compressed or not, one stream or several)";

/**
 * Checks that every ELF in an image finds its interpreter and libraries
 * inside the image; fails listing what is missing.
 */
export async function initramfsVerify(): Promise<void> {
  try {
    verifyTask();
  } catch (error) {
    throw withoutStack(error);
  }
}

function verifyTask(): void {
  const path = imagePath();
  const problems = fromImage(path, verifyImageBytes);
  if (problems.length === 0) {
    console.log(`${path}: every ELF file finds its interpreter and libraries`);
    return;
  }
  for (const problem of problems) console.error(problem.message);
  const error = new Error(
    `${path}: ${problems.length} missing interpreter or library ` +
      "references (listed above)",
  );
  throw Object.assign(error, { code: "IMAGE_VERIFY_FAILED" });
}
initramfsVerify.displayName = "initramfs:verify";
initramfsVerify.description =
  "Check that every ELF in an image (--image FILE) has its interpreter " +
  "and libraries inside the image";
