import { closeSync, openSync, rmSync, writeSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { join } from "node:path";

/** Size of the added debug section: with node's ~100 MB, about 1 GB. */
export const JUNK_BYTES = 900 << 20;

/** Writes `size` bytes of a repeating non-zero pattern in 8 MiB chunks. */
function writeJunk(path: string, size: number): void {
  const chunk = Buffer.alloc(8 << 20);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 131) & 0xff;
  const fd = openSync(path, "w");
  try {
    for (let done = 0; done < size; done += chunk.length) {
      writeSync(fd, chunk, 0, Math.min(chunk.length, size - done));
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes `dir/name`: a copy of the running node binary with a non-loaded
 * `.debug_junk` section of JUNK_BYTES added by objcopy, so stripping it
 * keeps about 92 MB of about 1 GB. Throws when objcopy did not add it.
 */
export function buildDebugBinary(dir: string, name = "big"): string {
  const junk = join(dir, "junk");
  const output = join(dir, name);
  writeJunk(junk, JUNK_BYTES);
  execFileSync("objcopy", [
    "--add-section",
    `.debug_junk=${junk}`,
    "--set-section-flags",
    ".debug_junk=noload,readonly",
    process.execPath,
    output,
  ]);
  rmSync(junk);
  const sections = execFileSync("readelf", ["-SW", output]).toString();
  if (!sections.includes(".debug_junk")) {
    throw new Error(`${output}: objcopy did not add .debug_junk`);
  }
  return output;
}
