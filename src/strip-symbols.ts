/**
 * Symbol table rewriting for removed sections. It renumbers st_shndx,
 * drops the symbols of removed sections, and renumbers the symbol indices
 * that relocations and groups store.
 */
import type { ElfHeader } from "./elf.js";
import {
  ElfWriter,
  SHN_LORESERVE,
  SHN_UNDEF,
  SHN_XINDEX,
  SHT_DYNSYM,
  SHT_GROUP,
  SHT_REL,
  SHT_RELA,
  SHT_STRTAB,
  SHT_SYMTAB,
  SHT_SYMTAB_SHNDX,
  STT_FILE,
  STT_SECTION,
  RelocationSymbols,
  buildStringTable,
  relSize,
  stringAt,
  symLayout,
  symSize,
  type SectionHeader,
  type SectionTable,
} from "./elf-sections.js";
import { UnsafeElfError } from "./strip-errors.js";
import type { StripInput } from "./strip-io.js";
import { hasBytes, type Layout } from "./strip-layout.js";

/** New contents and sh_info values of sections whose bytes change. */
export interface SymbolEdits {
  /** New bytes by old section index. */
  contents: Map<number, Buffer>;
  /** New sh_info by old section index. */
  info: Map<number, number>;
}

/** Everything the symbol table rewrite needs to know about the file. */
export interface StripContext {
  input: StripInput;
  h: ElfHeader;
  w: ElfWriter;
  table: SectionTable;
  layout: Layout;
  removed: Set<number>;
  map: Int32Array;
  edits: SymbolEdits;
  keepSymbols: boolean;
}

/** One symbol table with its SHT_SYMTAB_SHNDX companion, if any. */
interface SymbolTable {
  section: SectionHeader;
  bytes: Buffer;
  count: number;
  shndx: SectionHeader | undefined;
  /** Extended section indices, parallel to the symbols, when present. */
  xindex: Buffer | null;
}

function u32At(w: ElfWriter, b: Buffer, at: number): number {
  return w.littleEndian ? b.readUInt32LE(at) : b.readUInt32BE(at);
}

function loadSymbolTable(ctx: StripContext, s: SectionHeader): SymbolTable {
  const entsize = symSize(ctx.h.bits);
  if (s.sh_entsize !== entsize || s.sh_size % entsize !== 0) {
    throw new UnsafeElfError(
      "STRIP_MALFORMED",
      `symbol table ${s.index} (${s.name}) has invalid entry size`,
    );
  }
  const count = s.sh_size / entsize;
  const shndx = ctx.table.sections.find(
    (t) =>
      t.sh_type === SHT_SYMTAB_SHNDX &&
      t.sh_link === s.index &&
      !ctx.removed.has(t.index),
  );
  let xindex: Buffer | null = null;
  if (shndx) {
    if (shndx.sh_size !== count * 4) {
      throw new UnsafeElfError(
        "STRIP_MALFORMED",
        `extended index section ${shndx.index} does not match its symbols`,
      );
    }
    xindex = Buffer.from(ctx.input.read(shndx.sh_offset, shndx.sh_size));
  }
  const bytes = Buffer.from(ctx.input.read(s.sh_offset, s.sh_size));
  return { section: s, bytes, count, shndx, xindex };
}

/** Returns the section a symbol is defined in, or -1 for none. */
function symbolSection(ctx: StripContext, t: SymbolTable, j: number) {
  const at = j * symSize(ctx.h.bits) + symLayout(ctx.h.bits).st_shndx;
  const raw = ctx.w.littleEndian
    ? t.bytes.readUInt16LE(at)
    : t.bytes.readUInt16BE(at);
  let index = raw;
  if (raw === SHN_XINDEX) {
    if (!t.xindex) {
      throw new UnsafeElfError(
        "STRIP_MALFORMED",
        `symbol ${j} uses SHN_XINDEX without a SHT_SYMTAB_SHNDX section`,
      );
    }
    index = u32At(ctx.w, t.xindex, 4 * j);
  } else if (raw === SHN_UNDEF || raw >= SHN_LORESERVE) {
    return -1;
  }
  if (index >= ctx.table.sections.length) {
    throw new UnsafeElfError(
      "STRIP_MALFORMED",
      `symbol ${j} of section ${t.section.index} refers to missing ` +
        `section ${index}`,
    );
  }
  return index;
}

/** Stores a new section index for symbol `j`, as SHN_XINDEX when needed. */
function setSymbolSection(
  ctx: StripContext,
  bytes: Buffer,
  xindex: Buffer | null,
  j: number,
  index: number,
) {
  const at = j * symSize(ctx.h.bits) + symLayout(ctx.h.bits).st_shndx;
  const extended = index >= SHN_LORESERVE;
  ctx.w.u16(bytes, at, extended ? SHN_XINDEX : index);
  if (xindex) ctx.w.u32(xindex, 4 * j, extended ? index : 0);
}

