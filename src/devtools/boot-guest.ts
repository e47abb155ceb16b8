/**
 * A tiny bootable guest built from Debian packages (ENVIRONMENT.md recipe), for boot-from-backup
 * tests, the boot benchmark and the demo: the Debian kernel and initrd (direct kernel boot), and
 * an ext4 root file system with static busybox whose /sbin/init
 *   - counts its boots in /boots (so that writes made while a VM runs can be checked later),
 *   - prints `VIRTNBD-MARKER <contents of /marker> BOOT <n>` to the serial console,
 *   - then stays up (a VM can be backed up, block-copied, …) until it is shut off.
 * The marker is a run of one repeated letter, so a test can change it on the running disk with
 * one qemu-io pattern write at `markerOffset` without a guest agent.
 */
import { chmodSync, copyFileSync, mkdirSync, readdirSync, symlinkSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { xmlEscape } from '../xml/escape.js';

export const MARKER_LEN = 24;
export const MARKER_PREFIX = 'VIRTNBD-MARKER ';

/** The marker text for letter `c` (e.g. 'A' → 24 × 'A'). */
export function markerText(c: string): string {
  if (!/^[A-Z]$/.test(c)) throw new Error(`markerText: one capital letter expected, got ${c}`);
  return c.repeat(MARKER_LEN);
}

export interface BootFiles {
  kernel: string;
  initrd: string;
}

/** Copies of the newest Debian kernel and initrd from /boot into `dir` (readable by qemu). */
export function copyBootFiles(dir: string): BootFiles {
  const kernels = readdirSync('/boot').filter((f) => f.startsWith('vmlinuz-')).sort();
  const k = kernels.at(-1);
  if (k === undefined) throw new Error('No /boot/vmlinuz-*: install linux-image-amd64 (scripts/setup.sh does)');
  const version = k.slice('vmlinuz-'.length);
  const initrd = `/boot/initrd.img-${version}`;
  if (!existsSync(initrd)) throw new Error(`No ${initrd}: the kernel package did not generate its initrd`);
  mkdirSync(dir, { recursive: true });
  const out = { kernel: join(dir, `vmlinuz-${version}`), initrd: join(dir, `initrd.img-${version}`) };
  copyFileSync(join('/boot', k), out.kernel);
  copyFileSync(initrd, out.initrd);
  for (const f of [out.kernel, out.initrd]) chmodSync(f, 0o644);
  return out;
}

const INIT = `#!/bin/sh
/bin/busybox mount -t proc proc /proc
n=$(cat /boots 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > /boots
sync
echo "${MARKER_PREFIX}$(cat /marker) BOOT $n" > /dev/ttyS0
while :; do sleep 3600; done
`;

/** Build the root file system image (raw ext4, `sizeMiB`) with marker letter `c` at `image`. */
export async function buildGuestRoot(workDir: string, image: string, c: string, sizeMiB = 64): Promise<void> {
  const root = join(workDir, `rootfs-${process.pid}-${Date.now()}`);
  for (const d of ['bin', 'sbin', 'proc', 'dev', 'tmp']) mkdirSync(join(root, d), { recursive: true });
  copyFileSync('/bin/busybox', join(root, 'bin/busybox'));
  chmodSync(join(root, 'bin/busybox'), 0o755);
  for (const app of ['sh', 'mount', 'cat', 'echo', 'poweroff', 'sleep', 'sync']) symlinkSync('busybox', join(root, 'bin', app));
  writeFileSync(join(root, 'sbin/init'), INIT, { mode: 0o755 });
  writeFileSync(join(root, 'marker'), markerText(c));
  writeFileSync(join(root, 'boots'), '0\n');
  await execa('mkfs.ext4', ['-q', '-F', '-b', '4096', '-d', root, image, `${sizeMiB}M`]);
  await execa('rm', ['-rf', root]);
}

/** Byte offset of the marker's data on the raw ext4 image (first block of /marker). */
export async function markerOffset(image: string): Promise<number> {
  const { stdout } = await execa('debugfs', ['-R', 'bmap /marker 0', image]);
  const block = Number(stdout.trim().split('\n').at(-1));
  if (!Number.isInteger(block) || block <= 0) throw new Error(`markerOffset: debugfs said ${JSON.stringify(stdout)}`);
  return block * 4096;
}

export interface GuestDomainOptions {
  name: string;
  /** Root disk image (virtio, target vda). */
  disk: string;
  format: 'raw' | 'qcow2';
  boot: BootFiles;
  /** Serial console output goes to this file. */
  serialLog: string;
  memoryMiB?: number;
  uuid?: string;
}

/** Domain XML of the guest (TCG, direct kernel boot, file serial console, poweroff ends it). */
export function guestDomainXml(o: GuestDomainOptions): string {
  const mem = o.memoryMiB ?? 512;
  return `<domain type='qemu'>
  <name>${xmlEscape(o.name)}</name>${o.uuid ? `\n  <uuid>${xmlEscape(o.uuid)}</uuid>` : ''}
  <memory unit='MiB'>${mem}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${xmlEscape(o.boot.kernel)}</kernel>
    <initrd>${xmlEscape(o.boot.initrd)}</initrd>
    <cmdline>root=/dev/vda rw console=ttyS0 quiet panic=-1</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='${o.format}'/>
      <source file='${xmlEscape(o.disk)}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'>
      <source path='${xmlEscape(o.serialLog)}'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='${xmlEscape(o.serialLog)}'/>
      <target type='serial' port='0'/>
    </console>
  </devices>
</domain>
`;
}

/** Markers printed so far in a serial log: [{ marker, boot }] in order. */
export function markersIn(serialLog: string): Array<{ marker: string; boot: number }> {
  let text = '';
  try {
    text = readFileSync(serialLog, 'latin1');
  } catch {
    return [];
  }
  const out: Array<{ marker: string; boot: number }> = [];
  const re = new RegExp(`${MARKER_PREFIX}([A-Z]+) BOOT (\\d+)`, 'g');
  for (const m of text.matchAll(re)) out.push({ marker: m[1]!, boot: Number(m[2]) });
  return out;
}

/** Wait until the serial log shows a marker line (polling every 100 ms); returns it. */
export async function waitForMarker(serialLog: string, timeoutMs: number): Promise<{ marker: string; boot: number }> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const m = markersIn(serialLog).at(-1);
    if (m !== undefined) return m;
    if (Date.now() > until) throw new Error(`No marker on the serial console [${serialLog}] within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
