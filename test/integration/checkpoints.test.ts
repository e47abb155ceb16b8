/**
 * src/backup/checkpoints.ts against the real libvirtd (qemu:///system) with one tiny transient
 * TCG domain without an OS (two qcow2 disks, like test/integration/virt-client.test.ts):
 * checkpoints created with our XML, saved XML, metadata loss and redefinition from the
 * directory (D40), validation of a checkpoint whose bitmap was removed through QMP, D36,
 * foreign checkpoint detection, deletion before a full (D29), and recovery of an interrupted
 * incremental (§3.9). The tests run in order and share the domain.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { jest } from '@jest/globals';
import {
  CheckpointError,
  checkpointXml,
  deleteOurCheckpoints,
  findForeignCheckpoints,
  inspectInterruptedRun,
  parseCheckpointXml,
  readCptFile,
  recoverInterruptedRun,
  redefineFromDirectory,
  saveCheckpointXml,
  validateCheckpoint,
  writeCptFile,
  type CheckpointDomain,
} from '../../src/backup/checkpoints.js';
import { CHECKPOINT_CREATE, CHECKPOINT_DELETE, CHECKPOINT_XML, JOB_TYPE, VirtConnection, VirtDomain } from '../../src/virt/client.js';
import { recordingLogger } from '../unit/backup/recording-logger.js';

// Defining/starting a domain re-probes qemu on these machines (~35 s, minutes under load).
jest.setTimeout(600_000);

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ADDON = join(ROOT, 'build', 'Release', 'virtnbd_native.node');
const URI = 'qemu:///system';
const NAME = `virtnbd-cpt-${process.pid}-${Date.now().toString(36)}`;
const OURS = (n: number): string => `virtnbdbackup.${n}`;

let dir = ''; // images, sockets, scratch files (world-accessible for qemu)
let out = ''; // the backup directory
let cpdir = ''; // its checkpoint directory
let conn: VirtConnection | undefined;
let dom: VirtDomain | undefined;
let jobNo = 0;

const vda = (): string => join(dir, 'vda.qcow2');
const sda = (): string => join(dir, 'sda.qcow2');
const d = (): VirtDomain => dom!;

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

function jobXml(incremental?: string): string {
  const n = ++jobNo;
  const disks = ['vda', 'sda'].map((x) => `<disk name='${x}'><scratch file='${join(dir, `scratch${n}.${x}`)}'/></disk>`).join('');
  const inc = incremental !== undefined ? `<incremental>${incremental}</incremental>` : '';
  return `<domainbackup mode='pull'>${inc}<server transport='unix' socket='${join(dir, `job${n}.sock`)}'/><disks>${disks}</disks></domainbackup>`;
}

async function waitNoJob(): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if ((await d().jobInfo()).type === JOB_TYPE.NONE) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('the backup job did not end');
}

/** A pull job that creates checkpoint `name` (as a full or inc run does), ended at once. */
async function jobWithCheckpoint(name: string, parent: string): Promise<void> {
  await d().backupBegin(jobXml(parent === '' ? undefined : parent), checkpointXml(name, parent, ['vda', 'sda']));
  await d().abortJob();
  await waitNoJob();
}

async function qmp<T>(execute: string, args?: Record<string, unknown>): Promise<T> {
  const reply = JSON.parse(await d().qemuMonitorCommand(JSON.stringify(args ? { execute, arguments: args } : { execute }), { hmp: false })) as { return?: T; error?: { desc: string } };
  if (reply.error) throw new Error(`QMP ${execute}: ${reply.error.desc}`);
  return reply.return as T;
}

interface NamedNode {
  'node-name': string;
  drv: string;
  file: string;
  'dirty-bitmaps'?: Array<{ name: string }>;
}

/** The qcow2 format node of an image and its dirty bitmaps. */
async function formatNode(image: string): Promise<{ node: string; bitmaps: string[] }> {
  const nodes = await qmp<NamedNode[]>('query-named-block-nodes', { flat: true });
  const n = nodes.find((x) => x.drv === 'qcow2' && x.file === image);
  if (n === undefined) throw new Error(`no qcow2 node for ${image}: ${JSON.stringify(nodes.map((x) => [x['node-name'], x.drv, x.file]))}`);
  return { node: n['node-name'], bitmaps: (n['dirty-bitmaps'] ?? []).map((b) => b.name).sort() };
}

