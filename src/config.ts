import { existsSync, readFileSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";

/** The name of the per-repository config file, read from the cwd. */
export const CONFIG_FILE = "initramfs.config.json";

/** Default output path, relative to the working directory. */
export const DEFAULT_OUT = "dist/initramfs.cpio.lz4";

/** The per-run files of the suffix archive. */
export interface SuffixParams {
  /** Lines of `/args`; the file is written even when empty. */
  args: string[];
  /** Lines of `/sched_args`, omitted when empty. */
  schedArgs: string[];
  /** Lines of the `/sched_enable` script, omitted when empty. */
  schedEnable: string[];
  /** Lines of the `/sched_disable` script, omitted when empty. */
  schedDisable: string[];
  /** Contents of `/exec_cmd`, omitted when undefined or empty. */
  exec?: string;
  /** Contents of `/workload_root_cgroup`, omitted when undefined or empty. */
  workloadRootCgroup?: string;
  /** Contents of `/scheduler_cgroup_parent`, omitted when undefined or empty. */
  schedulerCgroupParent?: string;
  /** Per staged scheduler NAME: lines of `staging/schedulers/NAME/sched_args`. */
  stagedSchedArgs: Record<string, string[]>;
}

/** Everything the `initramfs` task builds from. */
export interface BuildConfig extends SuffixParams {
  /** Host path of the test binary packed as `/init`. */
  init?: string;
  /** Extra binaries: archive name to host path, stripped like the init. */
  extra: Record<string, string>;
  /** Include specs, `ARCHIVE=PATH` or a bare PATH. */
  include: string[];
  /** Host path of busybox to pack at `bin/busybox`, if any. */
  busybox?: string;
  /** Output path of the compressed image. */
  out: string;
  /** Store the compressed base in /dev/shm as well. */
  shm: boolean;
  /** Directory of the shared-memory segments; default /dev/shm. */
  shmDir?: string;
  /** Mode of a new segment: 0o600 (default) or 0o644 to share it. */
  shmMode?: 0o600 | 0o644;
  /** Architecture in segment names, as Rust names it; default the host's. */
  arch?: string;
  /** LZ4 level: 0 to 2 fast (default 1), 3 to 12 HC, as `lz4 -N`. */
  level?: number;
  /**
   * Root that interpreters, RPATHs, ld.so.cache and library directories
   * are looked up in, for binaries of another system; default "/".
   */
  sysroot?: string;
  /** Directory that relative paths are taken from. */
  cwd: string;
}

/** Raised for a flag or config value that cannot be used. */
export class ConfigError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "ConfigError";
  }
}

const LIST_KEYS = {
  args: "args",
  "sched-args": "schedArgs",
  "sched-enable": "schedEnable",
  "sched-disable": "schedDisable",
} as const;

const STRING_KEYS = {
  exec: "exec",
  "workload-root-cgroup": "workloadRootCgroup",
  "scheduler-cgroup-parent": "schedulerCgroupParent",
  init: "init",
  out: "out",
  "shm-dir": "shmDir",
  arch: "arch",
  sysroot: "sysroot",
} as const;

/** Flags whose value is a number, with the key they set. */
const NUMBER_KEYS = {
  level: "level",
  "shm-mode": "shmMode",
} as const;

/** Our flags that take no value or are handled outside the tables. */
const OTHER_FLAGS = [
  "extra", "include", "busybox", "shm", "no-shm", "sched-args-for",
];

/**
 * gulp-cli's own flags (gulp-cli 3), which reach a task's process.argv
 * too and must not be taken for typos.
 */
const GULP_CLI_FLAGS = [
  "help", "version", "preload", "require", "gulpfile", "cwd", "tasks",
  "tasks-simple", "tasks-json", "tasks-depth", "depth", "compact-tasks",
  "sort-tasks", "color", "no-color", "silent", "continue", "series",
  "log-level", "verify",
];

/** Flags the user set, before defaults and the config file apply. */
type PartialConfig = Partial<Omit<BuildConfig, "extra" | "stagedSchedArgs">> & {
  extra?: Record<string, string>;
  stagedSchedArgs?: Record<string, string[]>;
};

