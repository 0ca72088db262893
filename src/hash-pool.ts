import { Worker } from "node:worker_threads";

/**
 * The worker's code, plain CommonJS so that it runs without a TypeScript
 * loader. It hashes each path it is sent with SHA-256, 8 MiB per read.
 */
const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads");
const { closeSync, openSync, readSync } = require("node:fs");
const { createHash } = require("node:crypto");
const buffer = Buffer.allocUnsafe(8 << 20);
parentPort.on("message", (path) => {
  try {
    const hash = createHash("sha256");
    const fd = openSync(path, "r");
    try {
      for (;;) {
        const n = readSync(fd, buffer, 0, buffer.length, null);
        if (n === 0) break;
        hash.update(buffer.subarray(0, n));
      }
    } finally {
      closeSync(fd);
    }
    parentPort.postMessage({ path, sha256: hash.digest("hex") });
  } catch (error) {
    parentPort.postMessage({ path, error: String(error && error.message) });
  }
});
`;

interface WorkerReply {
  path: string;
  sha256?: string;
  error?: string;
}

/**
 * Returns the SHA-256 (hex) of each file, hashed on `threads` worker
 * threads, largest files first so the threads finish together. A file
 * that cannot be read is left out of the result; the caller hashes it
 * again itself and gets the error there.
 */
export async function hashFilesInParallel(
  files: Array<{ path: string; size: number }>,
  threads: number,
): Promise<Map<string, string>> {
  const queue = [...files].sort((a, b) => b.size - a.size).map((f) => f.path);
  const digests = new Map<string, string>();
  const count = Math.max(1, Math.min(threads, queue.length));
  const workers = Array.from(
    { length: count },
    () => new Worker(WORKER_SOURCE, { eval: true }),
  );
  try {
    await Promise.all(
      workers.map(
        (worker) =>
          new Promise<void>((resolve, reject) => {
            const next = () => {
              const path = queue.shift();
              if (path === undefined) resolve();
              else worker.postMessage(path);
            };
            worker.on("message", (reply: WorkerReply) => {
              if (reply.sha256 !== undefined) {
                digests.set(reply.path, reply.sha256);
              }
              next();
            });
            worker.on("error", reject);
            next();
          }),
      ),
    );
  } finally {
    await Promise.all(workers.map((worker) => worker.terminate()));
  }
  return digests;
}
