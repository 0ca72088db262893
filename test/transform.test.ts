import assert from "node:assert/strict";
import { create } from "node:domain";
import { describe, test } from "node:test";
import Vinyl from "vinyl";
import { outsideDomain } from "../plugins/tasks.js";
import {
  InitramfsError,
  pluginStream,
  type PluginHooks,
} from "../plugins/transform.js";
import { runPlugin } from "./helpers/streams.js";

/** The domain a callback runs in; @types/node does not declare it. */
const activeDomain = () => (process as { domain?: unknown }).domain ?? undefined;

const file = (name: string) =>
  new Vinyl({ cwd: "/", base: "/in", path: `/in/${name}`, contents: Buffer.from(name) });

/** A plugin whose transform hook is `hook` and whose flush adds one file. */
function plugin(hook: PluginHooks["transform"]) {
  return pluginStream(() => ({
    transform: hook,
    flush: (push) => push(file("flushed")),
  }));
}

describe("pluginStream", () => {
  test("keeps order across sync and async hooks", async () => {
    let calls = 0;
    const stream = plugin((f, push) => {
      calls++;
      if (calls % 2 === 0) return Promise.resolve().then(() => push(f));
      push(f);
    });
    const names = ["a", "b", "c", "d", "e"];
    const out = await runPlugin(stream, names.map(file));
    assert.deepEqual(
      out.files.map((f) => f.relative),
      [...names, "flushed"],
    );
  });

  test("sync error names file and code", async () => {
    const stream = plugin(() => {
      throw new InitramfsError("SOME_CODE", "bad input");
    });
    await assert.rejects(runPlugin(stream, [file("x")]), (error: Error) => {
      const coded = error as Error & { code?: string; fileName?: string };
      assert.equal(coded.code, "SOME_CODE");
      assert.equal(coded.fileName, "/in/x");
      assert.match(error.message, /bad input/);
      return true;
    });
  });

  test("thenable rejection names file", async () => {
    const thenable = {
      then(_resolve: () => void, reject: (error: Error) => void) {
        reject(new Error("thenable failure"));
      },
    };
    const stream = plugin(() => thenable as unknown as Promise<void>);
    await assert.rejects(runPlugin(stream, [file("z")]), /thenable failure/);
  });

  test("async rejection names file", async () => {
    const stream = plugin(async () => {
      throw new Error("late failure");
    });
    await assert.rejects(runPlugin(stream, [file("y")]), (error: Error) => {
      assert.equal((error as Error & { fileName?: string }).fileName, "/in/y");
      assert.match(error.message, /late failure/);
      return true;
    });
  });
});

describe("outsideDomain", () => {
  test("runs work without a domain", async () => {
    const domain = create();
    const seen = await domain.run(() => {
      assert.equal(activeDomain(), domain);
      return outsideDomain(async () => {
        await new Promise((resolve) => setImmediate(resolve));
        return activeDomain();
      });
    });
    assert.equal(seen, undefined);
  });

  test("keeps the caller's domain", () => {
    const domain = create();
    const after = domain.run(() => {
      const work = outsideDomain(async () => undefined);
      const current = activeDomain();
      return work.then(() => current);
    });
    return after.then((current) => assert.equal(current, domain));
  });
});
