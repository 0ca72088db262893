import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  CPIO_CRC_MAGIC,
  CPIO_NEWC_MAGIC,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
} from "./cpio.js";
import { iterateCpio, type CpioEntry } from "./cpio-reader.js";
import type { ImageEntry } from "./file-tree.js";
import { verifyImage, type GuestProblem } from "./guest-check.js";
import {
  decompressLegacy,
  LZ4_FRAME_MAGIC,
  LZ4_LEGACY_MAGIC_BYTES,
} from "./lz4.js";

/** Raised for bytes that are neither an LZ4 legacy stream nor newc. */
export class ImageFormatError extends Error {
  readonly code = "IMAGE_UNKNOWN_FORMAT";
  constructor(message: string) {
    super(message);
    this.name = "ImageFormatError";
  }
}

/**
 * Returns the uncompressed archive of an image: LZ4 legacy streams (one
 * or several concatenated) are decoded, a plain newc archive is returned
 * as it is.
 */
export function imageArchive(image: Uint8Array): Buffer {
  const bytes = Buffer.from(image.buffer, image.byteOffset, image.length);
  if (bytes.subarray(0, 4).equals(LZ4_LEGACY_MAGIC_BYTES)) {
    return decompressLegacy(bytes);
  }
  const cpioMagic = bytes.subarray(0, 6).toString("latin1");
  if (cpioMagic === CPIO_NEWC_MAGIC || cpioMagic === CPIO_CRC_MAGIC) {
    return bytes;
  }
  if (bytes.length >= 4 && bytes.readUInt32LE(0) === LZ4_FRAME_MAGIC) {
    throw new ImageFormatError(
      "the image is in the LZ4 frame format (04 22 4d 18), which the " +
        "kernel rejects; decompress it with lz4 -d, or recompress with lz4 -l",
    );
  }
  throw new ImageFormatError(
    "the image is neither LZ4 legacy (02 21 4c 18) nor cpio newc " +
      "(070701 or 070702); decompress other formats first",
  );
}

/** Returns the entries of an image in archive order, trailers left out. */
export function imageEntries(image: Uint8Array): CpioEntry[] {
  return [...iterateCpio(imageArchive(image))].filter((e) => !e.trailer);
}

const TYPE_LETTERS: Record<number, string> = {
  [S_IFDIR]: "d",
  [S_IFREG]: "-",
  [S_IFLNK]: "l",
};

/** Formats a mode as `ls -l` does, such as `-rwxr-xr-x`. */
export function formatMode(mode: number): string {
  const type = TYPE_LETTERS[mode & S_IFMT] ?? "?";
  let bits = "";
  for (let shift = 6; shift >= 0; shift -= 3) {
    const triple = (mode >> shift) & 7;
    bits += triple & 4 ? "r" : "-";
    bits += triple & 2 ? "w" : "-";
    bits += triple & 1 ? "x" : "-";
  }
  return type + bits;
}

/**
 * Lists entries like `lsinitramfs -l`: mode, size, path, and the target
 * of a symlink.
 */
export function formatListing(entries: CpioEntry[]): string {
  const width = Math.max(1, ...entries.map((e) => String(e.size).length));
  return entries
    .map((e) => {
      const target = e.target === undefined ? "" : ` -> ${e.target}`;
      return `${formatMode(e.mode)} ${String(e.size).padStart(width)} ${e.name}${target}`;
    })
    .join("\n");
}

/**
 * Checks that every ELF file in the image finds its interpreter and all
 * its libraries inside the image, as the guest's ld.so will search them.
 * Regular files are written to a temporary directory for the check and
 * removed afterwards.
 */
export function verifyImageBytes(image: Uint8Array): GuestProblem[] {
  const entries = imageEntries(image);
  const dir = mkdtempSync(join(tmpdir(), "gulp-initramfs-verify-"));
  try {
    const tree: ImageEntry[] = [];
    entries.forEach((entry, index) => {
      const type = entry.mode & S_IFMT;
      if (type === S_IFLNK) {
        tree.push({ path: entry.name, symlink: entry.target });
      } else if (type === S_IFREG) {
        const hostPath = join(dir, String(index));
        writeFileSync(hostPath, entry.data);
        tree.push({ path: entry.name, hostPath });
      } else if (type === S_IFDIR) {
        tree.push({ path: entry.name });
      }
    });
    return verifyImage(tree);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
