/**
 * Strip planning: the sections that go, the offsets of the kept ones, and
 * the new ELF header and section header table.
 */
import { readHeader, type ElfHeader } from "./elf.js";
import {
  ElfWriter,
  SHF_ALLOC,
  SHF_INFO_LINK,
  SHN_LORESERVE,
  SHN_XINDEX,
  SHT_GROUP,
  SHT_REL,
  SHT_RELA,
  buildStringTable,
  encodeSectionHeader,
  readSectionTable,
  readSegmentRanges,
  type SectionHeader,
  type SectionTable,
} from "./elf-sections.js";
import { UnsafeElfError } from "./strip-errors.js";
import type { BlobOp, CopyOp, StripInput, StripPlan } from "./strip-io.js";
import {
  checkSectionBounds,
  checkSegments,
  hasBytes,
  isMovable,
  layoutOf,
  placeAfter,
  type Layout,
} from "./strip-layout.js";
import {
  rewriteSymbols,
  type StripContext,
  type SymbolEdits,
} from "./strip-symbols.js";

/** The section facts a removal predicate may look at. */
export type SectionInfo = Readonly<
  Pick<SectionHeader, "index" | "name" | "sh_type" | "sh_flags" | "sh_size">
>;

/** Options of planStrip. StripOptions adds the warning options. */
export interface PlanOptions {
  /**
   * Returns true for a section to remove. Defaults to isDebugSection.
   * Sections with SHF_ALLOC, sections inside a segment and the section
   * name table are kept whatever it returns.
   */
  predicate?: (section: SectionInfo) => boolean;
  /**
   * Keeps STT_FILE symbols and unused STT_SECTION symbols in .symtab.
   * By default they go, as with `strip --strip-debug`; nm lists neither.
   */
  keepSymbols?: boolean;
}

/**
 * Returns true for the sections `strip --strip-debug` is meant to drop:
 * DWARF (`.debug_*`), compressed DWARF (`.zdebug_*`) and `.comment`.
 */
export function isDebugSection(section: SectionInfo): boolean {
  const { name } = section;
  return (
    name.startsWith(".debug_") ||
    name.startsWith(".zdebug_") ||
    name === ".comment"
  );
}

/** Reads the member indices of a SHT_GROUP section after its flag word. */
function groupMembers(input: StripInput, w: ElfWriter, s: SectionHeader) {
  if (s.sh_size < 4 || s.sh_size % 4 !== 0) {
    throw new UnsafeElfError(
      "STRIP_MALFORMED",
      `group section ${s.index} has invalid size ${s.sh_size}`,
    );
  }
  const bytes = input.read(s.sh_offset, s.sh_size);
  const read = (at: number) =>
    w.littleEndian ? bytes.readUInt32LE(at) : bytes.readUInt32BE(at);
  const members: number[] = [];
  for (let at = 4; at < bytes.length; at += 4) members.push(read(at));
  return { flags: read(0), members };
}

/**
 * Chooses the sections to remove: the predicate's picks that are neither
 * allocated nor inside a segment, and relocation sections for removed
 * sections. planGroups() adds the groups left without members.
 */
function chooseRemoved(
  table: SectionTable,
  layout: Layout,
  predicate: (s: SectionInfo) => boolean,
): Set<number> {
  const removable = (s: SectionHeader) =>
    s.index !== 0 &&
    s.index !== table.shstrndx &&
    (s.sh_flags & SHF_ALLOC) === 0 &&
    !layout.inSegment[s.index];
  const removed = new Set<number>();
  for (const s of table.sections) {
    if (removable(s) && predicate(s)) removed.add(s.index);
  }
  for (const s of table.sections) {
    const isReloc = s.sh_type === SHT_REL || s.sh_type === SHT_RELA;
    if (isReloc && removed.has(s.sh_info) && removable(s)) {
      removed.add(s.index);
    }
  }
  return removed;
}

/** Maps old section indices to new ones; -1 marks a removed section. */
function indexMap(count: number, removed: Set<number>): Int32Array {
  const map = new Int32Array(count);
  let next = 0;
  for (let i = 0; i < count; i++) map[i] = removed.has(i) ? -1 : next++;
  return map;
}

/** Encodes group contents with member indices renumbered. */
function encodeGroup(w: ElfWriter, flags: number, members: number[]) {
  const data = Buffer.alloc(4 * (members.length + 1));
  w.u32(data, 0, flags);
  members.forEach((m, i) => w.u32(data, 4 * (i + 1), m));
  return data;
}

