/**
 * src/virt/client.ts over the native libvirt binding, against the real libvirtd
 * (qemu:///system) with a tiny TCG domain without an OS: two qcow2 disks (virtio vda, SATA sda),
 * pull-mode backups read through NbdClient, checkpoints, incremental dirty bitmaps with guest
 * writes simulated through HMP qemu-io (ENVIRONMENT.md). Builds nothing: the addon must exist.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { jest } from '@jest/globals';
import { NbdClient, STATE_DIRTY, type Extent } from '../../src/nbd/client.js';
import {
  CHECKPOINT_CREATE,
  CHECKPOINT_DELETE,
  CHECKPOINT_LIST,
  CHECKPOINT_XML,
  DOMAIN_START,
  DOMAIN_STATE,
  DOMAIN_UNDEFINE,
  DOMAIN_XML,
  GUEST_INFO,
  JOB_STATS,
  JOB_TYPE,
  QEMU_MONITOR,
  VIR_ERR,
  VirtConnection,
  VirtDomain,
  VirtError,
  nativeVirtConstants,
} from '../../src/virt/client.js';

// libvirtd re-probes qemu on every domain definition on these machines (~35 s each, minutes under
// load): give the tests room; the suite's time budget allows it.
jest.setTimeout(600_000);

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ADDON = join(ROOT, 'build', 'Release', 'virtnbd_native.node');
const URI = 'qemu:///system';
const MiB = 1024 * 1024;
const VDA_SIZE = 64 * MiB;
const SDA_SIZE = 32 * MiB;
const NAME = `virtnbd-test-${process.pid}-${Date.now().toString(36)}`;

let dir = '';
let conn: VirtConnection | undefined;
let dom: VirtDomain | undefined;
let jobNo = 0;

const vda = (): string => join(dir, 'vda.qcow2');
const sda = (): string => join(dir, 'sda.qcow2');

function domainXml(): string {
  return `<domain type='qemu'>
  <name>${NAME}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='${vda()}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='${sda()}'/>
      <target dev='sda' bus='sata'/>
    </disk>
    <memballoon model='none'/>
  </devices>
</domain>`;
}

/** A pull-mode backup job XML over a fresh socket; returns the XML and the socket path. */
function backupXml(disks: string[], incremental?: string): { xml: string; sock: string } {
  const n = ++jobNo;
  const sock = join(dir, `job${n}.sock`);
  const diskXml = disks.map((d) => `<disk name='${d}'><scratch file='${join(dir, `scratch${n}.${d}`)}'/></disk>`).join('');
  const inc = incremental !== undefined ? `<incremental>${incremental}</incremental>` : '';
  return {
    xml: `<domainbackup mode='pull'>${inc}<server transport='unix' socket='${sock}'/><disks>${diskXml}</disks></domainbackup>`,
    sock,
  };
}

function checkpointXml(name: string, parent: string | undefined, disks: string[]): string {
  const p = parent !== undefined ? `<parent><name>${parent}</name></parent>` : '';
  return `<domaincheckpoint><description>Backup checkpoint</description><name>${name}</name>${p}<disks>${disks
    .map((d) => `<disk name='${d}'/>`)
    .join('')}</disks></domaincheckpoint>`;
}

function sha256(buf: Uint8Array): string {
  return createHash('sha256').update(buf).digest('hex');
}

/** SHA-256 of the image's guest-visible content right now (the domain may run; nothing writes). */
function imageSha(image: string): string {
  const out = join(dir, `ref-${Date.now()}.raw`);
  execFileSync('qemu-img', ['convert', '-U', '-f', 'qcow2', '-O', 'raw', image, out]);
  const h = sha256(readFileSync(out));
  rmSync(out, { force: true });
  return h;
}

async function readExport(c: NbdClient): Promise<Buffer> {
  const size = c.size();
  const chunk = 4 * MiB;
  const parts: Promise<Buffer>[] = [];
  for (let off = 0; off < size; off += chunk) parts.push(c.pread(Math.min(chunk, size - off), off));
  return Buffer.concat(await Promise.all(parts));
}

async function waitNoJob(d: VirtDomain): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if ((await d.jobInfo()).type === JOB_TYPE.NONE) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('the backup job did not end');
}

async function hmpWrite(d: VirtDomain, qdev: string, cmd: string): Promise<void> {
  const out = await d.qemuMonitorCommand(`qemu-io -d ${qdev} "${cmd}"`);
  expect(out).not.toMatch(/error|fail|not found|unknown/i); // HMP qemu-io prints nothing on success
}

