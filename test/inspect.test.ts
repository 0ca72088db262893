import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import type Vinyl from "vinyl";
import { cpio } from "../plugins/cpio.js";
import { detectElf } from "../plugins/detect-elf.js";
import { lz4Legacy } from "../plugins/lz4-legacy.js";
import { archivePathOf } from "../plugins/meta.js";
import { resolveLibs } from "../plugins/resolve-libs.js";
import { archiveFile } from "../plugins/sources.js";
import {
  formatListing,
  formatMode,
  imageArchive,
  imageEntries,
  verifyImageBytes,
} from "../src/inspect.js";
import { readContents, runPlugin } from "./helpers/streams.js";
import { compileC, requireTool, run, tempDir } from "./helpers/tools.js";

const REPO = resolve(__dirname, "..");
const GULP = join(REPO, "node_modules", ".bin", "gulp");
const USES_MATH = `
#include <math.h>
#include <stdio.h>
int main(int argc, char **argv) { printf("%f\\n", cos(argc)); return 0; }
`;

const tmp = tempDir("inspect");
const image = {
  /** Base and suffix as two LZ4 legacy streams, as lz4Legacy() writes. */
  split: join(tmp.dir, "split.cpio.lz4"),
  /** The same archive as one stream, written by `lz4 -l`. */
  single: join(tmp.dir, "single.cpio.lz4"),
  /** The uncompressed newc archive. */
  plain: join(tmp.dir, "plain.cpio"),
  /** The image without libm, which the payload needs. */
  noLibm: join(tmp.dir, "no-libm.cpio.lz4"),
  garbage: join(tmp.dir, "garbage.bin"),
};

/** Runs a gulp task of the repository's gulpfile. */
function gulp(args: string[]) {
  return spawnSync(GULP, args, { cwd: REPO, encoding: "utf8" });
}

/** Packs files with cpio() and lz4Legacy() and returns both outputs. */
async function packImage(files: Vinyl[]) {
  const [archive] = (await runPlugin(cpio(), files)).files;
  const bytes = Buffer.from(await readContents(archive));
  const [compressed] = (await runPlugin(lz4Legacy(), [archive])).files;
  return { archive: bytes, compressed: await readContents(compressed) };
}

/** Returns "mode size name" for each entry that `cpio -itv` lists. */
function cpioListing(archive: Buffer): string[] {
  const text = run("cpio", ["-itv", "--quiet"], { input: archive }).toString();
  return text
    .trim()
    .split("\n")
    .map((line) => {
      const match =
        /^(\S{10})\s+\d+\s+\S+\s+\S+\s+(\d+)\s+\S+\s+\d+\s+\S+ (.+)$/.exec(line);
      assert.ok(match, `unexpected cpio line: ${line}`);
      return `${match[1]} ${match[2]} ${match[3]}`;
    });
}

/** Parses listing lines of initramfs:ls into "mode size name" strings. */
function lsLines(output: string): string[] {
  return output
    .split("\n")
    .filter((line) => /^[-dl?][-rwxsStT]{9} /.test(line))
    .map((line) => line.replace(/^(\S+)\s+(\d+) /, "$1 $2 "));
}

let archive: Buffer;

before(async () => {
  requireTool("lz4");
  requireTool("cpio");
  const binary = compileC(USES_MATH, join(tmp.dir, "math"), [], ["-lm"]);
  const inputs = [archiveFile("init", binary, "payload")];
  const { files: detected } = await runPlugin(detectElf(), inputs);
  const { files } = await runPlugin(resolveLibs(), detected);
  const packed = await packImage(files);
  archive = packed.archive;
  writeFileSync(image.split, packed.compressed);
  writeFileSync(image.plain, archive);
  run("lz4", ["-l", "-q", "-f", image.plain, image.single]);
  const withoutLibm = files.filter(
    (file) => !/libm\.so/.test(archivePathOf(file)),
  );
  assert.ok(withoutLibm.length < files.length, "the image had no libm");
  const { files: broken } = await runPlugin(detectElf(), withoutLibm);
  writeFileSync(image.noLibm, (await packImage(broken)).compressed);
  writeFileSync(image.garbage, "this is not an initramfs image\n");
});

after(() => tmp.cleanup());