/** Flags whose value is a host path, which must not be empty. */
const PATH_FLAGS = [
  "init", "out", "busybox", "include", "extra", "shm-dir", "sysroot",
];

/** Standard busybox locations, tried by a bare `--busybox`. */
const BUSYBOX_PATHS = ["/bin/busybox", "/usr/bin/busybox"];

function splitAssignment(flag: string, value: string): [string, string] {
  const at = value.indexOf("=");
  if (at <= 0 || at === value.length - 1) {
    throw new ConfigError(
      "CONFIG_BAD_ASSIGNMENT",
      `--${flag} expects NAME=PATH, got "${value}"`,
    );
  }
  return [value.slice(0, at), value.slice(at + 1)];
}

function defaultBusybox(): string {
  const found = BUSYBOX_PATHS.find((path) => existsSync(path));
  if (!found) {
    throw new ConfigError(
      "CONFIG_NO_BUSYBOX",
      "--busybox found no busybox in /bin or /usr/bin; give its path as " +
        "--busybox=PATH or install it: apt-get install busybox-static",
    );
  }
  return found;
}

/**
 * Parses command-line flags (`--flag value` or `--flag=value`). Unknown
 * flags are left for gulp; repeatable flags accumulate.
 */
export function parseFlags(argv: string[]): PartialConfig {
  const out: PartialConfig = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith("--")) continue;
    const eq = arg.indexOf("=");
    const flag = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
    const inline = eq < 0 ? undefined : arg.slice(eq + 1);
    const known =
      flag in LIST_KEYS ||
      flag in STRING_KEYS ||
      flag in NUMBER_KEYS ||
      OTHER_FLAGS.includes(flag);
    if (!known) continue;
    if (flag === "shm" || flag === "no-shm") {
      out.shm = flag === "shm" && inline !== "false";
      continue;
    }
    if (flag === "busybox" && inline === undefined) {
      const next = argv[i + 1];
      const takesNext = next !== undefined && !next.startsWith("-");
      out.busybox = takesNext ? next : defaultBusybox();
      if (takesNext) i++;
      continue;
    }
    let value = inline;
    if (value === undefined) {
      value = argv[++i];
      // A path never starts with "--": `--init --out X` lost its value.
      // Lines of /args and the other lists may, as in `--args --flag`.
      const lostValue = value?.startsWith("--") && PATH_FLAGS.includes(flag);
      if (value === undefined || lostValue) {
        throw new ConfigError(
          "CONFIG_MISSING_VALUE",
          `--${flag} needs a value` +
            (lostValue ? ` (got the flag ${value}; use --${flag}=VALUE)` : ""),
        );
      }
    }
    if (value === "" && PATH_FLAGS.includes(flag)) {
      throw new ConfigError(
        "CONFIG_MISSING_VALUE",
        `--${flag} needs a non-empty path`,
      );
    }
    if (flag in LIST_KEYS) {
      const key = LIST_KEYS[flag as keyof typeof LIST_KEYS];
      (out[key] ??= []).push(value);
    } else if (flag in NUMBER_KEYS) {
      const key = NUMBER_KEYS[flag as keyof typeof NUMBER_KEYS];
      setNumber(out, key, value, `--${flag}`);
    } else if (flag in STRING_KEYS) {
      out[STRING_KEYS[flag as keyof typeof STRING_KEYS]] = value;
    } else if (flag === "extra") {
      const [name, path] = splitAssignment(flag, value);
      (out.extra ??= {})[name] = path;
    } else if (flag === "include") {
      (out.include ??= []).push(value);
    } else if (flag === "busybox") {
      out.busybox = value;
    } else if (flag === "sched-args-for") {
      const [name, line] = splitAssignment(flag, value);
      // hasOwn: a name such as "constructor" is inherited by a plain object.
      const staged = (out.stagedSchedArgs ??= {});
      if (!Object.hasOwn(staged, name)) staged[name] = [];
      staged[name].push(line);
    }
  }
  return out;
}

/**
 * Parses and checks a numeric setting: an LZ4 level from 0 to 12, or a
 * segment mode of 600 or 644 (octal, with or without a leading 0).
 */