/**
 * Renumbers st_shndx in every symbol table and drops the symbols of
 * removed sections (section symbols and COMDAT group signatures of an
 * object file), then renumbers the symbol indices that relocations and
 * groups store. Fills `ctx.edits`.
 */
export function rewriteSymbols(ctx: StripContext): void {
  for (const s of ctx.table.sections) {
    const isSymbols = s.sh_type === SHT_SYMTAB || s.sh_type === SHT_DYNSYM;
    if (!isSymbols || ctx.removed.has(s.index) || s.sh_size === 0) continue;
    rewriteSymbolTable(ctx, loadSymbolTable(ctx, s));
  }
}

/** The STT_* type of symbol `j`. */
function symbolType(ctx: StripContext, t: SymbolTable, j: number): number {
  const at = j * symSize(ctx.h.bits) + symLayout(ctx.h.bits).st_info;
  return t.bytes[at] & 0xf;
}

/** Marks the symbols that kept relocations and groups of `t` refer to. */
function referencedSymbols(ctx: StripContext, t: SymbolTable): Uint8Array {
  const used = new Uint8Array(t.count);
  const mark = (sym: number) => {
    if (sym < t.count) used[sym] = 1;
  };
  const rel = new RelocationSymbols(
    ctx.h.bits,
    ctx.h.littleEndian,
    ctx.h.e_machine,
  );
  for (const s of ctx.table.sections) {
    if (s.sh_link !== t.section.index || ctx.removed.has(s.index)) continue;
    if (s.sh_type === SHT_GROUP) mark(s.sh_info);
    if (s.sh_type !== SHT_REL && s.sh_type !== SHT_RELA) continue;
    const entsize = relSize(ctx.h.bits, s.sh_type);
    const bytes = ctx.input.read(s.sh_offset, s.sh_size);
    for (let at = 0; at + entsize <= bytes.length; at += entsize) {
      mark(rel.get(bytes, at));
    }
  }
  return used;
}

/**
 * Marks the symbols that `strip --strip-debug` (binutils 2.40) drops from
 * .symtab besides those of removed sections: STT_FILE symbols, and
 * STT_SECTION symbols that no relocation or group refers to.
 */
function markDebugSymbols(ctx: StripContext, t: SymbolTable, drop: Uint8Array) {
  if (ctx.keepSymbols || t.section.sh_type !== SHT_SYMTAB) return;
  let used: Uint8Array | null = null;
  for (let j = 1; j < t.count; j++) {
    const type = symbolType(ctx, t, j);
    if (type === STT_FILE) drop[j] = 1;
    if (type !== STT_SECTION) continue;
    used ??= referencedSymbols(ctx, t);
    if (!used[j]) drop[j] = 1;
  }
}

function rewriteSymbolTable(ctx: StripContext, t: SymbolTable): void {
  const sections = new Int32Array(t.count).fill(-1);
  const drop = new Uint8Array(t.count);
  markDebugSymbols(ctx, t, drop);
  let changed = false;
  let dropped = 0;
  for (let j = 1; j < t.count; j++) {
    const index = symbolSection(ctx, t, j);
    sections[j] = index;
    if (drop[j]) {
      dropped++;
    } else if (index < 0) {
      continue;
    } else if (ctx.removed.has(index)) {
      drop[j] = 1;
      dropped++;
    } else if (ctx.map[index] !== index) {
      changed = true;
    }
  }
  if (!changed && dropped === 0) return;
  if (ctx.layout.inSegment[t.section.index]) {
    throw new UnsafeElfError(
      "STRIP_UNSUPPORTED",
      `symbol table ${t.section.index} (${t.section.name}) lies in a ` +
        `segment but refers to renumbered sections`,
    );
  }
  if (dropped === 0) {
    for (let j = 0; j < t.count; j++) {
      const index = sections[j];
      if (index >= 0) setSymbolSection(ctx, t.bytes, t.xindex, j, ctx.map[index]);
    }
    ctx.edits.contents.set(t.section.index, t.bytes);
    if (t.shndx && t.xindex) ctx.edits.contents.set(t.shndx.index, t.xindex);
    return;
  }
  compactSymbolTable(ctx, t, sections, drop);
}

/** Writes the symbol table without the symbols of removed sections. */
function compactSymbolTable(
  ctx: StripContext,
  t: SymbolTable,
  sections: Int32Array,
  drop: Uint8Array,
): void {
  const entsize = symSize(ctx.h.bits);
  const renumber = new Int32Array(t.count).fill(-1);
  let kept = 0;
  let locals = 0;
  for (let j = 0; j < t.count; j++) {
    if (drop[j]) continue;
    renumber[j] = kept++;
    if (j < t.section.sh_info) locals++;
  }
  const bytes = Buffer.alloc(kept * entsize);
  const xindex = t.xindex ? Buffer.alloc(kept * 4) : null;
  for (let j = 0; j < t.count; j++) {
    const k = renumber[j];
    if (k < 0) continue;
    t.bytes.copy(bytes, k * entsize, j * entsize, (j + 1) * entsize);
    const index = sections[j];
    if (index >= 0) setSymbolSection(ctx, bytes, xindex, k, ctx.map[index]);
  }
  rebuildSymbolNames(ctx, t, drop, bytes);
  ctx.edits.contents.set(t.section.index, bytes);
  ctx.edits.info.set(t.section.index, locals);
  if (t.shndx && xindex) ctx.edits.contents.set(t.shndx.index, xindex);
  renumberSymbolUsers(ctx, t, renumber);
}

