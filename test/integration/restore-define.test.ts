/**
 * src/restore/define.ts against the real libvirtd (qemu:///system), with an XML made by
 * src/restore/adjust-config.ts from a fixture's vmconfig (a live XML written by the original's
 * backup): the restored domain is defined, marked autostart, started (TCG, no OS), and its live
 * XML shows the new name and the new image; a transient storage pool over the output directory
 * is refreshed (new volumes become visible), a directory without a pool gives a warning; a
 * definition libvirt refuses gives `Failed to define domain: [...]`.
 * One domain only: defining one takes about a minute on these machines.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { jest } from '@jest/globals';
import { parseDomainXml } from '../../src/xml/domain-xml.js';
import { adjustConfig } from '../../src/restore/adjust-config.js';
import { defineRestored, refreshPoolFor } from '../../src/restore/define.js';
import { DOMAIN_START, VIR_ERR, VirtConnection, VirtDomain, VirtError } from '../../src/virt/client.js';
import { recordingLogger } from '../unit/backup/recording-logger.js';

jest.setTimeout(600_000);

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ADDON = join(ROOT, 'build', 'Release', 'virtnbd_native.node');
const VMCONFIG = join(ROOT, 'test', 'fixtures', 'upstream-sets', 'd1', 'backup', 'vmconfig.virtnbdbackup.0.xml');
const URI = 'qemu:///system';
const ORIGINAL = `virtnbd-rdef-${process.pid}-${Date.now().toString(36)}`;
const RESTORED = `restore_${ORIGINAL}`;
const POOL = `virtnbd-rdef-pool-${process.pid}`;

let dir = '';
let conn: VirtConnection | undefined;
let dom: VirtDomain | undefined;

function virsh(...args: string[]): string {
  return execFileSync('virsh', ['-c', URI, ...args], { encoding: 'utf8' });
}

function virshQuiet(...args: string[]): void {
  try {
    execFileSync('virsh', ['-c', URI, ...args], { stdio: 'ignore' });
  } catch {
    /* already gone */
  }
}

beforeAll(async () => {
  if (!existsSync(ADDON)) throw new Error(`native addon not built: ${ADDON} is missing — run \`npm run build:native\` first`);
  // qemu runs as libvirt-qemu: the image lives in a world-accessible directory.
  dir = mkdtempSync('/var/tmp/virtnbd-rdef-');
  chmodSync(dir, 0o777);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'vda.qcow2'), '16M']);
  chmodSync(join(dir, 'vda.qcow2'), 0o666);
  conn = await VirtConnection.open(URI);
});

afterAll(async () => {
  if (dom !== undefined) {
    await dom.destroy().catch(() => undefined);
    await dom.setAutostart(false).catch(() => undefined);
    await dom.undefine().catch(() => undefined);
  }
  await conn?.close().catch(() => undefined);
  virshQuiet('destroy', RESTORED);
  virshQuiet('autostart', '--disable', RESTORED);
  virshQuiet('undefine', RESTORED);
  virshQuiet('pool-destroy', POOL);
  if (dir !== '') rmSync(dir, { recursive: true, force: true });
});

test('refreshPoolFor: the pool whose target is the output directory is refreshed; none → warning', async () => {
  virsh('pool-create-as', POOL, 'dir', '--target', dir); // transient: gone with pool-destroy
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'late.qcow2'), '1M']);
  expect(virsh('vol-list', POOL)).not.toContain('late.qcow2');

  const log = recordingLogger();
  expect(await refreshPoolFor(conn!, `${dir}/`, log)).toEqual([POOL]);
  expect(virsh('vol-list', POOL)).toContain('late.qcow2');
  expect(log.counts).toEqual({ warnings: 0, errors: 0 });
  expect(log.at('INFO')).toContain(`Refreshed storage pool [${POOL}]`);

  const pools = await conn!.storagePools();
  expect(pools.find((p) => p.name === POOL)).toEqual({ name: POOL, active: true, targetPath: dir });

  const none = recordingLogger();
  const elsewhere = join(dir, 'no-pool-here');
  expect(await refreshPoolFor(conn!, elsewhere, none)).toEqual([]);
  expect(none.at('WARNING')).toEqual([`No storage pool with target path [${elsewhere}] found, not refreshing.`]);

  await expect(conn!.refreshStoragePool(`${POOL}-missing`)).rejects.toBeInstanceOf(VirtError);
  virsh('pool-destroy', POOL);
});

test('a definition libvirt refuses: Failed to define domain: [<reason>]', async () => {
  const bad = `<domain type='qemu'><name>${ORIGINAL}-bad</name><memory>notanumber</memory></domain>`;
  await expect(defineRestored(conn!, bad, { autostart: false }, recordingLogger())).rejects.toThrow(/^Failed to define domain: \[.+\]$/);
  await expect(conn!.lookupByName(`${ORIGINAL}-bad`)).rejects.toMatchObject({ code: VIR_ERR.NO_DOMAIN });
});

test('define the adjusted XML with autostart, start it: live XML has the new name and image', async () => {
  const image = join(dir, 'vda.qcow2');
  const original = readFileSync(VMCONFIG, 'utf8').replace('<name>fx330441</name>', `<name>${ORIGINAL}</name>`);
  const originalCfg = parseDomainXml(original);
  expect(originalCfg.disks.map((d) => d.dev)).toEqual(['vda', 'sdb']);

  const xml = adjustConfig(original, { restored: new Map([['vda', image]]), keepRaw: false, outputDir: dir }, recordingLogger());
  writeFileSync(join(dir, 'vmconfig.xml'), xml);

  const log = recordingLogger();
  dom = await defineRestored(conn!, xml, { autostart: true }, log);
  expect(dom.name).toBe(RESTORED);
  expect(dom.uuid).not.toBe(originalCfg.uuid); // rule 7: libvirt made a new one
  expect(await dom.autostart()).toBe(true);
  expect(log.at('INFO')).toEqual([`Defined domain [${RESTORED}]`, `Marked domain [${RESTORED}] for autostart`]);
  expect(log.counts).toEqual({ warnings: 0, errors: 0 });
  expect(virsh('dominfo', RESTORED)).toMatch(/Autostart:\s+enable/);

  await dom.create(DOMAIN_START.AUTODESTROY);
  expect((await dom.state()).name).toBe('running');
  const live = parseDomainXml(await dom.xmlDesc());
  expect(live.name).toBe(RESTORED);
  expect(live.disks.map((d) => [d.dev, d.type, d.path, d.format])).toEqual([['vda', 'file', image, 'qcow2']]);

  await dom.destroy();
  await dom.setAutostart(false);
  expect(await dom.autostart()).toBe(false);
  await dom.undefine();
  dom = undefined;
  await expect(conn!.lookupByName(RESTORED)).rejects.toMatchObject({ code: VIR_ERR.NO_DOMAIN });
});
