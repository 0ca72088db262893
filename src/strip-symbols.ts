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
import { readCopy, type StripInput } from "./strip-io.js";
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

/**
 * One symbol table with its SHT_SYMTAB_SHNDX companion, if any. The
 * buffers may be views of the input, so copy them before writing.
 */
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
    xindex = ctx.input.read(shndx.sh_offset, shndx.sh_size);
  }
  const bytes = ctx.input.read(s.sh_offset, s.sh_size);
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

/** The section of each symbol of one table and the symbols that go. */
interface SymbolChanges {
  /** Section of each symbol, -1 for none. */
  sections: Int32Array;
  /** 1 for each symbol to drop. */
  drop: Uint8Array;
  dropped: number;
  /** Whether some kept symbol's section gets a new index. */
  renumbered: boolean;
}

/**
 * Decodes st_shndx of every symbol and marks the symbols to drop. Those
 * are the symbols of removed sections, plus what `strip --strip-debug`
 * (binutils 2.40) drops from .symtab: STT_FILE symbols, and STT_SECTION
 * symbols that no relocation or group refers to. All of it happens in one
 * loop that decodes the common st_shndx values itself, because the loop
 * runs once per symbol, mostly before the JIT has compiled it.
 */
function classifySymbols(ctx: StripContext, t: SymbolTable): SymbolChanges {
  const sections = new Int32Array(t.count).fill(-1);
  const drop = new Uint8Array(t.count);
  const entsize = symSize(ctx.h.bits);
  const { st_info, st_shndx } = symLayout(ctx.h.bits);
  const dropDebug = !ctx.keepSymbols && t.section.sh_type === SHT_SYMTAB;
  const sectionCount = ctx.table.sections.length;
  const littleEndian = ctx.w.littleEndian;
  const { bytes: b, count } = t;
  const map = ctx.map;
  let used: Uint8Array | null = null;
  let dropped = 0;
  let renumbered = false;

  for (let j = 1; j < count; j++) {
    const at = j * entsize + st_shndx;
    const raw = littleEndian
      ? b[at] | (b[at + 1] << 8)
      : (b[at] << 8) | b[at + 1];
    const ordinary = raw !== SHN_UNDEF && raw < SHN_LORESERVE;
    let index = -1;
    if (ordinary && raw < sectionCount) {
      index = raw;
    } else if (ordinary || raw === SHN_XINDEX) {
      index = symbolSection(ctx, t, j);
    }
    sections[j] = index;

    if (dropDebug) {
      const type = b[j * entsize + st_info] & 0xf;
      if (type === STT_FILE) drop[j] = 1;
      if (type === STT_SECTION) {
        used ??= referencedSymbols(ctx, t);
        if (!used[j]) drop[j] = 1;
      }
    }

    if (drop[j]) {
      dropped++;
    } else if (index < 0) {
      continue;
    } else if (map[index] < 0) {
      drop[j] = 1;
      dropped++;
    } else if (map[index] !== index) {
      renumbered = true;
    }
  }
  return { sections, drop, dropped, renumbered };
}

function rewriteSymbolTable(ctx: StripContext, t: SymbolTable): void {
  const changes = classifySymbols(ctx, t);
  const { sections, dropped, renumbered } = changes;
  if (!renumbered && dropped === 0) return;
  if (ctx.layout.inSegment[t.section.index]) {
    throw new UnsafeElfError(
      "STRIP_UNSUPPORTED",
      `symbol table ${t.section.index} (${t.section.name}) lies in a ` +
        `segment but refers to renumbered sections`,
    );
  }
  if (dropped === 0) {
    const bytes = Buffer.from(t.bytes);
    const xindex = t.xindex && Buffer.from(t.xindex);
    storeSymbolSections(ctx, bytes, xindex, sections, null);
    ctx.edits.contents.set(t.section.index, bytes);
    if (t.shndx && xindex) ctx.edits.contents.set(t.shndx.index, xindex);
    return;
  }
  compactSymbolTable(ctx, t, changes);
}

