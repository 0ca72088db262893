import assert from "node:assert/strict";
import { ConfigError } from "../../src/config.js";

/**
 * Asserts that `fn` throws a ConfigError with `code`, and that its
 * message contains `mention` when one is given.
 */
export function expectCode(
  fn: () => unknown,
  code: string,
  mention?: string,
): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof ConfigError, `expected ConfigError: ${error}`);
    assert.equal(error.code, code);
    if (mention !== undefined) assert.ok(error.message.includes(mention));
    return true;
  });
}
