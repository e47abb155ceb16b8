/** Kernel NBD devices (/dev/nbdN) through qemu-nbd, as the original virtnbdmap connects them. */
import { readdirSync, existsSync } from 'node:fs';
import { execa } from 'execa';

/** True when the kernel offers NBD devices at all (nbd module loaded). */
export function nbdDevicesPresent(): boolean {
  try {
    return readdirSync('/dev').some((n) => /^nbd[0-9]+$/.test(n));
  } catch {
    return false;
  }
}

export function deviceExists(device: string): boolean {
  return existsSync(device);
}

/**
 * `qemu-nbd -c DEVICE URI -f raw [-r]`, retried a bounded number of times (D16): the export may
 * need a moment; after `attempts` failures the last error is thrown.
 */
export async function connectDevice(device: string, uri: string, readonly: boolean, attempts = 10): Promise<void> {
  let last = '';
  for (let i = 0; i < attempts; i++) {
    const r = await execa('qemu-nbd', ['-c', device, uri, '-f', 'raw', ...(readonly ? ['-r'] : [])], { reject: false });
    if (r.exitCode === 0) return;
    last = (r.stderr || r.stdout || `exit ${r.exitCode}`).trim();
    await new Promise((res) => setTimeout(res, 1000));
  }
  throw new Error(`Failed to connect device [${device}] to [${uri}] after ${attempts} attempts: ${last}`);
}

export async function disconnectDevice(device: string): Promise<void> {
  const r = await execa('qemu-nbd', ['-d', device], { reject: false });
  if (r.exitCode !== 0) throw new Error(`Failed to disconnect device [${device}]: ${(r.stderr || '').trim()}`);
}
