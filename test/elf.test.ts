import assert from "node:assert/strict";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import {
  DT_NEEDED,
  DT_NULL,
  DT_STRSZ,
  DT_STRTAB,
  ET_DYN,
  ET_EXEC,
  ElfFormatError,
  compatibleIdent,
  readElfBuffer,
  readElfFile,
  type ElfIdent,
  type ElfInfo,
} from "../src/elf.js";
import { compileC, run, tempDir } from "./helpers/tools.js";

/** Never emitted by gcc into these tests' files; overwrites other tags. */
const DT_DEBUG = 21;

/** e_machine of the host, from the ELF ABI supplements. */
const HOST_MACHINE: Record<string, number> = { x64: 62, arm64: 183, ia32: 3 };

const MAIN = "int main(void) { return 0; }\n";
const LIB_A = "int a_value(void) { return 1; }\n";
const LIB_B = "int b_value(void) { return 2; }\n";
const USES_BOTH =
  "int a_value(void); int b_value(void);\n" +
  "int main(void) { return a_value() + b_value(); }\n";

/** What `readelf -d` lists for one file, in file order. */
interface ReadelfDynamic {
  needed: string[];
  soname: string | null;
  rpath: string | null;
  runpath: string | null;
  flags1: string[];
}

function readelfDynamic(path: string): ReadelfDynamic {
  const text = run("readelf", ["-dW", path]).toString();
  const bracket = (label: string) => {
    const all = [...text.matchAll(new RegExp(`${label}: \\[(.*)\\]`, "g"))];
    return all.map((m) => m[1]);
  };
  const flags = text.match(/\(FLAGS_1\)\s+Flags:\s*(.*)/);
  return {
    needed: bracket("Shared library"),
    soname: bracket("Library soname")[0] ?? null,
    rpath: bracket("Library rpath")[0] ?? null,
    runpath: bracket("Library runpath")[0] ?? null,
    flags1: flags ? flags[1].trim().split(/\s+/) : [],
  };
}

function readelfInterpreter(path: string): string | null {
  const text = run("readelf", ["-lW", path]).toString();
  const m = text.match(/Requesting program interpreter: (.*)\]/);
  return m ? m[1] : null;
}

function readelfHeaderField(path: string, field: string): string {
  const text = run("readelf", ["-hW", path]).toString();
  const m = text.match(new RegExp(`^\\s*${field}:\\s*(.*)$`, "m"));
  assert.ok(m, `readelf -h printed no ${field}`);
  return m[1].trim();
}

/** One program header as `readelf -lW` prints it (offsets in bytes). */
interface ReadelfSegment {
  type: string;
  offset: number;
  filesz: number;
}

function readelfSegments(path: string): ReadelfSegment[] {
  const text = run("readelf", ["-lW", path]).toString();
  const rows = text.matchAll(
    /^\s+([A-Z_]+)\s+0x([0-9a-f]+)\s+0x[0-9a-f]+\s+0x[0-9a-f]+\s+0x([0-9a-f]+)/gm,
  );
  return [...rows].map((m) => ({
    type: m[1],
    offset: parseInt(m[2], 16),
    filesz: parseInt(m[3], 16),
  }));
}

function segment(path: string, type: string): ReadelfSegment {
  const found = readelfSegments(path).find((s) => s.type === type);
  assert.ok(found, `${path} has no ${type} segment`);
  return found;
}

/** Calls `edit` on each 16-byte ELF64 dynamic entry with its tag. */
function eachDynamic(
  bytes: Buffer,
  dynamic: ReadelfSegment,
  edit: (at: number, tag: bigint) => void,
): void {
  for (let at = dynamic.offset; at < dynamic.offset + dynamic.filesz; at += 16) {
    edit(at, bytes.readBigUInt64LE(at));
  }
}

function expectMalformed(bytes: Buffer, dir: string, name: string): void {
  assert.throws(() => readElfBuffer(bytes), ElfFormatError);
  const path = join(dir, name);
  writeFileSync(path, bytes);
  assert.throws(() => readElfFile(path), ElfFormatError);
}

let work: ReturnType<typeof tempDir>;
const bin: Record<string, string> = {};

before(() => {
  work = tempDir("elf");
  const d = work.dir;
  const lib = join(d, "lib");
  mkdirSync(lib);
  bin.libA = compileC(LIB_A, join(lib, "liba.so"), [
    "-shared",
    "-fPIC",
    "-Wl,-soname,liba.so.1",
  ]);
  bin.libB = compileC(LIB_B, join(lib, "libb.so"), [
    "-shared",
    "-fPIC",
    "-Wl,-soname,libb.so.2",
  ]);
  const link = [`-L${lib}`, "-lb", "-la"];
  bin.pie = compileC(USES_BOTH, join(d, "pie"), ["-pie", "-fPIE"], link);
  bin.noPie = compileC(MAIN, join(d, "nopie"), ["-no-pie"]);
  bin.rpath = compileC(
    USES_BOTH,
    join(d, "rpath"),
    ["-Wl,-rpath,/opt/old:$ORIGIN/lib", "-Wl,--disable-new-dtags"],
    link,
  );
  bin.runpath = compileC(
    USES_BOTH,
    join(d, "runpath"),
    ["-Wl,-rpath,/opt/new", "-Wl,--enable-new-dtags"],
    link,
  );
  bin.static = compileC(MAIN, join(d, "static"), ["-static"]);
  bin.staticPie = compileC(MAIN, join(d, "static-pie"), ["-static-pie"]);
  bin.textFile = join(d, "text.txt");
  writeFileSync(bin.textFile, "just some text\n");
});