const bitmaps = async (image: string): Promise<string[]> => (await formatNode(image)).bitmaps;

async function removeBitmap(image: string, name: string): Promise<void> {
  await qmp('block-dirty-bitmap-remove', { node: (await formatNode(image)).node, name });
}

const names = async (): Promise<string[]> => (await d().checkpointNames()).sort();

beforeAll(async () => {
  if (!existsSync(ADDON)) throw new Error(`native addon not built: ${ADDON} is missing — run \`npm run build:native\` first`);
  dir = mkdtempSync('/var/tmp/virtnbd-cpt-');
  chmodSync(dir, 0o777);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', vda(), String(16 * 1024 * 1024)]);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', sda(), String(8 * 1024 * 1024)]);
  chmodSync(vda(), 0o666);
  chmodSync(sda(), 0o666);
  out = join(dir, 'backup');
  cpdir = join(out, 'checkpoints');
  mkdirSync(cpdir, { recursive: true });
  conn = await VirtConnection.open(URI);
  dom = await conn.createXML(domainXml());
});

afterAll(async () => {
  if (dom !== undefined) await dom.destroy().catch(() => undefined);
  await conn?.close().catch(() => undefined);
  try {
    execFileSync('virsh', ['-c', URI, 'destroy', NAME], { stdio: 'ignore' }); // fallback if the binding failed half-way
  } catch {
    /* already gone */
  }
  if (dir !== '') rmSync(dir, { recursive: true, force: true });
});

test('the real domain fits the interface; no checkpoints, nothing foreign', async () => {
  const cd: CheckpointDomain = d();
  expect(cd.name).toBe(NAME);
  expect(await findForeignCheckpoints(cd)).toEqual([]);
});

test('checkpoints created with our XML; saved as libvirt returns them (with sizes)', async () => {
  await jobWithCheckpoint(OURS(0), '');
  await d().checkpointCreateXML(checkpointXml(OURS(1), OURS(0), ['vda', 'sda']));
  expect(await names()).toEqual([OURS(0), OURS(1)]);
  expect(await bitmaps(vda())).toEqual([OURS(0), OURS(1)]);
  expect(await bitmaps(sda())).toEqual([OURS(0), OURS(1)]);

  for (const n of [OURS(0), OURS(1)]) {
    const path = await saveCheckpointXml(d(), n, cpdir);
    expect(path).toBe(join(cpdir, `${n}.xml`));
    const saved = readFileSync(path, 'utf8');
    const fresh = await (await d().checkpointLookupByName(n)).xmlDesc(CHECKPOINT_XML.SIZE);
    const norm = (s: string): string => s.replace(/size='[0-9]+'/g, "size='N'");
    expect(norm(saved)).toBe(norm(fresh));
    expect(saved).toMatch(new RegExp(`<disk name='vda' checkpoint='bitmap' bitmap='${n.replace('.', '\\.')}' size='[0-9]+'/>`));
    expect(saved.endsWith('</domaincheckpoint>\n')).toBe(true);
    expect(saved).toContain(`<name>${NAME}</name>`); // the domain definition at checkpoint time
    expect(parseCheckpointXml(saved)).toEqual({ name: n, parent: n === OURS(1) ? OURS(0) : '' });
  }
  expect(readdirSync(cpdir).sort()).toEqual([`${OURS(0)}.xml`, `${OURS(1)}.xml`]);
  await writeCptFile(join(out, `${NAME}.cpt`), [OURS(0), OURS(1)]);
  expect(await readCptFile(join(out, `${NAME}.cpt`))).toEqual([OURS(0), OURS(1)]);
});

test('validation of intact checkpoints succeeds without warnings', async () => {
  const log = recordingLogger();
  for (const n of [OURS(0), OURS(1)]) expect(await validateCheckpoint(await d().checkpointLookupByName(n), log)).toBe(true);
  expect(log.counts).toEqual({ warnings: 0, errors: 0 });
  expect(await names()).toEqual([OURS(0), OURS(1)]);
});

