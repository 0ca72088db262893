import { closeSync, openSync, readSync, statSync } from "node:fs";
import type Vinyl from "vinyl";
import type { ImageEntry } from "../src/file-tree.js";
import { planGuestFixups } from "../src/guest-check.js";
import { Resolver, type ResolverOptions } from "../src/resolve.js";
import { archiveFile, symlinkFile } from "./sources.js";
import { archivePathOf, hostPathOf, metaOf } from "./meta.js";
import {
  InitramfsError,
  pluginStream,
  type WarningHandler,
} from "./transform.js";

export interface ResolveLibsOptions
  extends Omit<ResolverOptions, "onWarning"> {
  /** Share one resolver (and its cache) between several pipelines. */
  resolver?: Resolver;
  /**
   * Add symlinks so the guest's ld.so, which has no ld.so.cache and its
   * own `$ORIGIN`, finds the same libraries as the host. Default true.
   */
  guestFixups?: boolean;
  onWarning?: WarningHandler;
}

/** Bytes of /init read for its `#!` line; Linux reads 256 (BINPRM_BUF_SIZE). */
const SHEBANG_MAX = 256;

/** A library or alias to emit, keyed by its archive path. */
interface Planned {
  hostPath: string;
  /** Set for an alias: the absolute guest path it points to. */
  target?: string;
}

function libraryFile(archivePath: string, planned: Planned): Vinyl {
  if (planned.target !== undefined) {
    return symlinkFile(archivePath, planned.target, "library");
  }
  return archiveFile(archivePath, planned.hostPath, "library");
}

/** Returns the file as a guest-check entry, if its bytes are on disk. */
function entryOf(file: Vinyl): ImageEntry[] {
  const path = archivePathOf(file);
  if (file.isSymbolic()) return [{ path, symlink: file.symlink! }];
  const hostPath = hostPathOf(file);
  if (file.isBuffer() && !isHostFile(hostPath, file.contents.length)) return [];
  if (!isHostFile(hostPath)) return [];
  // detectElf() has parsed the file already, which saves the guest check
  // from reading it again.
  const elf = metaOf(file).elf;
  return [elf === undefined ? { path, hostPath } : { path, hostPath, elf }];
}

/**
 * Returns the `#!` interpreter of a non-ELF /init, or null. Warns when the
 * file is neither ELF nor a script, since the kernel cannot execute it.
 */
function scriptInterpreter(
  file: Vinyl,
  warn: WarningHandler,
): { file: string; path: string } | null {
  const hostPath = hostPathOf(file);
  let head: Buffer;
  if (file.isBuffer()) {
    head = file.contents.subarray(0, SHEBANG_MAX);
  } else {
    try {
      const fd = openSync(hostPath, "r");
      try {
        head = Buffer.alloc(SHEBANG_MAX);
        head = head.subarray(0, readSync(fd, head, 0, SHEBANG_MAX, 0));
      } finally {
        closeSync(fd);
      }
    } catch {
      return null;
    }
  }
  const line = /^#!\s*(\S+)/.exec(head.toString("latin1"));
  if (line) return { file: hostPath, path: line[1] };
  warn({
    code: "INIT_NOT_EXECUTABLE",
    message:
      `/init (${hostPath}) is neither an ELF file nor a #! script, so ` +
      "the kernel cannot run it; pass a program as --init",
    fileName: hostPath,
  });
  return null;
}

/** Returns whether `path` is a regular file (of `size` bytes, when given). */
function isHostFile(path: string, size?: number): boolean {
  try {
    const stat = statSync(path);
    return stat.isFile() && (size === undefined || stat.size === size);
  } catch {
    return false;
  }
}

/**
 * Resolves the interpreter and the whole shared-library closure of every
 * ELF file (after detectElf()) the way the host's ld.so would. Each
 * library is emitted once at its canonical path, with symlink files for
 * the other paths it is known by. Then come the symlinks the guest's ld.so
 * needs to find them from its own search path. An include whose libraries
 * cannot all be found is an error. For the payload and extras a missing
 * library is a warning.
 */
export function resolveLibs(options: ResolveLibsOptions = {}) {
  const planned = new Map<string, Planned>();
  /** Image files that exist on the host, for the guest-side check. */
  const imageEntries: ImageEntry[] = [];
  /** Every archive path seen, and the script interpreter /init names. */
  const archivePaths = new Set<string>();
  let initInterpreter: { file: string; path: string } | null = null;
  const plan = (archivePath: string, entry: Planned) => {
    if (!planned.has(archivePath)) planned.set(archivePath, entry);
  };
  return pluginStream(
    (warn) => {
      const {
        resolver: shared,
        onWarning: _,
        guestFixups: _fixups,
        ...resolverOptions
      } = options;
      const resolver =
        shared ??
        new Resolver({
          ...resolverOptions,
          onWarning: (w) => warn({ ...w, fileName: w.path }),
        });
      return {
        transform(file, push) {
          push(file);
          const meta = metaOf(file);
          if (!file.isDirectory()) imageEntries.push(...entryOf(file));
          archivePaths.add(archivePathOf(file));
          if (meta.role === "payload" && meta.elf === null) {
            initInterpreter = scriptInterpreter(file, warn);
          }
          if (!meta.elf || !meta.elf.dynamic || meta.role === "library") return;
          const hostPath = hostPathOf(file);
          const closure = resolver.resolve(hostPath);
          if (closure.missing.length) {
            const names = closure.missing
              .map((m) => `${m.name} (needed by ${m.requestedBy})`)
              .join(", ");
            const message =
              `${hostPath}: shared libraries not found: ${names}; add their ` +
              "directory to LD_LIBRARY_PATH or the binary's RUNPATH";
            // A file without a role is packed as an include, so it must
            // resolve completely too.
            if ((meta.role ?? "include") === "include") {
              throw new InitramfsError("LIB_MISSING", message, hostPath);
            }
            warn({ code: "LIB_NOT_FOUND", message, fileName: hostPath });
          }
          const interp = closure.interpreter;
          if (interp) {
            plan(interp.guestPath, { hostPath: interp.hostPath });
            for (const alias of interp.aliases) {
              plan(alias, { hostPath: interp.hostPath, target: `/${interp.guestPath}` });
            }
          }
          for (const lib of closure.libraries) {
            plan(lib.guestPath, { hostPath: lib.hostPath });
            for (const alias of lib.aliases) {
              plan(alias, { hostPath: lib.hostPath, target: `/${lib.guestPath}` });
            }
          }
        },
        flush(push) {
          for (const path of [...planned.keys()].sort()) {
            const entry = planned.get(path)!;
            push(libraryFile(path, entry));
            imageEntries.push(
              entry.target === undefined
                ? { path, hostPath: entry.hostPath }
                : { path, symlink: entry.target },
            );
          }
          const script = initInterpreter as { file: string; path: string } | null;
          if (script && !archivePaths.has(script.path.replace(/^\/+/, ""))) {
            warn({
              code: "INIT_INTERPRETER_MISSING",
              message:
                `/init (${script.file}) is a script for ${script.path}, ` +
                "which is not in the image, so the kernel cannot run it; " +
                "pack the interpreter (e.g. as an --extra) or use an ELF /init",
              fileName: script.file,
            });
          }
          if (options.guestFixups === false) return;
          const fixups = planGuestFixups(imageEntries, {
            hostResolver: resolver,
            onWarning: (w) => warn({ ...w, fileName: w.path }),
          });
          for (const fixup of fixups) {
            push(symlinkFile(fixup.path, fixup.symlink!, "library"));
          }
        },
      };
    },
    options.onWarning,
  );
}
