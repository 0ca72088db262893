// gulp-cli compiles this file with esbuild-register, which cannot map the
// ".js" import specifiers of our TypeScript sources to their ".ts" files;
// tsx's require hook can, so it is registered before anything else loads.
import "tsx/cjs";
import { isEmptyBuild, loadConfig } from "./src/config.js";
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
