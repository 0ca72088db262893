/**
 * Strips every ELF file under the given directories with stripDebug's
 * code and checks each result against binutils and elfutils:
 *
 *   node --import tsx scripts/strip-check.ts DIR...
 *
 * Per file: readelf prints no new warnings, eu-elflint --gnu-ld reports
 * nothing new, nm and nm -D list the symbols that `strip --strip-debug`
 * keeps, the program headers and every PT_LOAD byte are unchanged (the
 * ELF header's section table fields aside), and the size is at most 1%
 * above that of `strip --strip-debug`. Prints the count checked and every
 * failure; exits 1 when any file fails.
 */
import { spawn } from "node:child_process";
import {
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readSync,
  closeSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  bufferSource,
  hasElfMagic,
  readHeader,
  PT_LOAD,
} from "../src/elf.js";
import { readSegmentRanges } from "../src/elf-sections.js";
import { stripDebugFile, stripDebugToFile } from "../src/strip.js";

/** Allowed size above binutils' output, as a fraction. */
const SIZE_TOLERANCE = 0.01;
/** Files checked at once; each check runs several tools in sequence. */
const JOBS = 2;

interface ToolOutput {
  status: number | null;
  stdout: string;
  stderr: string;
}

function runTool(tool: string, args: string[], keepStdout = true) {
  return new Promise<ToolOutput>((resolve, reject) => {
    const child = spawn(tool, args, {
      stdio: ["ignore", keepStdout ? "pipe" : "ignore", "pipe"],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on("data", (b: Buffer) => out.push(b));
    child.stderr?.on("data", (b: Buffer) => err.push(b));
    child.on("error", reject);
    child.on("close", (status) =>
      resolve({
        status,
        stdout: Buffer.concat(out).toString("latin1"),
        stderr: Buffer.concat(err).toString("latin1"),
      }),
    );
  });
}

function isElf(path: string): boolean {
  const fd = openSync(path, "r");
  try {
    const head = Buffer.alloc(4);
    return readSync(fd, head, 0, 4, 0) === 4 && hasElfMagic(head);
  } finally {
    closeSync(fd);
  }
}

/** Lists regular ELF files below `dirs`, each inode once. */
function findElfFiles(dirs: string[]): string[] {
  const seen = new Set<string>();
  const found: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      if (!entry.isFile()) continue;
      const st = lstatSync(path);
      const key = `${st.dev}:${st.ino}`;
      if (seen.has(key) || st.size < 4) continue;
      seen.add(key);
      try {
        if (isElf(path)) found.push(path);
      } catch {
        // Unreadable files are no ELF we can check.
      }
    }
  };
  for (const dir of dirs) walk(dir);
  return found.sort();
}

/**
 * Lines of `after` missing from `before`, with file names removed and
 * numbers masked, since stripping renumbers sections and symbols.
 */
function newLines(before: string, after: string, names: string[]) {
  const clean = (text: string) => {
    let out = text;
    for (const name of names) out = out.split(name).join("FILE");
    out = out.replace(/\[\s*\d+\]/g, "[#]").replace(/\b\d+\b/g, "#");
    return out.split("\n").filter((l) => l.trim() !== "");
  };
  const old = new Set(clean(before));
  return clean(after).filter((l) => !old.has(l));
}

function warningLines(stderr: string): string {
  return stderr
    .split("\n")
    .filter((l) => /warning|error/i.test(l))
    .join("\n");
}

/**
 * Compares the program header table and every PT_LOAD range, masking the
 * ELF header fields that stripping has to change.
 */
function compareSegments(input: string, output: string): string | null {
  const a = readFileSync(input);
  const b = readFileSync(output);
  const source = bufferSource(a);
  const h = readHeader(source);
  const w = h.bits === 64 ? 8 : 4;
  const mask = (bytes: Buffer) => {
    const copy = Buffer.from(bytes.subarray(0, Math.min(bytes.length, 64)));
    copy.fill(0, 24 + 2 * w, 24 + 3 * w);
    copy.fill(0, 24 + 3 * w + 4 + 8, 24 + 3 * w + 4 + 12);
    return Buffer.concat([copy, bytes.subarray(copy.length)]);
  };
  const ma = mask(a);
  const mb = mask(b);
  const phEnd = h.e_phoff + h.e_phnum * h.e_phentsize;
  if (!ma.subarray(h.e_phoff, phEnd).equals(mb.subarray(h.e_phoff, phEnd))) {
    return "program headers differ";
  }
  for (const p of readSegmentRanges(source, h)) {
    if (p.p_type !== PT_LOAD) continue;
    const end = p.p_offset + p.p_filesz;
    if (!ma.subarray(p.p_offset, end).equals(mb.subarray(p.p_offset, end))) {
      return `PT_LOAD at offset ${p.p_offset} differs`;
    }
  }
  return null;
}

/** What verifyStrip() found about one stripped file. */
export interface Verdict {
  failures: string[];
  size: number;
  /** Size of `strip --strip-debug -o` output, or null when it failed. */
  binutilsSize: number | null;
}

