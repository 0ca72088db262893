import {
  closeSync,
  constants,
  fstatSync,
  openSync,
  readSync,
} from "node:fs";

/** The four bytes every ELF file starts with. */
export const ELFMAG = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);

export const ELFCLASS32 = 1;
export const ELFCLASS64 = 2;
export const ELFDATA2LSB = 1;
export const ELFDATA2MSB = 2;

export const ET_REL = 1;
export const ET_EXEC = 2;
export const ET_DYN = 3;

export const PT_LOAD = 1;
export const PT_DYNAMIC = 2;
export const PT_INTERP = 3;

export const DT_NULL = 0;
export const DT_NEEDED = 1;
export const DT_STRTAB = 5;
export const DT_STRSZ = 10;
export const DT_SONAME = 14;
export const DT_RPATH = 15;
export const DT_RUNPATH = 29;
export const DT_FLAGS_1 = 0x6ffffffb;
export const DF_1_PIE = 0x08000000;

export const EM_386 = 3;
export const EM_X86_64 = 62;
export const EM_AARCH64 = 183;

/** Upper bound on program headers we read; real files have a few dozen. */
const MAX_PHNUM = 4096;
/** Upper bound on a PT_INTERP or dynamic string, as PATH_MAX. */
const MAX_STRING = 4096;

/** Positioned reads over a file or an in-memory buffer. */
export interface ByteSource {
  readonly size: number;
  /** Returns exactly `length` bytes at `offset`, or fewer at end of input. */
  read(offset: number, length: number): Buffer;
}

/** Identity of an ELF file: what ld.so compares before loading a library. */
export interface ElfIdent {
  /** 32 or 64, from EI_CLASS. */
  bits: 32 | 64;
  littleEndian: boolean;
  /** EI_OSABI: 0 is System V, 3 is GNU; ld.so treats them as compatible. */
  osabi: number;
  e_type: number;
  e_machine: number;
  e_flags: number;
}

/** The facts later stages need from one ELF file. */
export interface ElfInfo extends ElfIdent {
  /** PT_INTERP path, or null for static binaries and libraries. */
  interpreter: string | null;
  /** Whether the file has a PT_DYNAMIC segment. */
  dynamic: boolean;
  /** DT_NEEDED names in file order. */
  needed: string[];
  soname: string | null;
  /** DT_RPATH string, unsplit and unexpanded, or null. */
  rpath: string | null;
  /** DT_RUNPATH string, unsplit and unexpanded, or null. */
  runpath: string | null;
  /** True for a PIE executable (DF_1_PIE), false for a shared library. */
  pie: boolean;
}

/** Raised for a file that starts with the ELF magic but cannot be parsed. */
export class ElfFormatError extends Error {
  readonly code = "ELF_MALFORMED";
  constructor(message: string) {
    super(message);
    this.name = "ElfFormatError";
  }
}

export function bufferSource(buffer: Buffer): ByteSource {
  return {
    size: buffer.length,
    read: (offset, length) =>
      buffer.subarray(offset, Math.min(buffer.length, offset + length)),
  };
}

/** Opens `path` for positioned reads; call `close()` when done. */
export function fileSource(
  path: string,
): ByteSource & { isFile: boolean; close(): void } {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
  // writer. It has no effect on regular files.
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  const stat = fstatSync(fd);
  const size = stat.size;
  return {
    size,
    /** False for a directory, FIFO, socket or device. */
    isFile: stat.isFile(),
    read(offset, length) {
      const end = Math.min(size, offset + length);
      if (end <= offset) return Buffer.alloc(0);
      const buffer = Buffer.allocUnsafe(end - offset);
      let done = 0;
      while (done < buffer.length) {
        const n = readSync(fd, buffer, done, buffer.length - done, offset + done);
        if (n === 0) break;
        done += n;
      }
      return buffer.subarray(0, done);
    },
    close: () => closeSync(fd),
  };
}

/** Reads fixed-width integers of one ELF file's class and byte order. */
export class ElfReader {
  constructor(
    readonly bits: 32 | 64,
    readonly littleEndian: boolean,
  ) {}

  u16(b: Buffer, at: number): number {
    return this.littleEndian ? b.readUInt16LE(at) : b.readUInt16BE(at);
  }

  u32(b: Buffer, at: number): number {
    return this.littleEndian ? b.readUInt32LE(at) : b.readUInt32BE(at);
  }

  /** Reads a 64-bit field; throws past 2^53 instead of losing precision. */
  u64(b: Buffer, at: number): number {
    const v = this.littleEndian ? b.readBigUInt64LE(at) : b.readBigUInt64BE(at);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new ElfFormatError(`64-bit field at ${at} is too large: ${v}`);
    }
    return Number(v);
  }

  /** Reads an address-sized field: 4 bytes in ELF32, 8 in ELF64. */
  addr(b: Buffer, at: number): number {
    return this.bits === 64 ? this.u64(b, at) : this.u32(b, at);
  }
}