test('lost metadata is redefined from the directory, parents first whatever the mtimes (D40)', async () => {
  for (const n of [OURS(1), OURS(0)]) await (await d().checkpointLookupByName(n)).delete(CHECKPOINT_DELETE.METADATA_ONLY);
  expect(await names()).toEqual([]);
  expect(await bitmaps(vda())).toEqual([OURS(0), OURS(1)]); // still in the images
  // The child's file is older than the parent's: mtime order would define the child first.
  utimesSync(join(cpdir, `${OURS(1)}.xml`), 1_600_000_000, 1_600_000_000);
  utimesSync(join(cpdir, `${OURS(0)}.xml`), 1_700_000_000, 1_700_000_000);
  writeFileSync(join(cpdir, 'foreign.xml'), "<domaincheckpoint><name>foreign</name><disks><disk name='vda'/></disks></domaincheckpoint>");
  const log = recordingLogger();
  expect(await redefineFromDirectory(d(), cpdir, log, { neededParent: OURS(1) })).toEqual({ parentMissingBitmap: false });
  expect(await names()).toEqual([OURS(0), OURS(1)]); // foreign.xml was not used
  expect(parseCheckpointXml(await (await d().checkpointLookupByName(OURS(1))).xmlDesc()).parent).toBe(OURS(0));
  expect(log.counts).toEqual({ warnings: 0, errors: 0 });
  expect(log.at('INFO')).toHaveLength(2);
  // Everything known: nothing to do.
  const log2 = recordingLogger();
  await redefineFromDirectory(d(), cpdir, log2, {});
  expect(log2.at('INFO')).toEqual([]);
  expect(await names()).toEqual([OURS(0), OURS(1)]);
});

test('foreign checkpoints are detected (D21)', async () => {
  for (const n of ['user-cp', 'virtnbdbackup-manual']) {
    await d().checkpointCreateXML(`<domaincheckpoint><name>${n}</name><disks><disk name='vda'/></disks></domaincheckpoint>`);
  }
  expect(await findForeignCheckpoints(d())).toEqual(['user-cp', 'virtnbdbackup-manual']);
  for (const n of ['virtnbdbackup-manual', 'user-cp']) await (await d().checkpointLookupByName(n)).delete();
  expect(await findForeignCheckpoints(d())).toEqual([]);
  expect(await bitmaps(vda())).toEqual([OURS(0), OURS(1)]);
});

test('a checkpoint whose bitmap was removed from an image fails validation', async () => {
  await removeBitmap(vda(), OURS(1));
  expect(await bitmaps(vda())).toEqual([OURS(0)]);
  const log = recordingLogger();
  expect(await validateCheckpoint(await d().checkpointLookupByName(OURS(1)), log)).toBe(false);
  expect(log.at('WARNING')).toHaveLength(1);
  expect(log.at('WARNING')[0]).toMatch(/^Failed to validate checkpoint: \[.*virtnbdbackup\.1.*\]$/);
  expect(await validateCheckpoint(await d().checkpointLookupByName(OURS(0)), log)).toBe(true);
  expect(log.counts.warnings).toBe(1);
});

