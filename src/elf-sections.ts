import {
  ElfFormatError,
  ElfReader,
  type ByteSource,
  type ElfHeader,
} from "./elf.js";

export const SHT_NULL = 0;
export const SHT_SYMTAB = 2;
export const SHT_STRTAB = 3;
export const SHT_RELA = 4;
export const SHT_HASH = 5;
export const SHT_NOBITS = 8;
export const SHT_REL = 9;
export const SHT_DYNSYM = 11;
export const SHT_GROUP = 17;
export const SHT_SYMTAB_SHNDX = 18;

export const STT_SECTION = 3;
export const STT_FILE = 4;

export const SHF_ALLOC = 0x2;
export const SHF_INFO_LINK = 0x40;

export const SHN_UNDEF = 0;
/** First reserved section index; real indices at or above it need SHN_XINDEX. */
export const SHN_LORESERVE = 0xff00;
/** The real index is stored elsewhere: section 0 or SHT_SYMTAB_SHNDX. */
export const SHN_XINDEX = 0xffff;

/** One entry of the section header table, with its name resolved. */
export interface SectionHeader {
  index: number;
  name: string;
  sh_name: number;
  sh_type: number;
  /** Low 32 bits of sh_flags; every generic flag lives there. */
  sh_flags: number;
  sh_offset: number;
  sh_size: number;
  sh_link: number;
  sh_info: number;
  sh_addralign: number;
  sh_entsize: number;
  /** The entry as stored, so unparsed fields such as sh_addr pass through. */
  raw: Buffer;
}

/** File range of one program header; only what layout checks need. */
export interface SegmentRange {
  p_type: number;
  p_offset: number;
  p_filesz: number;
}

/** The section header table after extended numbering is resolved. */
export interface SectionTable {
  sections: SectionHeader[];
  /** Index of the section name table, after SHN_XINDEX is resolved. */
  shstrndx: number;
  entsize: number;
}

/** Size of one section header: 40 bytes in ELF32, 64 in ELF64. */
export function shdrSize(bits: 32 | 64): number {
  return bits === 64 ? 64 : 40;
}

/** Size of one symbol table entry: 16 bytes in ELF32, 24 in ELF64. */
export function symSize(bits: 32 | 64): number {
  return bits === 64 ? 24 : 16;
}

/** Byte offsets of the section header fields for one ELF class. */
function shdrLayout(bits: 32 | 64) {
  const w = bits === 64 ? 8 : 4;
  return {
    sh_name: 0,
    sh_type: 4,
    sh_flags: 8,
    sh_addr: 8 + w,
    sh_offset: 8 + 2 * w,
    sh_size: 8 + 3 * w,
    sh_link: 8 + 4 * w,
    sh_info: 12 + 4 * w,
    sh_addralign: 16 + 4 * w,
    sh_entsize: 16 + 5 * w,
  };
}

/** Writes fixed-width integers in one ELF file's class and byte order. */
export class ElfWriter {
  constructor(
    readonly bits: 32 | 64,
    readonly littleEndian: boolean,
  ) {}

  u16(b: Buffer, at: number, v: number): void {
    if (this.littleEndian) b.writeUInt16LE(v, at);
    else b.writeUInt16BE(v, at);
  }

  u32(b: Buffer, at: number, v: number): void {
    if (this.littleEndian) b.writeUInt32LE(v, at);
    else b.writeUInt32BE(v, at);
  }

  u64(b: Buffer, at: number, v: number): void {
    if (this.littleEndian) b.writeBigUInt64LE(BigInt(v), at);
    else b.writeBigUInt64BE(BigInt(v), at);
  }

  /** Writes an address-sized field: 4 bytes in ELF32, 8 in ELF64. */
  addr(b: Buffer, at: number, v: number): void {
    if (this.bits === 64) this.u64(b, at, v);
    else this.u32(b, at, v);
  }
}

/** Reads the low 32 bits of an address-sized field without range checks. */
function low32(r: ElfReader, b: Buffer, at: number): number {
  if (r.bits === 32 || r.littleEndian) return r.u32(b, at);
  return r.u32(b, at + 4);
}

