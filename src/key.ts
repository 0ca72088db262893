import { createHash, type Hash } from "node:crypto";

/**
 * Version of our archive layout and encoding. Bump it whenever the same
 * inputs would produce different bytes, so old cached images miss.
 */
export const FORMAT_VERSION = 1;

/** Starts a content hash seeded with the format version. */
export function newContentHash(): Hash {
  return createHash("sha256").update(`gulp-initramfs/${FORMAT_VERSION}\n`);
}

/** Returns a 64-bit content key: 16 lower-case hex digits. */
export function contentKey(hash: Hash): string {
  return hash.digest("hex").slice(0, 16);
}