/** Tool names, with a cross prefix for BFD tools of other machines. */
export interface VerifyTools {
  /** Prefix for strip and nm, such as "powerpc64-linux-gnu-". */
  prefix?: string;
}

/**
 * Checks `output`, a stripped copy of `input`, with readelf, eu-elflint,
 * nm and `strip --strip-debug` (whose output goes into `dir`).
 */
export async function verifyStrip(
  input: string,
  output: string,
  dir: string,
  tools: VerifyTools = {},
): Promise<Verdict> {
  const prefix = tools.prefix ?? "";
  const theirs = join(dir, "binutils");
  const failures: string[] = [];
  const names = [input, output];
  for (const args of [["-aW"], ["-lW"]]) {
    const before = await runTool("readelf", [...args, input], false);
    const after = await runTool("readelf", [...args, output], false);
    const added = newLines(
      warningLines(before.stderr),
      warningLines(after.stderr),
      names,
    );
    if (added.length) failures.push(`readelf ${args[0]}: ${added[0]}`);
  }
  const lintBefore = await runTool("eu-elflint", ["--gnu-ld", input]);
  const lintAfter = await runTool("eu-elflint", ["--gnu-ld", output]);
  const lint = newLines(
    lintBefore.stdout + lintBefore.stderr,
    lintAfter.stdout + lintAfter.stderr,
    names,
  ).filter((l) => l !== "No errors");
  if (lint.length) failures.push(`eu-elflint: ${lint[0]}`);
  const strip = await runTool(`${prefix}strip`, [
    "--strip-debug",
    "-o",
    theirs,
    input,
  ]);
  const reference = strip.status === 0 ? theirs : input;
  for (const nmArgs of [[], ["-D"]]) {
    const want = await runTool(`${prefix}nm`, [...nmArgs, reference]);
    const got = await runTool(`${prefix}nm`, [...nmArgs, output]);
    if (want.stdout !== got.stdout) {
      failures.push(`nm ${nmArgs.join(" ")}: symbol lists differ`.trim());
    }
  }
  const segments = compareSegments(input, output);
  if (segments) failures.push(segments);
  const size = statSync(output).size;
  const binutilsSize = strip.status === 0 ? statSync(theirs).size : null;
  rmSync(theirs, { force: true });
  if (binutilsSize !== null && size > binutilsSize * (1 + SIZE_TOLERANCE)) {
    failures.push(`size ${size} exceeds strip's ${binutilsSize} by over 1%`);
  }
  return { failures, size, binutilsSize };
}

interface Outcome extends Verdict {
  path: string;
  stripped: boolean;
}

async function checkFile(path: string, dir: string): Promise<Outcome> {
  const ours = join(dir, "ours");
  const result = stripDebugToFile(path, ours);
  const verdict = await verifyStrip(path, ours, dir);
  const inMemory = stripDebugFile(path);
  if (!inMemory.data.equals(readFileSync(ours))) {
    verdict.failures.push("buffer output differs from file output");
  }
  return { path, stripped: result.stripped, ...verdict };
}

async function main(): Promise<number> {
  const dirs = process.argv.slice(2);
  if (dirs.length === 0) {
    process.stderr.write("usage: strip-check DIR...\n");
    return 2;
  }
  const files = findElfFiles(dirs);
  const root = mkdtempSync(join(tmpdir(), "strip-check-"));
  let checked = 0;
  let stripped = 0;
  let failed = 0;
  let ourBytes = 0;
  let theirBytes = 0;
  let next = 0;
  const worker = async (id: number) => {
    const dir = join(root, String(id));
    mkdirSync(dir);
    for (let i = next++; i < files.length; i = next++) {
      let outcome: Outcome;
      try {
        outcome = await checkFile(files[i], dir);
      } catch (error) {
        const reason = error instanceof Error ? error.message : String(error);
        outcome = {
          path: files[i],
          stripped: false,
          failures: [`check failed: ${reason}`],
          size: 0,
          binutilsSize: null,
        };
      }
      checked++;
      if (outcome.stripped) stripped++;
      if (outcome.binutilsSize !== null) {
        ourBytes += outcome.size;
        theirBytes += outcome.binutilsSize;
      }
      if (outcome.failures.length) {
        failed++;
        for (const f of outcome.failures) {
          process.stdout.write(`FAIL ${outcome.path}: ${f}\n`);
        }
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: JOBS }, (_, i) => worker(i)));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  process.stdout.write(
    `checked ${checked} ELF files: ${stripped} stripped, ` +
      `${checked - stripped} unchanged, ${failed} failed; ` +
      `total ${ourBytes} bytes vs strip --strip-debug ${theirBytes}\n`,
  );
  return failed === 0 ? 0 : 1;
}

if (require.main === module) {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(`strip-check: ${String(error)}\n`);
      process.exitCode = 2;
    },
  );
}
