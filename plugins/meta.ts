import type Vinyl from "vinyl";

import type { Role } from "../src/layout.js";

export type { Role };

/** One independently compressed part of an image file. */
export interface ImagePart {
  name: "base" | "suffix";
  /** Length in bytes of this part in the file's current contents. */
  length: number;
  /** Length of the uncompressed cpio archive of this part. */
  archiveLength: number;
}

/** Byte counts stripDebug() records on each file it handles. */
export interface StripFacts {
  before: number;
  after: number;
}

/** Facts about an archive that cpio() emits and later stages update. */
export interface ImageFacts {
  /** 16 lower-case hex digits: the content key of the base archive. */
  key: string;
  /** Parts in file order; their lengths add up to the file's length. */
  parts: ImagePart[];
  compression: "none" | "lz4-legacy";
  /** Entry count of the base and suffix archives, trailer excluded. */
  entries: number;
}

/**
 * Data our plugins attach to a Vinyl file as `file.initramfs`. The archive
 * path of a file is `file.relative` (forward slashes, no leading `/`).
 */
export interface InitramfsData {
  role?: Role;
  /** Host path the bytes come from, for errors and library dedup. */
  hostPath?: string;
  /** Set by detectElf(); null when the file is not an ELF. */
  elf?: import("../src/elf.js").ElfInfo | null;
  /** Set by cpio() on the archive it emits. */
  image?: ImageFacts;
  /** Set by stripDebug(): byte counts before and after stripping. */
  strip?: StripFacts;
}

export type InitramfsFile = Vinyl & { initramfs?: InitramfsData };

/** Returns the file's initramfs data, creating it when absent. */
export function metaOf(file: Vinyl): InitramfsData {
  const f = file as InitramfsFile;
  f.initramfs ??= {};
  return f.initramfs;
}

/** Returns the file's archive path: `file.relative` with `/` separators. */
export function archivePathOf(file: Vinyl): string {
  return file.relative.split("\\").join("/");
}

/**
 * Returns the host path the file's bytes come from: the recorded one, or
 * the path the file was first read from, which a rename keeps in history.
 */
export function hostPathOf(file: Vinyl): string {
  return (
    (file as InitramfsFile).initramfs?.hostPath ?? file.history[0] ?? file.path
  );
}