/** Returns true when `head` starts with the ELF magic. */
export function hasElfMagic(head: Buffer): boolean {
  return head.length >= 4 && head.subarray(0, 4).equals(ELFMAG);
}

/** The ELF file header fields this project uses. */
export interface ElfHeader extends ElfIdent {
  e_phoff: number;
  e_shoff: number;
  e_ehsize: number;
  e_phentsize: number;
  e_phnum: number;
  e_shentsize: number;
  e_shnum: number;
  e_shstrndx: number;
}

/** Parses the file header; throws ElfFormatError when it is invalid. */
export function readHeader(source: ByteSource): ElfHeader {
  const ident = source.read(0, 16);
  if (!hasElfMagic(ident)) throw new ElfFormatError("not an ELF file");
  const cls = ident[4];
  const data = ident[5];
  if (cls !== ELFCLASS32 && cls !== ELFCLASS64) {
    throw new ElfFormatError(`invalid EI_CLASS ${cls}`);
  }
  if (data !== ELFDATA2LSB && data !== ELFDATA2MSB) {
    throw new ElfFormatError(`invalid EI_DATA ${data}`);
  }
  const bits = cls === ELFCLASS64 ? 64 : 32;
  const ehsize = bits === 64 ? 64 : 52;
  const b = source.read(0, ehsize);
  if (b.length < ehsize) throw new ElfFormatError("truncated ELF header");
  const r = new ElfReader(bits, data === ELFDATA2LSB);
  const w = bits === 64 ? 8 : 4;
  const afterEntry = 24 + w;
  return {
    bits,
    littleEndian: r.littleEndian,
    osabi: ident[7],
    e_type: r.u16(b, 16),
    e_machine: r.u16(b, 18),
    e_phoff: r.addr(b, afterEntry),
    e_shoff: r.addr(b, afterEntry + w),
    e_flags: r.u32(b, afterEntry + 2 * w),
    e_ehsize: r.u16(b, afterEntry + 2 * w + 4),
    e_phentsize: r.u16(b, afterEntry + 2 * w + 6),
    e_phnum: r.u16(b, afterEntry + 2 * w + 8),
    e_shentsize: r.u16(b, afterEntry + 2 * w + 10),
    e_shnum: r.u16(b, afterEntry + 2 * w + 12),
    e_shstrndx: r.u16(b, afterEntry + 2 * w + 14),
  };
}

export interface ProgramHeader {
  p_type: number;
  p_flags: number;
  p_offset: number;
  p_vaddr: number;
  p_filesz: number;
  p_memsz: number;
}

/** Parses the program header table. */
export function readProgramHeaders(
  source: ByteSource,
  h: ElfHeader,
): ProgramHeader[] {
  if (h.e_phnum === 0) return [];
  const entsize = h.bits === 64 ? 56 : 32;
  if (h.e_phentsize < entsize || h.e_phnum > MAX_PHNUM) {
    throw new ElfFormatError(
      `invalid program header table (e_phentsize ${h.e_phentsize}, ` +
        `e_phnum ${h.e_phnum})`,
    );
  }
  const table = source.read(h.e_phoff, h.e_phnum * h.e_phentsize);
  if (table.length < h.e_phnum * h.e_phentsize) {
    throw new ElfFormatError("program header table extends past end of file");
  }
  const r = new ElfReader(h.bits, h.littleEndian);
  const out: ProgramHeader[] = [];
  for (let i = 0; i < h.e_phnum; i++) {
    const at = i * h.e_phentsize;
    if (h.bits === 64) {
      out.push({
        p_type: r.u32(table, at),
        p_flags: r.u32(table, at + 4),
        p_offset: r.u64(table, at + 8),
        p_vaddr: r.u64(table, at + 16),
        p_filesz: r.u64(table, at + 32),
        p_memsz: r.u64(table, at + 40),
      });
    } else {
      out.push({
        p_type: r.u32(table, at),
        p_offset: r.u32(table, at + 4),
        p_vaddr: r.u32(table, at + 8),
        p_filesz: r.u32(table, at + 16),
        p_memsz: r.u32(table, at + 20),
        p_flags: r.u32(table, at + 24),
      });
    }
  }
  return out;
}

/** Reads a NUL-terminated string of at most MAX_STRING bytes. */
function readCString(source: ByteSource, offset: number, limit: number) {
  const bytes = source.read(offset, Math.min(limit, MAX_STRING));
  const nul = bytes.indexOf(0);
  if (nul < 0) throw new ElfFormatError(`unterminated string at ${offset}`);
  return bytes.toString("utf8", 0, nul);
}

/** Maps a virtual address to a file offset through the PT_LOAD segments. */
function vaddrToOffset(loads: ProgramHeader[], vaddr: number): number | null {
  for (const p of loads) {
    if (vaddr >= p.p_vaddr && vaddr < p.p_vaddr + p.p_filesz) {
      return p.p_offset + (vaddr - p.p_vaddr);
    }
  }
  return null;
}

