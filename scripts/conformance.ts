/*
 * Compares the resolver with the host's dynamic linker.
 *
 *   npm run conformance -- DIR...
 *   node --import tsx scripts/conformance.ts DIR...
 *
 * For every dynamically linked ELF file under the directories (symlinks
 * are not followed, so each file counts once), it resolves the closure
 * and runs ld.so on the file's real path in trace mode as ldd does
 * (LD_TRACE_LOADED_OBJECTS=1, which lists missing libraries where glibc
 * 2.36 `ld.so --list` stops at the first one), then compares the
 * maps of DT_NEEDED name to path. ld.so picking a CPU-specific hwcaps
 * subdirectory variant of the same library is accepted and listed.
 * Exit status 1 when any other disagreement is found.
 */
import { spawnSync } from "node:child_process";
import { lstatSync, readdirSync, realpathSync } from "node:fs";
import { join, posix } from "node:path";
import { performance } from "node:perf_hooks";

import { ElfFormatError, readElfFile } from "../src/elf.js";
import { libraryMap, Resolver } from "../src/resolve.js";

const LDSO = "/lib64/ld-linux-x86-64.so.2";

function* walk(dir: string): Generator<string> {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names.sort()) {
    const path = join(dir, name);
    const st = lstatSync(path, { throwIfNoEntry: false });
    if (st?.isDirectory()) yield* walk(path);
    else if (st?.isFile()) yield path;
  }
}

/** Whether `path` is dynamically linked: PT_DYNAMIC with some DT_NEEDED. */
function isDynamic(path: string): boolean {
  try {
    const info = readElfFile(path);
    return info !== null && info.dynamic && info.needed.length > 0;
  } catch (err) {
    if (err instanceof ElfFormatError) return false;
    if ((err as NodeJS.ErrnoException).code === "EACCES") return false;
    throw err;
  }
}

/** Parses the trace output of ld.so into name → path (null for not found). */
function parseList(output: string, interpreter: string | null) {
  const map = new Map<string, string | null>();
  for (const line of output.split("\n")) {
    const arrow = /^\s+(\S+) => (.*?)(?: \(0x[0-9a-f]+\))?$/.exec(line);
    if (arrow) {
      const target = arrow[2] === "not found" ? null : posix.normalize(arrow[2]);
      map.set(arrow[1], target);
      continue;
    }
    const plain = /^\s+(\/\S+) \(0x[0-9a-f]+\)$/.exec(line);
    if (plain && plain[1] !== interpreter && plain[1] !== LDSO) {
      map.set(plain[1], posix.normalize(plain[1]));
    }
  }
  return map;
}

const HWCAPS_DIR = /\/(glibc-hwcaps\/[^/]+|haswell|avx512_1|tls|x86_64)\//;

/** Names the hwcaps subdirectory when `theirs` is a variant of `ours`. */
function hwcapsVariant(ours: string | null, theirs: string | null) {
  if (ours === null || theirs === null) return null;
  const m = HWCAPS_DIR.exec(theirs);
  if (!m) return null;
  const base = theirs.replace(/\/(glibc-hwcaps\/[^/]+|haswell|avx512_1|tls|x86_64)(?=\/)/g, "");
  return posix.basename(base) === posix.basename(ours) ? m[1] : null;
}

interface Result {
  file: string;
  differences: string[];
  variants: string[];
}

function compare(file: string, ours: Map<string, string | null>, theirs: Map<string, string | null>): Result {
  const result: Result = { file, differences: [], variants: [] };
  const names = new Set([...ours.keys(), ...theirs.keys()]);
  for (const name of [...names].sort()) {
    const a = ours.has(name) ? ours.get(name) ?? "not found" : "absent";
    const b = theirs.has(name) ? theirs.get(name) ?? "not found" : "absent";
    if (a === b) continue;
    const variant = hwcapsVariant(ours.get(name) ?? null, theirs.get(name) ?? null);
    if (variant) result.variants.push(`${name}: ld.so chose ${variant} variant ${b}`);
    else result.differences.push(`${name}: ours ${a}, ld.so ${b}`);
  }
  return result;
}

function main(dirs: string[]): number {
  if (dirs.length === 0) {
    console.error("usage: npm run conformance -- DIR...");
    return 2;
  }
  const resolver = new Resolver({ onWarning: () => undefined });
  const traceEnv = { ...process.env, LD_TRACE_LOADED_OBJECTS: "1" };
  let checked = 0;
  let agree = 0;
  let ourMs = 0;
  let ldsoMs = 0;
  const variants: string[] = [];
  const failures: Result[] = [];
  for (const dir of dirs) {
    for (const file of walk(dir)) {
      if (!isDynamic(file)) continue;
      const real = realpathSync(file);
      let t = performance.now();
      const closure = resolver.resolve(real);
      ourMs += performance.now() - t;
      t = performance.now();
      const run = spawnSync(LDSO, [real], { encoding: "utf8", env: traceEnv });
      ldsoMs += performance.now() - t;
      checked++;
      if (run.stdout === "") {
        failures.push({ file, differences: [`ld.so failed: ${run.stderr.trim()}`], variants: [] });
        continue;
      }
      const interpreter = readElfFile(real)?.interpreter ?? null;
      const theirs = parseList(run.stdout, interpreter);
      const result = compare(file, libraryMap(closure), theirs);
      if (result.differences.length === 0) agree++;
      else failures.push(result);
      variants.push(...result.variants.map((v) => `${file}: ${v}`));
    }
  }
  const pct = checked === 0 ? 0 : (100 * agree) / checked;
  console.log(`binaries checked: ${checked}`);
  console.log(`agree exactly: ${agree} (${pct.toFixed(2)}%)`);
  console.log(`accepted hwcaps variants: ${variants.length}`);
  for (const v of variants) console.log(`  ${v}`);
  console.log(`disagreements: ${failures.length}`);
  for (const f of failures) {
    console.log(`  ${f.file}`);
    for (const d of f.differences) console.log(`    ${d}`);
  }
  const mean = (ms: number) => (checked ? (ms / checked).toFixed(3) : "0");
  console.log(
    `time: resolver ${ourMs.toFixed(0)} ms (${mean(ourMs)} ms/file, one ` +
      `shared Resolver), ld.so ${ldsoMs.toFixed(0)} ms ` +
      `(${mean(ldsoMs)} ms/file)`,
  );
  return failures.length === 0 ? 0 : 1;
}

process.exitCode = main(process.argv.slice(2));
