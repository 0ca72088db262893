import { Worker } from "node:worker_threads";

/**
 * The worker's code, plain CommonJS so that it runs without a TypeScript
 * loader. It hashes each path of the list it is sent with SHA-256, 8 MiB
 * per read, and replies once with every digest.
 */
const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads");
const { closeSync, openSync, readSync } = require("node:fs");
const { createHash } = require("node:crypto");
const buffer = Buffer.allocUnsafe(8 << 20);
function hashOne(path) {
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
    return { path, sha256: hash.digest("hex") };
  } catch (error) {
    return { path, error: String(error && error.message) };
  }
}
parentPort.on("message", (paths) => parentPort.postMessage(paths.map(hashOne)));
`;

interface WorkerReply {
  path: string;
  sha256?: string;
  error?: string;
}

/**
 * Splits `files` into `count` lists of about equal bytes: largest first,
 * each to the list with the fewest bytes so far.
 */
function balance(
  files: Array<{ path: string; size: number }>,
  count: number,
): string[][] {
  const lists = Array.from({ length: count }, () => ({ bytes: 0, paths: [] as string[] }));
  for (const file of [...files].sort((a, b) => b.size - a.size)) {
    let lightest = lists[0];
    for (const list of lists) if (list.bytes < lightest.bytes) lightest = list;
    lightest.bytes += file.size;
    lightest.paths.push(file.path);
  }
  return lists.map((list) => list.paths);
}

/**
 * Returns the SHA-256 (hex) of each file, hashed on `threads` worker
 * threads. Each thread gets its whole share in one message, so the
 * hashing goes on while this thread is busy, and the shares are balanced
 * by size. A file that cannot be read is left out of the result, so the
 * caller hashes it again itself and gets the error there.
 */
export async function hashFilesInParallel(
  files: Array<{ path: string; size: number }>,
  threads: number,
): Promise<Map<string, string>> {
  const shares = balance(files, Math.max(1, Math.min(threads, files.length)));
  const digests = new Map<string, string>();
  const workers = shares.map(() => new Worker(WORKER_SOURCE, { eval: true }));
  try {
    await Promise.all(
      workers.map(
        (worker, n) =>
          new Promise<void>((resolve, reject) => {
            worker.once("message", (replies: WorkerReply[]) => {
              for (const reply of replies) {
                if (reply.sha256 !== undefined) digests.set(reply.path, reply.sha256);
              }
              resolve();
            });
            worker.on("error", reject);
            worker.postMessage(shares[n]);
          }),
      ),
    );
  } finally {
    await Promise.all(workers.map((worker) => worker.terminate()));
  }
  return digests;
}
