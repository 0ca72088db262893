/*
 * Dynamic string tokens and search-path lists, as glibc's elf/dl-load.c
 * (_dl_dst_substitute, fillin_rpath) handles them.
 */

export interface DstValues {
  /** Directory of the object that contains the path, or null if unknown. */
  origin: string | null;
  lib: string;
  platform: string;
}

const TOKENS = ["ORIGIN", "LIB", "PLATFORM"] as const;
type Token = (typeof TOKENS)[number];

function isNameChar(c: string | undefined): boolean {
  return c !== undefined && /[A-Za-z0-9_]/.test(c);
}

/** Returns the token at `text[at]` (just after '$') and its length. */
function matchToken(text: string, at: number): [Token, number] | null {
  for (const token of TOKENS) {
    if (text.startsWith(`{${token}}`, at)) return [token, token.length + 2];
    // "$ORIGINAL" is no token: the name must end where a name char cannot.
    if (text.startsWith(token, at) && !isNameChar(text[at + token.length])) {
      return [token, token.length];
    }
  }
  return null;
}

/**
 * Expands `$ORIGIN`, `$LIB` and `$PLATFORM` (also as `${NAME}`). Returns
 * null when the path needs `$ORIGIN` but the origin is unknown, because
 * glibc then drops the whole element. Other `$` sequences stay as written.
 */
export function expandDst(path: string, values: DstValues): string | null {
  let out = "";
  let i = 0;
  while (i < path.length) {
    const dollar = path.indexOf("$", i);
    if (dollar < 0) {
      out += path.slice(i);
      break;
    }
    out += path.slice(i, dollar);
    const hit = matchToken(path, dollar + 1);
    if (!hit) {
      out += "$";
      i = dollar + 1;
      continue;
    }
    const [token, length] = hit;
    if (token === "ORIGIN") {
      if (values.origin === null) return null;
      out += values.origin;
    } else if (token === "LIB") {
      out += values.lib;
    } else {
      out += values.platform;
    }
    i = dollar + 1 + length;
  }
  return out;
}

/**
 * Splits a DT_RPATH, DT_RUNPATH or LD_LIBRARY_PATH value into
 * directories. An empty element means the current directory; trailing
 * slashes are removed; the first of two equal directories is kept.
 * LD_LIBRARY_PATH also accepts ';' as a separator.
 */
export function splitSearchPath(
  value: string,
  values: DstValues,
  separators = ":",
): string[] {
  const pattern = separators === ":" ? /:/ : /[:;]/;
  const dirs: string[] = [];
  for (const raw of value.split(pattern)) {
    const expanded = expandDst(raw, values);
    if (expanded === null) continue;
    let dir = expanded === "" ? "." : expanded;
    while (dir.length > 1 && dir.endsWith("/")) dir = dir.slice(0, -1);
    if (!dirs.includes(dir)) dirs.push(dir);
  }
  return dirs;
}
