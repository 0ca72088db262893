/**
 * Child process for the shared-memory tests: stores one image with
 * storeImage() and prints a JSON line with the outcome.
 *
 * Usage: node --import tsx test/helpers/shm-child.ts '<ChildRequest JSON>'
 */
import { createCipheriv, createHash } from "node:crypto";
import * as fs from "node:fs";
import { compressLegacy } from "../../src/lz4.js";
import { loadImage, segmentPath, storeImage } from "../../src/shm.js";

export interface ChildRequest {
  shmDir: string;
  key: string;
  /**
   * Uncompressed length of the payload, an LZ4 legacy stream of
   * seededBytes(seed, size).
   */
  size: number;
  seed: string;
  /** The producer appends one line per call to this file. */
  counterFile?: string;
  /** Prints "ready" and waits until this file exists before storing. */
  barrierFile?: string;
  /** Delay inside the producer, in ms, to widen the race window. */
  producerDelayMs?: number;
  /**
   * "producer": print "building" and never return from the producer.
   * "write": SIGKILL this process once the first payload chunk is
   * visible in the segment, before the rest and the head are written.
   */
  die?: "producer" | "write";
}

/** Returns `size` pseudo-random bytes determined by `seed` (AES-CTR). */
export function seededBytes(seed: string, size: number): Buffer {
  const key = createHash("sha256").update(seed).digest();
  const cipher = createCipheriv("aes-256-ctr", key, Buffer.alloc(16));
  return cipher.update(Buffer.alloc(size));
}

/** Returns the LZ4 legacy stream that a child with `seed` and `size` stores. */
export function seededImage(seed: string, size: number): Promise<Buffer> {
  return compressLegacy(seededBytes(seed, size));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitForFile(path: string): Promise<void> {
  while (!fs.existsSync(path)) await sleep(5);
}

/**
 * Kills this process as soon as the segment contains the bytes that the
 * writer writes first: those after the 8-byte head.
 */
function dieWhenWriteStarts(path: string, payload: Buffer): void {
  const check = (): void => {
    try {
      const first = Buffer.alloc(64);
      const fd = fs.openSync(path, "r");
      fs.readSync(fd, first, 0, first.length, 8);
      fs.closeSync(fd);
      if (first.equals(payload.subarray(8, 72))) {
        process.kill(process.pid, "SIGKILL");
      }
    } catch {
      // The segment does not exist yet.
    }
    setImmediate(check);
  };
  setImmediate(check);
}

async function main(): Promise<void> {
  const request = JSON.parse(process.argv[2]) as ChildRequest;
  const options = { shmDir: request.shmDir };
  const payload = await seededImage(request.seed, request.size);
  if (request.barrierFile !== undefined) {
    process.stdout.write("ready\n");
    await waitForFile(request.barrierFile);
  }
  if (request.die === "write") {
    dieWhenWriteStarts(segmentPath(request.key, "lz4", options), payload);
  }
  const result = await storeImage(
    request.key,
    "lz4",
    async () => {
      if (request.counterFile !== undefined) {
        fs.appendFileSync(request.counterFile, `${process.pid}\n`);
      }
      if (request.die === "producer") {
        process.stdout.write("building\n");
        await new Promise(() => setInterval(() => {}, 1000));
      }
      await sleep(request.producerDelayMs ?? 0);
      return payload;
    },
    options,
  );
  const image = await loadImage(request.key, "lz4", options);
  const sha256 =
    image === null
      ? null
      : createHash("sha256").update(image.bytes).digest("hex");
  image?.release();
  process.stdout.write(JSON.stringify({ built: result.built, sha256 }) + "\n");
}

// Tests import seededBytes() from this file; only a direct run stores.
if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`${String(err)}\n`);
    process.exit(1);
  });
}
