import type { SuffixParams } from "./config.js";
import { CpioWriter, S_IFDIR } from "./cpio.js";
import { planSuffix } from "./layout.js";
import { compressLegacy, type Lz4Options } from "./lz4.js";

/** Inode numbers of suffix entries start here, apart from the base's. */
const SUFFIX_FIRST_INO = 0x80000000;

const EMPTY_SUFFIX: SuffixParams = {
  args: [],
  schedArgs: [],
  schedEnable: [],
  schedDisable: [],
  stagedSchedArgs: {},
};

/**
 * Writes the suffix archive that completes a base archive of `baseLength`
 * uncompressed bytes: the per-run files, the trailer, and zero padding so
 * that base plus suffix is a multiple of 512 bytes.
 */
export function writeSuffix(
  params: Partial<SuffixParams>,
  baseLength: number,
  mtime?: number,
): CpioWriter {
  const writer = new CpioWriter({ mtime, firstIno: SUFFIX_FIRST_INO });
  // A key given as undefined keeps its empty default.
  const defined = Object.entries(params).filter(([, value]) => value !== undefined);
  const merged = { ...EMPTY_SUFFIX, ...Object.fromEntries(defined) };
  for (const file of planSuffix(merged)) {
    if ((file.mode & 0o170000) === S_IFDIR) {
      writer.addDirectory(file.archivePath, { mode: file.mode });
    } else {
      writer.addFile(file.archivePath, { mode: file.mode, data: file.data });
    }
  }
  return writer.finish({ trailer: true, padTo: 512, baseLength });
}

/**
 * Returns a complete image from a cached compressed base: the base bytes
 * followed by a freshly compressed suffix for this run. The kernel resets
 * its LZ4 decoder at the second stream's magic.
 */
export async function appendSuffix(
  compressedBase: Uint8Array,
  baseLength: number,
  params: Partial<SuffixParams>,
  options: Lz4Options = {},
): Promise<Buffer> {
  const suffix = await writeSuffix(params, baseLength).toBuffer();
  const compressed = await compressLegacy(suffix, options);
  return Buffer.concat([compressedBase, compressed]);
}
