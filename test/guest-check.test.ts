import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  copyFileSync,
  lstatSync,
  mkdirSync,
  readlinkSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { dirname, join, posix } from "node:path";
import { after, before, describe, test } from "node:test";

import type { ImageEntry } from "../src/file-tree.js";
import { planGuestFixups, verifyImage } from "../src/guest-check.js";
import { Resolver, type ResolveWarning } from "../src/resolve.js";
import { compileC, requireTool, run, tempDir } from "./helpers/tools.js";

const { dir: T, cleanup } = tempDir("guest");
after(cleanup);

let host: Resolver;
let entries: ImageEntry[];

/** Lists entries the way the image packer lays them out. */
function imageEntries(binary: string, resolver: Resolver): ImageEntry[] {
  const closure = resolver.resolve(binary);
  const out: ImageEntry[] = [{ path: "init", hostPath: binary }];
  const add = (guestPath: string, hostPath: string, aliases: string[]) => {
    out.push({ path: guestPath, hostPath });
    for (const a of aliases) out.push({ path: a, symlink: "/" + guestPath });
  };
  const interp = closure.interpreter;
  assert.ok(interp);
  add(interp.guestPath, interp.hostPath, interp.aliases);
  for (const lib of closure.libraries) add(lib.guestPath, lib.hostPath, lib.aliases);
  return out;
}

/** Writes the entries to a directory, as the kernel unpacks the image. */
function materialize(root: string, list: ImageEntry[]): void {
  for (const e of list) {
    const path = join(root, e.path);
    mkdirSync(dirname(path), { recursive: true });
    if (e.symlink !== undefined) symlinkSync(e.symlink, path);
    else if (e.hostPath !== undefined) copyFileSync(e.hostPath, path);
  }
}

/**
 * Sets LD_TRACE_LOADED_OBJECTS inside the chroot and runs the image's
 * ld.so on /init. Setting it outside would make the host's ld.so trace
 * chroot(1) itself.
 */
const TRACE_HELPER = `
#include <stdlib.h>
#include <unistd.h>
int main(void) {
  char *argv[] = { "/lib64/ld-linux-x86-64.so.2", "/init", 0 };
  setenv("LD_TRACE_LOADED_OBJECTS", "1", 1);
  execv("/lib64/ld-linux-x86-64.so.2", argv);
  return 127;
}`;

/** Follows symlinks of a root-absolute path inside `root`. */
function resolveInRoot(root: string, path: string): string {
  for (let hops = 0; hops < 40; hops++) {
    const host = join(root, path);
    if (!lstatSync(host).isSymbolicLink()) return path;
    const target = readlinkSync(host);
    path = target.startsWith("/") ? target : posix.join(posix.dirname(path), target);
  }
  throw new Error(`symlink loop at ${path}`);
}

/** Runs the image's own ld.so on /init in a chroot, in trace mode. */
function guestLdso(root: string): Map<string, string | null> {
  copyFileSync(`${T}/trace-helper`, `${root}/trace-helper`);
  const out = spawnSync("chroot", [root, "/trace-helper"], { encoding: "utf8" });
  assert.ok(out.stdout, `chroot ld.so failed: ${out.stderr}`);
  const map = new Map<string, string | null>();
  for (const m of out.stdout.matchAll(/^\s+(\S+) => (.*?)(?: \(0x[0-9a-f]+\))?$/gm)) {
    map.set(m[1], m[2] === "not found" ? null : resolveInRoot(root, m[2]));
  }
  return map;
}