const VDA_QDEV = '/machine/peripheral/virtio-disk0/virtio-backend';
const SDA_QDEV = 'sata0-0-0';

async function expectVirtError(p: Promise<unknown>, code?: number): Promise<VirtError> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(VirtError);
  const v = err as VirtError;
  if (code !== undefined) expect(v.code).toBe(code);
  else expect(v.code).toBeGreaterThan(0);
  expect(v.message.length).toBeGreaterThan(0);
  return v;
}

beforeAll(async () => {
  if (!existsSync(ADDON)) throw new Error(`native addon not built: ${ADDON} is missing — run \`npm run build:native\` first`);
  // qemu runs as libvirt-qemu: images, sockets and scratch files live in a world-accessible dir.
  dir = mkdtempSync('/var/tmp/virtnbd-virt-');
  chmodSync(dir, 0o777);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', vda(), String(VDA_SIZE)]);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', sda(), String(SDA_SIZE)]);
  // Some content: data, a zeroed range and holes.
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xab 1M 3M', '-c', 'write -P 0x5c 20M 64k', '-c', 'write -z 30M 1M', vda()]);
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x42 0 2M', sda()]);
  chmodSync(vda(), 0o666);
  chmodSync(sda(), 0o666);
});

afterAll(async () => {
  if (dom !== undefined) {
    await dom.destroy().catch(() => undefined);
    await dom.undefine(DOMAIN_UNDEFINE.CHECKPOINTS_METADATA).catch(() => undefined);
  }
  await conn?.close().catch(() => undefined);
  // Fallback if the binding itself failed half-way.
  for (const args of [['destroy', NAME], ['undefine', NAME, '--checkpoints-metadata']]) {
    try {
      execFileSync('virsh', ['-c', URI, ...args], { stdio: 'ignore' });
    } catch {
      /* already gone */
    }
  }
  if (dir !== '') rmSync(dir, { recursive: true, force: true });
});

test('TS constants equal the values of the libvirt headers the addon was built with', () => {
  const n = nativeVirtConstants();
  const tables: Array<[string, Record<string, number>]> = [
    ['VIR_DOMAIN_', DOMAIN_STATE],
    ['VIR_DOMAIN_START_', DOMAIN_START],
    ['VIR_DOMAIN_XML_', DOMAIN_XML],
    ['VIR_DOMAIN_UNDEFINE_', DOMAIN_UNDEFINE],
    ['VIR_DOMAIN_JOB_', JOB_TYPE],
    ['VIR_DOMAIN_JOB_STATS_', JOB_STATS],
    ['VIR_DOMAIN_CHECKPOINT_CREATE_', CHECKPOINT_CREATE],
    ['VIR_DOMAIN_CHECKPOINT_XML_', CHECKPOINT_XML],
    ['VIR_DOMAIN_CHECKPOINT_LIST_', CHECKPOINT_LIST],
    ['VIR_DOMAIN_CHECKPOINT_DELETE_', CHECKPOINT_DELETE],
    ['VIR_DOMAIN_GUEST_INFO_', GUEST_INFO],
    ['VIR_DOMAIN_QEMU_MONITOR_COMMAND_', QEMU_MONITOR],
    ['VIR_ERR_', VIR_ERR],
  ];
  for (const [prefix, table] of tables) {
    for (const [k, v] of Object.entries(table)) {
      const native = prefix === 'VIR_DOMAIN_START_' && k === 'NONE' ? n.VIR_DOMAIN_NONE : n[prefix + k];
      expect([prefix + k, native]).toEqual([prefix + k, v]);
    }
  }
  expect(n.VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL).toBe(1);
});

test('open, version, hostname; a missing domain rejects with VIR_ERR_NO_DOMAIN', async () => {
  conn = await VirtConnection.open(URI);
  expect(conn.isAlive()).toBe(true);
  expect(await conn.libVersion()).toBeGreaterThanOrEqual(9_000_000);
  expect((await conn.hostname()).length).toBeGreaterThan(0);
  const e = await expectVirtError(conn.lookupByName(`${NAME}-missing`), VIR_ERR.NO_DOMAIN);
  expect(e.message).toContain(`${NAME}-missing`);
  expect(e.libvirtDomain).toBeGreaterThan(0);
  // Credentials are only asked for when the daemon wants them (not on the local socket).
  const withCreds = await VirtConnection.open(URI, { user: 'nobody', password: 'secret' });
  expect(await withCreds.libVersion()).toBe(await conn.libVersion());
  await withCreds.close();
  await withCreds.close(); // idempotent
  expect(withCreds.isAlive()).toBe(false);
  await expectVirtError(withCreds.hostname(), VIR_ERR.INVALID_CONN);
  // A bad URI fails to open, also as a VirtError.
  await expectVirtError(VirtConnection.open('nosuchdriver:///x'));
});

