import type { Transform } from "node:stream";
import type Vinyl from "vinyl";
import type { InitramfsFile } from "../../plugins/meta.js";
import type { InitramfsWarning } from "../../plugins/transform.js";

/** What a plugin emitted for a list of input files. */
export interface PluginOutput {
  files: InitramfsFile[];
  warnings: InitramfsWarning[];
}

/**
 * Writes `files` into a plugin stream, ends it and returns every file it
 * emitted, in order, with the warnings of its "warning" event. Rejects
 * with the stream's error. `beforeEnd` runs after the last write.
 */
export async function runPlugin(
  stream: Transform,
  files: Vinyl[],
  beforeEnd?: () => void,
): Promise<PluginOutput> {
  const out: PluginOutput = { files: [], warnings: [] };
  stream.on("data", (file: InitramfsFile) => out.files.push(file));
  stream.on("warning", (w: InitramfsWarning) => out.warnings.push(w));
  const done = new Promise<void>((resolve, reject) => {
    stream.on("end", resolve);
    stream.on("error", reject);
  });
  for (const file of files) stream.write(file);
  beforeEnd?.();
  stream.end();
  await done;
  return out;
}

/** Reads all of a file's stream contents into one Buffer. */
export async function readContents(file: Vinyl): Promise<Buffer> {
  if (file.isBuffer()) return file.contents;
  if (!file.isStream()) throw new Error(`${file.path} has no contents`);
  const chunks: Buffer[] = [];
  for await (const chunk of file.contents as AsyncIterable<Buffer>) {
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}