after(() => work.cleanup());

function read(name: string): ElfInfo {
  const info = readElfFile(bin[name]);
  assert.ok(info, `${name} was not read as ELF`);
  return info;
}

describe("readElfFile against readelf", () => {
  for (const name of ["pie", "noPie", "rpath", "runpath", "libA", "static"]) {
    test(`dynamic entries match for ${name}`, () => {
      const info = read(name);
      const expected = readelfDynamic(bin[name]);
      assert.deepEqual(info.needed, expected.needed);
      assert.equal(info.soname, expected.soname);
      assert.equal(info.rpath, expected.rpath);
      assert.equal(info.runpath, expected.runpath);
      assert.equal(info.pie, expected.flags1.includes("PIE"));
    });

    test(`interpreter matches for ${name}`, () => {
      assert.equal(read(name).interpreter, readelfInterpreter(bin[name]));
    });

    test(`header identity matches for ${name}`, () => {
      const info = read(name);
      const cls = readelfHeaderField(bin[name], "Class");
      const data = readelfHeaderField(bin[name], "Data");
      const abi = readelfHeaderField(bin[name], "OS/ABI");
      assert.equal(info.bits, cls === "ELF64" ? 64 : 32);
      assert.equal(info.littleEndian, data.includes("little endian"));
      assert.equal(info.osabi, abi === "UNIX - GNU" ? 3 : 0);
      assert.ok(abi === "UNIX - GNU" || abi === "UNIX - System V", abi);
      assert.equal(info.e_machine, HOST_MACHINE[process.arch]);
    });
  }
});

describe("readElfFile kinds of file", () => {
  test("needed names keep link order", () => {
    assert.deepEqual(read("pie").needed.slice(0, 2), ["libb.so.2", "liba.so.1"]);
  });

  test("PIE executable is ET_DYN with PIE", () => {
    const info = read("pie");
    assert.equal(info.e_type, ET_DYN);
    assert.equal(info.pie, true);
    assert.equal(info.dynamic, true);
  });

  test("non-PIE executable is ET_EXEC", () => {
    const info = read("noPie");
    assert.equal(info.e_type, ET_EXEC);
    assert.equal(info.pie, false);
  });

  test("shared library has soname, no PIE", () => {
    const info = read("libA");
    assert.equal(info.e_type, ET_DYN);
    assert.equal(info.soname, "liba.so.1");
    assert.equal(info.pie, false);
    assert.equal(info.interpreter, null);
  });

  test("disable-new-dtags gives DT_RPATH only", () => {
    const info = read("rpath");
    assert.equal(info.rpath, "/opt/old:$ORIGIN/lib");
    assert.equal(info.runpath, null);
  });

  test("enable-new-dtags gives DT_RUNPATH only", () => {
    const info = read("runpath");
    assert.equal(info.runpath, "/opt/new");
    assert.equal(info.rpath, null);
  });

  test("static binary has no interpreter", () => {
    const info = read("static");
    assert.equal(info.interpreter, null);
    assert.equal(info.dynamic, false);
    assert.deepEqual(info.needed, []);
    assert.equal(info.e_type, ET_EXEC);
  });

  test("static-pie has PIE, no interpreter", () => {
    const info = read("staticPie");
    assert.equal(info.interpreter, null);
    assert.equal(readelfInterpreter(bin.staticPie), null);
    assert.equal(info.e_type, ET_DYN);
    assert.equal(info.pie, true);
    assert.deepEqual(info.needed, []);
  });

  test("buffer and file readers agree", () => {
    for (const name of ["pie", "rpath", "libA", "static", "staticPie"]) {
      const fromBuffer = readElfBuffer(readFileSync(bin[name]));
      assert.deepEqual(fromBuffer, read(name), name);
    }
  });
});

describe("readElf non-ELF input", () => {
  test("text file returns null", () => {
    assert.equal(readElfFile(bin.textFile), null);
    assert.equal(readElfBuffer(readFileSync(bin.textFile)), null);
  });

  test("empty and short input return null", () => {
    const empty = join(work.dir, "empty");
    writeFileSync(empty, "");
    assert.equal(readElfFile(empty), null);
    assert.equal(readElfBuffer(Buffer.alloc(0)), null);
    assert.equal(readElfBuffer(Buffer.from([0x7f, 0x45, 0x4c])), null);
  });

  test("FIFO returns null without blocking", { timeout: 5000 }, () => {
    const fifo = join(work.dir, "fifo");
    run("mkfifo", [fifo]);
    assert.equal(readElfFile(fifo), null);
  });

  test("directory returns null", () => {
    assert.equal(readElfFile(work.dir), null);
  });
});

