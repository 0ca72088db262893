/**
 * Incremental builds: the compressed base of the previous image or of a
 * shared-memory segment is reused, and only a new suffix is compressed.
 */
import { closeSync, openSync, readSync } from "node:fs";
import type { BuildRecord } from "../src/build-record.js";
import { readCpio } from "../src/cpio-reader.js";
import { decompressLegacy } from "../src/lz4.js";
import {
  loadImage,
  segmentPath,
  storeImage,
  type StoreOptions,
} from "../src/shm.js";
import { removeOnSignal } from "../src/temp-output.js";
import { appendSuffix } from "../src/suffix.js";
import type { ImageFacts } from "./meta.js";
import {
  logBuild,
  runStages,
  suffixOf,
  type Build,
  type Product,
} from "./stages.js";

/** Facts of an image made of a reused base and a new suffix. */
function imageFacts(
  key: string,
  base: { length: number; archiveLength: number; entries: number },
  suffix: { length: number; archiveLength: number; entries: number },
): ImageFacts {
  return {
    key,
    parts: [
      { name: "base", length: base.length, archiveLength: base.archiveLength },
      {
        name: "suffix",
        length: suffix.length,
        archiveLength: suffix.archiveLength,
      },
    ],
    compression: "lz4-legacy",
    entries: base.entries + suffix.entries,
  };
}

/**
 * Completes a reused compressed base with this config's suffix. The
 * kernel restarts its LZ4 decoder at the suffix stream's magic.
 */
async function withSuffix(
  build: Build,
  compressedBase: Buffer,
  base: { archiveLength: number; entries: number },
): Promise<Omit<Product, "baseSource" | "strippedBefore" | "strippedAfter">> {
  const { config } = build;
  logBuild("suffix");
  const image = await appendSuffix(compressedBase, base.archiveLength, config, {
    level: config.level,
  });
  const suffix = await suffixOf(config, base.archiveLength);
  const facts = imageFacts(
    build.key,
    { ...base, length: compressedBase.length },
    {
      length: image.length - compressedBase.length,
      archiveLength: suffix.archiveLength,
      entries: suffix.entries,
    },
  );
  return {
    status: "suffix",
    image,
    facts,
    baseEntries: base.entries,
    suffixDigest: suffix.digest,
  };
}

/** Reads the first `length` bytes of the file at `path`. */
function readHead(path: string, length: number): Buffer {
  const buffer = Buffer.alloc(length);
  const fd = openSync(path, "r");
  try {
    let done = 0;
    while (done < length) {
      const n = readSync(fd, buffer, done, length - done, done);
      if (n === 0) throw new Error(`${path} is shorter than ${length} bytes`);
      done += n;
    }
  } finally {
    closeSync(fd);
  }
  return buffer;
}

/**
 * Reuses the image on disk, whose record matches the input key: keeps
 * it when its suffix matches too, else writes a new suffix after its
 * compressed base.
 */
export async function reuseOutput(build: Build, record: BuildRecord): Promise<Product> {
  const { config } = build;
  const stripped = {
    strippedBefore: record.strippedBefore,
    strippedAfter: record.strippedAfter,
  };
  const suffix = await suffixOf(config, record.baseArchiveLength);
  if (suffix.digest === record.suffixDigest) {
    const facts = imageFacts(
      build.key,
      {
        length: record.baseLength,
        archiveLength: record.baseArchiveLength,
        entries: record.baseEntries,
      },
      {
        length: record.suffixLength,
        archiveLength: record.suffixArchiveLength,
        entries: record.entries - record.baseEntries,
      },
    );
    return {
      status: "up-to-date",
      baseSource: "output",
      image: null,
      facts,
      baseEntries: record.baseEntries,
      suffixDigest: suffix.digest,
      ...stripped,
    };
  }
  const base = readHead(config.out, record.baseLength);
  const product = await withSuffix(build, base, {
    archiveLength: record.baseArchiveLength,
    entries: record.baseEntries,
  });
  return { ...product, baseSource: "output", ...stripped };
}

/**
 * Builds through the shared-memory segment of the input key. Among
 * concurrent processes only the one that creates the segment runs the
 * stages, and the others wait for it and add their suffix to its base.
 */
export async function buildThroughSegment(
  build: Build,
  options: StoreOptions,
): Promise<Product> {
  for (;;) {
    let built: Product | null = null;
    await storeImage(
      build.key,
      "lz4",
      async () => {
        // An interrupted build removes the segment it was writing.
        const stop = removeOnSignal([segmentPath(build.key, "lz4", options)]);
        try {
          built = await runStages(build);
        } finally {
          stop();
        }
        const changed = build.digests.changedSinceDigest();
        if (changed.length > 0) {
          // Thrown inside the store, which then removes the segment.
          const error = new Error(
            `${changed[0]} changed during the build, so the image may not ` +
              "match its key; nothing was stored, run the build again",
          );
          throw Object.assign(error, {
            code: "INPUT_CHANGED_DURING_BUILD",
            fileName: changed[0],
          });
        }
        return built.image!.subarray(0, built.facts.parts[0].length);
      },
      options,
    );
    if (built !== null) return built;
    const loaded = await loadImage(build.key, "lz4", options);
    // Another process's cleanupStale() may remove the segment in between.
    if (loaded === null) continue;
    let compressedBase: Buffer;
    try {
      compressedBase = Buffer.from(loaded.bytes);
    } finally {
      loaded.release();
    }
    const archive = decompressLegacy(compressedBase);
    const base = {
      archiveLength: archive.length,
      entries: readCpio(archive).length,
    };
    const product = await withSuffix(build, compressedBase, base);
    return {
      ...product,
      baseSource: "segment",
      strippedBefore: 0,
      strippedAfter: 0,
    };
  }
}

/** Stores the base of an image that was not built by this call. */
export async function storeReused(
  build: Build,
  product: Product,
  options: StoreOptions,
): Promise<void> {
  const baseLength = product.facts.parts[0].length;
  await storeImage(
    build.key,
    "lz4",
    () =>
      product.image === null
        ? readHead(build.config.out, baseLength)
        : product.image.subarray(0, baseLength),
    options,
  );
}