test('D36: the needed parent without bitmap is reported, not fatal; a newer one stays fatal', async () => {
  await (await d().checkpointLookupByName(OURS(1))).delete(CHECKPOINT_DELETE.METADATA_ONLY);
  const log = recordingLogger();
  expect(await redefineFromDirectory(d(), cpdir, log, { neededParent: OURS(1) })).toEqual({ parentMissingBitmap: true });
  expect(log.counts.errors).toBe(0);
  expect(await names()).toEqual([OURS(0)]);

  const log2 = recordingLogger();
  let err: unknown;
  try {
    await redefineFromDirectory(d(), cpdir, log2, { neededParent: OURS(0) });
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(CheckpointError);
  expect((err as Error).message).toBe('Failed to redefine checkpoints.');
  expect(log2.at('ERROR')).toHaveLength(1);
  expect(log2.at('ERROR')[0]).toMatch(/^Redefining checkpoint failed: \[virtnbdbackup\.1\]: .*missing or broken bitmap 'virtnbdbackup\.1'/);
  expect(await names()).toEqual([OURS(0)]);
});

test('deletion before a full: ours only, invalid → metadata only, unknown skipped, leftovers too (D29)', async () => {
  // .1 known to libvirt but inconsistent (no bitmap in vda); .5 a leftover not in .cpt.
  await d().checkpointCreateXML(readFileSync(join(cpdir, `${OURS(1)}.xml`), 'utf8'), CHECKPOINT_CREATE.REDEFINE);
  await d().checkpointCreateXML(checkpointXml(OURS(5), OURS(1), ['vda', 'sda']));
  expect(await names()).toEqual([OURS(0), OURS(1), OURS(5)]);
  expect(await bitmaps(sda())).toEqual([OURS(0), OURS(1), OURS(5)]);
  const log = recordingLogger();
  await deleteOurCheckpoints(d(), [OURS(0), OURS(1), OURS(2)], cpdir, log);
  expect(await names()).toEqual([]);
  expect(readdirSync(cpdir)).toEqual(['foreign.xml']);
  expect(await bitmaps(vda())).toEqual([]);
  expect(await bitmaps(sda())).toEqual([OURS(1)]); // metadata-only delete keeps the bitmap
  const w = log.at('WARNING');
  expect(w[0]).toBe('Checkpoint [virtnbdbackup.2] is not known to libvirt, skipping its removal.');
  expect(w[1]).toMatch(/^Failed to validate checkpoint: \[.*virtnbdbackup\.1/);
  expect(w[2]).toBe('Checkpoint inconsistency detected, removing metadata for checkpoint.');
  expect(w).toHaveLength(3);
  expect(log.counts.errors).toBe(0);
  await removeBitmap(sda(), OURS(1)); // the stray bitmap (§3.8) would block the next virtnbdbackup.1
  expect(await bitmaps(sda())).toEqual([]);
});

test('an incremental killed after its job started is recovered (§3.9)', async () => {
  rmSync(out, { recursive: true, force: true });
  mkdirSync(cpdir, { recursive: true });
  await jobWithCheckpoint(OURS(0), '');
  await saveCheckpointXml(d(), OURS(0), cpdir);
  await writeCptFile(join(out, `${NAME}.cpt`), [OURS(0)]);
  writeFileSync(join(out, 'vda.full.data'), 'full');
  // The killed inc: its checkpoint exists, one disk complete, one partial (the job was ended by -k).
  await jobWithCheckpoint(OURS(1), OURS(0));
  writeFileSync(join(out, 'vda.inc.virtnbdbackup.1.data'), 'x');
  writeFileSync(join(out, 'sda.inc.virtnbdbackup.1.data.partial'), 'x');
  const cpt = await readCptFile(join(out, `${NAME}.cpt`));
  const log = recordingLogger();
  const state = await inspectInterruptedRun({ dom: d(), outputDir: out, cpt, partialFiles: ['sda.inc.virtnbdbackup.1.data.partial'], log });
  expect(state).toEqual({ kind: 'recoverable', staleCheckpoint: OURS(1), partials: ['sda.inc.virtnbdbackup.1.data.partial'], files: ['vda.inc.virtnbdbackup.1.data'] });
  if (state.kind !== 'recoverable') throw new Error('unreachable');
  await recoverInterruptedRun({ dom: d(), outputDir: out, state, log, unixTime: 1_800_000_000 });
  expect(await names()).toEqual([OURS(0)]);
  expect(await bitmaps(vda())).toEqual([OURS(0)]);
  expect(await bitmaps(sda())).toEqual([OURS(0)]);
  expect(readdirSync(out).sort()).toEqual([
    'checkpoints',
    `${NAME}.cpt`,
    'sda.inc.virtnbdbackup.1.data.partial.failed-1800000000',
    'vda.full.data',
    'vda.inc.virtnbdbackup.1.data.failed-1800000000',
  ].sort());
  expect(await inspectInterruptedRun({ dom: d(), outputDir: out, cpt, partialFiles: [], log })).toEqual({ kind: 'clean' });
  // The chain continues: the next inc can create virtnbdbackup.1 again.
  await jobWithCheckpoint(OURS(1), OURS(0));
  expect(await names()).toEqual([OURS(0), OURS(1)]);
  writeFileSync(join(out, 'vda.inc.virtnbdbackup.1.data'), 'inc');
  expect(await inspectInterruptedRun({ dom: d(), outputDir: out, cpt: [OURS(0), OURS(1)], partialFiles: [], log })).toEqual({ kind: 'clean' });

  // A checkpoint of ours that is neither listed nor the next one is refused, not deleted.
  await d().checkpointCreateXML(checkpointXml(OURS(3), OURS(1), ['vda']));
  const refused = await inspectInterruptedRun({ dom: d(), outputDir: out, cpt: [OURS(0), OURS(1)], partialFiles: [], log });
  expect(refused.kind).toBe('refuse');
  expect(refused.kind === 'refuse' ? refused.message : '').toContain(`virsh checkpoint-delete ${NAME}`);
  expect(await names()).toEqual([OURS(0), OURS(1), OURS(3)]);
});