/**
 * Drops removed members from every kept group and removes groups left
 * empty. Returns the new contents of each group whose bytes change.
 */
function planGroups(
  input: StripInput,
  w: ElfWriter,
  table: SectionTable,
  removed: Set<number>,
): Map<number, { flags: number; members: number[] }> {
  const groups = new Map<number, { flags: number; members: number[] }>();
  for (const s of table.sections) {
    if (s.sh_type !== SHT_GROUP || removed.has(s.index)) continue;
    const { flags, members } = groupMembers(input, w, s);
    const kept = members.filter((m) => !removed.has(m));
    if (kept.length === 0 && members.length > 0) removed.add(s.index);
    else groups.set(s.index, { flags, members: kept });
  }
  return groups;
}

function checkLinks(table: SectionTable, removed: Set<number>) {
  const count = table.sections.length;
  for (const s of table.sections) {
    if (removed.has(s.index)) continue;
    if (s.sh_link > 0 && s.sh_link < count && removed.has(s.sh_link)) {
      throw new UnsafeElfError(
        "STRIP_UNSUPPORTED",
        `kept section ${s.index} (${s.name}) links to removed section ` +
          `${s.sh_link}`,
      );
    }
    const infoIsIndex =
      (s.sh_flags & SHF_INFO_LINK) !== 0 ||
      s.sh_type === SHT_REL ||
      s.sh_type === SHT_RELA;
    if (infoIsIndex && s.sh_info < count && removed.has(s.sh_info)) {
      throw new UnsafeElfError(
        "STRIP_UNSUPPORTED",
        `kept section ${s.index} (${s.name}) applies to removed section ` +
          `${s.sh_info}`,
      );
    }
  }
}

/** Rewrites sh_link and sh_info of one kept section header. */
function renumberLinks(s: SectionHeader, map: Int32Array): SectionHeader {
  const out = { ...s };
  if (s.sh_link > 0 && s.sh_link < map.length) out.sh_link = map[s.sh_link];
  const infoIsIndex =
    (s.sh_flags & SHF_INFO_LINK) !== 0 ||
    s.sh_type === SHT_REL ||
    s.sh_type === SHT_RELA;
  if (infoIsIndex && s.sh_info > 0 && s.sh_info < map.length) {
    out.sh_info = map[s.sh_info];
  }
  return out;
}

function encodeHeader(
  input: StripInput,
  h: ElfHeader,
  w: ElfWriter,
  fields: { e_shoff: number; e_shnum: number; e_shstrndx: number },
): Buffer {
  const size = h.bits === 64 ? 64 : 52;
  const out = Buffer.from(input.read(0, size));
  const wordSize = h.bits === 64 ? 8 : 4;
  const afterEntry = 24 + wordSize;
  w.addr(out, afterEntry + wordSize, fields.e_shoff);
  w.u16(out, afterEntry + 2 * wordSize + 12, fields.e_shnum);
  w.u16(out, afterEntry + 2 * wordSize + 14, fields.e_shstrndx);
  return out;
}

/** Copies [start, end) except the byte ranges of removed sections. */
function prefixCopies(
  start: number,
  end: number,
  holes: SectionHeader[],
): CopyOp[] {
  const copies: CopyOp[] = [];
  let at = start;
  for (const s of [...holes].sort((a, b) => a.sh_offset - b.sh_offset)) {
    if (s.sh_offset >= end) break;
    if (s.sh_offset > at) {
      copies.push({ from: at, length: s.sh_offset - at, to: at });
    }
    at = Math.max(at, s.sh_offset + s.sh_size);
  }
  if (end > at) copies.push({ from: at, length: end - at, to: at });
  return copies;
}

/**
 * Plans the stripped file. Returns null when nothing would be removed;
 * throws UnsafeElfError or ElfFormatError for a file it cannot rewrite.
 */
export function planStrip(
  input: StripInput,
  options: PlanOptions = {},
): StripPlan | null {
  const predicate = options.predicate ?? isDebugSection;
  const h = readHeader(input);
  const table = readSectionTable(input, h);
  if (table === null) return null;
  const segments = readSegmentRanges(input, h).filter((p) => p.p_filesz > 0);
  checkSegments(segments, input.size);
  checkSectionBounds(table.sections, input.size);
  const layout = layoutOf(h, table, segments);
  const removed = chooseRemoved(table, layout, predicate);
  const w = new ElfWriter(h.bits, h.littleEndian);
  const groups = planGroups(input, w, table, removed);
  checkLinks(table, removed);
  const map = indexMap(table.sections.length, removed);
  const edits: SymbolEdits = { contents: new Map(), info: new Map() };
  const keepSymbols = options.keepSymbols ?? false;
  const ctx = {
    ...{ input, h, w, table, layout, removed, map, edits },
    keepSymbols,
  };
  rewriteSymbols(ctx);
  if (removed.size === 0 && edits.contents.size === 0) return null;
  for (const [index, group] of groups) {
    const members = group.members.map((m) => (m < map.length ? map[m] : m));
    edits.contents.set(index, encodeGroup(w, group.flags, members));
  }
  return assemble(ctx);
}

