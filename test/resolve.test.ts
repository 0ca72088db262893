import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  copyFileSync,
  mkdirSync,
  readFileSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { dirname, posix } from "node:path";
import { after, before, describe, test } from "node:test";

import {
  libraryMap,
  Resolver,
  type Closure,
  type ResolveWarning,
} from "../src/resolve.js";
import { compileC, requireTool, run, tempDir } from "./helpers/tools.js";

const LDSO = "/lib64/ld-linux-x86-64.so.2";
const { dir: T, cleanup } = tempDir("resolve");

function lib(path: string, body: string, flags: string[] = [], libs: string[] = []) {
  mkdirSync(dirname(path), { recursive: true });
  const soname = posix.basename(path);
  return compileC(body, path, ["-shared", "-fPIC", `-Wl,-soname,${soname}`, ...flags], libs);
}

function exe(path: string, body: string, flags: string[] = [], libs: string[] = []) {
  mkdirSync(dirname(path), { recursive: true });
  return compileC(body, path, flags, libs);
}

const rpath = (dirs: string) => [`-Wl,--disable-new-dtags,-rpath,${dirs}`];
const runpath = (dirs: string) => [`-Wl,--enable-new-dtags,-rpath,${dirs}`];

/**
 * Runs ld.so in trace mode, as ldd does, and parses its list. glibc 2.36
 * `ld.so --list` stops at the first missing library, while
 * LD_TRACE_LOADED_OBJECTS=1 lists it as "not found"; neither runs main.
 */
function ldsoMap(
  file: string,
  env: Record<string, string> = {},
  ldso = LDSO,
): Map<string, string | null> {
  const childEnv = { ...process.env, ...env };
  if (!("LD_LIBRARY_PATH" in env)) delete childEnv.LD_LIBRARY_PATH;
  childEnv.LD_TRACE_LOADED_OBJECTS = "1";
  const out = spawnSync(ldso, [file], { encoding: "utf8", env: childEnv });
  assert.ok(out.stdout !== "", `ld.so --list ${file} failed: ${out.stderr}`);
  const map = new Map<string, string | null>();
  for (const line of out.stdout.split("\n")) {
    const m = /^\s+(\S+) => (.*?)(?: \(0x[0-9a-f]+\))?$/.exec(line);
    if (m) map.set(m[1], m[2] === "not found" ? null : posix.normalize(m[2]));
    const plain = /^\s+(\/\S+) \(0x[0-9a-f]+\)$/.exec(line);
    if (plain && !plain[1].includes("ld-")) map.set(plain[1], plain[1]);
  }
  return map;
}

function resolveQuiet(file: string, opts: ConstructorParameters<typeof Resolver>[0] = {}) {
  const warnings: ResolveWarning[] = [];
  const resolver = new Resolver({
    ldLibraryPath: [],
    onWarning: (w) => warnings.push(w),
    ...opts,
  });
  return { closure: resolver.resolve(file), warnings, resolver };
}

function assertLikeLdso(file: string, ldLibraryPath: string[] = []): Closure {
  const { closure } = resolveQuiet(file, { ldLibraryPath });
  const env: Record<string, string> = {};
  if (ldLibraryPath.length) env.LD_LIBRARY_PATH = ldLibraryPath.join(":");
  assert.deepEqual(
    Object.fromEntries(libraryMap(closure)),
    Object.fromEntries(ldsoMap(file, env)),
  );
  return closure;
}

const MAIN = (fn: string) => `int ${fn}(void); int main(void){return ${fn}();}`;
const FN = (fn: string, call = "") =>
  call ? `int ${call}(void); int ${fn}(void){return ${call}();}` : `int ${fn}(void){return 0;}`;

