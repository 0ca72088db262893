import { accessSync, constants, Stats, statSync } from "node:fs";
import { Readable } from "node:stream";
import Vinyl from "vinyl";
import type { BuildConfig } from "../src/config.js";
import { ConfigError } from "../src/config.js";
import { expandInclude, type SkipHandler } from "../src/includes.js";
import { metaOf, type Role } from "./meta.js";

/** Root of the virtual paths our Vinyl files carry; never on disk. */
export const ARCHIVE_ROOT = "/initramfs";

/**
 * Creates a path-only Vinyl file for host file `hostPath` at archive path
 * `archivePath`. Its contents are read when a stage needs them.
 */
export function archiveFile(
  archivePath: string,
  hostPath: string,
  role: Role,
  stat?: Stats,
): Vinyl {
  const file = new Vinyl({
    cwd: "/",
    base: ARCHIVE_ROOT,
    path: `${ARCHIVE_ROOT}/${archivePath}`,
    contents: null,
    stat: stat ?? statBinary(hostPath, role),
  });
  const meta = metaOf(file);
  meta.role = role;
  meta.hostPath = hostPath;
  return file;
}

/** Names of inputs in errors, by role, and the settings that give them. */
const ROLE_LABELS: Record<Role, string> = {
  payload: "init file",
  busybox: "busybox file",
  extra: "extra file",
  include: "include",
  library: "library",
};
const ROLE_SETTINGS: Partial<Record<Role, string>> = {
  payload: '--init or "init" in initramfs.config.json',
  busybox: '--busybox or "busybox" in initramfs.config.json',
  extra: '--extra or "extra" in initramfs.config.json',
};

function unreadable(hostPath: string, role: Role, reason: string, fix: string) {
  const setting = ROLE_SETTINGS[role];
  return new ConfigError(
    "INPUT_NOT_FOUND",
    `${ROLE_LABELS[role]} ${hostPath} cannot be read (${reason}); ${fix}` +
      (setting ? ` (set by ${setting})` : ""),
  );
}

function statBinary(hostPath: string, role: Role): Stats {
  let stat: Stats;
  try {
    stat = statSync(hostPath);
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? String(error);
    throw unreadable(hostPath, role, reason, "check the path");
  }
  if (!stat.isFile()) {
    throw new ConfigError(
      "INPUT_NOT_REGULAR",
      `${ROLE_LABELS[role]} ${hostPath} is not a regular file; name the ` +
        "binary itself",
    );
  }
  try {
    accessSync(hostPath, constants.R_OK);
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? String(error);
    throw unreadable(hostPath, role, reason, "check its permissions");
  }
  return stat;
}

/**
 * Lists the Vinyl files the config names: `/init`, busybox, extras and the
 * expanded includes, each carrying only its path.
 */
export function configFiles(
  config: BuildConfig,
  onSkip?: SkipHandler,
): Vinyl[] {
  const files: Vinyl[] = [];
  if (config.init === undefined) {
    throw new ConfigError(
      "CONFIG_NO_INIT",
      "nothing to run as /init: pass --init PATH (or set \"init\" in " +
        "initramfs.config.json)",
    );
  }
  files.push(archiveFile("init", config.init, "payload"));
  if (config.busybox !== undefined) {
    files.push(archiveFile("bin/busybox", config.busybox, "busybox"));
  }
  for (const [name, path] of Object.entries(config.extra)) {
    files.push(archiveFile(name, path, "extra"));
  }
  for (const spec of config.include) {
    for (const inc of expandInclude(spec, config.cwd, onSkip)) {
      files.push(archiveFile(inc.archivePath, inc.hostPath, "include", inc.stat));
    }
  }
  return files;
}

/**
 * Creates a symlink Vinyl file at `archivePath` whose body is `target`.
 * Vinyl's isSymbolic() reads the stat, so the file gets a symlink stat.
 */
export function symlinkFile(
  archivePath: string,
  target: string,
  role: Role,
): Vinyl {
  const stat = Object.assign(Object.create(Stats.prototype) as Stats, {
    mode: 0o120777,
    size: Buffer.byteLength(target),
  });
  const file = new Vinyl({
    cwd: "/",
    base: ARCHIVE_ROOT,
    path: `${ARCHIVE_ROOT}/${archivePath}`,
    contents: null,
    stat,
  });
  file.symlink = target;
  metaOf(file).role = role;
  return file;
}

/** Returns an object-mode stream of `files`, like gulp's src(). */
export function fromFiles(files: Vinyl[]): Readable {
  return Readable.from(files, { objectMode: true });
}
