import { statSync, type Stats } from "node:fs";
import { Transform, pipeline } from "node:stream";
import type Vinyl from "vinyl";
import { archivePathOf, hostPathOf, metaOf } from "./meta.js";
import {
  InitramfsError,
  pluginStream,
  type WarningHandler,
} from "./transform.js";

/** Archive names the guest uses for its own files. */
export const RESERVED_PREFIX = ".ktstr_";

export interface ValidateIncludesOptions {
  onWarning?: WarningHandler;
}

/** Rejects archive paths that could escape the root or hit our names. */
export function checkArchivePath(path: string, fileName?: string): void {
  if (path === "" || path === ".") {
    throw new InitramfsError(
      "INCLUDE_EMPTY_PATH",
      `${fileName ?? "file"} has an empty archive path; give it a name ` +
        "below the base directory",
      fileName,
    );
  }
  if (path.startsWith("/")) {
    throw new InitramfsError(
      "INCLUDE_ABSOLUTE_PATH",
      `archive path "${path}" is absolute; archive paths are relative to /`,
      fileName,
    );
  }
  if (path.split("/").includes("..")) {
    throw new InitramfsError(
      "INCLUDE_PATH_TRAVERSAL",
      `archive path "${path}" contains a ".." component; ` +
        "name the file by a path below the archive root",
      fileName,
    );
  }
  if (path.startsWith(RESERVED_PREFIX)) {
    throw new InitramfsError(
      "INCLUDE_RESERVED_NAME",
      `archive path "${path}" starts with "${RESERVED_PREFIX}", which is ` +
        "reserved for the guest's own files; rename it",
      fileName,
    );
  }
}

/**
 * Throws when a buffer's length differs from the file size on disk: gulp
 * 5's src() decodes contents as UTF-8 by default, which changes the bytes
 * of a binary but keeps its ELF magic.
 */
export function checkBufferLength(file: Vinyl): void {
  if (!file.isBuffer() || !file.stat) return;
  if (!file.stat.isFile() || file.contents.length === file.stat.size) return;
  throw decodedError(hostPathOf(file), file.contents.length, file.stat.size);
}

function decodedError(path: string, length: number, size: number) {
  return new InitramfsError(
    "CONTENTS_DECODED",
    `${path}: contents are ${length} bytes but the file is ${size} bytes ` +
      "on disk, because gulp's src() decoded it as text. Pass " +
      "{ encoding: false } to src()",
    path,
  );
}

/**
 * Replaces a streaming file's contents with a stream that fails with
 * CONTENTS_DECODED at its end when the byte count differs from
 * `stat.size`. gulp 5's src() decodes streams as UTF-8 too.
 */
export function checkStreamLength(file: Vinyl): void {
  if (!file.isStream() || !file.stat?.isFile()) return;
  const size = file.stat.size;
  let length = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      length += chunk.length;
      callback(null, chunk);
    },
    flush(callback) {
      if (length === size) callback();
      else callback(decodedError(hostPathOf(file), length, size));
    },
  });
  // pipeline() passes a read error of the source on to `counter`.
  pipeline(file.contents, counter, () => {});
  file.contents = counter;
}

function statTarget(hostPath: string): Stats {
  try {
    return statSync(hostPath);
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new InitramfsError(
      "INCLUDE_NOT_FOUND",
      `include ${hostPath} cannot be read (${reason}); ` +
        "check the path, or the target of the symlink",
      hostPath,
    );
  }
}

/**
 * Checks include files: safe archive paths, regular files only (symlinks
 * are followed, directories dropped because the archive makes parents),
 * contents that match the size on disk. Files without a role become
 * includes. Payload, extras and busybox get the archive-path and contents
 * checks only.
 */
export function validateIncludes(options: ValidateIncludesOptions = {}) {
  return pluginStream(
    () => ({
      transform(file, push) {
        const meta = metaOf(file);
        meta.role ??= "include";
        if (meta.role === "library") return push(file);
        checkBufferLength(file);
        if (meta.role !== "include") {
          // Extras name their archive path too, so the path rules apply.
          if (!file.isDirectory()) checkArchivePath(archivePathOf(file), hostPathOf(file));
          checkStreamLength(file);
          return push(file);
        }
        if (file.isDirectory()) return;
        checkArchivePath(archivePathOf(file), hostPathOf(file));
        // Contents made in memory need no file on disk and get mode 0644.
        if (file.isBuffer() && !file.stat) return push(file);
        const hostPath = hostPathOf(file);
        const needsStat = file.isSymbolic() || file.isNull() || !file.stat;
        const stat = needsStat ? statTarget(hostPath) : file.stat!;
        if (stat.isDirectory() && !file.isBuffer()) return;
        if (!stat.isFile()) {
          throw new InitramfsError(
            "INCLUDE_NOT_REGULAR",
            `include ${hostPath} is not a regular file (sockets, pipes ` +
              "and devices cannot be packed); remove it from the includes",
            hostPath,
          );
        }
        if (file.isSymbolic()) {
          // A symlink named by the user packs its target's bytes. The
          // target's stat makes isSymbolic() false for later stages.
          // Vinyl's symlink setter accepts only strings, so it stays set.
          meta.hostPath = hostPath;
        }
        file.stat = stat;
        checkStreamLength(file);
        push(file);
      },
    }),
    options.onWarning,
  );
}
