import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Debian package that provides each external tool the tests run. */
const TOOL_PACKAGES: Record<string, string> = {
  gcc: "gcc libc6-dev",
  cpio: "cpio",
  bsdtar: "libarchive-tools",
  lz4: "lz4",
  readelf: "binutils",
  objcopy: "binutils",
  strip: "binutils",
  nm: "binutils",
  "eu-elflint": "elfutils",
  flock: "util-linux",
  setpriv: "util-linux",
  "qemu-system-x86_64": "qemu-system-x86",
  "musl-gcc": "musl-tools",
  rustc: "rustc",
  busybox: "busybox-static",
  "powerpc64-linux-gnu-as": "binutils-powerpc64-linux-gnu",
  "powerpc64-linux-gnu-ld": "binutils-powerpc64-linux-gnu",
  "powerpc64-linux-gnu-strip": "binutils-powerpc64-linux-gnu",
  "powerpc64-linux-gnu-nm": "binutils-powerpc64-linux-gnu",
  "powerpc-linux-gnu-as": "binutils-powerpc-linux-gnu",
  "powerpc-linux-gnu-ld": "binutils-powerpc-linux-gnu",
  "powerpc-linux-gnu-strip": "binutils-powerpc-linux-gnu",
  "powerpc-linux-gnu-nm": "binutils-powerpc-linux-gnu",
};

/**
 * Returns the absolute path of `tool`, or throws an error that names the
 * install command, so a missing tool fails the test instead of skipping it.
 */
export function requireTool(tool: string): string {
  const found = spawnSync("sh", ["-c", `command -v ${tool}`], {
    encoding: "utf8",
  });
  const path = found.stdout.trim();
  if (found.status === 0 && path !== "") return path;
  const pkg = TOOL_PACKAGES[tool] ?? tool;
  throw new Error(
    `${tool} not found on PATH; install it with: apt-get install -y ${pkg}`,
  );
}

/** Runs a tool and returns its stdout as bytes; throws on non-zero exit. */
export function run(
  tool: string,
  args: string[],
  options: { cwd?: string; input?: Buffer | string } = {},
): Buffer {
  return execFileSync(requireTool(tool), args, {
    cwd: options.cwd,
    input: options.input,
    maxBuffer: 1 << 30,
    stdio: ["pipe", "pipe", "pipe"],
  });
}

/** Creates a temporary directory and returns it with a cleanup function. */
export function tempDir(prefix: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `gulp-initramfs-${prefix}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Compiles C source with gcc into `output`. `flags` go before the source
 * (`-g`, `-shared`, `-Wl,...`), `libs` after it (`-L`, `-l`).
 */
export function compileC(
  source: string,
  output: string,
  flags: string[] = [],
  libs: string[] = [],
): string {
  run("gcc", [...flags, "-x", "c", "-", "-x", "none", "-o", output, ...libs], {
    input: source,
  });
  return output;
}

/** Returns the id of a process that has already exited. */
export function exitedPid(): number {
  const child = spawnSync(process.execPath, ["-e", "console.log(process.pid)"], {
    encoding: "utf8",
  });
  return Number(child.stdout.trim());
}
