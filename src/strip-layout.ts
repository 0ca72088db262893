/**
 * Section placement relative to the segments, which stay byte-identical.
 * The checks here decide whether a file is safe to rewrite, and
 * placeAfter() picks the offset of a section that moves.
 */
import type { ElfHeader } from "./elf.js";
import {
  SHT_NOBITS,
  SHT_NULL,
  type SectionHeader,
  type SectionTable,
  type SegmentRange,
} from "./elf-sections.js";
import { UnsafeElfError } from "./strip-errors.js";

/** Placement of sections relative to the segments that must not move. */
export interface Layout {
  /** Whether each section's bytes lie inside a segment's file range. */
  inSegment: boolean[];
  /** End of the bytes copied in place: headers, segments and their sections. */
  prefixEnd: number;
}

/** Whether a section occupies file bytes; section 0 may hold a count. */
export function hasBytes(s: SectionHeader): boolean {
  return (
    s.index !== 0 &&
    s.sh_type !== SHT_NULL &&
    s.sh_type !== SHT_NOBITS &&
    s.sh_size > 0
  );
}

export function checkSegments(segments: SegmentRange[], fileSize: number) {
  for (const p of segments) {
    if (p.p_offset + p.p_filesz > fileSize) {
      throw new UnsafeElfError(
        "STRIP_TRUNCATED",
        `segment at offset ${p.p_offset} extends past end of file`,
      );
    }
  }
}

export function checkSectionBounds(sections: SectionHeader[], fileSize: number) {
  for (const s of sections) {
    if (hasBytes(s) && s.sh_offset + s.sh_size > fileSize) {
      throw new UnsafeElfError(
        "STRIP_TRUNCATED",
        `section ${s.index} (${s.name}) extends past end of file`,
      );
    }
  }
}

function overlaps(a: number, aEnd: number, b: number, bEnd: number) {
  return a < bEnd && b < aEnd;
}

/** Sorts sections into those pinned by segments and those free to move. */
export function layoutOf(
  h: ElfHeader,
  table: SectionTable,
  segments: SegmentRange[],
): Layout {
  const shtEnd = h.e_shoff + table.sections.length * table.entsize;
  for (const p of segments) {
    const end = p.p_offset + p.p_filesz;
    if (overlaps(h.e_shoff, shtEnd, p.p_offset, end)) {
      throw new UnsafeElfError(
        "STRIP_SEGMENT_LAYOUT",
        "section header table lies inside a segment",
      );
    }
  }
  let prefixEnd = h.bits === 64 ? 64 : 52;
  if (h.e_phnum > 0) {
    prefixEnd = Math.max(prefixEnd, h.e_phoff + h.e_phnum * h.e_phentsize);
  }
  for (const p of segments) {
    prefixEnd = Math.max(prefixEnd, p.p_offset + p.p_filesz);
  }
  const inSegment = table.sections.map((s) => {
    if (!hasBytes(s)) return false;
    const end = s.sh_offset + s.sh_size;
    const inside = segments.some(
      (p) => s.sh_offset >= p.p_offset && end <= p.p_offset + p.p_filesz,
    );
    if (inside) return true;
    const crossing = segments.some((p) =>
      overlaps(s.sh_offset, end, p.p_offset, p.p_offset + p.p_filesz),
    );
    if (crossing) {
      throw new UnsafeElfError(
        "STRIP_SEGMENT_LAYOUT",
        `section ${s.index} (${s.name}) crosses a segment boundary`,
      );
    }
    return false;
  });
  checkOverlaps(h, table, inSegment);
  return { inSegment, prefixEnd };
}

/** Rejects sections outside segments that share bytes with each other. */
function checkOverlaps(
  h: ElfHeader,
  table: SectionTable,
  inSegment: boolean[],
) {
  const ranges: { start: number; end: number; what: string }[] = [
    { start: 0, end: h.bits === 64 ? 64 : 52, what: "ELF header" },
    {
      start: h.e_shoff,
      end: h.e_shoff + table.sections.length * table.entsize,
      what: "section header table",
    },
  ];
  if (h.e_phnum > 0) {
    const end = h.e_phoff + h.e_phnum * h.e_phentsize;
    ranges.push({ start: h.e_phoff, end, what: "program header table" });
  }
  for (const s of table.sections) {
    if (!hasBytes(s) || inSegment[s.index]) continue;
    const what = `section ${s.index} (${s.name})`;
    ranges.push({ start: s.sh_offset, end: s.sh_offset + s.sh_size, what });
  }
  ranges.sort((a, b) => a.start - b.start || a.end - b.end);
  for (let i = 1; i < ranges.length; i++) {
    if (ranges[i].start < ranges[i - 1].end) {
      throw new UnsafeElfError(
        "STRIP_OVERLAP",
        `${ranges[i].what} overlaps ${ranges[i - 1].what}`,
      );
    }
  }
}

/**
 * Whether a kept section moves to the repacked tail. A section without
 * bytes (.bss, .tbss) at or before the end of the prefix keeps its offset,
 * which tools compare with its segment.
 */
export function isMovable(s: SectionHeader, layout: Layout): boolean {
  if (s.index === 0 || layout.inSegment[s.index]) return false;
  if (hasBytes(s)) return s.sh_offset >= layout.prefixEnd;
  return s.sh_offset > layout.prefixEnd;
}

/** Places `offset` at or after `cursor`, congruent to `old` modulo align. */
export function placeAfter(cursor: number, old: number, align: number): number {
  if (align <= 1) return cursor;
  const shift = (((old - cursor) % align) + align) % align;
  return cursor + shift;
}
