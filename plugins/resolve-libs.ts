import type Vinyl from "vinyl";
import { Resolver, type ResolverOptions } from "../src/resolve.js";
import { archiveFile, symlinkFile } from "./sources.js";
import { hostPathOf, metaOf } from "./meta.js";
import {
  InitramfsError,
  pluginStream,
  type WarningHandler,
} from "./transform.js";

export interface ResolveLibsOptions
  extends Omit<ResolverOptions, "onWarning"> {
  /** Share one resolver (and its cache) between several pipelines. */
  resolver?: Resolver;
  onWarning?: WarningHandler;
}

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

/**
 * Resolves the interpreter and the whole shared-library closure of every
 * ELF file (after detectElf()) the way the host's ld.so would, and emits
 * each library once at its canonical path plus symlink files for the other
 * paths it is known by. An include whose libraries cannot all be found is
 * an error; for the payload and extras a missing library is a warning.
 */
export function resolveLibs(options: ResolveLibsOptions = {}) {
  const planned = new Map<string, Planned>();
  const plan = (archivePath: string, entry: Planned) => {
    if (!planned.has(archivePath)) planned.set(archivePath, entry);
  };
  return pluginStream(
    (warn) => {
      const { resolver: shared, onWarning: _, ...resolverOptions } = options;
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
            if (meta.role === "include") {
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
            push(libraryFile(path, planned.get(path)!));
          }
        },
      };
    },
    options.onWarning,
  );
}