function parseSectionHeader(
  r: ElfReader,
  raw: Buffer,
  index: number,
): SectionHeader {
  const f = shdrLayout(r.bits);
  return {
    index,
    name: "",
    sh_name: r.u32(raw, f.sh_name),
    sh_type: r.u32(raw, f.sh_type),
    sh_flags: low32(r, raw, f.sh_flags),
    sh_offset: r.addr(raw, f.sh_offset),
    sh_size: r.addr(raw, f.sh_size),
    sh_link: r.u32(raw, f.sh_link),
    sh_info: r.u32(raw, f.sh_info),
    sh_addralign: r.addr(raw, f.sh_addralign),
    sh_entsize: r.addr(raw, f.sh_entsize),
    raw,
  };
}

/**
 * Encodes `s` as a section header entry: the fields of `s` over a copy of
 * `s.raw`, so the fields not modelled here keep their stored bytes.
 */
export function encodeSectionHeader(
  w: ElfWriter,
  s: SectionHeader,
): Buffer {
  const f = shdrLayout(w.bits);
  const out = Buffer.from(s.raw);
  w.u32(out, f.sh_name, s.sh_name);
  w.u32(out, f.sh_type, s.sh_type);
  w.addr(out, f.sh_offset, s.sh_offset);
  w.addr(out, f.sh_size, s.sh_size);
  w.u32(out, f.sh_link, s.sh_link);
  w.u32(out, f.sh_info, s.sh_info);
  return out;
}

function readExact(source: ByteSource, offset: number, length: number) {
  const bytes = source.read(offset, length);
  if (bytes.length < length) {
    throw new ElfFormatError(
      `${length} bytes at offset ${offset} extend past end of file ` +
        `(${source.size} bytes)`,
    );
  }
  return bytes;
}

/** Reads the NUL-terminated name at `offset` in a loaded string table. */
export function stringAt(table: Buffer, offset: number): string {
  if (offset >= table.length) {
    throw new ElfFormatError(`string offset ${offset} past end of table`);
  }
  const nul = table.indexOf(0, offset);
  if (nul < 0) throw new ElfFormatError(`unterminated string at ${offset}`);
  return table.toString("latin1", offset, nul);
}

/**
 * Reads the section header table and the section names. Handles extended
 * numbering: with 0xff00 sections or more, e_shnum is 0 and the count is
 * section 0's sh_size, and e_shstrndx is SHN_XINDEX with the index in
 * section 0's sh_link (gABI, "Sections"). Returns null when the file has
 * no section header table.
 */
export function readSectionTable(
  source: ByteSource,
  h: ElfHeader,
): SectionTable | null {
  if (h.e_shoff === 0) return null;
  const entsize = shdrSize(h.bits);
  if (h.e_shentsize !== entsize) {
    throw new ElfFormatError(`invalid e_shentsize ${h.e_shentsize}`);
  }
  const r = new ElfReader(h.bits, h.littleEndian);
  const first = parseSectionHeader(
    r,
    readExact(source, h.e_shoff, entsize),
    0,
  );
  const count = h.e_shnum === 0 ? first.sh_size : h.e_shnum;
  const shstrndx =
    h.e_shstrndx === SHN_XINDEX ? first.sh_link : h.e_shstrndx;
  if (count === 0) return null;
  if (count * entsize > source.size - h.e_shoff) {
    throw new ElfFormatError(
      `section header table (${count} entries at ${h.e_shoff}) ` +
        `extends past end of file`,
    );
  }
  const table = readExact(source, h.e_shoff, count * entsize);
  const sections: SectionHeader[] = [];
  for (let i = 0; i < count; i++) {
    const raw = table.subarray(i * entsize, (i + 1) * entsize);
    sections.push(parseSectionHeader(r, raw, i));
  }
  if (shstrndx === SHN_UNDEF || shstrndx >= count) {
    throw new ElfFormatError(`invalid section name table index ${shstrndx}`);
  }
  nameSections(source, sections, sections[shstrndx]);
  return { sections, shstrndx, entsize };
}

function nameSections(
  source: ByteSource,
  sections: SectionHeader[],
  shstrtab: SectionHeader,
): void {
  if (shstrtab.sh_type === SHT_NOBITS) {
    throw new ElfFormatError("section name table has no file contents");
  }
  const names = readExact(source, shstrtab.sh_offset, shstrtab.sh_size);
  for (const s of sections) {
    if (s.index !== 0) s.name = stringAt(names, s.sh_name);
  }
}

