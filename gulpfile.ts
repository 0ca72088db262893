// gulp-cli compiles this file with esbuild-register, which cannot map the
// ".js" import specifiers of our TypeScript sources to their ".ts" files.
// tsx's require hook can, so it is registered before anything else loads.
import "tsx/cjs";

export { initramfs, initramfsLs, initramfsVerify } from "./plugins/tasks.js";
