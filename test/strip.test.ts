import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { readHeader, bufferSource } from "../src/elf.js";
import { readSectionTable } from "../src/elf-sections.js";
import {
  bufferInput,
  planStrip,
  renderPlan,
  stripDebugBuffer,
  stripDebugFile,
  stripDebugToFile,
  type StripInput,
  type StripWarning,
} from "../src/strip.js";
import { verifyStrip, type VerifyTools } from "../scripts/strip-check.js";
import { compileC, requireTool, run, tempDir } from "./helpers/tools.js";

const HELLO = `
#include <stdio.h>
static int twice(int x) { return 2 * x; }
int counter = 21;
int main(void) { printf("answer %d\\n", twice(counter)); return 0; }
`;

const LIBRARY = `
int scale(int x) { return 3 * x; }
`;

const LIBRARY_USER = `
#include <stdio.h>
int scale(int x);
int main(void) { printf("scaled %d\\n", scale(5)); return 0; }
`;

/** PowerPC assembly with a text symbol, a data symbol and an entry. */
const POWERPC_ASM = `
  .text
  .globl _start
_start:
  li 3,0
  li 0,1
  sc
  .globl helper
helper:
  blr
  .data
  .globl counter
counter:
  .long 42
`;

let dir: string;
let cleanup: () => void;

before(() => {
  for (const tool of ["gcc", "readelf", "eu-elflint", "strip", "nm"]) {
    requireTool(tool);
  }
  ({ dir, cleanup } = tempDir("strip"));
});

after(() => cleanup());

/** Section names of an ELF file, as readelf lists them. */
function sectionNames(path: string): string[] {
  const data = readFileSync(path);
  const table = readSectionTable(bufferSource(data), readHeader(bufferSource(data)));
  return table ? table.sections.slice(1).map((s) => s.name) : [];
}

/** Strips `input` to `input.stripped` and returns that path. */
function stripTo(input: string): string {
  const output = `${input}.stripped`;
  const result = stripDebugFile(input);
  assert.equal(result.stripped, true, result.reason);
  writeFileSync(output, result.data, { mode: 0o755 });
  return output;
}

async function assertLikeBinutils(
  input: string,
  output: string,
  tools: VerifyTools = {},
) {
  const verdict = await verifyStrip(input, output, dir, tools);
  assert.deepEqual(verdict.failures, []);
  assert.notEqual(verdict.binutilsSize, null, "strip --strip-debug failed");
}

/** Asserts no debug section is left but the allocated ones listed. */
function assertNoDebug(path: string, allocated: string[] = []) {
  const left = sectionNames(path).filter(
    (n) =>
      (n.startsWith(".debug_") || n.startsWith(".zdebug_")) &&
      !allocated.includes(n),
  );
  assert.deepEqual(left, []);
}

describe("stripDebugFile on gcc output", () => {
  it("keeps a -g3 executable running", async () => {
    const exe = compileC(HELLO, join(dir, "hello"), ["-g3", "-no-pie"]);
    const out = stripTo(exe);
    assert.equal(run(out, []).toString(), "answer 42\n");
    assertNoDebug(out);
    await assertLikeBinutils(exe, out);
  });

  it("keeps a PIE running", async () => {
    const exe = compileC(HELLO, join(dir, "pie"), ["-g", "-fPIE", "-pie"]);
    const out = stripTo(exe);
    assert.equal(run(out, []).toString(), "answer 42\n");
    await assertLikeBinutils(exe, out);
  });

  it("keeps a static -g3 executable running", async () => {
    // A static binary's .rela.plt lies in a loaded segment and links to
    // .symtab; its IRELATIVE relocations use symbol 0, so it may stay.
    const exe = compileC(HELLO, join(dir, "static"), ["-g3", "-static"]);
    const out = stripTo(exe);
    assert.equal(run(out, []).toString(), "answer 42\n");
    assertNoDebug(out);
    await assertLikeBinutils(exe, out);
  });

  it("keeps a shared library loadable", async () => {
    const lib = compileC(LIBRARY, join(dir, "libscale.so"), [
      "-g3",
      "-shared",
      "-fPIC",
    ]);
    const out = stripTo(lib);
    await assertLikeBinutils(lib, out);
    const sub = join(dir, "libdir");
    mkdirSync(sub, { recursive: true });
    writeFileSync(join(sub, "libscale.so"), readFileSync(out));
    const user = compileC(LIBRARY_USER, join(dir, "user"), [
      `-L${sub}`,
      `-Wl,-rpath,${sub}`,
    ], ["-lscale"]);
    assert.equal(run(user, []).toString(), "scaled 15\n");
  });

  it("keeps a -g3 object with COMDAT groups linkable", async () => {
    const obj = compileC(HELLO, join(dir, "hello.o"), ["-g3", "-c"]);
    const out = stripTo(obj);
    assertNoDebug(out);
    assert.ok(!sectionNames(out).includes(".group"), "empty groups remain");
    await assertLikeBinutils(obj, out);
    const exe = join(dir, "relinked");
    run("gcc", ["-o", exe, out]);
    assert.equal(run(exe, []).toString(), "answer 42\n");
  });

  it("strips an ELF32 little-endian object", async () => {
    const obj = join(dir, "hello32.o");
    try {
      compileC(HELLO, obj, ["-m32", "-g", "-c"]);
    } catch (error) {
      throw new Error(
        `gcc -m32 failed; install it with: apt-get install -y gcc-multilib ` +
          `(${String(error)})`,
      );
    }
    const out = stripTo(obj);
    assertNoDebug(out);
    await assertLikeBinutils(obj, out);
  });

  it("removes compressed debug sections", async () => {
    const exe = compileC(HELLO, join(dir, "zlib"), ["-g"]);
    for (const style of ["zlib", "zlib-gnu"]) {
      const packed = join(dir, `hello-${style}`);
      run("objcopy", [`--compress-debug-sections=${style}`, exe, packed]);
      const out = stripTo(packed);
      assertNoDebug(out);
      assert.equal(run(out, []).toString(), "answer 42\n");
      await assertLikeBinutils(packed, out);
    }
  });
});

