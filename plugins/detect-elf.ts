import {
  ElfFormatError,
  readElfBuffer,
  readElfFile,
  type ElfInfo,
} from "../src/elf.js";
import { hostPathOf, metaOf } from "./meta.js";
import { pluginStream, type WarningHandler } from "./transform.js";

export interface DetectElfOptions {
  onWarning?: WarningHandler;
}

/**
 * Attaches `file.initramfs.elf`: the parsed ELF facts (class, byte order,
 * machine, type, interpreter, needed names, rpath, runpath), or null for a
 * file that is not an ELF. Reads only headers: a path-only file is read by
 * positioned reads, never whole. A streaming file is read from its path.
 * A malformed ELF gets null and an ELF_MALFORMED warning.
 */
export function detectElf(options: DetectElfOptions = {}) {
  return pluginStream(
    (warn) => ({
      transform(file, push) {
        if (file.isDirectory() || file.isSymbolic()) return push(file);
        const meta = metaOf(file);
        let elf: ElfInfo | null = null;
        try {
          if (file.isBuffer()) elf = readElfBuffer(file.contents);
          else elf = readElfFile(hostPathOf(file));
        } catch (error) {
          // An unreadable path is an error, never a malformed ELF.
          if (!(error instanceof ElfFormatError)) throw error;
          warn({
            code: "ELF_MALFORMED",
            message:
              `${hostPathOf(file)} starts like an ELF file but cannot be parsed ` +
              `(${(error as Error).message}); it is packed as plain data`,
            fileName: hostPathOf(file),
          });
        }
        meta.elf = elf;
        push(file);
      },
    }),
    options.onWarning,
  );
}
