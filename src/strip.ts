import { copyFileSync, closeSync, openSync } from "node:fs";
import { ElfFormatError, hasElfMagic } from "./elf.js";
import { UnsafeElfError, type StripWarningCode } from "./strip-errors.js";
import {
  bufferInput,
  fileInput,
  renderPlan,
  writePlan,
  type StripInput,
  type StripPlan,
} from "./strip-io.js";
import { planStrip, type PlanOptions } from "./strip-plan.js";

export { UnsafeElfError, type StripWarningCode } from "./strip-errors.js";
export {
  bufferInput,
  fileInput,
  renderPlan,
  type StripInput,
  type StripPlan,
} from "./strip-io.js";
export {
  isDebugSection,
  planStrip,
  type PlanOptions,
  type SectionInfo,
} from "./strip-plan.js";

/** A file that stripping passed through unchanged, and why. */
export interface StripWarning {
  code: StripWarningCode;
  /** The file name given in the options, or the path read. */
  file: string;
  /** One line that names the file and the reason. */
  message: string;
}

export interface StripOptions extends PlanOptions {
  /** Receives one warning per file passed through unchanged. */
  onWarning?: (warning: StripWarning) => void;
  /** Name used in warnings; defaults to the path, or "<buffer>". */
  fileName?: string;
}

export interface StripResult {
  /** The stripped bytes, or the input bytes when nothing was removed. */
  data: Buffer;
  stripped: boolean;
  /** Names of the removed sections, in section index order. */
  removed: string[];
  /** Reason the input passed through unchanged, when it did. */
  reason?: string;
  /** Size of the input in bytes. */
  inputSize: number;
}

/** Marker the kernel's sign-file appends to a signed module. */
const MODULE_SIGNATURE = Buffer.from("~Module signature appended~\n");

function endsWithSignature(input: StripInput): boolean {
  const n = MODULE_SIGNATURE.length;
  if (input.size < n) return false;
  return input.read(input.size - n, n).equals(MODULE_SIGNATURE);
}

/**
 * Plans the strip of one input, turning every reason to leave it alone
 * into a warning. Returns the plan, or the reason it passes unchanged.
 */
function planOrWarn(
  input: StripInput,
  file: string,
  options: StripOptions,
): { plan: StripPlan } | { reason: string } {
  const warn = (code: StripWarningCode, reason: string) => {
    const message = `${file}: ${reason}; left unchanged`;
    options.onWarning?.({ code, file, message });
    return { reason: message };
  };
  if (!hasElfMagic(input.read(0, 4))) return { reason: "not an ELF file" };
  if (endsWithSignature(input)) {
    return warn(
      "STRIP_SIGNED_MODULE",
      "kernel module carries an appended signature that stripping would break",
    );
  }
  try {
    const plan = planStrip(input, options);
    return plan ? { plan } : { reason: "no section to remove" };
  } catch (err) {
    if (err instanceof UnsafeElfError) return warn(err.code, err.message);
    if (err instanceof ElfFormatError) {
      const code = /past end/.test(err.message)
        ? "STRIP_TRUNCATED"
        : "STRIP_MALFORMED";
      return warn(code, err.message);
    }
    // A RangeError from a Buffer read means a field pointed outside it.
    if (err instanceof RangeError) return warn("STRIP_MALFORMED", err.message);
    throw err;
  }
}

function unchanged(data: Buffer, reason: string): StripResult {
  return {
    data,
    stripped: false,
    removed: [],
    reason,
    inputSize: data.length,
  };
}

/** Strips debug sections from ELF bytes in memory. */
export function stripDebugBuffer(
  buffer: Buffer,
  options: StripOptions = {},
): StripResult {
  const input = bufferInput(buffer);
  const file = options.fileName ?? "<buffer>";
  const outcome = planOrWarn(input, file, options);
  if ("reason" in outcome) return unchanged(buffer, outcome.reason);
  const { plan } = outcome;
  const data = renderPlan(input, plan);
  return {
    data,
    stripped: true,
    removed: plan.removed,
    inputSize: input.size,
  };
}

/**
 * Strips debug sections from the file at `path` by positioned reads, so
 * the bytes of removed sections are never read. Throws only when the file
 * cannot be opened or read.
 */
export function stripDebugFile(
  path: string,
  options: StripOptions = {},
): StripResult {
  const input = fileInput(path);
  try {
    const file = options.fileName ?? path;
    const outcome = planOrWarn(input, file, options);
    if ("reason" in outcome) {
      const whole = Buffer.allocUnsafe(input.size);
      input.readInto(whole, 0, 0, input.size);
      return unchanged(whole, outcome.reason);
    }
    const data = renderPlan(input, outcome.plan);
    return {
      data,
      stripped: true,
      removed: outcome.plan.removed,
      inputSize: input.size,
    };
  } finally {
    input.close();
  }
}

/**
 * Strips `path` into `outputPath` through a bounded buffer, for inputs
 * whose kept bytes should not sit in memory. An input left unchanged is
 * copied. Returns the result without `data`, plus the output size.
 */
export function stripDebugToFile(
  path: string,
  outputPath: string,
  options: StripOptions = {},
): Omit<StripResult, "data"> & { size: number } {
  const input = fileInput(path);
  try {
    const file = options.fileName ?? path;
    const outcome = planOrWarn(input, file, options);
    if ("reason" in outcome) {
      copyFileSync(path, outputPath);
      return {
        stripped: false,
        removed: [],
        reason: outcome.reason,
        inputSize: input.size,
        size: input.size,
      };
    }
    const fd = openSync(outputPath, "w", 0o755);
    try {
      writePlan(input, outcome.plan, fd);
    } finally {
      closeSync(fd);
    }
    const { plan } = outcome;
    return {
      stripped: true,
      removed: plan.removed,
      inputSize: input.size,
      size: plan.size,
    };
  } finally {
    input.close();
  }
}
