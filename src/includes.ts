import {
  accessSync,
  constants,
  lstatSync,
  readdirSync,
  readlinkSync,
  realpathSync,
  statSync,
  type Stats,
} from "node:fs";
import { basename, delimiter, isAbsolute, join, resolve } from "node:path";
import { ConfigError } from "./config.js";

/** Archive directory for includes given as a bare PATH. */
export const INCLUDE_DIR = "include-files";

/** One file to pack verbatim: where it goes and where it comes from. */
export interface IncludeFile {
  archivePath: string;
  hostPath: string;
  stat: Stats;
}

/** Reports a file skipped during a directory walk. */
export type SkipHandler = (hostPath: string, reason: string) => void;

function statOrThrow(spec: string, path: string): Stats {
  try {
    return statSync(path);
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? String(error);
    if (reason === "ENOENT" && isSymlink(path)) {
      throw new ConfigError(
        "INCLUDE_NOT_FOUND",
        `--include ${spec}: ${path} is a dangling symlink (its target ` +
          `${readlinkSync(path)} does not exist); fix or remove the link`,
      );
    }
    throw new ConfigError(
      "INCLUDE_NOT_FOUND",
      `--include ${spec}: ${path} cannot be read (${reason}); check the path`,
    );
  }
}

/**
 * Throws INCLUDE_NOT_FOUND when this process cannot read `path`, or list
 * it when it is a directory, so the build stops before it starts.
 */
function checkReadable(spec: string, path: string, directory: boolean): void {
  try {
    accessSync(path, directory ? constants.R_OK | constants.X_OK : constants.R_OK);
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new ConfigError(
      "INCLUDE_NOT_FOUND",
      `--include ${spec}: ${path} cannot be read (${reason}); check its permissions`,
    );
  }
}

function isSymlink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}

/** Finds a bare command name in PATH, as a shell would. */
export function lookupInPath(
  name: string,
  pathVariable = process.env.PATH ?? "",
): string | null {
  for (const dir of pathVariable.split(delimiter)) {
    if (dir === "") continue;
    const candidate = join(dir, name);
    try {
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // Not in this directory; keep looking.
    }
  }
  return null;
}

/**
 * Lists the regular files below `dir`, following symlinks. Sockets, pipes,
 * devices and dangling symlinks are skipped and reported. A symlink back to
 * a directory being walked is a loop and is skipped too. `seen` contains
 * the real paths of the directories on the current walk path.
 */
function walk(
  spec: string,
  dir: string,
  archiveDir: string,
  out: IncludeFile[],
  seen: Set<string>,
  onSkip: SkipHandler,
): void {
  const real = realpathSync(dir);
  if (seen.has(real)) {
    onSkip(dir, "symlink loop to a directory being walked");
    return;
  }
  seen.add(real);
  checkReadable(spec, dir, true);
  for (const name of readdirSync(dir).sort()) {
    const hostPath = join(dir, name);
    const archivePath = archiveDir ? `${archiveDir}/${name}` : name;
    let stat: Stats;
    try {
      stat = statSync(hostPath);
    } catch {
      onSkip(hostPath, "dangling symlink");
      continue;
    }
    if (stat.isDirectory()) {
      walk(spec, hostPath, archivePath, out, seen, onSkip);
    } else if (stat.isFile()) {
      checkReadable(spec, hostPath, false);
      out.push({ archivePath, hostPath, stat });
    }
    else onSkip(hostPath, "not a regular file");
  }
  seen.delete(real);
}

/**
 * Expands one include spec. `ARCHIVE=PATH` puts a file at ARCHIVE and a
 * directory's files under ARCHIVE/. A bare PATH puts a file at
 * `include-files/NAME` and a directory's files under
 * `include-files/DIRNAME/`. A bare name without `/` that is not in `cwd`
 * is looked up in PATH.
 */
export function expandInclude(
  spec: string,
  cwd: string,
  onSkip: SkipHandler = () => {},
): IncludeFile[] {
  const eq = spec.indexOf("=");
  if (eq === 0 || (eq > 0 && eq === spec.length - 1)) {
    throw new ConfigError(
      "CONFIG_BAD_ASSIGNMENT",
      `--include ${spec}: expects ARCHIVE=PATH with both sides, or a bare PATH`,
    );
  }
  let archive: string | null = null;
  let source = spec;
  if (eq > 0) {
    archive = spec.slice(0, eq).replace(/^\/+|\/+$/g, "");
    source = spec.slice(eq + 1);
    if (archive.split("/").includes("..")) {
      throw new ConfigError(
        "INCLUDE_PATH_TRAVERSAL",
        `--include ${spec}: the archive path "${archive}" has a ".." ` +
          "component; name a path below the archive root",
      );
    }
  }
  let hostPath = isAbsolute(source) ? source : resolve(cwd, source);
  if (!source.includes("/") && !existsQuiet(hostPath)) {
    const found = lookupInPath(source);
    if (!found) {
      throw new ConfigError(
        "INCLUDE_NOT_FOUND",
        `--include ${spec}: no file "${source}" in ${cwd} or in PATH` +
          (archive === null ? "" : ` (in ARCHIVE=PATH, PATH is "${source}", after the first "=")`),
      );
    }
    hostPath = found;
  }
  const stat = statOrThrow(spec, hostPath);
  const name = basename(hostPath.replace(/\/+$/, ""));
  const target = archive ?? `${INCLUDE_DIR}/${name}`;
  if (stat.isFile()) {
    checkReadable(spec, hostPath, false);
    return [{ archivePath: target, hostPath, stat }];
  }
  if (!stat.isDirectory()) {
    throw new ConfigError(
      "INCLUDE_NOT_REGULAR",
      `--include ${spec}: ${hostPath} is not a regular file or directory`,
    );
  }
  const out: IncludeFile[] = [];
  walk(spec, hostPath, target, out, new Set(), onSkip);
  // Sort by whole path in code-unit order: walking sorted directories puts
  // "a/b" before "a.txt", though "." sorts before "/".
  return out.sort(byArchivePath);
}

function byArchivePath(a: IncludeFile, b: IncludeFile): number {
  if (a.archivePath < b.archivePath) return -1;
  if (a.archivePath > b.archivePath) return 1;
  return 0;
}

function existsQuiet(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch {
    return false;
  }
}
