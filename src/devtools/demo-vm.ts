/**
 * The throw-away VM of the demo, the boot tests and the boot benchmark: the tiny guest of
 * boot-guest.ts on a qcow2 disk in a world-readable work directory under /var/tmp (qemu runs as
 * libvirt-qemu), defined persistently on qemu:///system, started, and waited for until its serial
 * console shows the marker. `setMarker` changes the marker on the running disk through qemu's
 * block layer (HMP qemu-io pattern write), so the dirty bitmap of the next incremental sees it;
 * `removeDemoVm` destroys and undefines it (checkpoint metadata included) and never throws.
 */
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { qdevFor } from './qdev.js';
import { buildGuestRoot, copyBootFiles, guestDomainXml, markerOffset, markerText, MARKER_LEN, type BootFiles } from './boot-guest.js';

export const DEMO_URI = 'qemu:///system';

export interface DemoVm {
  name: string;
  /** The qcow2 root disk (vda). */
  disk: string;
  /** File-backed serial console log. */
  serialLog: string;
  /** Byte offset of /marker's data on the disk (guest view). */
  markerOffset: number;
  /** The kernel and initrd copies it boots with. */
  boot: BootFiles;
}

/** `virsh -c qemu:///system ARGS`; throws with virsh's message when it fails. */
export async function virsh(...args: string[]): Promise<string> {
  const r = await execa('virsh', ['-c', DEMO_URI, ...args], { reject: false, timeout: 120_000 });
  if (r.exitCode !== 0) throw new Error(`virsh ${args.join(' ')} failed: ${String(r.stderr).trim() || `exit ${r.exitCode}`}`);
  return String(r.stdout);
}

/** True when libvirt knows a domain of that name (running or defined). */
export async function domainExists(name: string): Promise<boolean> {
  const r = await execa('virsh', ['-c', DEMO_URI, 'domstate', name], { reject: false, timeout: 60_000 });
  return r.exitCode === 0;
}

/**
 * Build the guest (marker letter `letter`) in `work` (must be mode 0755), define it as `name` and
 * start it. Returns once libvirt has started it; wait for the marker with the serial log.
 */
export async function createDemoVm(work: string, name: string, letter: string, opts: { diskSizeMiB?: number } = {}): Promise<DemoVm> {
  const boot = copyBootFiles(join(work, 'boot'));
  const raw = join(work, 'root.img');
  await buildGuestRoot(work, raw, letter);
  const offset = await markerOffset(raw);
  const disk = join(work, `${name}.qcow2`);
  await execa('qemu-img', ['convert', '-O', 'qcow2', raw, disk]);
  await execa('rm', ['-f', raw]);
  // room after the 64 MiB file system, e.g. for benchmark data that must not touch it
  if (opts.diskSizeMiB !== undefined) await execa('qemu-img', ['resize', '-q', disk, `${opts.diskSizeMiB}M`]);
  chmodSync(disk, 0o666);
  const serialLog = join(work, 'serial.log');
  const xml = join(work, `${name}.xml`);
  writeFileSync(xml, guestDomainXml({ name, disk, format: 'qcow2', boot, serialLog }));
  await virsh('define', xml);
  await virsh('start', name);
  return { name, disk, serialLog, markerOffset: offset, boot };
}

/** One HMP qemu-io command on the running VM's root disk (vda), e.g. `write -P 0x41 1M 4k`. */
export async function qemuIo(vm: DemoVm, cmd: string): Promise<void> {
  await virsh('qemu-monitor-command', vm.name, '--hmp', `qemu-io -d ${qdevFor('virtio', 'virtio-disk0')} "${cmd}"`);
}

/** Overwrite the marker on the running VM's disk with `letter` (one qemu-io pattern write). */
export async function setMarker(vm: DemoVm, letter: string): Promise<void> {
  const pattern = markerText(letter).charCodeAt(0).toString(16);
  await qemuIo(vm, `write -P 0x${pattern} ${vm.markerOffset} ${MARKER_LEN}`);
}

/** Power the VM off if it runs (no error if it does not). */
export async function stopDemoVm(name: string): Promise<void> {
  await execa('virsh', ['-c', DEMO_URI, 'destroy', name], { reject: false, timeout: 120_000 });
}

/**
 * Destroy the domain and undefine it (with its checkpoint metadata) if it is persistent; returns
 * what failed instead of throwing.
 */
export async function removeDemoVm(name: string): Promise<string | undefined> {
  if (!(await domainExists(name))) return undefined;
  await stopDemoVm(name);
  if (!(await domainExists(name))) return undefined; // transient: gone with destroy
  const r = await execa('virsh', ['-c', DEMO_URI, 'undefine', name, '--checkpoints-metadata'], { reject: false, timeout: 120_000 });
  return r.exitCode === 0 ? undefined : `virsh undefine ${name}: ${String(r.stderr).trim()}`;
}