before(() => {
  requireTool("gcc");
  lib(`${T}/r/libr.so`, FN("r"));
  exe(`${T}/bin/rpath`, MAIN("r"), rpath(`${T}/r`), [`-L${T}/r`, "-lr"]);
  exe(`${T}/bin/runpath`, MAIN("r"), runpath(`${T}/r`), [`-L${T}/r`, "-lr"]);

  lib(`${T}/o/lib/libo.so`, FN("o"));
  exe(`${T}/o/bin/origin`, MAIN("o"), rpath("$ORIGIN/../lib"), [`-L${T}/o/lib`, "-lo"]);
  exe(`${T}/o/bin/origin-brace`, MAIN("o"), runpath("${ORIGIN}/../lib"), [`-L${T}/o/lib`, "-lo"]);
  lib(`${T}/o/bin/lib/x86_64-linux-gnu/libo.so`, FN("o"));
  exe(`${T}/o/bin/dlib`, MAIN("o"), rpath("$ORIGIN/$LIB"), [`-L${T}/o/lib`, "-lo"]);

  lib(`${T}/chain/libc2.so`, FN("c2"));
  lib(`${T}/chain/libc1.so`, FN("c1", "c2"), [], [`-L${T}/chain`, "-lc2"]);
  const chainLibs = [`-L${T}/chain`, "-lc1", "-Wl,--allow-shlib-undefined"];
  exe(`${T}/bin/chain-rpath`, MAIN("c1"), rpath(`${T}/chain`), chainLibs);
  exe(`${T}/bin/chain-runpath`, MAIN("c1"), runpath(`${T}/chain`), chainLibs);

  lib(`${T}/dupR/libdup.so`, FN("d"));
  lib(`${T}/dupL/libdup.so`, FN("d"));
  exe(`${T}/bin/dup-rpath`, MAIN("d"), rpath(`${T}/dupR`), [`-L${T}/dupR`, "-ldup"]);
  exe(`${T}/bin/dup-runpath`, MAIN("d"), runpath(`${T}/dupR`), [`-L${T}/dupR`, "-ldup"]);

  mkdirSync(`${T}/abs`, { recursive: true });
  compileC(FN("a"), `${T}/abs/libabs.so`, ["-shared", "-fPIC"]);
  exe(`${T}/bin/absolute`, MAIN("a"), [], [`${T}/abs/libabs.so`]);

  exe(`${T}/bin/static`, MAIN("puts") , ["-static"]);
  exe(`${T}/bin/static-pie`, MAIN("puts"), ["-static-pie", "-fPIE"]);

  // A text linker script named like the library, earlier on the path.
  mkdirSync(`${T}/script`, { recursive: true });
  writeFileSync(
    `${T}/script/libscr.so`,
    "/* GNU ld script\n   Use the shared library, but some functions are only in\n" +
      "   the static library.  */\nGROUP ( libscr.so.1 libscr_nonshared.a )\n",
  );
  lib(`${T}/scr2/libscr.so`, FN("s"));
  exe(`${T}/bin/script`, MAIN("s"), rpath(`${T}/script:${T}/scr2`), [`-L${T}/scr2`, "-lscr"]);

  // A custom interpreter: a copy of ld.so in a toolchain directory.
  mkdirSync(`${T}/tc/lib`, { recursive: true });
  copyFileSync(LDSO, `${T}/tc/lib/ld-custom.so.2`);
  lib(`${T}/tc/lib/libtc.so`, FN("t"));
  exe(`${T}/bin/custom`, MAIN("t"), [`-Wl,--dynamic-linker=${T}/tc/lib/ld-custom.so.2`],
    [`-L${T}/tc/lib`, "-ltc"]);
});

after(cleanup);

describe("glibc search order agrees with ld.so", () => {
  test("DT_RPATH", () => {
    const c = assertLikeLdso(`${T}/bin/rpath`);
    assert.equal(c.libraries[0].hostPath, `${T}/r/libr.so`);
  });
  test("DT_RUNPATH", () => {
    assertLikeLdso(`${T}/bin/runpath`);
  });
  test("$ORIGIN in RPATH and ${ORIGIN} in RUNPATH", () => {
    assertLikeLdso(`${T}/o/bin/origin`);
    assertLikeLdso(`${T}/o/bin/origin-brace`);
  });
  test("$LIB expands as Debian's ld.so does", () => {
    const c = assertLikeLdso(`${T}/o/bin/dlib`);
    assert.equal(c.libraries[0].hostPath, `${T}/o/bin/lib/x86_64-linux-gnu/libo.so`);
  });
  test("executable RPATH applies to its libraries", () => {
    const c = assertLikeLdso(`${T}/bin/chain-rpath`);
    assert.ok(c.libraries.some((l) => l.name === "libc2.so"));
  });
  test("executable RUNPATH does not apply to libraries", () => {
    const c = assertLikeLdso(`${T}/bin/chain-runpath`);
    assert.deepEqual(c.missing.map((m) => m.name), ["libc2.so"]);
  });
  test("RPATH wins over LD_LIBRARY_PATH", () => {
    const c = assertLikeLdso(`${T}/bin/dup-rpath`, [`${T}/dupL`]);
    assert.equal(c.libraries[0].hostPath, `${T}/dupR/libdup.so`);
  });
  test("LD_LIBRARY_PATH wins over RUNPATH", () => {
    const c = assertLikeLdso(`${T}/bin/dup-runpath`, [`${T}/dupL`]);
    assert.equal(c.libraries[0].hostPath, `${T}/dupL/libdup.so`);
  });
  test("absolute DT_NEEDED is a path", () => {
    const c = assertLikeLdso(`${T}/bin/absolute`);
    assert.equal(c.libraries[0].name, `${T}/abs/libabs.so`);
  });
  test("linker script candidate is skipped", () => {
    // glibc's open_verify stops at a non-ELF candidate instead of
    // skipping it; the resolver skips it with a warning.
    const file = `${T}/bin/script`;
    const traced = spawnSync(LDSO, [file], {
      encoding: "utf8",
      env: { LD_TRACE_LOADED_OBJECTS: "1" },
    });
    assert.match(traced.stderr, /invalid ELF header/);
    const { closure, warnings } = resolveQuiet(file);
    assert.equal(closure.libraries[0].hostPath, `${T}/scr2/libscr.so`);
    assert.deepEqual(warnings.map((w) => w.code), ["LIB_NOT_ELF"]);
    assert.equal(warnings[0].path, `${T}/script/libscr.so`);
  });
  test("system binaries", () => {
    for (const bin of ["/usr/bin/ls", "/usr/bin/gcc", "/usr/bin/cpio"]) {
      assertLikeLdso(bin);
    }
  });
});