describe("inspect module", () => {
  test("split image lists like cpio -itv", () => {
    const entries = imageEntries(readFileSync(image.split));
    const lines = lsLines(formatListing(entries));
    assert.deepEqual(lines, cpioListing(archive));
  });

  test("single stream lists like cpio -itv", () => {
    const entries = imageEntries(readFileSync(image.single));
    assert.deepEqual(lsLines(formatListing(entries)), cpioListing(archive));
  });

  test("plain archive lists like cpio -itv", () => {
    const entries = imageEntries(readFileSync(image.plain));
    assert.deepEqual(lsLines(formatListing(entries)), cpioListing(archive));
  });

  test("split image decodes to the archive", () => {
    assert.ok(imageArchive(readFileSync(image.split)).equals(archive));
  });

  test("CRC archive is accepted", () => {
    const crc = run("cpio", ["-o", "-H", "crc", "--quiet"], {
      cwd: tmp.dir,
      input: "math\n",
    });
    const entries = imageEntries(crc);
    assert.equal(entries.length, 1);
    assert.equal(entries[0].name, "math");
  });

  test("garbage is IMAGE_UNKNOWN_FORMAT", () => {
    assert.throws(
      () => imageEntries(readFileSync(image.garbage)),
      (error: Error & { code?: string }) => {
        assert.equal(error.code, "IMAGE_UNKNOWN_FORMAT");
        assert.match(error.message, /neither LZ4 legacy/);
        return true;
      },
    );
  });

  test("empty input is IMAGE_UNKNOWN_FORMAT", () => {
    assert.throws(
      () => imageEntries(Buffer.alloc(0)),
      (error: Error & { code?: string }) => error.code === "IMAGE_UNKNOWN_FORMAT",
    );
  });

  test("LZ4 frame format is named", () => {
    const framed = run("lz4", ["-c", "-q"], { input: archive });
    assert.throws(
      () => imageEntries(framed),
      (error: Error & { code?: string }) => {
        assert.equal(error.code, "IMAGE_UNKNOWN_FORMAT");
        assert.match(error.message, /frame format/);
        assert.match(error.message, /lz4 -l/);
        return true;
      },
    );
  });

  test("formatMode matches ls", () => {
    assert.equal(formatMode(0o100755), "-rwxr-xr-x");
    assert.equal(formatMode(0o040755), "drwxr-xr-x");
    assert.equal(formatMode(0o120777), "lrwxrwxrwx");
    assert.equal(formatMode(0o100640), "-rw-r-----");
  });

  test("listing shows symlink targets", () => {
    const listing = formatListing(imageEntries(readFileSync(image.split)));
    assert.match(
      listing,
      /^lrwxrwxrwx +\d+ lib64\/ld-linux-x86-64\.so\.2 -> \/\S+$/m,
    );
  });

  test("verify passes a complete image", () => {
    assert.deepEqual(verifyImageBytes(readFileSync(image.split)), []);
  });

  test("verify names the missing library", () => {
    const problems = verifyImageBytes(readFileSync(image.noLibm));
    assert.equal(problems.length, 1);
    assert.equal(problems[0].code, "GUEST_LIB_MISSING");
    assert.equal(problems[0].name, "libm.so.6");
    assert.equal(problems[0].file, "init");
  });
});

describe("inspect gulp tasks", () => {
  for (const kind of ["split", "single", "plain"] as const) {
    test(`initramfs:ls lists a ${kind} image`, () => {
      const result = gulp(["initramfs:ls", "--image", image[kind]]);
      assert.equal(result.status, 0, result.stderr);
      assert.deepEqual(lsLines(result.stdout), cpioListing(archive));
    });
  }

  test("initramfs:ls takes --image=FILE", () => {
    const result = gulp(["initramfs:ls", `--image=${image.split}`]);
    assert.equal(result.status, 0, result.stderr);
    assert.deepEqual(lsLines(result.stdout), cpioListing(archive));
  });

  test("initramfs:ls rejects garbage", () => {
    const result = gulp(["initramfs:ls", "--image", image.garbage]);
    assert.notEqual(result.status, 0);
    assert.match(result.stdout + result.stderr, /neither LZ4 legacy/);
  });

  test("initramfs:ls names a missing image", () => {
    const missing = join(tmp.dir, "absent.lz4");
    const result = gulp(["initramfs:ls", "--image", missing]);
    assert.notEqual(result.status, 0);
    assert.match(result.stdout + result.stderr, new RegExp(missing));
  });

  test("initramfs:verify passes a good image", () => {
    const result = gulp(["initramfs:verify", "--image", image.split]);
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /every ELF file finds its interpreter/);
  });

  test("initramfs:verify fails without libm", () => {
    const result = gulp(["initramfs:verify", "--image", image.noLibm]);
    assert.notEqual(result.status, 0);
    assert.match(result.stderr, /\/init needs libm\.so\.6/);
    assert.match(result.stdout + result.stderr, /1 missing interpreter/);
  });
});