/** Lays out the kept sections and encodes the new headers. */
function assemble(ctx: StripContext): StripPlan {
  const { input, h, w, table, layout, removed, map } = ctx;
  const symbols = ctx.edits;
  const { sections, shstrndx } = table;
  const kept = sections.filter((s) => !removed.has(s.index));
  const headers = kept.map((s) => renumberLinks(s, map));
  for (const [index, info] of symbols.info) {
    headers[map[index]].sh_info = info;
  }
  const nameTable = rebuildNames(table, layout, removed, headers);
  if (nameTable) symbols.contents.set(shstrndx, nameTable);
  const copies: CopyOp[] = [];
  const blobs: BlobOp[] = [];
  const holes = sections.filter((s) => removed.has(s.index) && hasBytes(s));
  copies.push(...prefixCopies(0, layout.prefixEnd, holes));
  const movable = kept.filter((s) => isMovable(s, layout));
  movable.sort((a, b) => a.sh_offset - b.sh_offset || a.index - b.index);
  let cursor = layout.prefixEnd;
  for (const s of movable) {
    const header = headers[map[s.index]];
    const data = symbols.contents.get(s.index);
    const size = data ? data.length : s.sh_size;
    const offset = placeAfter(cursor, s.sh_offset, s.sh_addralign);
    header.sh_offset = offset;
    header.sh_size = size;
    if (!hasBytes(s)) continue;
    if (data) blobs.push({ to: offset, data });
    else copies.push({ from: s.sh_offset, length: size, to: offset });
    cursor = offset + size;
  }
  for (const [index, data] of symbols.contents) {
    const s = sections[index];
    if (isMovable(s, layout)) continue;
    if (data.length !== s.sh_size || layout.inSegment[index]) {
      throw new UnsafeElfError(
        "STRIP_UNSUPPORTED",
        `section ${index} (${s.name}) changes size but cannot move`,
      );
    }
    blobs.push({ to: s.sh_offset, data });
  }
  const wordSize = h.bits === 64 ? 8 : 4;
  const e_shoff = placeAfter(cursor, 0, wordSize);
  const count = kept.length;
  const newShstrndx = map[shstrndx];
  const first = headers[0];
  first.sh_size = count >= SHN_LORESERVE ? count : 0;
  first.sh_link = newShstrndx >= SHN_LORESERVE ? newShstrndx : 0;
  const sht = Buffer.concat(headers.map((s) => encodeSectionHeader(w, s)));
  blobs.push({ to: e_shoff, data: sht });
  blobs.push({
    to: 0,
    data: encodeHeader(input, h, w, {
      e_shoff,
      e_shnum: count >= SHN_LORESERVE ? 0 : count,
      e_shstrndx: newShstrndx >= SHN_LORESERVE ? SHN_XINDEX : newShstrndx,
    }),
  });
  return {
    size: e_shoff + sht.length,
    copies,
    blobs,
    removed: sections.filter((s) => removed.has(s.index)).map((s) => s.name),
  };
}

/**
 * Builds a section name table without the removed names and points the
 * kept headers into it. Returns null, keeping the old table and offsets,
 * when the table cannot move or also serves as another section's strings.
 */
function rebuildNames(
  table: SectionTable,
  layout: Layout,
  removed: Set<number>,
  headers: SectionHeader[],
): Buffer | null {
  const { sections, shstrndx } = table;
  const names = sections[shstrndx];
  if (layout.inSegment[shstrndx] || names.sh_offset < layout.prefixEnd) {
    return null;
  }
  const shared = sections.some(
    (s) => !removed.has(s.index) && s.sh_link === shstrndx,
  );
  if (shared) return null;
  const built = buildStringTable(headers.slice(1).map((s) => s.name));
  for (const s of headers.slice(1)) {
    s.sh_name = built.offsets.get(s.name) ?? 0;
  }
  return built.data;
}