describe("interpreter", () => {
  test("standard PT_INTERP and its real path", () => {
    const { closure } = resolveQuiet("/usr/bin/ls");
    const interp = closure.interpreter;
    assert.ok(interp);
    assert.ok(interp.aliases.includes("lib64/ld-linux-x86-64.so.2"));
    const real = run("readlink", ["-f", LDSO]).toString().trim();
    assert.equal(interp.hostPath, real);
    assert.equal(interp.guestPath, real.slice(1));
  });
  test("static and static-pie need nothing", () => {
    for (const name of ["static", "static-pie"]) {
      const { closure } = resolveQuiet(`${T}/bin/${name}`);
      assert.equal(closure.interpreter, null, name);
      assert.deepEqual(closure.libraries, [], name);
      assert.deepEqual(closure.missing, [], name);
    }
  });
  test("custom interpreter directory is a hint", () => {
    const file = `${T}/bin/custom`;
    const { closure } = resolveQuiet(file);
    assert.equal(closure.interpreter?.hostPath, `${T}/tc/lib/ld-custom.so.2`);
    const ours = libraryMap(closure);
    // glibc itself does not search next to the interpreter.
    const theirs = ldsoMap(file, {}, `${T}/tc/lib/ld-custom.so.2`);
    assert.equal(theirs.get("libtc.so"), null);
    assert.equal(ours.get("libtc.so"), `${T}/tc/lib/libtc.so`);
    assert.equal(ours.get("libc.so.6"), theirs.get("libc.so.6"));
  });
});

describe("robustness", () => {
  test("malformed ELF is reported and skipped", () => {
    const bad = `${T}/bad`;
    mkdirSync(bad, { recursive: true });
    const good = readFileSync(`${T}/r/libr.so`);
    writeFileSync(`${bad}/libr.so`, good.subarray(0, 200));
    const file = exe(`${T}/bin/bad`, MAIN("r"), rpath(`${bad}:${T}/r`), [`-L${T}/r`, "-lr"]);
    const { closure, warnings } = resolveQuiet(file);
    assert.equal(closure.libraries[0].hostPath, `${T}/r/libr.so`);
    assert.deepEqual(warnings.map((w) => w.code), ["ELF_MALFORMED"]);
    assert.equal(warnings[0].path, `${bad}/libr.so`);
  });
  test("dangling symlink is skipped", () => {
    const dangling = `${T}/dangling`;
    mkdirSync(dangling, { recursive: true });
    symlinkSync("missing.so", `${dangling}/libr.so`);
    const flags = rpath(`${dangling}:${T}/r`);
    const file = exe(`${T}/bin/dangling`, MAIN("r"), flags, [`-L${T}/r`, "-lr"]);
    assertLikeLdso(file);
  });
  test("one Resolver parses each closure once", () => {
    const resolver = new Resolver({ ldLibraryPath: [] });
    const first = resolver.resolve("/usr/bin/ls");
    assert.equal(resolver.resolve("/bin/ls"), first);
  });
});