interface DynamicEntries {
  needed: number[];
  strtab: number | null;
  strsz: number;
  soname: number | null;
  rpath: number | null;
  runpath: number | null;
  flags1: number;
}

function readDynamicEntries(
  source: ByteSource,
  r: ElfReader,
  dyn: ProgramHeader,
): DynamicEntries {
  const entsize = r.bits === 64 ? 16 : 8;
  const table = source.read(dyn.p_offset, dyn.p_filesz);
  const out: DynamicEntries = {
    needed: [],
    strtab: null,
    strsz: 0,
    soname: null,
    rpath: null,
    runpath: null,
    flags1: 0,
  };
  if (table.length < dyn.p_filesz) {
    throw new ElfFormatError("PT_DYNAMIC extends past end of file");
  }
  // The loop is bounded by the segment size. ld.so would read past the
  // end of a table without DT_NULL, so such a table is malformed.
  let terminated = false;
  for (let at = 0; at + entsize <= table.length; at += entsize) {
    const tag = r.bits === 64 ? r.u64(table, at) : r.u32(table, at);
    const value = r.addr(table, at + entsize / 2);
    if (tag === DT_NULL) {
      terminated = true;
      break;
    }
    if (tag === DT_NEEDED) out.needed.push(value);
    else if (tag === DT_STRTAB) out.strtab = value;
    else if (tag === DT_STRSZ) out.strsz = value;
    else if (tag === DT_SONAME) out.soname = value;
    else if (tag === DT_RPATH) out.rpath = value;
    else if (tag === DT_RUNPATH) out.runpath = value;
    else if (tag === DT_FLAGS_1) out.flags1 = value;
  }
  if (!terminated) throw new ElfFormatError("PT_DYNAMIC has no DT_NULL");
  return out;
}

/** Parses header, PT_INTERP and the dynamic section of an ELF file. */
export function readElfInfo(source: ByteSource): ElfInfo {
  const h = readHeader(source);
  const phdrs = readProgramHeaders(source, h);
  const r = new ElfReader(h.bits, h.littleEndian);
  const ident: ElfIdent = {
    bits: h.bits,
    littleEndian: h.littleEndian,
    osabi: h.osabi,
    e_type: h.e_type,
    e_machine: h.e_machine,
    e_flags: h.e_flags,
  };
  const info: ElfInfo = {
    ...ident,
    interpreter: null,
    dynamic: false,
    needed: [],
    soname: null,
    rpath: null,
    runpath: null,
    pie: false,
  };
  const interp = phdrs.find((p) => p.p_type === PT_INTERP);
  if (interp) {
    info.interpreter = readCString(source, interp.p_offset, interp.p_filesz);
  }
  const dyn = phdrs.find((p) => p.p_type === PT_DYNAMIC);
  if (!dyn) return info;
  info.dynamic = true;
  const entries = readDynamicEntries(source, r, dyn);
  info.pie = (entries.flags1 & DF_1_PIE) !== 0;
  if (entries.strtab === null) return info;
  const loads = phdrs.filter((p) => p.p_type === PT_LOAD);
  const strtab = vaddrToOffset(loads, entries.strtab);
  if (strtab === null) {
    throw new ElfFormatError(
      `DT_STRTAB address 0x${entries.strtab.toString(16)} is in no PT_LOAD`,
    );
  }
  const str = (offset: number): string => {
    if (entries.strsz && offset >= entries.strsz) {
      throw new ElfFormatError(`dynamic string offset ${offset} past DT_STRSZ`);
    }
    const limit = entries.strsz ? entries.strsz - offset : MAX_STRING;
    return readCString(source, strtab + offset, limit);
  };
  info.needed = entries.needed.map(str);
  if (entries.soname !== null) info.soname = str(entries.soname);
  if (entries.rpath !== null) info.rpath = str(entries.rpath);
  if (entries.runpath !== null) info.runpath = str(entries.runpath);
  return info;
}

/**
 * Reads the ELF facts of the file at `path`. Returns null for a file that
 * is not regular or lacks the ELF magic. Throws ElfFormatError for a file
 * with the magic that cannot be parsed.
 */
export function readElfFile(path: string): ElfInfo | null {
  const source = fileSource(path);
  try {
    if (!source.isFile) return null;
    if (!hasElfMagic(source.read(0, 4))) return null;
    return readElfInfo(source);
  } finally {
    source.close();
  }
}

/** Reads the ELF facts of bytes in memory; null when they are no ELF. */
export function readElfBuffer(buffer: Buffer): ElfInfo | null {
  if (!hasElfMagic(buffer)) return null;
  return readElfInfo(bufferSource(buffer));
}

/** Whether two files may be loaded into one process, as ld.so checks it. */
export function compatibleIdent(a: ElfIdent, b: ElfIdent): boolean {
  const gnuOrNone = (abi: number) => (abi === 3 ? 0 : abi);
  return (
    a.bits === b.bits &&
    a.littleEndian === b.littleEndian &&
    a.e_machine === b.e_machine &&
    gnuOrNone(a.osabi) === gnuOrNone(b.osabi)
  );
}
