// Runs the benchmarks and prints their markdown reports. Each module in
// bench/ exports `run(): Promise<string>` and measures our code against
// the reference tool in the same run. `npm run bench -- NAME...` runs a
// subset, by file name without the extension.
import { readdirSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { basename, join } from "node:path";

interface BenchModule {
  run(): Promise<string>;
}

function machine(): string {
  const cpu = cpus()[0]?.model ?? "unknown CPU";
  const memory = (totalmem() / 2 ** 30).toFixed(0);
  return `${cpus().length} x ${cpu}, ${memory} GiB, Node ${process.version}`;
}

async function main(): Promise<void> {
  const wanted = process.argv.slice(2);
  const names = readdirSync(__dirname)
    .filter((name) => name.endsWith(".ts") && name !== "index.ts")
    .map((name) => basename(name, ".ts"))
    .filter((name) => wanted.length === 0 || wanted.includes(name))
    .sort();
  console.log(`# gulp-initramfs benchmarks\n\nMachine: ${machine()}\n`);
  for (const name of names) {
    const module = (await import(join(__dirname, `${name}.ts`))) as BenchModule;
    const started = Date.now();
    console.log(`## ${name}\n`);
    console.log(await module.run());
    console.log(`\n(${((Date.now() - started) / 1000).toFixed(1)} s)\n`);
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
