/**
 * Faults, point 3: libvirtd killed and started again in the middle of a backup. Never the system
 * daemon: a private unprivileged libvirtd (test/helpers/session-libvirtd.ts, restart()) runs a
 * tiny TCG domain with one qcow2 disk whose content is written before it starts (48 MiB of
 * pattern, more than the reads a run keeps in flight). A full is stopped after its first piece
 * (`backup:mid-disk:pause`), the daemon is SIGKILLed and restarted (it reconnects to the running
 * qemu), the run goes on: exit 1 with an error naming the lost libvirt connection, nothing kept;
 * the next ordinary full succeeds (ending the job left behind) and maps SHA-256-equal to the disk.
 */
import { chmodSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { execa } from 'execa';
import { startSessionLibvirtd, type SessionLibvirtd } from '../helpers/session-libvirtd.js';
import { chainSha, fileSha } from '../helpers/map-sha.js';
import { VirtConnection, type VirtDomain } from '../../src/virt/client.js';
import { bin, expectExit, runCmd, startCmd, waitStopped } from './fault-helpers.js';

jest.setTimeout(600_000);

const MiB = 1024 * 1024;
let daemon: SessionLibvirtd | undefined;
let vmDir = '';
let diskSha = '';
const name = `vnbd-fault-lvd-${process.pid}`;

beforeAll(async () => {
  daemon = await startSessionLibvirtd('');
  vmDir = mkdtempSync('/var/tmp/virtnbd-vm-');
  chmodSync(vmDir, 0o777);
  const image = join(vmDir, 'vda.qcow2');
  await execa('qemu-img', ['create', '-q', '-f', 'qcow2', image, String(64 * MiB)]);
  await execa('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x5c ${4 * MiB} ${48 * MiB}`, image]);
  chmodSync(image, 0o666);
  const raw = join(vmDir, 'vda.raw');
  await execa('qemu-img', ['convert', '-O', 'raw', image, raw]);
  diskSha = await fileSha(raw);
  rmSync(raw);
  const conn = await VirtConnection.open(daemon.uri);
  try {
    await conn.createXML(
      `<domain type='qemu'><name>${name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os><on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${image}'/><target dev='vda' bus='virtio'/></disk>
    <memballoon model='none'/>
  </devices></domain>`,
      0,
    );
  } finally {
    await conn.close();
  }
}, 120_000);

afterAll(async () => {
  await daemon?.stop(); // destroys the domain
  if (vmDir !== '') rmSync(vmDir, { recursive: true, force: true });
});

const dir = (): string => join(vmDir, 'set');
const args = (): string[] => ['-U', daemon!.uri, '-d', name, '--nocolor', '-l', 'full', '-o', dir(), '--socketfile', join(vmDir, `nbd.${Date.now()}.sock`), '--scratchdir', vmDir];

async function withDom<T>(fn: (d: VirtDomain) => Promise<T>): Promise<T> {
  const conn = await VirtConnection.open(daemon!.uri);
  try {
    return await fn(await conn.lookupByName(name));
  } finally {
    await conn.close();
  }
}

test('libvirtd killed and restarted mid-backup: exit 1 naming the lost connection; the next full ends the left job and succeeds', async () => {
  const child = startCmd(bin('virtnbdbackup'), args(), 'backup:mid-disk:pause');
  await waitStopped(child.pid!, 300_000).catch(async (e: Error) => {
    throw new Error(`${e.message}:\n${(await child).all}`);
  });
  await daemon!.restart('SIGKILL');
  process.kill(child.pid!, 'SIGCONT');
  const r = await child;
  if (r.exitCode !== 1) throw new Error(`expected exit 1, got ${r.exitCode} ${r.signal}:\n${r.all}`);
  const errors = (r.all ?? '').split('\n').filter((l) => / (ERROR|CRITICAL) /.test(l));
  process.stderr.write(`libvirtd-restart run: ${errors.join('\n  ')}\n`);
  if (errors.length === 0 || !/Lost the connection to libvirt .*libvirtd stopped or restarted/.test(errors[0]!)) {
    throw new Error(`the first error does not name the lost connection:\n${r.all}`);
  }
  expect(readdirSync(dir()).filter((n) => n.endsWith('.data') || n.endsWith('.partial'))).toEqual([]);
  expect(await withDom((d) => d.isActive())).toBe(true); // the domain survived the daemon restart

  const ok = await runCmd(bin('virtnbdbackup'), args());
  expectExit(ok, 0);
  expect((await chainSha(dir(), 'vda')).sha).toBe(diskSha);
  expect(await withDom(async (d) => (await d.jobInfo()).type)).toBe(0);
});