describe("readElf malformed input", { timeout: 10000 }, () => {
  const original = () => readFileSync(bin.pie);

  test("truncated header throws", () => {
    expectMalformed(original().subarray(0, 40), work.dir, "short");
    expectMalformed(original().subarray(0, 8), work.dir, "ident");
  });

  test("invalid EI_CLASS throws", () => {
    const bytes = original();
    bytes[4] = 7;
    expectMalformed(bytes, work.dir, "class");
  });

  test("program headers past end throw", () => {
    const bytes = original();
    bytes.writeBigUInt64LE(BigInt(bytes.length - 8), 32); // e_phoff
    expectMalformed(bytes, work.dir, "phoff");
  });

  test("huge e_phnum throws", () => {
    const bytes = original();
    bytes.writeUInt16LE(0xffff, 56); // e_phnum
    expectMalformed(bytes, work.dir, "phnum");
  });

  test("PT_DYNAMIC without DT_NULL throws", () => {
    const bytes = original();
    eachDynamic(bytes, segment(bin.pie, "DYNAMIC"), (at, tag) => {
      if (tag === BigInt(DT_NULL)) bytes.writeBigUInt64LE(BigInt(DT_DEBUG), at);
    });
    expectMalformed(bytes, work.dir, "no-null");
  });

  test("PT_DYNAMIC past end throws", () => {
    const dynamic = segment(bin.pie, "DYNAMIC");
    const bytes = original().subarray(0, dynamic.offset + 24);
    expectMalformed(bytes, work.dir, "cut-dynamic");
  });

  test("DT_STRTAB outside PT_LOAD throws", () => {
    const bytes = original();
    eachDynamic(bytes, segment(bin.pie, "DYNAMIC"), (at, tag) => {
      if (tag === BigInt(DT_STRTAB)) {
        bytes.writeBigUInt64LE(0xdead_0000_0000n, at + 8);
      }
    });
    expectMalformed(bytes, work.dir, "strtab");
  });

  test("DT_NEEDED past DT_STRSZ throws", () => {
    const bytes = original();
    eachDynamic(bytes, segment(bin.pie, "DYNAMIC"), (at, tag) => {
      if (tag === BigInt(DT_NEEDED)) {
        bytes.writeBigUInt64LE(0x7fff_ffffn, at + 8);
      }
    });
    expectMalformed(bytes, work.dir, "needed-strsz");
  });

  test("DT_NEEDED past end of file throws", () => {
    const bytes = original();
    eachDynamic(bytes, segment(bin.pie, "DYNAMIC"), (at, tag) => {
      if (tag === BigInt(DT_STRSZ)) bytes.writeBigUInt64LE(BigInt(DT_DEBUG), at);
      if (tag === BigInt(DT_NEEDED)) {
        bytes.writeBigUInt64LE(BigInt(bytes.length * 4), at + 8);
      }
    });
    expectMalformed(bytes, work.dir, "needed-eof");
  });

  test("unterminated PT_INTERP throws", () => {
    const bytes = original();
    const interp = segment(bin.pie, "INTERP");
    bytes.fill(0x41, interp.offset, interp.offset + interp.filesz);
    expectMalformed(bytes, work.dir, "interp");
  });

  test("PT_INTERP past end throws", () => {
    const interp = segment(bin.pie, "INTERP");
    const bytes = original().subarray(0, interp.offset + 4);
    expectMalformed(bytes, work.dir, "interp-eof");
  });
});

describe("compatibleIdent", () => {
  const base = (): ElfIdent => {
    const { bits, littleEndian, osabi, e_type, e_machine, e_flags } =
      read("pie");
    return { bits, littleEndian, osabi, e_type, e_machine, e_flags };
  };

  test("System V and GNU are compatible", () => {
    const none = { ...base(), osabi: 0 };
    const gnu = { ...base(), osabi: 3 };
    assert.equal(compatibleIdent(none, gnu), true);
    assert.equal(compatibleIdent(gnu, none), true);
  });

  test("real static and PIE are compatible", () => {
    assert.equal(compatibleIdent(read("static"), read("pie")), true);
  });

  test("other OS ABI is incompatible", () => {
    assert.equal(compatibleIdent({ ...base(), osabi: 9 }, base()), false);
  });

  test("class mismatch is incompatible", () => {
    assert.equal(compatibleIdent({ ...base(), bits: 32 }, base()), false);
  });

  test("byte order mismatch is incompatible", () => {
    const other = { ...base(), littleEndian: !base().littleEndian };
    assert.equal(compatibleIdent(other, base()), false);
  });

  test("machine mismatch is incompatible", () => {
    const other = base().e_machine === 62 ? 183 : 62;
    assert.equal(compatibleIdent({ ...base(), e_machine: other }, base()), false);
  });
});
