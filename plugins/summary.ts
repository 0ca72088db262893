/** The summary of one build, as the task prints it. */
import type { ImageFacts } from "./meta.js";
import type { InitramfsWarning } from "./transform.js";

/**
 * Outcome of buildImage(). "built": every stage ran. "suffix": the
 * compressed base was reused (from the old image or a segment) and only
 * a new suffix was compressed. "up-to-date": the image on disk already
 * matched its inputs and suffix, so nothing was written.
 */
export type BuildStatus = "built" | "suffix" | "up-to-date";

/** Facts about one build, for the closing summary. */
export interface BuildSummary {
  status: BuildStatus;
  /** Source of a reused base; unset when built. */
  baseSource?: "output" | "segment";
  /**
   * Milliseconds until the input key was computed and compared, or null
   * when there was no build record or segment to compare it with.
   */
  checkMs: number | null;
  /** Input files hashed for the key; 0 when the stat cache had all. */
  hashedFiles: number;
  /** Entries of base and suffix archives, trailer excluded. */
  entries: number;
  /**
   * Bytes of payload and extras before and after debug stripping; 0
   * when the base came from a segment built by another process.
   */
  strippedBefore: number;
  strippedAfter: number;
  /** Bytes of the uncompressed archive and of the compressed image. */
  archiveBytes: number;
  imageBytes: number;
  image: ImageFacts;
  /** Path the image was written to. */
  out: string;
  /** The shared-memory segment path, when stored there. */
  segment?: string;
  warnings: InitramfsWarning[];
}

/** Formats a byte count with a binary unit. */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** Returns the first line of the summary: how the image was made. */
function statusLine(summary: BuildSummary): string {
  const check = `checked in ${(summary.checkMs ?? 0).toFixed(0)} ms`;
  if (summary.status === "up-to-date") return `up to date (${check})`;
  if (summary.status === "built") {
    const files = summary.hashedFiles === 1 ? "file" : "files";
    const hashed = `${summary.hashedFiles} ${files} hashed`;
    if (summary.checkMs === null) return `built (no build record; ${hashed})`;
    return `built (inputs changed; ${check}, ${hashed})`;
  }
  const from =
    summary.baseSource === "segment" ? "shared memory" : "the previous image";
  return `base up to date, taken from ${from} (${check}); new suffix written`;
}

/** Returns the closing lines of a build, one fact a line. */
export function formatSummary(summary: BuildSummary): string {
  const lines = [statusLine(summary), `entries: ${summary.entries}`];
  // Zero when nothing was stripped or the base came from a segment.
  if (summary.strippedBefore > 0) {
    lines.push(
      `binaries: ${formatBytes(summary.strippedBefore)} before stripping, ` +
        `${formatBytes(summary.strippedAfter)} after`,
    );
  }
  lines.push(
    `archive: ${formatBytes(summary.archiveBytes)} cpio, ` +
      `${formatBytes(summary.imageBytes)} LZ4 legacy ` +
        (summary.image.key ? `(key ${summary.image.key})` : "(no key: an input changed during the build)"),
    `image: ${summary.out}`,
  );
  if (summary.segment) lines.push(`shared memory: ${summary.segment}`);
  return lines.join("\n");
}
