import type Vinyl from "vinyl";
import {
  stripDebugBuffer,
  stripDebugFile,
  type SectionInfo,
  type StripOptions,
  type StripResult,
} from "../src/strip.js";
import {
  metaOf,
  type InitramfsData,
  type Role,
  type StripFacts,
} from "./meta.js";
import {
  InitramfsError,
  pluginStream,
  type WarningHandler,
} from "./transform.js";

export interface StripDebugOptions {
  /** Roles whose files are stripped; defaults to payload and extras. */
  roles?: readonly Role[];
  /** Returns true for a section to remove; see src/strip.ts. */
  predicate?: (section: SectionInfo) => boolean;
  /** Receives every warning; the stream also emits it as "warning". */
  onWarning?: WarningHandler;
}

/** The fields stripDebug() adds to `file.initramfs`. */
export type StripData = InitramfsData;
export type { StripFacts };

const DEFAULT_ROLES: readonly Role[] = ["payload", "extra"];

async function collect(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) {
    if (typeof chunk === "string") chunks.push(Buffer.from(chunk));
    else if (Buffer.isBuffer(chunk)) chunks.push(chunk);
    else chunks.push(Buffer.from(chunk as Uint8Array));
  }
  return Buffer.concat(chunks);
}

/** Rejects a buffer that a text decoding changed, as its size shows. */
function checkSize(file: Vinyl, contents: Buffer): void {
  const size = file.stat?.size;
  if (typeof size !== "number" || !file.stat?.isFile()) return;
  if (size === contents.length) return;
  throw new InitramfsError(
    "STRIP_SIZE_MISMATCH",
    `${file.path}: contents are ${contents.length} bytes but the file has ` +
      `${size}; read binaries with src(..., { encoding: false })`,
    file.path,
  );
}

/** Strips whatever form the contents take; null when there is nothing. */
async function stripContents(
  file: Vinyl,
  hostPath: string | undefined,
  options: StripOptions,
): Promise<{ result: StripResult; before: number } | null> {
  if (file.isBuffer()) {
    checkSize(file, file.contents);
    const before = file.contents.length;
    return { result: stripDebugBuffer(file.contents, options), before };
  }
  if (file.isStream()) {
    const contents = await collect(file.contents);
    (file as Vinyl).contents = contents;
    checkSize(file, contents);
    const before = contents.length;
    return { result: stripDebugBuffer(contents, options), before };
  }
  const path = hostPath ?? file.path;
  if (!path) return null;
  const result = stripDebugFile(path, options);
  return { result, before: result.inputSize };
}

/** Strips one file, or warns and returns it unchanged when it cannot. */
async function stripOne(
  file: Vinyl,
  meta: StripData,
  predicate: StripOptions["predicate"],
  warn: WarningHandler,
): Promise<Vinyl> {
  const name = meta.hostPath ?? file.path;
  const stripOptions: StripOptions = {
    fileName: name,
    predicate,
    onWarning: (w) => warn({ code: w.code, message: w.message, fileName: name }),
  };
  let outcome;
  try {
    outcome = await stripContents(file, meta.hostPath, stripOptions);
  } catch (error) {
    if (error instanceof InitramfsError) throw error;
    const reason = error instanceof Error ? error.message : String(error);
    warn({
      code: "STRIP_FAILED",
      message: `${name}: cannot strip (${reason}); left unchanged`,
      fileName: name,
    });
    return file;
  }
  if (outcome === null) return file;
  const { result, before } = outcome;
  file.contents = result.data;
  if (file.stat) file.stat.size = result.data.length;
  meta.strip = { before, after: result.data.length };
  return file;
}

/**
 * Removes debug sections from the payload and extra binaries (see
 * src/strip.ts for what is removed and when a file is left alone).
 * Includes, libraries, non-ELF files, directories and symlinks pass
 * through untouched. A file that cannot be stripped passes unchanged with
 * a warning; a buffer whose length differs from stat.size is an error.
 */
export function stripDebug(options: StripDebugOptions = {}) {
  const roles = options.roles ?? DEFAULT_ROLES;
  if (!Array.isArray(roles)) {
    throw new TypeError("stripDebug: option roles must be an array of roles");
  }
  return pluginStream((warn) => ({
    transform(file, push) {
      const meta = metaOf(file) as StripData;
      const skip =
        meta.role === undefined ||
        !roles.includes(meta.role) ||
        meta.elf === null ||
        file.isDirectory() ||
        file.isSymbolic();
      // Synchronous for the files it skips, which are most of an image.
      if (skip) return push(file);
      return stripOne(file, meta, options.predicate, warn).then(push);
    },
  }), options.onWarning);
}
