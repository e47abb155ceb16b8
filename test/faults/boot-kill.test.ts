/**
 * Faults, point 4 for `virtnbdmap --boot`: the command SIGKILLed while its VM runs from the backup.
 * What the dead run leaves must not outlive it or must be cleaned by the next run: its transient
 * domain (started AUTODESTROY: libvirt destroys it when the dead process's connection closes), its
 * nbdkit exports (`--exit-with-parent`) and its run directory under /var/tmp (owner.json: swept by
 * the next run that starts an export). The next `--boot` of the same point then runs, serves the
 * point's data (read back through its export socket and compared with the image the point was made
 * from), and after Ctrl-C nothing is left; the backup files are byte-identical throughout.
 *
 * No bootable guest is needed for this: the set is written by src/devtools/image-chain.ts from an
 * ext4 image, and its vmconfig is a TCG domain without an OS (SeaBIOS keeps it running).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { execa } from 'execa';
import { writeImageChain } from '../../src/devtools/image-chain.js';
import { fileSha, nbdcopySha } from '../helpers/map-sha.js';
import { watchJsonLine } from '../helpers/json-line.js';
import { bin, NOTHING_LEFT, settledLeftovers, startCmd, waitFor } from './fault-helpers.js';

jest.setTimeout(600_000);

const NAME = `vnbd-bootkill-${process.pid}`;
const BOOT_PREFIX = '/var/tmp/virtnbd-boot-';
let scratch = '';
let set = '';
let sha1 = '';
let setSums = new Map<string, string>();

function sums(dir: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const f of readdirSync(dir, { recursive: true }) as string[]) {
    const p = join(dir, f);
    try {
      m.set(f, createHash('sha256').update(readFileSync(p)).digest('hex'));
    } catch {
      /* a directory */
    }
  }
  return m;
}

const bootDirs = (): string[] => readdirSync('/var/tmp').filter((n) => `/var/tmp/${n}`.startsWith(BOOT_PREFIX)).map((n) => join('/var/tmp', n));
const ownerPid = (dir: string): number | undefined => {
  try {
    return (JSON.parse(readFileSync(join(dir, 'owner.json'), 'utf8')) as { pid?: number }).pid;
  } catch {
    return undefined;
  }
};
const domainExists = async (): Promise<boolean> => (await execa('virsh', ['-c', 'qemu:///system', 'domstate', NAME], { reject: false })).exitCode === 0;

beforeAll(async () => {
  scratch = mkdtempSync('/var/tmp/vnbd-fault-boot-');
  const mk = async (name: string, text: string): Promise<string> => {
    const root = join(scratch, `root-${name}`);
    mkdirSync(root);
    writeFileSync(join(root, 'marker.txt'), text);
    const img = join(scratch, `${name}.img`);
    await execa('mkfs.ext4', ['-q', '-F', '-d', root, img, '16M']);
    return img;
  };
  const img0 = await mk('p0', 'boot-kill point 0\n');
  const img1 = await mk('p1', 'boot-kill point 1\n');
  sha1 = await fileSha(img1);
  set = join(scratch, 'set');
  mkdirSync(set);
  await writeImageChain(set, 'vda', [{ image: img0, level: 'full' }, { image: img1, level: 'inc' }], false);
  const xml =
    `<domain type='qemu'><name>vnbd-bootkill-src</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>` +
    `<os><type arch='x86_64'>hvm</type></os><features><acpi/></features><devices>` +
    `<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/nonexistent/vda.img'/><target dev='vda' bus='virtio'/></disk>` +
    `</devices></domain>\n`;
  for (const n of [0, 1]) writeFileSync(join(set, `vmconfig.virtnbdbackup.${n}.xml`), xml);
  setSums = sums(set);
});

afterAll(async () => {
  await execa('virsh', ['-c', 'qemu:///system', 'destroy', NAME], { reject: false });
  if (scratch !== '') rmSync(scratch, { recursive: true, force: true });
});

test('virtnbdmap --boot killed: domain and exports end with it, the next --boot sweeps its run directory, serves the point, and leaves nothing', async () => {
  const args = ['-i', set, '--boot', '--name', NAME, '--shutdown-timeout', '1', '--json', '-L', join(scratch, 'boot.log')];
  const before = new Set(bootDirs());

  // first run: up, then SIGKILL
  const p1 = startCmd(bin('virtnbdmap'), args);
  const info1 = JSON.parse(await watchJsonLine(p1 as never, 180_000).line) as { name: string; runDir: string; disks: Array<{ socket: string }> };
  expect(info1.name).toBe(NAME);
  expect(await domainExists()).toBe(true);
  expect(await nbdcopySha(`nbd+unix:///vda?socket=${info1.disks[0]!.socket}`)).toBe(sha1);
  p1.kill('SIGKILL');
  expect((await p1).signal).toBe('SIGKILL');

  // what dies with it: the domain (AUTODESTROY) and nbdkit (--exit-with-parent); what is left: the run directory
  await waitFor(async () => !(await domainExists()), 60_000, 'the dead run\'s domain to be destroyed');
  expect(await settledLeftovers({ scopes: [set] })).toEqual(NOTHING_LEFT);
  expect(existsSync(info1.runDir)).toBe(true); // so that "swept" below can fail
  expect(ownerPid(info1.runDir)).toBe(p1.pid);

  // second run: sweeps the dead run's directory, boots the same point again
  const p2 = startCmd(bin('virtnbdmap'), args);
  const info2 = JSON.parse(await watchJsonLine(p2 as never, 180_000).line) as { name: string; runDir: string; disks: Array<{ socket: string }> };
  expect(info2.name).toBe(NAME);
  expect(existsSync(info1.runDir)).toBe(false);
  expect(await nbdcopySha(`nbd+unix:///vda?socket=${info2.disks[0]!.socket}`)).toBe(sha1);
  p2.kill('SIGINT');
  expect((await p2).exitCode).toBe(0);

  expect(await domainExists()).toBe(false);
  expect(await settledLeftovers({ scopes: [set] })).toEqual(NOTHING_LEFT);
  expect(bootDirs().filter((d) => !before.has(d))).toEqual([]);
  expect(sums(set)).toEqual(setSums);
});
