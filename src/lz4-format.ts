/**
 * LZ4 legacy format, the one the kernel's initramfs decompressor reads
 * (lib/decompress_unlz4.c): the magic, then for each chunk of input a
 * 4-byte little-endian compressed size and one independent raw LZ4 block.
 * Every chunk but the last contains exactly 8 MiB of input, as `lz4 -l`
 * writes them. The kernel decodes each block into an 8 MiB buffer, so no
 * block may decode to more. It skips the magic when it meets it again, so
 * concatenated streams decode as one.
 */
export const LZ4_LEGACY_MAGIC = 0x184c2102;
export const LZ4_LEGACY_MAGIC_BYTES = Buffer.from([0x02, 0x21, 0x4c, 0x18]);
/** Uncompressed bytes per block; the kernel's chunk size (8 << 20). */
export const LZ4_LEGACY_CHUNK_SIZE = 8 << 20;
/** The LZ4 frame format magic, which the kernel rejects. */
export const LZ4_FRAME_MAGIC = 0x184d2204;

/** LZ4_COMPRESSBOUND from lz4.h: worst-case block size for `n` bytes. */
export function lz4CompressBound(n: number): number {
  return n + Math.floor(n / 255) + 16;
}

/** Largest block size a legacy stream can contain. */
export const LZ4_LEGACY_MAX_BLOCK = lz4CompressBound(LZ4_LEGACY_CHUNK_SIZE);

export class Lz4Error extends Error {
  constructor(
    readonly code: string,
    message: string,
    /** Byte offset in the compressed input, when one applies. */
    readonly offset?: number,
  ) {
    super(message);
    this.name = "Lz4Error";
  }
}
