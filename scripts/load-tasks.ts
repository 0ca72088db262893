import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";

/*
 * Loads the gulp tasks for gulpfile.ts. The compiled package in dist/
 * (built by `npm ci` and `npm run build`) starts about 0.2 s faster than
 * the TypeScript sources through tsx, so it is used whenever it is up to
 * date. This file imports nothing relative, because gulp-cli compiles
 * gulpfile.ts with esbuild-register, which cannot map the `.js` import
 * specifiers of the sources to their `.ts` files.
 */

type Tasks = typeof import("../plugins/tasks.js");

/** Environment variable that, set to 1, makes gulp load the sources. */
export const FROM_SOURCES_ENV = "GULP_INITRAMFS_FROM_SOURCES";

/** Lists the `.ts` files under `dir` (relative to `root`), recursively. */
function sourceFiles(root: string, dir: string): string[] {
  const files: string[] = [];
  for (const entry of readdirSync(join(root, dir), { withFileTypes: true })) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory()) files.push(...sourceFiles(root, path));
    else if (entry.name.endsWith(".ts") && !entry.name.endsWith(".d.ts")) {
      files.push(path);
    }
  }
  return files;
}

function modifiedMs(path: string): number | null {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return null;
  }
}

/**
 * Returns true when `root`/dist has a compiled `.js` file for every
 * source of the package (index.ts, src/, plugins/), none older than its
 * source.
 */
export function distIsCurrent(root: string): boolean {
  const sources = ["index.ts", ...sourceFiles(root, "src"), ...sourceFiles(root, "plugins")];
  for (const source of sources) {
    const compiled = modifiedMs(join(root, "dist", source.replace(/\.ts$/, ".js")));
    const written = modifiedMs(join(root, source));
    if (compiled === null || written === null || compiled < written) return false;
  }
  return true;
}

/**
 * Returns the tasks module of the package at `root`: the compiled one
 * when dist/ is current, else the sources with tsx's require hook.
 */
export function loadTasks(root: string): Tasks {
  if (process.env[FROM_SOURCES_ENV] !== "1" && distIsCurrent(root)) {
    return require(join(root, "dist", "plugins", "tasks.js")) as Tasks;
  }
  require("tsx/cjs");
  return require(join(root, "plugins", "tasks.ts")) as Tasks;
}