/** Writes the symbol table without the symbols of removed sections. */
function compactSymbolTable(
  ctx: StripContext,
  t: SymbolTable,
  changes: SymbolChanges,
): void {
  const { sections, drop, dropped, renumbered } = changes;
  const entsize = symSize(ctx.h.bits);
  const { bytes, renumber, droppedSymbols } = compactEntries(
    t,
    entsize,
    drop,
    dropped,
  );
  let locals = Math.min(t.section.sh_info, t.count);
  for (const j of droppedSymbols) if (j < t.section.sh_info) locals--;
  const xindex = t.xindex ? Buffer.alloc((t.count - dropped) * 4) : null;
  if (renumbered || xindex) {
    storeSymbolSections(ctx, bytes, xindex, sections, renumber);
  }
  rebuildSymbolNames(ctx, t, droppedSymbols, bytes);
  ctx.edits.contents.set(t.section.index, bytes);
  ctx.edits.info.set(t.section.index, locals);
  if (t.shndx && xindex) ctx.edits.contents.set(t.shndx.index, xindex);
  renumberSymbolUsers(ctx, t, renumber);
}

/**
 * Writes the renumbered section of every kept symbol into `bytes`, where
 * symbol j sits at `renumber[j]`, or at j when `renumber` is null. Without
 * an extended index table an unchanged index is already in place.
 */
function storeSymbolSections(
  ctx: StripContext,
  bytes: Buffer,
  xindex: Buffer | null,
  sections: Int32Array,
  renumber: Int32Array | null,
): void {
  for (let j = 0; j < sections.length; j++) {
    const k = renumber ? renumber[j] : j;
    const index = sections[j];
    if (k < 0 || index < 0) continue;
    const newIndex = ctx.map[index];
    if (newIndex !== index || xindex) {
      setSymbolSection(ctx, bytes, xindex, k, newIndex);
    }
  }
}

/**
 * Copies the entries of `t` that `drop` keeps into a new buffer. Returns
 * it with the new index of each symbol, -1 for a dropped one, and the
 * dropped symbols in order. Entries move in runs by copyWithin(), since
 * most symbols stay and a Buffer.copy() call per entry would dominate.
 */
function compactEntries(
  t: SymbolTable,
  entsize: number,
  drop: Uint8Array,
  dropped: number,
) {
  const renumber = new Int32Array(t.count).fill(-1);
  const droppedSymbols = new Int32Array(dropped);
  const out = Buffer.allocUnsafe(t.bytes.length);
  out.set(t.bytes);
  let kept = 0;
  let runStart = 0;
  for (let j = 0; j <= t.count; j++) {
    if (j < t.count && !drop[j]) {
      renumber[j] = kept++;
      continue;
    }
    const newStart = kept - (j - runStart);
    if (j > runStart && newStart !== runStart) {
      out.copyWithin(newStart * entsize, runStart * entsize, j * entsize);
    }
    if (j < t.count) droppedSymbols[j - kept] = j;
    runStart = j + 1;
  }
  const bytes = out.subarray(0, kept * entsize);
  return { bytes, renumber, droppedSymbols };
}

/**
 * Rewrites the string table of a compacted symbol table so it holds only
 * the kept names, when no other section uses that string table.
 */
function rebuildSymbolNames(
  ctx: StripContext,
  t: SymbolTable,
  droppedSymbols: Int32Array,
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
  for (const j of droppedSymbols) {
    const offset = u32At(ctx.w, t.bytes, j * entsize);
    if (offset > 0 && offset < old.length) {
      // The typed array method skips the argument handling that Buffer's
      // indexOf() adds to each call.
      freed += Uint8Array.prototype.indexOf.call(old, 0, offset) - offset + 1;
    }
  }
  // Sorting a large table costs more than the few bytes it would save,
  // so it stays as it is when the dropped names are under 1% of it. The
  // bytes just read become its contents, so the output does not read the
  // table a second time.
  if (freed * 100 < old.length) {
    ctx.edits.contents.set(strtab.index, old);
    return;
  }
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
  const bytes = readCopy(ctx.input, s.sh_offset, s.sh_size);
  const rel = new RelocationSymbols(
    ctx.h.bits,
    ctx.h.littleEndian,
    ctx.h.e_machine,
  );
  let changed = false;
  for (let at = 0; at < bytes.length; at += entsize) {
    const sym = rel.get(bytes, at);
    if (sym === 0 || symbol(sym) === sym) continue;
    changed = true;
    rel.set(bytes, at, symbol(sym));
  }
  if (!changed) return;
  // A static binary's .rela.plt is loaded, so its bytes must stay. That
  // is safe only while none of its symbol indices changes, as with
  // IRELATIVE relocations, which use symbol 0.
  if (ctx.layout.inSegment[s.index]) {
    throw new UnsafeElfError(
      "STRIP_UNSUPPORTED",
      `relocation section ${s.index} (${s.name}) lies in a segment but ` +
        `its symbols are renumbered`,
    );
  }
  ctx.edits.contents.set(s.index, bytes);
}