test('define, start, state, XML, suspend/resume', async () => {
  dom = await conn!.defineXML(domainXml());
  expect(dom.name).toBe(NAME);
  expect(dom.uuid).toMatch(/^[0-9a-f-]{36}$/);
  expect((await dom.state()).name).toBe('shutoff');
  expect(await dom.isActive()).toBe(false);
  expect(await dom.autostart()).toBe(false);
  await dom.create();
  const st = await dom.state();
  expect(st.state).toBe(DOMAIN_STATE.RUNNING);
  expect(st.name).toBe('running');
  expect(await dom.isActive()).toBe(true);
  const live = await dom.xmlDesc();
  expect(live).toContain("<alias name='virtio-disk0'/>");
  expect(live).toContain("<alias name='sata0-0-0'/>");
  expect(await dom.xmlDesc(DOMAIN_XML.INACTIVE)).not.toContain('<alias');
  const again = await conn!.lookupByName(NAME);
  expect(again.uuid).toBe(dom.uuid);
  // Many calls in flight at once on one connection and domain.
  const many = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? dom!.state() : conn!.lookupByName(NAME))));
  expect(many).toHaveLength(40);
  await dom.suspend();
  expect((await dom.state()).name).toBe('paused');
  await dom.resume();
  expect((await dom.state()).name).toBe('running');
  expect((await dom.jobInfo()).type).toBe(JOB_TYPE.NONE);
});

test('checkpoint-less pull backup: the NBD export equals the image', async () => {
  const d = dom!;
  const ref = imageSha(vda());
  const { xml, sock } = backupXml(['vda']);
  await d.backupBegin(xml, null);
  try {
    const job = await d.jobInfo();
    expect(job.type).not.toBe(JOB_TYPE.NONE);
    expect(job.stats.operation).toBeDefined();
    expect(await d.backupXmlDesc()).toContain(sock);
    const c = await NbdClient.connect(`nbd+unix:///vda?socket=${sock}`);
    try {
      expect(c.size()).toBe(VDA_SIZE);
      expect(sha256(await readExport(c))).toBe(ref);
    } finally {
      await c.close();
    }
  } finally {
    await d.abortJob();
  }
  await waitNoJob(d);
  // No job any more: aborting again fails cleanly.
  await expectVirtError(d.abortJob());
});

test('full backup with checkpoint, guest writes, incremental: exactly the written ranges are dirty', async () => {
  const d = dom!;
  const full = backupXml(['vda', 'sda']);
  await d.backupBegin(full.xml, checkpointXml('virtnbdbackup.0', undefined, ['vda', 'sda']));
  await d.abortJob();
  await waitNoJob(d);
  expect(await d.checkpointNames()).toEqual(['virtnbdbackup.0']);

  await hmpWrite(d, VDA_QDEV, 'write -P 0xee 8M 1M');
  await hmpWrite(d, VDA_QDEV, 'write -P 0xef 40M 128k');
  await hmpWrite(d, SDA_QDEV, 'write -P 0x11 0 1M');

  const inc = backupXml(['vda', 'sda'], 'virtnbdbackup.0');
  await d.backupBegin(inc.xml, checkpointXml('virtnbdbackup.1', 'virtnbdbackup.0', ['vda', 'sda']));
  try {
    const check = async (disk: string, size: number, ranges: Array<[number, number]>): Promise<NbdClient> => {
      const ctx = `qemu:dirty-bitmap:backup-${disk}`;
      const c = await NbdClient.connect(`nbd+unix:///${disk}?socket=${inc.sock}`, { metaContexts: ['base:allocation', ctx] });
      const dirty = (await c.blockStatusAll(ctx, 0, size)).filter((e: Extent) => (e.flags & STATE_DIRTY) !== 0);
      expect(dirty.map((e) => [e.offset, e.length])).toEqual(ranges);
      return c;
    };
    const cv = await check('vda', VDA_SIZE, [
      [8 * MiB, MiB],
      [40 * MiB, 128 * 1024],
    ]);
    try {
      expect((await cv.pread(MiB, 8 * MiB)).every((b) => b === 0xee)).toBe(true);
      expect((await cv.pread(65536, 1 * MiB)).every((b) => b === 0xab)).toBe(true);
    } finally {
      await cv.close();
    }
    const cs = await check('sda', SDA_SIZE, [[0, MiB]]);
    try {
      expect((await cs.pread(MiB, 0)).every((b) => b === 0x11)).toBe(true);
      expect((await cs.pread(MiB, MiB)).every((b) => b === 0x42)).toBe(true);
    } finally {
      await cs.close();
    }
  } finally {
    await d.abortJob();
  }
  await waitNoJob(d);
});

