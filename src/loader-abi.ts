import { readFileSync } from "node:fs";
import { arch } from "node:os";
import { basename } from "node:path";

import { EM_386, EM_AARCH64, EM_X86_64, type ElfIdent } from "./elf.js";
import {
  FLAG_AARCH64_LIB64,
  FLAG_ARM_LIBHF,
  FLAG_ARM_LIBSF,
  FLAG_ELF,
  FLAG_ELF_LIBC6,
  FLAG_POWERPC_LIB64,
  FLAG_RISCV_FLOAT_ABI_DOUBLE,
  FLAG_S390_LIB64,
  FLAG_X8664_LIB64,
  FLAG_X8664_LIBX32,
  type CacheAbi,
} from "./ldcache.js";

const EM_ARM = 40;
const EM_PPC64 = 21;
const EM_S390 = 22;
const EM_RISCV = 243;
const EF_ARM_ABI_FLOAT_HARD = 0x400;
const EF_RISCV_FLOAT_ABI_DOUBLE = 0x4;

/** What the glibc dynamic linker of one ABI does that depends on the ABI. */
export interface LoaderAbi {
  /** Debian multiarch triplet, e.g. "x86_64-linux-gnu". */
  triplet: string;
  cache: CacheAbi;
  /** Expansion of `$LIB`. */
  lib: string;
  /** AT_PLATFORM the kernel passes when glibc does not override it. */
  platform: string;
  /**
   * Built-in search directories (Debian's ld.so). Verified for x86_64
   * with `ld.so --help` on Debian 12 (glibc 2.36): /lib/TRIPLET,
   * /usr/lib/TRIPLET, /lib, /usr/lib.
   */
  defaultDirs: string[];
  /** PT_INTERP paths of the distribution's own dynamic linker. */
  standardInterpreters: string[];
}

function exactly(id: number): CacheAbi {
  return { defaultId: id, accepts: (flags) => flags === id };
}

// NOTE: only the x86_64 row was checked against a real ld.so (`$LIB`
// with a test binary, directories with `ld.so --help`); the others
// follow the same Debian multiarch layout and are used only when the
// interpreter file itself does not give its directory list.
function debian(
  triplet: string,
  cache: CacheAbi,
  platform: string,
  interpreters: string[],
): LoaderAbi {
  return {
    triplet,
    cache,
    lib: `lib/${triplet}`,
    platform,
    defaultDirs: [`/lib/${triplet}`, `/usr/lib/${triplet}`, "/lib", "/usr/lib"],
    standardInterpreters: interpreters.flatMap((p) => [p, `/usr${p}`]),
  };
}

/** Returns the glibc ABI of an ELF identity, or null for an unknown one. */
export function loaderAbiFor(id: ElfIdent): LoaderAbi | null {
  const is64 = id.bits === 64;
  switch (id.e_machine) {
    case EM_X86_64:
      return is64
        ? debian("x86_64-linux-gnu", exactly(FLAG_X8664_LIB64 | FLAG_ELF_LIBC6),
            "x86_64", ["/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"])
        : debian("x86_64-linux-gnux32", exactly(FLAG_X8664_LIBX32 | FLAG_ELF_LIBC6),
            "x86_64", ["/libx32/ld-linux-x32.so.2"]);
    case EM_386:
      return debian(
        "i386-linux-gnu",
        {
          defaultId: FLAG_ELF_LIBC6,
          accepts: (f) => f === FLAG_ELF || f === FLAG_ELF_LIBC6,
        },
        "i686",
        ["/lib/ld-linux.so.2"],
      );
    case EM_AARCH64:
      return debian("aarch64-linux-gnu", exactly(FLAG_AARCH64_LIB64 | FLAG_ELF_LIBC6),
        "aarch64", ["/lib/ld-linux-aarch64.so.1"]);
    case EM_ARM:
      return (id.e_flags & EF_ARM_ABI_FLOAT_HARD) !== 0
        ? debian("arm-linux-gnueabihf", exactly(FLAG_ARM_LIBHF | FLAG_ELF_LIBC6),
            "v7l", ["/lib/ld-linux-armhf.so.3"])
        : debian("arm-linux-gnueabi", exactly(FLAG_ARM_LIBSF | FLAG_ELF_LIBC6),
            "v5l", ["/lib/ld-linux.so.3"]);
    case EM_RISCV:
      if (!is64 || (id.e_flags & 0x6) !== EF_RISCV_FLOAT_ABI_DOUBLE) return null;
      return debian("riscv64-linux-gnu",
        exactly(FLAG_RISCV_FLOAT_ABI_DOUBLE | FLAG_ELF_LIBC6),
        "riscv64", ["/lib/ld-linux-riscv64-lp64d.so.1"]);
    case EM_PPC64:
      return debian("powerpc64le-linux-gnu", exactly(FLAG_POWERPC_LIB64 | FLAG_ELF_LIBC6),
        "power8", ["/lib64/ld64.so.2"]);
    case EM_S390:
      return debian("s390x-linux-gnu", exactly(FLAG_S390_LIB64 | FLAG_ELF_LIBC6),
        "z13", ["/lib/ld64.so.1"]);
    default:
      return null;
  }
}

