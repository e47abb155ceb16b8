/**
 * The TestVm harness (test/helpers/test-vm.ts) against the real libvirtd: one transient TCG domain
 * with a virtio qcow2, a SATA qcow2 and a virtio raw disk. Guest writes, zero writes and discards
 * through HMP qemu-io must keep each disk's shadow file equal to the guest-visible image content;
 * the read-back check must be able to say "no"; recreate() keeps the content; cleanup() leaves
 * no domain and no directory. A second, persistent one-disk VM covers defineXML + undefine.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { execa } from 'execa';
import { jest } from '@jest/globals';
import { VirtError } from '../../src/virt/client.js';
import { TEST_VM_URI, TestVm, initialLayout, type VmDiskSpec } from '../helpers/test-vm.js';

// Creating a domain costs ~35-60 s here (libvirtd re-probes qemu).
jest.setTimeout(600_000);

const KiB = 1024;
const MiB = 1024 * KiB;
const DISKS: VmDiskSpec[] = [
  { dev: 'vda', bus: 'virtio', format: 'qcow2', size: 64 * MiB },
  { dev: 'sda', bus: 'sata', format: 'qcow2', size: 32 * MiB },
  { dev: 'vdb', bus: 'virtio', format: 'raw', size: 16 * MiB },
];

let vm: TestVm | undefined;

async function domainNames(): Promise<string[]> {
  const r = await execa('virsh', ['-c', TEST_VM_URI, 'list', '--all', '--name']);
  return r.stdout.split('\n').map((l) => l.trim()).filter((l) => l !== '');
}

/** Shadow and guest-visible image agree on every disk; returns the hashes. */
async function expectConsistent(v: TestVm): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const d of DISKS) {
    const shadow = v.shadowSha(d.dev);
    expect([d.dev, await v.imageSha(d.dev)]).toEqual([d.dev, shadow]);
    out.set(d.dev, shadow);
  }
  return out;
}

beforeAll(async () => {
  vm = await TestVm.create({ disks: DISKS, agentChannel: true });
});

afterAll(async () => {
  await vm?.cleanup();
});

test('the domain runs with the disks, aliases from the live XML, and the initial content', async () => {
  const v = vm!;
  expect(v.name).toMatch(new RegExp(`^virtnbd-test-${process.pid}-[0-9a-f]+$`));
  expect(v.dir.startsWith('/var/tmp/')).toBe(true);
  expect((await domainNames())).toContain(v.name);
  expect((await v.dom.state()).name).toBe('running');
  expect(v.qdev('vda')).toBe('/machine/peripheral/virtio-disk0/virtio-backend');
  expect(v.qdev('vdb')).toBe('/machine/peripheral/virtio-disk1/virtio-backend');
  expect(v.qdev('sda')).toBe('sata0-0-0');
  const live = await v.dom.xmlDesc();
  expect(live).toContain(`<source file='${v.imagePath('vdb')}'`);
  expect(live).toContain('org.qemu.guest_agent.0');
  expect(() => v.imagePath('vdz')).toThrow(/no disk "vdz"/);

  // Images: the requested format and virtual size, with data, a zero range and holes.
  for (const [i, d] of DISKS.entries()) {
    const info = JSON.parse((await execa('qemu-img', ['info', '-U', '--output=json', v.imagePath(d.dev)])).stdout) as { format: string; 'virtual-size': number };
    expect([d.dev, info.format, info['virtual-size']]).toEqual([d.dev, d.format, d.size]);
    const map = JSON.parse((await execa('qemu-img', ['map', '-U', '--output=json', '-f', d.format, v.imagePath(d.dev)])).stdout) as Array<{ start: number; length: number; data: boolean; zero: boolean }>;
    expect(map.some((e) => e.data)).toBe(true);
    expect(map.some((e) => !e.data && e.zero)).toBe(true);
    const shadow = readFileSync(v.shadowPath(d.dev));
    expect(shadow.length).toBe(d.size);
    for (const op of initialLayout(d.size, i)) {
      if (op.kind === 'write') {
        expect(shadow.subarray(op.offset, op.offset + op.length).every((b) => b === op.pattern)).toBe(true);
        expect(await v.guestMatches(d.dev, op.offset, op.length, op.pattern)).toBe(true);
      }
    }
    expect(shadow.subarray(0, MiB).every((b) => b === 0)).toBe(true);
  }
  await expectConsistent(v);

  // The read-back check can say no, and the SHA comparison can fail.
  expect(await v.guestMatches('vda', MiB, 64 * KiB, 0)).toBe(false);
  expect(await v.guestMatches('sda', 0, 64 * KiB, 0x11)).toBe(false);
});

