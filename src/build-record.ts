/**
 * The build record, a JSON file next to an image (`IMAGE.key.json`). It
 * contains the input key the image was built from and the lengths needed
 * to reuse its compressed base with a new suffix. It also keeps the
 * image file's identity as written and the content digests of its inputs.
 */
import { readFileSync, rmSync, statSync } from "node:fs";
import type { DigestEntries } from "./input-key.js";
import { writeFileAtomic } from "./temp-output.js";

/** Bump when the record's fields change; older records are ignored. */
export const RECORD_VERSION = 1;

/** The image file's identity right after it was written. */
export interface OutputIdentity {
  ino: string;
  size: number;
  mtimeNs: string;
}

export interface BuildRecord {
  version: number;
  /** Input key of the base archive: 16 lower-case hex digits. */
  key: string;
  /** SHA-256 of the suffix parameters the image was written with. */
  suffixDigest: string;
  /** Bytes of the compressed base at the start of the image. */
  baseLength: number;
  /** Bytes of the uncompressed base archive. */
  baseArchiveLength: number;
  /** Bytes of the compressed and the uncompressed suffix. */
  suffixLength: number;
  suffixArchiveLength: number;
  /** Entries of the base archive, and of base and suffix together. */
  baseEntries: number;
  entries: number;
  /** Bytes of payload and extras before and after debug stripping. */
  strippedBefore: number;
  strippedAfter: number;
  output: OutputIdentity;
  digests: DigestEntries;
}

/** Returns the path of the record that belongs to image `out`. */
export function recordPath(out: string): string {
  return `${out}.key.json`;
}

function isRecord(value: unknown): value is BuildRecord {
  const record = value as Partial<BuildRecord> | null;
  return (
    typeof record === "object" &&
    record !== null &&
    record.version === RECORD_VERSION &&
    typeof record.key === "string" &&
    typeof record.suffixDigest === "string" &&
    Number.isSafeInteger(record.baseLength) &&
    Number.isSafeInteger(record.baseArchiveLength) &&
    Number.isSafeInteger(record.suffixLength) &&
    Number.isSafeInteger(record.suffixArchiveLength) &&
    Number.isSafeInteger(record.baseEntries) &&
    Number.isSafeInteger(record.entries) &&
    typeof record.output === "object" &&
    typeof record.digests === "object"
  );
}

/**
 * Reads the record of image `out`. Returns null when there is none or it
 * cannot be used (invalid JSON, another version), which means a rebuild.
 */
export function readRecord(out: string): BuildRecord | null {
  let text: string;
  try {
    text = readFileSync(recordPath(out), "utf8");
  } catch {
    return null;
  }
  try {
    const value: unknown = JSON.parse(text);
    return isRecord(value) ? value : null;
  } catch {
    return null;
  }
}

/** Returns the identity of the file at `path`, or null if it is missing. */
export function outputIdentity(path: string): OutputIdentity | null {
  try {
    const stat = statSync(path, { bigint: true });
    return {
      ino: String(stat.ino),
      size: Number(stat.size),
      mtimeNs: String(stat.mtimeNs),
    };
  } catch {
    return null;
  }
}

/** True when the image at `out` is still the file the record describes. */
export function outputMatches(out: string, record: BuildRecord): boolean {
  const now = outputIdentity(out);
  return (
    now !== null &&
    now.ino === record.output.ino &&
    now.size === record.output.size &&
    now.mtimeNs === record.output.mtimeNs
  );
}

/** Writes the record of image `out` through a temporary file and a rename. */
export function writeRecord(out: string, record: BuildRecord): void {
  writeFileAtomic(recordPath(out), JSON.stringify(record) + "\n");
}

/** Removes the record of image `out`, if any. */
export function removeRecord(out: string): void {
  rmSync(recordPath(out), { force: true });
}