test('checkpoints: list, XML with size, metadata-only delete, redefine with validation, delete', async () => {
  const d = dom!;
  expect(await d.checkpointNames(CHECKPOINT_LIST.TOPOLOGICAL)).toEqual(['virtnbdbackup.0', 'virtnbdbackup.1']);
  const cp1 = await d.checkpointLookupByName('virtnbdbackup.1');
  expect(cp1.name).toBe('virtnbdbackup.1');
  expect(cp1.domain).toBe(d);
  const sized = await cp1.xmlDesc(CHECKPOINT_XML.SIZE);
  expect(sized).toMatch(/<disk name='vda'[^>]* size='\d+'/);
  expect(sized).toContain('<parent>');
  const xml1 = await cp1.xmlDesc();
  expect(xml1).toContain('<name>virtnbdbackup.1</name>');

  await cp1.delete(CHECKPOINT_DELETE.METADATA_ONLY);
  expect(await d.checkpointNames()).toEqual(['virtnbdbackup.0']);
  await expectVirtError(d.checkpointLookupByName('virtnbdbackup.1'), VIR_ERR.NO_DOMAIN_CHECKPOINT);

  // The bitmap is still in the images: redefining with validation succeeds.
  const re = await d.checkpointCreateXML(xml1, CHECKPOINT_CREATE.REDEFINE | CHECKPOINT_CREATE.REDEFINE_VALIDATE);
  expect(re.name).toBe('virtnbdbackup.1');
  expect((await d.checkpointNames()).sort()).toEqual(['virtnbdbackup.0', 'virtnbdbackup.1']);

  // A checkpoint whose bitmaps do not exist fails validation.
  const bogus = xml1.replace('<name>virtnbdbackup.1</name>', '<name>virtnbdbackup.7</name>');
  const inconsistent = await expectVirtError(
    d.checkpointCreateXML(bogus, CHECKPOINT_CREATE.REDEFINE | CHECKPOINT_CREATE.REDEFINE_VALIDATE),
    VIR_ERR.CHECKPOINT_INCONSISTENT,
  );
  expect(inconsistent.message).toContain('virtnbdbackup.7');
  expect((await d.checkpointNames()).sort()).toEqual(['virtnbdbackup.0', 'virtnbdbackup.1']);

  // Real deletes (children first).
  await re.delete();
  await (await d.checkpointLookupByName('virtnbdbackup.0')).delete();
  expect(await d.checkpointNames()).toEqual([]);
  const bitmaps = execFileSync('qemu-img', ['info', '-U', '--output=json', vda()]).toString();
  expect(bitmaps).not.toContain('virtnbdbackup.');
});

test('guest agent calls without an agent reject with a VirtError', async () => {
  const d = dom!;
  for (const call of [() => d.fsFreeze(), () => d.fsFreeze(['/']), () => d.fsThaw(), () => d.guestInfo(GUEST_INFO.OS)]) {
    const e = await expectVirtError(call()); // libvirt 9.0: VIR_ERR_ARGUMENT_UNSUPPORTED, "QEMU guest agent is not configured"
    expect(e.message).toMatch(/agent/i);
  }
  expect((await d.state()).name).toBe('running');
});

test('destroy and undefine', async () => {
  const d = dom!;
  await d.destroy();
  expect((await d.state()).name).toBe('shutoff');
  await d.undefine(DOMAIN_UNDEFINE.CHECKPOINTS_METADATA);
  dom = undefined;
  await expectVirtError(conn!.lookupByName(NAME), VIR_ERR.NO_DOMAIN);
  // Operations on a handle whose domain is gone reject, they do not crash.
  await expectVirtError(d.xmlDesc(), VIR_ERR.NO_DOMAIN);
});