describe("stripDebugFile on other toolchains", () => {
  it("keeps a rustc -g binary running", async () => {
    const cargoRustc = "/root/.cargo/bin/rustc";
    const rustc = tryTool("rustc")
      ? "rustc"
      : existsSync(cargoRustc)
        ? cargoRustc
        : null;
    if (!rustc) {
      throw new Error(
        "rustc not found; install it with: apt-get install -y rustc",
      );
    }
    const source = join(dir, "main.rs");
    writeFileSync(source, 'fn main() { println!("rust {}", 6 * 7); }\n');
    const exe = join(dir, "rusty");
    run(rustc, ["-g", "-o", exe, source]);
    const out = stripTo(exe);
    assert.equal(run(out, []).toString(), "rust 42\n");
    assertNoDebug(out, [".debug_gdb_scripts"]);
    assert.ok(
      sectionNames(out).includes(".debug_gdb_scripts"),
      "allocated .debug_gdb_scripts was removed",
    );
    await assertLikeBinutils(exe, out);
  });

  for (const [prefix, bits] of [
    ["powerpc64-linux-gnu-", 64],
    ["powerpc-linux-gnu-", 32],
  ] as const) {
    it(`strips big-endian ELF${bits} objects and executables`, async () => {
      const as = requireTool(`${prefix}as`);
      const ld = requireTool(`${prefix}ld`);
      requireTool(`${prefix}strip`);
      requireTool(`${prefix}nm`);
      const obj = join(dir, `ppc${bits}.o`);
      run(as, ["-g", "-o", obj], { input: POWERPC_ASM });
      const exe = join(dir, `ppc${bits}`);
      run(ld, ["-o", exe, obj]);
      for (const file of [obj, exe]) {
        const data = readFileSync(file);
        assert.equal(data[5], 2, "not big endian");
        const out = stripTo(file);
        assertNoDebug(out);
        await assertLikeBinutils(file, out, { prefix });
      }
    });
  }

  it("rewrites an object with 70000 sections", async () => {
    const lines = [];
    for (let i = 0; i < 70000; i++) {
      lines.push(`int v${i} __attribute__((section(".data.v${i}"))) = ${i};`);
    }
    lines.push("int main(void) { return v69999 == 69999 ? 0 : 1; }");
    const obj = compileC(lines.join("\n"), join(dir, "many.o"), ["-g", "-c"]);
    const input = readHeader(bufferSource(readFileSync(obj)));
    assert.equal(input.e_shnum, 0, "fixture lacks extended numbering");
    const out = stripTo(obj);
    const h = readHeader(bufferSource(readFileSync(out)));
    assert.equal(h.e_shnum, 0);
    assert.equal(h.e_shstrndx, 0xffff);
    assertNoDebug(out);
    await assertLikeBinutils(obj, out);
    const exe = join(dir, "many");
    run("gcc", ["-o", exe, out]);
    run(exe, []);
  });
});

function tryTool(name: string): boolean {
  try {
    requireTool(name);
    return true;
  } catch {
    return false;
  }
}