/**
 * Rewrites the string table of a compacted symbol table so it holds only
 * the kept names, when no other section uses that string table.
 */
function rebuildSymbolNames(
  ctx: StripContext,
  t: SymbolTable,
  drop: Uint8Array,
  bytes: Buffer,
): void {
  const symtab = t.section;
  const { sections, shstrndx } = ctx.table;
  const strtab = sections[symtab.sh_link];
  if (
    !strtab ||
    strtab.index === 0 ||
    strtab.index === shstrndx ||
    strtab.sh_type !== SHT_STRTAB ||
    !hasBytes(strtab) ||
    ctx.layout.inSegment[strtab.index] ||
    strtab.sh_offset < ctx.layout.prefixEnd
  ) {
    return;
  }
  const shared = sections.some(
    (s) =>
      s.index !== symtab.index &&
      !ctx.removed.has(s.index) &&
      s.sh_link === strtab.index,
  );
  if (shared) return;
  const old = ctx.input.read(strtab.sh_offset, strtab.sh_size);
  const entsize = symSize(ctx.h.bits);
  let freed = 0;
  for (let j = 1; j < t.count; j++) {
    const offset = drop[j] ? u32At(ctx.w, t.bytes, j * entsize) : 0;
    if (offset > 0 && offset < old.length) {
      freed += old.indexOf(0, offset) - offset + 1;
    }
  }
  // Sorting a large table costs more than the few bytes it would save,
  // so it stays as it is when the dropped names are under 1% of it.
  if (freed * 100 < old.length) return;
  const names: string[] = [];
  for (let at = 0; at < bytes.length; at += entsize) {
    names.push(stringAt(old, u32At(ctx.w, bytes, at)));
  }
  const built = buildStringTable(names);
  names.forEach((name, k) => {
    ctx.w.u32(bytes, k * entsize, built.offsets.get(name) ?? 0);
  });
  ctx.edits.contents.set(strtab.index, built.data);
}

/** Renumbers symbol indices in the relocations and groups of `t`. */
function renumberSymbolUsers(
  ctx: StripContext,
  t: SymbolTable,
  renumber: Int32Array,
): void {
  const symbol = (sym: number, user: SectionHeader) => {
    const k = sym < renumber.length ? renumber[sym] : -1;
    if (k < 0) {
      throw new UnsafeElfError(
        "STRIP_UNSUPPORTED",
        `section ${user.index} (${user.name}) refers to symbol ${sym} ` +
          `of a removed section`,
      );
    }
    return k;
  };
  for (const user of ctx.table.sections) {
    if (user.sh_link !== t.section.index || ctx.removed.has(user.index)) {
      continue;
    }
    if (user.sh_type === SHT_SYMTAB_SHNDX) continue;
    if (user.sh_type === SHT_GROUP) {
      ctx.edits.info.set(user.index, symbol(user.sh_info, user));
    } else if (user.sh_type === SHT_REL || user.sh_type === SHT_RELA) {
      renumberRelocations(ctx, user, (sym) => symbol(sym, user));
    } else {
      throw new UnsafeElfError(
        "STRIP_UNSUPPORTED",
        `section ${user.index} (${user.name}) of type ${user.sh_type} ` +
          `uses symbol indices that stripping would change`,
      );
    }
  }
}

function renumberRelocations(
  ctx: StripContext,
  s: SectionHeader,
  symbol: (sym: number) => number,
): void {
  const entsize = relSize(ctx.h.bits, s.sh_type);
  if (s.sh_entsize !== entsize || s.sh_size % entsize !== 0) {
    throw new UnsafeElfError(
      "STRIP_MALFORMED",
      `relocation section ${s.index} (${s.name}) has invalid entry size`,
    );
  }
  if (ctx.layout.inSegment[s.index]) {
    throw new UnsafeElfError(
      "STRIP_UNSUPPORTED",
      `relocation section ${s.index} (${s.name}) lies in a segment but ` +
        `its symbols are renumbered`,
    );
  }
  const bytes = Buffer.from(ctx.input.read(s.sh_offset, s.sh_size));
  const rel = new RelocationSymbols(
    ctx.h.bits,
    ctx.h.littleEndian,
    ctx.h.e_machine,
  );
  for (let at = 0; at < bytes.length; at += entsize) {
    const sym = rel.get(bytes, at);
    if (sym !== 0) rel.set(bytes, at, symbol(sym));
  }
  ctx.edits.contents.set(s.index, bytes);
}