test('writes, zeroes and discards keep shadow == image on every disk', async () => {
  const v = vm!;
  const before = await expectConsistent(v);

  // Batch 1: plain writes (aligned, unaligned, at the end of the disk).
  for (const d of DISKS) {
    await v.write(d.dev, 4 * MiB, MiB, 0xee);
    await v.write(d.dev, 6 * MiB + 512, 3 * KiB + 7, 0x3c);
    await v.write(d.dev, d.size - 4 * KiB, 4 * KiB, 0x81);
  }
  const afterWrites = await expectConsistent(v);
  for (const d of DISKS) expect(afterWrites.get(d.dev)).not.toBe(before.get(d.dev));
  expect(await v.guestMatches('sda', 4 * MiB, MiB, 0xee)).toBe(true);

  // Batch 2: zero writes over data, partly unaligned.
  for (const d of DISKS) {
    await v.zero(d.dev, 4 * MiB + 256 * KiB, 100 * KiB + 1);
    await v.zero(d.dev, MiB, 64 * KiB);
  }
  const afterZeros = await expectConsistent(v);
  for (const d of DISKS) expect(afterZeros.get(d.dev)).not.toBe(afterWrites.get(d.dev));
  const vdbShadow = readFileSync(v.shadowPath('vdb'));
  expect(vdbShadow.subarray(4 * MiB + 256 * KiB, 4 * MiB + 356 * KiB + 1).every((b) => b === 0)).toBe(true);
  expect(vdbShadow[4 * MiB + 356 * KiB + 1]).toBe(0xee);

  // Batch 3: discards of written data (guest reads zeroes afterwards, checked by discard()).
  for (const d of DISKS) {
    await v.write(d.dev, 2 * MiB, 512 * KiB, 0x77);
    await v.discard(d.dev, 2 * MiB + 64 * KiB, 128 * KiB);
    await v.discard(d.dev, 4 * MiB, 192 * KiB);
    await v.discard(d.dev, d.size - 64 * KiB, 64 * KiB);
  }
  const afterDiscards = await expectConsistent(v);
  for (const d of DISKS) {
    expect(afterDiscards.get(d.dev)).not.toBe(afterZeros.get(d.dev));
    expect(await v.guestMatches(d.dev, 2 * MiB, 64 * KiB, 0x77)).toBe(true);
    expect(await v.guestMatches(d.dev, 2 * MiB + 64 * KiB, 128 * KiB, 0)).toBe(true);
    expect(await v.guestMatches(d.dev, 2 * MiB + 192 * KiB, 320 * KiB, 0x77)).toBe(true);
  }
  // On the raw disk a discard punches a hole in the image file.
  const map = JSON.parse((await execa('qemu-img', ['map', '-U', '--output=json', '-f', 'raw', v.imagePath('vdb')])).stdout) as Array<{ start: number; length: number; data: boolean }>;
  const at = map.find((e) => e.start <= 4 * MiB && 4 * MiB < e.start + e.length);
  expect(at?.data).toBe(false);

  // Misaligned discards, bad ranges and patterns are refused, and change nothing.
  await expect(v.discard('vda', 4 * KiB, 64 * KiB)).rejects.toThrow(/not aligned/);
  await expect(v.discard('vda', 0, 100 * KiB)).rejects.toThrow(/not aligned/);
  await expect(v.write('vda', 64 * MiB - 1, 2, 1)).rejects.toThrow(/not inside the disk/);
  await expect(v.write('vda', 0, 1, 256)).rejects.toThrow(/not a byte/);
  await expect(v.zero('vdq', 0, 1)).rejects.toThrow(/no disk "vdq"/);
  expect(await expectConsistent(v)).toEqual(afterDiscards);
});