describe("sysroot", () => {
  test("paths resolve inside the sysroot", () => {
    const root = `${T}/sysroot`;
    const libdir = `${root}/usr/lib/x86_64-linux-gnu`;
    mkdirSync(libdir, { recursive: true });
    mkdirSync(`${root}/lib64`, { recursive: true });
    symlinkSync("usr/lib", `${root}/lib`);
    for (const name of ["libc.so.6", "ld-linux-x86-64.so.2"]) {
      copyFileSync(`/lib/x86_64-linux-gnu/${name}`, `${libdir}/${name}`);
    }
    // An absolute symlink target means a path inside the sysroot.
    symlinkSync("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", `${root}/lib64/ld-linux-x86-64.so.2`);
    lib(`${root}/opt/l/libsr.so`, FN("q"));
    exe(`${root}/usr/bin/prog`, MAIN("q"), runpath("/opt/l"), [`-L${root}/opt/l`, "-lsr"]);
    const { closure } = resolveQuiet(`${root}/usr/bin/prog`, { sysroot: root });
    const chroot = spawnSync("chroot", [root, "/lib64/ld-linux-x86-64.so.2", "--list", "/usr/bin/prog"], { encoding: "utf8" });
    assert.equal(chroot.status, 0, chroot.stderr);
    const expected = new Map<string, string>();
    for (const m of chroot.stdout.matchAll(/^\s+(\S+) => (\S+)/gm)) expected.set(m[1], m[2]);
    assert.deepEqual(Object.fromEntries(libraryMap(closure)), Object.fromEntries(expected));
    assert.equal(closure.interpreter?.hostPath, `${libdir}/ld-linux-x86-64.so.2`);
    const libc = closure.libraries.find((l) => l.name === "libc.so.6");
    assert.equal(libc?.hostPath, `${libdir}/libc.so.6`);
    assert.equal(libc?.guestPath, "usr/lib/x86_64-linux-gnu/libc.so.6");
    assert.ok(libc?.aliases.includes("lib/x86_64-linux-gnu/libc.so.6"));
  });
});

describe("other ABIs", () => {
  test("32-bit library earlier on the path is skipped", () => {
    requireTool("gcc");
    const probe = spawnSync("gcc", ["-m32", "-print-file-name=libc.so"], { encoding: "utf8" });
    assert.ok(probe.stdout.includes("/"), "gcc -m32 needs: apt-get install -y gcc-multilib");
    lib(`${T}/m32/libmix.so`, FN("x"), ["-m32"]);
    lib(`${T}/m64/libmix.so`, FN("x"));
    const file = exe(`${T}/bin/mix`, MAIN("x"), rpath(`${T}/m32:${T}/m64`), [`-L${T}/m64`, "-lmix"]);
    const c = assertLikeLdso(file);
    assert.equal(c.libraries[0].hostPath, `${T}/m64/libmix.so`);
  });
  test("musl binary uses musl's path", () => {
    const muslGcc = spawnSync("sh", ["-c", "command -v musl-gcc"], { encoding: "utf8" });
    assert.equal(muslGcc.status, 0, "musl-gcc not found; install it with: apt-get install -y musl-tools");
    const musl = (args: string[], body: string) =>
      run("musl-gcc", ["-x", "c", "-", "-x", "none", ...args], { input: body });
    mkdirSync(`${T}/musl`, { recursive: true });
    musl(["-shared", "-fPIC", "-o", `${T}/musl/libmu.so`], FN("u"));
    const file = `${T}/bin/musl`;
    musl(["-o", file, ...runpath(`${T}/musl`), `-L${T}/musl`, "-lmu"], MAIN("u"));
    const { closure } = resolveQuiet(file);
    const ldMusl = "/lib/ld-musl-x86_64.so.1";
    const out = spawnSync(ldMusl, ["--list", file], { encoding: "utf8" }).stdout;
    const expected = new Map<string, string>();
    for (const m of out.matchAll(/^\s+(\S+) => (\S+)/gm)) expected.set(m[1], m[2]);
    assert.equal(expected.get("libc.so"), ldMusl);
    expected.delete("libc.so");
    assert.deepEqual(Object.fromEntries(libraryMap(closure)), Object.fromEntries(expected));
    assert.equal(closure.interpreter?.aliases[0], ldMusl.slice(1));
  });
});

describe("Resolver on a missing binary", () => {
  test("raises INPUT_NOT_FOUND naming it", () => {
    const missing = "/nonexistent/gulp-initramfs-test-binary";
    assert.throws(
      () => new Resolver({ ldLibraryPath: [] }).resolve(missing),
      (error: unknown) => {
        assert.equal((error as { code?: string }).code, "INPUT_NOT_FOUND");
        assert.match((error as Error).message, /gulp-initramfs-test-binary/);
        return true;
      },
    );
  });
});