/** Returns the musl architecture name of an interpreter, or null. */
export function muslArch(interpreter: string): string | null {
  const m = /^ld-musl-([A-Za-z0-9_]+)\.so\.1$/.exec(basename(interpreter));
  return m ? m[1] : null;
}

/**
 * Reads the built-in directory list that glibc's dl-load.c stores in
 * ld.so as consecutive NUL-terminated strings ("/lib/x86_64-linux-gnu/\0
 * /usr/lib/x86_64-linux-gnu/\0/lib/\0/usr/lib/\0"). Returns null when no
 * such run is found, for example in a non-glibc interpreter.
 */
export function readInterpreterDirs(interpreterBytes: Buffer): string[] | null {
  const text = interpreterBytes.toString("latin1");
  const run = /(?:\/[A-Za-z0-9_.+\-/]*\/\0){2,}/g;
  for (let m = run.exec(text); m; m = run.exec(text)) {
    const dirs = m[0].split("\0").filter((d) => d !== "");
    if (dirs.every((d) => d.includes("lib"))) {
      return dirs.map((d) => (d.length > 1 ? d.replace(/\/+$/, "") : d));
    }
  }
  return null;
}

/** Reads `readInterpreterDirs` from a file; null when unreadable. */
export function readInterpreterDirsFile(hostPath: string): string[] | null {
  try {
    return readInterpreterDirs(readFileSync(hostPath));
  } catch {
    return null;
  }
}

/**
 * Returns what glibc 2.36 on this machine expands `$PLATFORM` to for
 * x86_64: sysdeps/x86/cpu-features.c replaces AT_PLATFORM with
 * "xeon_phi" or "haswell" on Intel CPUs with those feature sets. Other
 * ABIs, and other machines than this one, get the ABI's AT_PLATFORM.
 */
export function hostPlatform(abi: LoaderAbi): string {
  if (abi.triplet !== "x86_64-linux-gnu" || arch() !== "x64") return abi.platform;
  let cpuinfo: string;
  try {
    cpuinfo = readFileSync("/proc/cpuinfo", "latin1");
  } catch {
    return abi.platform;
  }
  if (!/^vendor_id\s*:\s*GenuineIntel$/m.test(cpuinfo)) return abi.platform;
  const flagsLine = /^flags\s*:(.*)$/m.exec(cpuinfo);
  const flags = new Set((flagsLine?.[1] ?? "").trim().split(/\s+/));
  const all = (names: string[]) => names.every((n) => flags.has(n));
  if (flags.has("avx512cd")) {
    if (all(["avx512er", "avx512pf"])) return "xeon_phi";
  }
  // "abm" is how /proc/cpuinfo names LZCNT.
  if (all(["avx2", "fma", "bmi1", "bmi2", "abm", "movbe", "popcnt"])) {
    return "haswell";
  }
  return abi.platform;
}
