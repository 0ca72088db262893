/**
 * Structural checks of a shared-memory segment's payload, which is either
 * an LZ4 legacy stream (`ktstr-lz4-*`) or a cpio newc archive
 * (`ktstr-base-*`). They read headers only, never the compressed data or
 * file bodies, so a reader can check a large segment with a few reads.
 */
import {
  CPIO_HEADER_SIZE,
  CPIO_NEWC_MAGIC,
  CPIO_TRAILER_NAME,
  padLength,
} from "./cpio.js";
import { LZ4_LEGACY_MAGIC_BYTES, LZ4_LEGACY_MAX_BLOCK } from "./lz4.js";

export type SegmentKind = "base" | "lz4";

/**
 * Reads `length` bytes at `position`. Returns null when the data ends
 * first, which the checks report as a truncated segment.
 */
export type ReadAt = (position: number, length: number) => Buffer | null;

/** Bytes that the writer writes last; they contain either kind's magic. */
export const HEAD_LENGTH = 8;

const NEWC_MAGIC = Buffer.from(CPIO_NEWC_MAGIC, "latin1");
/** Offsets of c_filesize and c_namesize in a newc header (8 hex digits). */
const C_FILESIZE = 54;
const C_NAMESIZE = 94;
/** Padding after a TRAILER!!! entry stays below one 512-byte block. */
const MAX_TRAILER_PADDING = 511;

/** Returns a ReadAt over bytes in memory. */
export function bufferReader(bytes: Uint8Array): ReadAt {
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  return (position, length) =>
    position + length > view.length
      ? null
      : view.subarray(position, position + length);
}

/**
 * Checks that `size` bytes read through `read` are a complete payload of
 * `kind`. Returns null when they are, else the reason they are not,
 * phrased to follow "the segment is incomplete because".
 */
export function checkSegmentFormat(
  kind: SegmentKind,
  size: number,
  read: ReadAt,
): string | null {
  return kind === "lz4" ? checkLz4Legacy(size, read) : checkNewc(size, read);
}

/**
 * Walks the 4-byte little-endian block sizes of one LZ4 legacy stream;
 * the last block must end exactly at `size`.
 */
function checkLz4Legacy(size: number, read: ReadAt): string | null {
  const magic = read(0, LZ4_LEGACY_MAGIC_BYTES.length);
  if (magic === null || !magic.equals(LZ4_LEGACY_MAGIC_BYTES)) {
    return "it does not start with the LZ4 legacy magic 02 21 4c 18";
  }
  let offset = LZ4_LEGACY_MAGIC_BYTES.length;
  while (offset < size) {
    const word = read(offset, 4);
    if (word === null) return `it ends inside a block size at ${offset}`;
    const blockSize = word.readUInt32LE(0);
    if (blockSize === 0 || blockSize > LZ4_LEGACY_MAX_BLOCK) {
      return `its block size ${blockSize} at ${offset} is invalid`;
    }
    offset += 4 + blockSize;
  }
  if (offset !== size) {
    return `its last block ends at ${offset}, past its ${size} bytes`;
  }
  return null;
}

function hexField(header: Buffer, at: number): number {
  const text = header.toString("latin1", at, at + 8);
  return /^[0-9a-fA-F]{8}$/.test(text) ? parseInt(text, 16) : -1;
}

/**
 * Walks the entry headers of a newc archive; the last entry must end
 * exactly at `size`, or be a TRAILER!!! followed by zero padding.
 */
function checkNewc(size: number, read: ReadAt): string | null {
  let offset = 0;
  while (offset < size) {
    const header = read(offset, CPIO_HEADER_SIZE);
    if (header === null) return `it ends inside an entry header at ${offset}`;
    if (!header.subarray(0, NEWC_MAGIC.length).equals(NEWC_MAGIC)) {
      return `its entry at ${offset} does not start with 070701`;
    }
    const namesize = hexField(header, C_NAMESIZE);
    const filesize = hexField(header, C_FILESIZE);
    if (namesize < 1 || filesize < 0) {
      return `its entry header at ${offset} has an invalid size field`;
    }
    const nameEnd = offset + CPIO_HEADER_SIZE + namesize;
    const next = nameEnd + padLength(nameEnd) + filesize + padLength(filesize);
    if (next > size) return `its entry at ${offset} ends past its end`;
    const name = read(offset + CPIO_HEADER_SIZE, namesize - 1);
    if (name?.toString("latin1") === CPIO_TRAILER_NAME) {
      return checkPadding(next, size, read);
    }
    offset = next;
  }
  return null;
}

function checkPadding(from: number, size: number, read: ReadAt): string | null {
  const rest = size - from;
  const padding = rest > MAX_TRAILER_PADDING ? null : read(from, rest);
  if (padding === null || padding.some((byte) => byte !== 0)) {
    return `it has ${rest} bytes after TRAILER!!! that are not padding`;
  }
  return null;
}