function setNumber(
  out: PartialConfig,
  key: "level" | "shmMode",
  value: string,
  name: string,
): void {
  if (key === "shmMode") {
    const mode = /^0?(600|644)$/.exec(value.trim());
    if (!mode) {
      throw new ConfigError(
        "CONFIG_INVALID",
        `${name} must be 0600 or 0644, got "${value}"`,
      );
    }
    out.shmMode = mode[1] === "600" ? 0o600 : 0o644;
    return;
  }
  const level = Number(value);
  if (!/^\d+$/.test(value.trim()) || level > 12) {
    throw new ConfigError(
      "CONFIG_INVALID",
      `${name} must be an LZ4 level from 0 to 12, got "${value}"`,
    );
  }
  out.level = level;
}

/**
 * Returns the `--flags` in `argv` that neither we nor gulp-cli know, such
 * as a misspelled `--extras`, so a typo fails instead of being ignored.
 * Values of our flags (`--args --x`) are skipped.
 */
export function unknownFlags(argv: string[]): string[] {
  const unknown: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith("--") || arg === "--") continue;
    const eq = arg.indexOf("=");
    const flag = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
    const takesValue =
      flag in LIST_KEYS || flag in STRING_KEYS || flag in NUMBER_KEYS ||
      ["extra", "include", "sched-args-for"].includes(flag);
    if (takesValue) {
      if (eq < 0) i++;
      continue;
    }
    if (OTHER_FLAGS.includes(flag) || GULP_CLI_FLAGS.includes(flag)) continue;
    unknown.push(`--${flag}`);
  }
  return unknown;
}

/** Number of single-character edits that turn `a` into `b`. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min(previous[j] + 1, current[j - 1] + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length];
}

/**
 * Returns the flag of `gulp initramfs` closest to a misspelled one, such
 * as `--include` for `--inlcude`, or null when none is within two edits.
 */
export function closestFlag(unknown: string): string | null {
  const flag = unknown.replace(/^--/, "");
  const known = [
    ...Object.keys(LIST_KEYS),
    ...Object.keys(STRING_KEYS),
    ...Object.keys(NUMBER_KEYS),
    ...OTHER_FLAGS,
  ];
  let best: string | null = null;
  let bestDistance = 3;
  for (const candidate of known) {
    const distance = editDistance(flag, candidate);
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best === null ? null : `--${best}`;
}

function expectStrings(key: string, value: unknown): string[] {
  const list = typeof value === "string" ? [value] : value;
  if (!Array.isArray(list) || list.some((v) => typeof v !== "string")) {
    throw new ConfigError(
      "CONFIG_INVALID",
      `${CONFIG_FILE}: "${key}" must be a string or a list of strings`,
    );
  }
  return list as string[];
}

function expectString(key: string, value: unknown): string {
  if (typeof value !== "string") {
    throw new ConfigError(
      "CONFIG_INVALID",
      `${CONFIG_FILE}: "${key}" must be a string`,
    );
  }
  return value;
}

function expectPath(key: string, value: unknown): string {
  const path = expectString(key, value);
  if (path === "") {
    throw new ConfigError(
      "CONFIG_INVALID",
      `${CONFIG_FILE}: "${key}" must be a non-empty path`,
    );
  }
  return path;
}

function expectMap(key: string, value: unknown): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ConfigError(
      "CONFIG_INVALID",
      `${CONFIG_FILE}: "${key}" must be an object`,
    );
  }
  return value as Record<string, unknown>;
}