/** Reads the file range of every program header. */
export function readSegmentRanges(
  source: ByteSource,
  h: ElfHeader,
): SegmentRange[] {
  if (h.e_phnum === 0 || h.e_phoff === 0) return [];
  const entsize = h.bits === 64 ? 56 : 32;
  if (h.e_phentsize !== entsize) {
    throw new ElfFormatError(`invalid e_phentsize ${h.e_phentsize}`);
  }
  const table = readExact(source, h.e_phoff, h.e_phnum * entsize);
  const r = new ElfReader(h.bits, h.littleEndian);
  const out: SegmentRange[] = [];
  for (let at = 0; at < table.length; at += entsize) {
    out.push({
      p_type: r.u32(table, at),
      p_offset: r.addr(table, h.bits === 64 ? at + 8 : at + 4),
      p_filesz: r.addr(table, h.bits === 64 ? at + 32 : at + 16),
    });
  }
  return out;
}

/**
 * Builds an ELF string table: offset 0 is the empty string, equal strings
 * are stored once, and a string that ends another stored string points
 * into it, as linkers merge suffixes.
 */
export function buildStringTable(names: Iterable<string>): {
  data: Buffer;
  offsets: Map<string, number>;
} {
  const reversed = [...new Set(names)]
    .filter((n) => n !== "")
    .map((n) => [...n].reverse().join(""));
  // In descending order of the reversed strings, a string that is a
  // suffix of others comes right after the closest one that ends with it.
  reversed.sort((a, b) => (a < b ? 1 : a > b ? -1 : 0));
  const offsets = new Map<string, number>([["", 0]]);
  const chunks: Buffer[] = [Buffer.alloc(1)];
  let size = 1;
  let previous = "";
  let previousEnd = 0;
  for (const rev of reversed) {
    const name = [...rev].reverse().join("");
    if (previous.startsWith(rev)) {
      offsets.set(name, previousEnd - Buffer.byteLength(name, "latin1"));
      continue;
    }
    const bytes = Buffer.from(name, "latin1");
    offsets.set(name, size);
    chunks.push(bytes, Buffer.alloc(1));
    size += bytes.length + 1;
    previous = rev;
    previousEnd = size - 1;
  }
  return { data: Buffer.concat(chunks, size), offsets };
}

export const EM_MIPS = 8;

const SYM64_LAYOUT = { st_name: 0, st_info: 4, st_shndx: 6 } as const;
const SYM32_LAYOUT = { st_name: 0, st_info: 12, st_shndx: 14 } as const;

/**
 * Field offsets of one symbol table entry (Elf32_Sym or Elf64_Sym). The
 * objects are shared because callers look them up once per symbol.
 */
export function symLayout(bits: 32 | 64) {
  return bits === 64 ? SYM64_LAYOUT : SYM32_LAYOUT;
}

/** Size of one relocation entry of `sh_type` SHT_REL or SHT_RELA. */
export function relSize(bits: 32 | 64, sh_type: number): number {
  const rel = bits === 64 ? 16 : 8;
  return sh_type === SHT_RELA ? rel + rel / 2 : rel;
}

/**
 * Reads and writes the symbol index inside r_info. ELF32 keeps it in the
 * top 24 bits of a 32-bit word, ELF64 in the top 32 bits of a 64-bit word.
 * MIPS64 stores r_sym as the first 32-bit word whatever the byte order
 * (binutils include/elf/mips.h, Elf64_Mips_External_Rel).
 */
export class RelocationSymbols {
  private readonly r: ElfReader;
  private readonly w: ElfWriter;

  constructor(
    readonly bits: 32 | 64,
    readonly littleEndian: boolean,
    readonly e_machine: number,
  ) {
    this.r = new ElfReader(bits, littleEndian);
    this.w = new ElfWriter(bits, littleEndian);
  }

  private symAt(entry: number): number {
    if (this.bits === 32) return entry + 4;
    const highWordFirst = !this.littleEndian || this.e_machine === EM_MIPS;
    return highWordFirst ? entry + 8 : entry + 12;
  }

  get(b: Buffer, entry: number): number {
    const v = this.r.u32(b, this.symAt(entry));
    return this.bits === 32 ? v >>> 8 : v;
  }

  set(b: Buffer, entry: number, sym: number): void {
    const at = this.symAt(entry);
    if (this.bits === 64) return this.w.u32(b, at, sym);
    const type = this.r.u32(b, at) & 0xff;
    this.w.u32(b, at, ((sym << 8) | type) >>> 0);
  }
}
