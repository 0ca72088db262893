/** Stable codes of the warnings stripping emits; each means "unchanged". */
export type StripWarningCode =
  | "STRIP_TRUNCATED"
  | "STRIP_MALFORMED"
  | "STRIP_OVERLAP"
  | "STRIP_SEGMENT_LAYOUT"
  | "STRIP_UNSUPPORTED"
  | "STRIP_SIGNED_MODULE";

/** Raised by the planner for a file it cannot rewrite safely. */
export class UnsafeElfError extends Error {
  constructor(
    readonly code: StripWarningCode,
    message: string,
  ) {
    super(message);
    this.name = "UnsafeElfError";
  }
}