before(() => {
  requireTool("gcc");
  requireTool("ldconfig");
  compileC(TRACE_HELPER, `${T}/trace-helper`, ["-static"]);
  const body = (fn: string) => `int ${fn}(void){return 0;}`;
  mkdirSync(`${T}/cacheonly`, { recursive: true });
  mkdirSync(`${T}/app/lib`, { recursive: true });
  compileC(body("c"), `${T}/cacheonly/libcache.so.1`,
    ["-shared", "-fPIC", "-Wl,-soname,libcache.so.1"]);
  compileC(body("o"), `${T}/app/lib/libor.so`, ["-shared", "-fPIC", "-Wl,-soname,libor.so"]);
  compileC("int c(void); int o(void); int main(void){return c() + o();}",
    `${T}/app/prog`, ["-Wl,--disable-new-dtags,-rpath,$ORIGIN/lib"],
    [`-L${T}/cacheonly`, `-L${T}/app/lib`, "-l:libcache.so.1", "-lor"]);
  writeFileSync(`${T}/ld.so.conf`, `${T}/cacheonly\n`);
  run("ldconfig", ["-X", "-C", `${T}/ld.so.cache`, "-f", `${T}/ld.so.conf`]);
  host = new Resolver({ ldLibraryPath: [], ldCachePath: `${T}/ld.so.cache` });
  entries = imageEntries(`${T}/app/prog`, host);
});

describe("guest resolution", () => {
  test("host finds libraries via cache and $ORIGIN", () => {
    const closure = host.resolve(`${T}/app/prog`);
    const byName = new Map(closure.libraries.map((l) => [l.name, l.hostPath]));
    assert.equal(byName.get("libcache.so.1"), `${T}/cacheonly/libcache.so.1`);
    assert.equal(byName.get("libor.so"), `${T}/app/lib/libor.so`);
    assert.deepEqual(closure.missing, []);
  });

  test("verifyImage lists what the guest misses", () => {
    const problems = verifyImage(entries);
    const names = problems.map((p) => p.name).sort();
    assert.deepEqual(names, ["libcache.so.1", "libor.so"]);
    assert.ok(problems.every((p) => p.code === "GUEST_LIB_MISSING" && p.file === "init"));
    // The guest's own ld.so agrees.
    const root = `${T}/image-before`;
    materialize(root, entries);
    const theirs = guestLdso(root);
    assert.equal(theirs.get("libcache.so.1"), null);
    assert.equal(theirs.get("libor.so"), null);
  });

  test("planGuestFixups links them into a default directory", () => {
    const warnings: ResolveWarning[] = [];
    const fixups = planGuestFixups(entries, {
      hostResolver: host,
      onWarning: (w) => warnings.push(w),
    });
    assert.deepEqual(warnings, []);
    const links = Object.fromEntries(fixups.map((f) => [f.path, f.symlink]));
    assert.deepEqual(links, {
      "lib/x86_64-linux-gnu/libcache.so.1": `${T}/cacheonly/libcache.so.1`,
      "lib/x86_64-linux-gnu/libor.so": `${T}/app/lib/libor.so`,
    });
    const fixed = [...entries, ...fixups];
    assert.deepEqual(verifyImage(fixed), []);
    const root = `${T}/image-after`;
    materialize(root, fixed);
    const theirs = guestLdso(root);
    for (const lib of host.resolve(`${T}/app/prog`).libraries) {
      assert.equal(theirs.get(lib.name), "/" + lib.guestPath, lib.name);
    }
  });

  test("verifyImage reports a missing interpreter", () => {
    const withoutInterp = entries.filter((e) => !e.path.includes("ld-linux"));
    const problems = verifyImage(withoutInterp);
    assert.ok(problems.some((p) => p.name === "/lib64/ld-linux-x86-64.so.2"));
  });

  test("file hidden by a later entry is skipped", () => {
    const expected = verifyImage(entries);
    const hiders: ImageEntry[] = [
      { path: "app", symlink: "/nowhere" },
      { path: "app", hostPath: `${T}/ld.so.conf` },
    ];
    for (const hider of hiders) {
      const hidden = [
        ...entries,
        { path: "app/prog", hostPath: `${T}/app/prog` },
        hider,
      ];
      assert.deepEqual(verifyImage(hidden), expected, JSON.stringify(hider));
      assert.doesNotThrow(() => planGuestFixups(hidden, { hostResolver: host }));
    }
  });

  test("unpacked library is reported", () => {
    const partial = entries.filter((e) => !e.path.endsWith("libcache.so.1"));
    const warnings: ResolveWarning[] = [];
    planGuestFixups(partial, { hostResolver: host, onWarning: (w) => warnings.push(w) });
    assert.deepEqual(warnings.map((w) => w.code), ["GUEST_LIB_NOT_PACKED"]);
  });
});
