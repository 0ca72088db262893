import { spawnSync } from "node:child_process";
import { closeSync, mkdirSync, openSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { flock, LOCK_EX } from "../src/libc.js";
import { SOURCES_MANIFEST, sourceDigests } from "./load-tasks.js";

/*
 * `npm run build`: compiles the package into dist/ with tsc and records
 * the digests of the sources in dist/sources.json, so that gulpfile.ts
 * loads dist/ only while the sources are unchanged. The digests are taken
 * before tsc runs: a file saved during the build then differs from them,
 * and gulp falls back to the sources.
 */

const root = resolve(__dirname, "..");
const manifest = join(root, SOURCES_MANIFEST);
mkdirSync(join(root, "dist"), { recursive: true });
// Two builds at once would otherwise record one's digests over the
// other's output.
const lock = openSync(join(root, "dist", ".build-lock"), "w");
try {
  try {
    flock(lock, LOCK_EX);
  } catch (error) {
    // Without glibc's flock the build goes on unlocked.
    if ((error as { code?: string }).code !== "LIBC_UNAVAILABLE") throw error;
  }
  const digests = sourceDigests(root);
  rmSync(manifest, { force: true });
  // tsconfig.build.json sets noEmitOnError, so a failed build leaves the
  // old output, which the missing manifest marks as stale.
  const tsc = spawnSync(
    process.execPath,
    [require.resolve("typescript/bin/tsc"), "-p", join(root, "tsconfig.build.json")],
    { stdio: "inherit" },
  );
  if (tsc.status !== 0) {
    console.error("tsc failed; dist/ is left without sources.json, so gulp loads the sources");
    process.exitCode = tsc.status ?? 1;
  } else {
    writeFileSync(manifest, JSON.stringify(digests, null, 2) + "\n");
  }
} finally {
  closeSync(lock);
}
