import { Transform, type TransformCallback } from "node:stream";
import PluginError from "plugin-error";
import type Vinyl from "vinyl";

export const PLUGIN_NAME = "gulp-initramfs";

/** A warning a plugin reports without failing the build. */
export interface InitramfsWarning {
  /** Stable code, listed in the README. */
  code: string;
  message: string;
  /** The file the warning is about, when there is one. */
  fileName?: string;
}

export type WarningHandler = (warning: InitramfsWarning) => void;

/** An error with a stable code, raised by src/ modules and plugins. */
export class InitramfsError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly fileName?: string,
  ) {
    super(message);
    this.name = "InitramfsError";
  }
}

/**
 * Wraps `error` as a PluginError that names the file, keeping the code of
 * an error that has one.
 */
export function toPluginError(error: unknown, fileName?: string): PluginError {
  if (error instanceof PluginError) return error;
  const cause = error instanceof Error ? error : new Error(String(error));
  const named = (cause as { fileName?: string }).fileName ?? fileName;
  const pluginError = new PluginError(PLUGIN_NAME, cause, {
    fileName: named,
    showStack: false,
  });
  const code = (cause as { code?: unknown }).code;
  if (typeof code === "string") {
    (pluginError as PluginError & { code?: string }).code = code;
  }
  return pluginError;
}

export interface PluginHooks {
  /** Handles one file; push() any number of files, return when done. */
  transform(file: Vinyl, push: (file: Vinyl) => void): Promise<void> | void;
  /** Runs after the last input file; may push more files. */
  flush?(push: (file: Vinyl) => void): Promise<void> | void;
}

/** Runs a hook and calls `callback` when it ends or its promise settles. */
function settle(
  run: () => Promise<void> | void,
  callback: TransformCallback,
  fileName?: string,
): void {
  let result: Promise<void> | void;
  try {
    result = run();
  } catch (error) {
    callback(toPluginError(error, fileName));
    return;
  }
  if (typeof (result as PromiseLike<void> | undefined)?.then !== "function") {
    callback();
    return;
  }
  (result as PromiseLike<void>).then(
    () => callback(),
    (error: unknown) => callback(toPluginError(error, fileName)),
  );
}

/**
 * Creates an object-mode Transform that runs the hooks in order and turns
 * any thrown error into a PluginError naming the file. A hook that returns
 * no promise completes at once, so a build of a few thousand files does
 * not create several promises per file in every stage. Warnings go to
 * `onWarning` when given and are emitted as "warning" events either way.
 */
export function pluginStream(
  hooks: (warn: WarningHandler) => PluginHooks,
  onWarning?: WarningHandler,
): Transform {
  const stream: Transform = new Transform({
    objectMode: true,
    highWaterMark: 16,
    transform(file: Vinyl, _encoding: string, callback: TransformCallback) {
      const push = (out: Vinyl) => stream.push(out);
      settle(() => handlers.transform(file, push), callback, file.path);
    },
    flush(callback: TransformCallback) {
      const push = (out: Vinyl) => stream.push(out);
      settle(() => handlers.flush?.(push), callback);
    },
  });
  const warn: WarningHandler = (warning) => {
    onWarning?.(warning);
    stream.emit("warning", warning);
  };
  const handlers = hooks(warn);
  return stream;
}
