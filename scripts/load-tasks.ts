import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

/*
 * Loads the gulp tasks for gulpfile.ts. The compiled package in dist/
 * (built by `npm ci` and `npm run build`) starts about 0.2 s faster than
 * the TypeScript sources through tsx, so it is used whenever it was
 * compiled from the sources as they are now. This file imports nothing relative, because gulp-cli compiles
 * gulpfile.ts with esbuild-register, which cannot map the `.js` import
 * specifiers of the sources to their `.ts` files.
 */

type Tasks = typeof import("../plugins/tasks.js");

/** Environment variable that, set to 1, makes gulp load the sources. */
export const FROM_SOURCES_ENV = "GULP_INITRAMFS_FROM_SOURCES";

/** Lists the `.ts` files under `dir` (relative to `root`), recursively. */
function sourceFiles(root: string, dir: string): string[] {
  const files: string[] = [];
  for (const name of readdirSync(join(root, dir)).sort()) {
    const path = `${dir}/${name}`;
    // statSync follows symlinks, so a linked directory is listed too.
    if (statSync(join(root, path)).isDirectory()) files.push(...sourceFiles(root, path));
    else if (name.endsWith(".ts") && !name.endsWith(".d.ts")) files.push(path);
  }
  return files;
}

/** Path of the digests of the sources that dist/ was compiled from. */
export const SOURCES_MANIFEST = join("dist", "sources.json");

/**
 * Returns the SHA-256 of every file that the compiled package depends
 * on: index.ts, src/, plugins/ and the two tsconfig files, by path.
 */
export function sourceDigests(root: string): Record<string, string> {
  const paths = [
    "index.ts",
    "tsconfig.json",
    "tsconfig.build.json",
    ...sourceFiles(root, "src"),
    ...sourceFiles(root, "plugins"),
  ];
  const digests: Record<string, string> = {};
  for (const path of paths) {
    digests[path] = createHash("sha256").update(readFileSync(join(root, path))).digest("hex");
  }
  return digests;
}

/**
 * Returns true when dist/ under `root` was compiled from the sources as
 * they are now and has a `.js` file for each: `npm run build` records
 * their digests, taken before the compiler reads them, in
 * dist/sources.json.
 */
export function distIsCurrent(root: string): boolean {
  let recorded: unknown;
  try {
    recorded = JSON.parse(readFileSync(join(root, SOURCES_MANIFEST), "utf8"));
  } catch {
    return false;
  }
  let current: Record<string, string>;
  try {
    current = sourceDigests(root);
  } catch {
    return false;
  }
  if (JSON.stringify(recorded) !== JSON.stringify(current)) return false;
  // A compiled file removed since the build would fail to load.
  return Object.keys(current)
    .filter((path) => path.endsWith(".ts"))
    .every((path) => existsSync(join(root, "dist", path.replace(/\.ts$/, ".js"))));
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
