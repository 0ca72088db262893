import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import { requireTool } from "./tools.js";

/** Returns the newest Debian kernel in /boot, or the one in $KERNEL. */
export function findKernel(): string {
  if (process.env.KERNEL) return process.env.KERNEL;
  const kernels = readdirSync("/boot")
    .filter((name) => name.startsWith("vmlinuz-"))
    .sort();
  if (kernels.length === 0) {
    throw new Error(
      "no kernel in /boot; install one with: apt-get install -y linux-image-amd64",
    );
  }
  return `/boot/${kernels[kernels.length - 1]}`;
}

export interface BootResult {
  /** Everything the guest printed on its serial console. */
  console: string;
  /** QEMU's exit code, or null when it was killed on timeout. */
  exitCode: number | null;
  timedOut: boolean;
}

/**
 * Boots `initrd` under QEMU with TCG (never KVM) and returns the serial
 * console. The guest should power off or exit /init; `panic=-1` makes a
 * panicking kernel reboot, and `-no-reboot` turns that into a QEMU exit.
 */
export function bootImage(
  initrd: string,
  options: { timeoutMs?: number; memory?: string; append?: string } = {},
): Promise<BootResult> {
  const qemu = requireTool("qemu-system-x86_64");
  const args = [
    "-accel", "tcg",
    "-m", options.memory ?? "512",
    "-smp", "1",
    "-display", "none",
    "-monitor", "none",
    "-serial", "stdio",
    "-no-reboot",
    "-kernel", findKernel(),
    "-initrd", initrd,
    "-append", `console=ttyS0 panic=-1 loglevel=4 ${options.append ?? ""}`,
  ];
  return new Promise((resolve, reject) => {
    const child = spawn(qemu, args, { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, options.timeoutMs ?? 120_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      // The serial line discipline turns "\n" into "\r\n".
      const text = output.replace(/\r\n/g, "\n");
      resolve({ console: text, exitCode: code, timedOut });
    });
  });
}