/** Parses the config file's JSON object into the same shape as flags. */
export function parseConfigObject(json: unknown): PartialConfig {
  const object = expectMap("top level", json);
  const out: PartialConfig = {};
  for (const [key, value] of Object.entries(object)) {
    switch (key) {
      case "init":
      case "out":
        out[key] = expectPath(key, value);
        break;
      case "exec":
      case "workloadRootCgroup":
      case "schedulerCgroupParent":
        out[key] = expectString(key, value);
        break;
      case "args":
      case "schedArgs":
      case "schedEnable":
      case "schedDisable":
      case "include":
        out[key] = expectStrings(key, value);
        break;
      case "busybox":
        if (value === true) out.busybox = defaultBusybox();
        else if (typeof value === "string") out.busybox = expectPath(key, value);
        else if (value !== false) {
          throw new ConfigError(
            "CONFIG_INVALID",
            `${CONFIG_FILE}: "busybox" must be a path, or true for the ` +
              "system's busybox, or false",
          );
        }
        break;
      case "shmDir":
      case "arch":
      case "sysroot":
        out[key] = expectString(key, value);
        break;
      case "level":
      case "shmMode":
        if (typeof value !== "string" && typeof value !== "number") {
          throw new ConfigError(
            "CONFIG_INVALID",
            `${CONFIG_FILE}: "${key}" must be a number`,
          );
        }
        setNumber(out, key, String(value), `"${key}"`);
        break;
      case "shm":
        if (typeof value !== "boolean") {
          throw new ConfigError(
            "CONFIG_INVALID",
            `${CONFIG_FILE}: "shm" must be true or false`,
          );
        }
        out.shm = value;
        break;
      case "extra":
        out.extra = {};
        for (const [name, path] of Object.entries(expectMap(key, value))) {
          out.extra[name] = expectString(`extra.${name}`, path);
        }
        break;
      case "stagedSchedArgs":
        out.stagedSchedArgs = {};
        for (const [name, lines] of Object.entries(expectMap(key, value))) {
          out.stagedSchedArgs[name] = expectStrings(`${key}.${name}`, lines);
        }
        break;
      default:
        throw new ConfigError(
          "CONFIG_UNKNOWN_KEY",
          `${CONFIG_FILE}: unknown key "${key}"; see the README for the ` +
            "keys the file takes",
        );
    }
  }
  return out;
}

/** Reads `initramfs.config.json` from `cwd`, or returns {} without one. */
export function readConfigFile(cwd: string): PartialConfig {
  const path = join(cwd, CONFIG_FILE);
  if (!existsSync(path)) return {};
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, "utf8"));
  } catch (error) {
    throw new ConfigError(
      "CONFIG_INVALID",
      `${path} is not valid JSON: ${(error as Error).message}`,
    );
  }
  return parseConfigObject(json);
}

/**
 * Combines the config file and flags (flags win; extras and staged args
 * merge by name) and resolves paths against `cwd`.
 */
export function loadConfig(argv: string[], cwd = process.cwd()): BuildConfig {
  const file = readConfigFile(cwd);
  const flags = parseFlags(argv);
  const merged: PartialConfig = { ...file, ...flags };
  merged.extra = { ...file.extra, ...flags.extra };
  merged.stagedSchedArgs = { ...file.stagedSchedArgs, ...flags.stagedSchedArgs };
  const abs = (path: string) => (isAbsolute(path) ? path : resolve(cwd, path));
  const extra: Record<string, string> = {};
  for (const [name, path] of Object.entries(merged.extra)) {
    extra[name] = abs(path);
  }
  return {
    init: merged.init === undefined ? undefined : abs(merged.init),
    extra,
    include: merged.include ?? [],
    busybox: merged.busybox === undefined ? undefined : abs(merged.busybox),
    args: merged.args ?? [],
    schedArgs: merged.schedArgs ?? [],
    schedEnable: merged.schedEnable ?? [],
    schedDisable: merged.schedDisable ?? [],
    exec: merged.exec,
    workloadRootCgroup: merged.workloadRootCgroup,
    schedulerCgroupParent: merged.schedulerCgroupParent,
    stagedSchedArgs: merged.stagedSchedArgs,
    out: abs(merged.out ?? DEFAULT_OUT),
    shm: merged.shm ?? false,
    shmDir: merged.shmDir === undefined ? undefined : abs(merged.shmDir),
    shmMode: merged.shmMode,
    arch: merged.arch,
    level: merged.level,
    sysroot: merged.sysroot === undefined ? undefined : abs(merged.sysroot),
    cwd,
  };
}

/** True when the config names nothing to pack: build the default image. */
export function isEmptyBuild(config: BuildConfig): boolean {
  return (
    config.init === undefined &&
    Object.keys(config.extra).length === 0 &&
    config.include.length === 0 &&
    config.busybox === undefined
  );
}
