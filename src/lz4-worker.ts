import { Worker } from "node:worker_threads";

/**
 * Worker threads for the "npm" LZ4 codec. The `lz4` package's block
 * functions run synchronously on the calling thread, so blocks compress in
 * parallel only on separate threads.
 */

/** The `lz4` package's block API (lib/lz4.js, version 0.6.5). */
export interface NpmLz4 {
  encodeBlock(src: Buffer, dst: Buffer): number;
  encodeBlockHC(src: Buffer, dst: Buffer): number;
}

interface WorkerRequest {
  id: number;
  /** Below 3 for encodeBlock, 3 and above for encodeBlockHC. */
  level: number;
  chunk: Uint8Array;
}

type WorkerReply =
  | { id: number; block: Uint8Array }
  | { id: number; error: string };

/**
 * Compresses `chunk` with the `lz4` package into `dst` and returns the
 * block's length, or 0 when the package reports a failure.
 */
export function npmCompressBlock(
  npm: NpmLz4,
  chunk: Uint8Array,
  level: number,
  dst: Buffer,
): number {
  const src = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
  return level < 3 ? npm.encodeBlock(src, dst) : npm.encodeBlockHC(src, dst);
}

/**
 * A fixed set of worker threads that compress blocks with the `lz4`
 * package. The workers are unreferenced, so an idle pool never keeps the
 * process alive.
 */
export class NpmWorkerPool {
  readonly #idle: Worker[] = [];
  readonly #waiting: ((worker: Worker) => void)[] = [];
  readonly #dead = new WeakSet<Worker>();
  #nextId = 0;

  constructor(readonly size: number) {
    for (let i = 0; i < size; i++) this.#idle.push(this.#spawn());
  }

  #spawn(): Worker {
    const workerData = { lz4Path: require.resolve("lz4") };
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData });
    worker.unref();
    // An uncaught error ends the worker, and 'exit' may come later.
    const markDead = () => this.#dead.add(worker);
    worker.once("error", markDead);
    worker.once("exit", markDead);
    return worker;
  }

  /** Resolves to the raw block; the worker gets a copy of the chunk. */
  async compress(chunk: Uint8Array, level: number): Promise<Uint8Array> {
    const worker = await this.#acquire();
    try {
      return await this.#call(worker, { id: this.#nextId++, level, chunk });
    } finally {
      this.#release(worker);
    }
  }

  #call(worker: Worker, request: WorkerRequest): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      const onMessage = (reply: WorkerReply) => {
        if (reply.id !== request.id) return;
        worker.off("message", onMessage);
        worker.off("error", reject);
        if ("block" in reply) resolve(reply.block);
        else reject(new Error(`lz4 worker failed: ${reply.error}`));
      };
      worker.on("message", onMessage);
      worker.once("error", reject);
      // Cloning a view would copy its whole ArrayBuffer, often the entire
      // input, so send a copy of the chunk alone and move it.
      const chunk = new Uint8Array(request.chunk);
      worker.postMessage({ ...request, chunk }, [chunk.buffer]);
    });
  }

  #acquire(): Promise<Worker> {
    const worker = this.#idle.pop();
    if (worker) return Promise.resolve(worker);
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  /** Stops the workers; pending calls fail. */
  async close(): Promise<void> {
    await Promise.all(this.#idle.splice(0).map((worker) => worker.terminate()));
  }

  #release(worker: Worker): void {
    // A dead worker is replaced, so the pool keeps its size.
    if (this.#dead.has(worker)) worker = this.#spawn();
    const next = this.#waiting.shift();
    if (next) next(worker);
    else this.#idle.push(worker);
  }
}

/**
 * The worker's code, plain CommonJS run with `eval`, so it needs no
 * TypeScript loader and no file path next to this module. It receives
 * the `lz4` package's resolved path as workerData.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const npm = require(workerData.lz4Path);
parentPort.on("message", ({ id, level, chunk }) => {
  try {
    const src = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
    const dst = Buffer.alloc(npm.encodeBound(src.length));
    const n =
      level < 3 ? npm.encodeBlock(src, dst) : npm.encodeBlockHC(src, dst);
    if (!(n > 0)) throw new Error("encodeBlock returned " + n);
    const block = new Uint8Array(dst.buffer, dst.byteOffset, n);
    parentPort.postMessage({ id, block }, [dst.buffer]);
  } catch (err) {
    parentPort.postMessage({ id, error: String(err && err.message || err) });
  }
});
`;