test('a write the guest does not see is caught: shadow edited behind its back differs', async () => {
  const v = vm!;
  const path = v.shadowPath('vdb');
  const orig = readFileSync(path);
  const edited = Buffer.from(orig);
  edited[12345] ^= 0xff;
  writeFileSync(path, edited);
  try {
    expect(v.shadowSha('vdb')).not.toBe(await v.imageSha('vdb'));
  } finally {
    writeFileSync(path, orig);
  }
  expect(v.shadowSha('vdb')).toBe(await v.imageSha('vdb'));
});

test('the agent channel exists but nobody answers: fsfreeze fails', async () => {
  const v = vm!;
  let err: unknown;
  try {
    await v.dom.fsFreeze();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(VirtError);
  expect((err as VirtError).message).toMatch(/agent is not connected/i); // without the channel: "not configured"
});

test('destroy, then recreate: a transient domain starts again from the same XML with the same content', async () => {
  const v = vm!;
  const before = await expectConsistent(v);
  const oldUuid = v.dom.uuid;
  await v.destroy();
  await v.destroy(); // no-op when gone
  expect(await domainNames()).not.toContain(v.name);
  await expect(v.write('vda', 0, 512, 1)).rejects.toThrow(VirtError); // no domain to write through
  expect(await expectConsistent(v)).toEqual(before);
  await v.recreate();
  expect((await v.dom.state()).name).toBe('running');
  expect(v.dom.uuid).toBe(oldUuid); // the same domain again (the XML has a fixed uuid), as after a host restart
  expect(v.qdev('sda')).toBe('sata0-0-0');
  expect(await expectConsistent(v)).toEqual(before);
  await v.write('sda', 8 * MiB, 64 * KiB, 0x99);
  await v.discard('vda', 8 * MiB, 64 * KiB);
  await expectConsistent(v);
});

test('cleanup leaves no domain and no directory, and is idempotent', async () => {
  const v = vm!;
  await v.cleanup();
  expect(await domainNames()).not.toContain(v.name);
  expect(existsSync(v.dir)).toBe(false);
  await v.cleanup();
  vm = undefined;
});

test('persistent: defineXML + create; cleanup undefines it with its checkpoint metadata', async () => {
  const p = await TestVm.create({ disks: [{ dev: 'vda', bus: 'virtio', format: 'qcow2', size: 8 * MiB }], persistent: true });
  try {
    expect(p.persistent).toBe(true);
    const info = await execa('virsh', ['-c', TEST_VM_URI, 'dominfo', p.name]);
    expect(info.stdout).toMatch(/Persistent:\s+yes/);
    await p.write('vda', 0, 64 * KiB, 0x42);
    expect(p.shadowSha('vda')).toBe(await p.imageSha('vda'));
    // A checkpoint, so that undefine needs CHECKPOINTS_METADATA.
    await p.dom.checkpointCreateXML("<domaincheckpoint><name>cp0</name><disks><disk name='vda'/></disks></domaincheckpoint>");
    expect(await p.dom.checkpointNames()).toEqual(['cp0']);
    await p.recreate();
    expect(await p.dom.checkpointNames()).toEqual(['cp0']); // a persistent domain keeps its metadata
  } finally {
    await p.cleanup();
  }
  expect(await domainNames()).not.toContain(p.name);
  expect(existsSync(p.dir)).toBe(false);
});
