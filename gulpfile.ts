import { loadTasks } from "./scripts/load-tasks";

// The compiled tasks when dist/ is up to date, else the TypeScript sources.
const tasks = loadTasks(__dirname);

export const initramfs = tasks.initramfs;
export const initramfsLs = tasks.initramfsLs;
export const initramfsVerify = tasks.initramfsVerify;