describe("stripDebug outputs", () => {
  it("agree between buffer, file and streaming writer", () => {
    const exe = compileC(HELLO, join(dir, "same"), ["-g"]);
    const fromFile = stripDebugFile(exe);
    const fromBuffer = stripDebugBuffer(readFileSync(exe));
    const path = join(dir, "same.out");
    const streamed = stripDebugToFile(exe, path);
    assert.ok(fromFile.data.equals(fromBuffer.data));
    assert.ok(fromFile.data.equals(readFileSync(path)));
    assert.equal(streamed.size, fromFile.data.length);
    assert.deepEqual(streamed.removed, fromFile.removed);
  });

  it("return a stripped file unchanged", () => {
    const exe = compileC(HELLO, join(dir, "twice"), ["-g"]);
    const once = stripDebugBuffer(readFileSync(exe));
    const twice = stripDebugBuffer(once.data);
    assert.equal(twice.stripped, false);
    assert.equal(twice.data, once.data);
  });

  it("honour a custom predicate", () => {
    const exe = compileC(HELLO, join(dir, "custom"), ["-g"]);
    const result = stripDebugFile(exe, {
      predicate: (s) => s.name === ".comment",
    });
    assert.deepEqual(result.removed, [".comment"]);
    const out = join(dir, "custom.out");
    writeFileSync(out, result.data);
    assert.ok(sectionNames(out).includes(".debug_info"));
  });

  it("never read the bytes of removed sections", () => {
    const exe = compileC(HELLO, join(dir, "reads"), ["-g3"]);
    const data = readFileSync(exe);
    const table = readSectionTable(bufferSource(data), readHeader(bufferSource(data)));
    assert.ok(table);
    const debug = table.sections.filter((s) => s.name.startsWith(".debug_"));
    assert.ok(debug.length > 0);
    const reads: [number, number][] = [];
    const inner = bufferInput(data);
    const spy: StripInput = {
      size: inner.size,
      read(offset, length) {
        reads.push([offset, offset + length]);
        return inner.read(offset, length);
      },
      readInto(target, at, position, length) {
        reads.push([position, position + length]);
        inner.readInto(target, at, position, length);
      },
    };
    const plan = planStrip(spy);
    assert.ok(plan);
    renderPlan(spy, plan);
    for (const s of debug) {
      const end = s.sh_offset + s.sh_size;
      const hit = reads.find(([a, b]) => a < end && s.sh_offset < b);
      assert.equal(hit, undefined, `read inside ${s.name}`);
    }
  });
});

describe("stripDebug on unsafe input", () => {
  function expectUnchanged(data: Buffer, code: string) {
    const warnings: StripWarning[] = [];
    const result = stripDebugBuffer(data, {
      fileName: "broken.elf",
      onWarning: (w) => warnings.push(w),
    });
    assert.equal(result.stripped, false);
    assert.ok(result.data.equals(data));
    assert.equal(warnings.length, 1);
    assert.equal(warnings[0].code, code);
    assert.match(warnings[0].message, /broken\.elf/);
  }

  function fixture(): { data: Buffer; shoff: number; shnum: number } {
    const exe = compileC(HELLO, join(dir, "victim"), ["-g"]);
    const data = readFileSync(exe);
    const h = readHeader(bufferSource(data));
    return { data, shoff: h.e_shoff, shnum: h.e_shnum };
  }

  it("passes a file cut in the section header table", () => {
    const { data, shoff } = fixture();
    expectUnchanged(data.subarray(0, shoff + 100), "STRIP_TRUNCATED");
  });

  it("passes e_shoff past the end", () => {
    const { data } = fixture();
    const copy = Buffer.from(data);
    copy.writeBigUInt64LE(BigInt(data.length + 4096), 0x28);
    expectUnchanged(copy, "STRIP_TRUNCATED");
  });

  it("passes overlapping sections", () => {
    const { data, shoff, shnum } = fixture();
    const copy = Buffer.from(data);
    // Point the last section (.shstrtab) at the offset of the one before.
    const last = shoff + (shnum - 1) * 64;
    const previous = shoff + (shnum - 2) * 64;
    copy.writeBigUInt64LE(copy.readBigUInt64LE(previous + 24), last + 24);
    expectUnchanged(copy, "STRIP_OVERLAP");
  });

  it("passes a signed kernel module", () => {
    const obj = compileC(HELLO, join(dir, "module.o"), ["-g", "-c"]);
    const signed = Buffer.concat([
      readFileSync(obj),
      Buffer.from("~Module signature appended~\n"),
    ]);
    expectUnchanged(signed, "STRIP_SIGNED_MODULE");
  });

  it("passes non-ELF bytes without a warning", () => {
    const warnings: StripWarning[] = [];
    const data = Buffer.from("#!/bin/sh\necho hi\n");
    const result = stripDebugBuffer(data, { onWarning: (w) => warnings.push(w) });
    assert.equal(result.stripped, false);
    assert.equal(result.data, data);
    assert.deepEqual(warnings, []);
  });
});
