/**
 * src/backup/checkpoints.ts and src/backup/cpt-file.ts against an in-memory libvirt domain:
 * ownership, `.cpt` reading/writing, checkpoint XML, validation, planning, redefinition from the
 * checkpoint directory (D36, D40), deletion before a full (D29), saving the XML, and the
 * recovery after an interrupted run (§3.9).
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CheckpointError,
  checkpointBitmapDisks,
  checkpointXml,
  deleteOurCheckpoints,
  findForeignCheckpoints,
  inspectInterruptedRun,
  isOurCheckpoint,
  parseCheckpointXml,
  planCheckpoint,
  readCptFile,
  recoverInterruptedRun,
  redefineFromDirectory,
  saveCheckpointXml,
  validateCheckpoint,
  writeCptFile,
  type CheckpointDomain,
  type CheckpointHandle,
  type InterruptedRunState,
  type RecoverableRun,
} from '../../../src/backup/checkpoints.js';
import { CHECKPOINT_CREATE, CHECKPOINT_DELETE, CHECKPOINT_XML, VIR_ERR, VirtError, type VirtDomain } from '../../../src/virt/client.js';
import { recordingLogger } from './recording-logger.js';

// The real binding satisfies the structural interface (compile-time).
const fits: CheckpointDomain | null = null as unknown as VirtDomain | null;
void fits;

const REDEFINE_VALIDATE = CHECKPOINT_CREATE.REDEFINE | CHECKPOINT_CREATE.REDEFINE_VALIDATE;

/** A libvirt-like checkpoint description (name first, then a domain definition with its own <name>). */
function lvXml(name: string, parent?: string, size = false): string {
  const p = parent !== undefined ? `  <parent>\n    <name>${parent}</name>\n  </parent>\n` : '';
  const sz = size ? " size='1048576'" : '';
  return (
    `<domaincheckpoint>\n  <name>${name}</name>\n  <description>Backup checkpoint</description>\n${p}` +
    `  <creationTime>1700000000</creationTime>\n  <disks>\n    <disk name='vda' checkpoint='bitmap' bitmap='${name}'${sz}/>\n  </disks>\n` +
    `  <domain type='qemu'>\n    <name>vm1</name>\n  </domain>\n</domaincheckpoint>\n`
  );
}

const nameOf = (xml: string): string => /<name>([^<]+)<\/name>/.exec(xml)![1]!;

interface Call {
  op: 'redefine' | 'create' | 'delete' | 'xml';
  name: string;
  flags: number;
  xml?: string;
}

class FakeCheckpoint implements CheckpointHandle {
  constructor(
    readonly domain: FakeDomain,
    readonly name: string,
  ) {}
  async xmlDesc(flags = 0): Promise<string> {
    const d = this.domain;
    d.calls.push({ op: 'xml', name: this.name, flags });
    const cp = d.cps.get(this.name);
    if (cp === undefined) throw d.noSuch(this.name);
    if (d.xmlFails.has(this.name)) throw new VirtError('internal error: cannot format', VIR_ERR.INTERNAL_ERROR);
    if ((flags & CHECKPOINT_XML.SIZE) !== 0) {
      if (d.sizeUnsupported) throw new VirtError('Requested operation is not valid: domain is not running', VIR_ERR.OPERATION_INVALID);
      return cp.xml.replace(/bitmap='([^']+)'\/>/g, "bitmap='$1' size='1048576'/>");
    }
    return cp.xml;
  }
  async delete(flags = 0): Promise<void> {
    const d = this.domain;
    d.calls.push({ op: 'delete', name: this.name, flags });
    if (!d.cps.has(this.name)) throw d.noSuch(this.name);
    const metadataOnly = (flags & CHECKPOINT_DELETE.METADATA_ONLY) !== 0;
    if (!metadataOnly && d.inactive) throw new VirtError('Operation not supported: cannot remove checkpoint from inactive domain', VIR_ERR.OPERATION_UNSUPPORTED);
    const err = d.deleteFails.get(this.name);
    if (err !== undefined && (!metadataOnly || d.deleteFailsAlways)) throw err;
    d.cps.delete(this.name);
    if (!metadataOnly) d.bitmaps.delete(this.name);
  }
}

class FakeDomain implements CheckpointDomain {
  readonly name = 'vm1';
  /** libvirt's checkpoint metadata */
  readonly cps = new Map<string, { xml: string }>();
  /** checkpoints whose bitmaps exist (and are consistent) in the images */
  readonly bitmaps = new Set<string>();
  readonly calls: Call[] = [];
  readonly lookupFails = new Map<string, VirtError>();
  readonly deleteFails = new Map<string, VirtError>();
  deleteFailsAlways = false;
  readonly redefineFails = new Map<string, VirtError>();
  readonly xmlFails = new Set<string>();
  listFails: VirtError | undefined;
  inactive = false;
  sizeUnsupported = false;

  noSuch(name: string): VirtError {
    return new VirtError(`Domain checkpoint not found: no domain checkpoint with matching name '${name}'`, VIR_ERR.NO_DOMAIN_CHECKPOINT);
  }
  /** A checkpoint libvirt knows; valid unless `bitmap` is false. */
  add(name: string, parent?: string, bitmap = true): this {
    this.cps.set(name, { xml: lvXml(name, parent) });
    if (bitmap) this.bitmaps.add(name);
    return this;
  }
  async listCheckpoints(): Promise<CheckpointHandle[]> {
    if (this.listFails) throw this.listFails;
    return [...this.cps.keys()].map((n) => new FakeCheckpoint(this, n));
  }
  async checkpointLookupByName(name: string): Promise<CheckpointHandle> {
    const f = this.lookupFails.get(name);
    if (f) throw f;
    if (!this.cps.has(name)) throw this.noSuch(name);
    return new FakeCheckpoint(this, name);
  }
  async checkpointCreateXML(xml: string, flags = 0): Promise<CheckpointHandle> {
    const name = nameOf(xml);
    if ((flags & CHECKPOINT_CREATE.REDEFINE) !== 0) {
      this.calls.push({ op: 'redefine', name, flags, xml });
      const f = this.redefineFails.get(name);
      if (f) throw f;
      if ((flags & CHECKPOINT_CREATE.REDEFINE_VALIDATE) !== 0) {
        if (this.inactive) throw new VirtError('Requested operation is not valid: domain is not running', VIR_ERR.OPERATION_INVALID);
        if (!this.bitmaps.has(name)) throw new VirtError(`checkpoint inconsistent: missing or broken bitmap '${name}' for disk 'vda'`, VIR_ERR.CHECKPOINT_INCONSISTENT);
      }
    } else {
      this.calls.push({ op: 'create', name, flags, xml });
      if (this.cps.has(name)) throw new VirtError(`checkpoint '${name}' already exists`, VIR_ERR.OPERATION_INVALID);
      this.bitmaps.add(name);
    }
    this.cps.set(name, { xml });
    return new FakeCheckpoint(this, name);
  }
  ops(op: Call['op']): Array<[string, number]> {
    return this.calls.filter((c) => c.op === op).map((c) => [c.name, c.flags]);
  }
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'virtnbd-cpt-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});
const ls = (d = dir): string[] => readdirSync(d).sort();

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection');
}

// ---------------------------------------------------------------------------------------------

describe('isOurCheckpoint (D21)', () => {
  test('exactly virtnbdbackup.<digits>', () => {
    for (const n of ['virtnbdbackup.0', 'virtnbdbackup.1', 'virtnbdbackup.123']) expect([n, isOurCheckpoint(n)]).toEqual([n, true]);
    for (const n of ['virtnbdbackup-manual', 'virtnbdbackup.', 'virtnbdbackup', 'virtnbdbackup.1a', 'xvirtnbdbackup.1', 'virtnbdbackup.1.x', 'virtnbdbackup.1\n', 'my-virtnbdbackup.2', 'virtnbdbackupX1', '']) {
      expect([n, isOurCheckpoint(n)]).toEqual([n, false]);
    }
  });
});

describe('<domain>.cpt', () => {
  test('missing → []; written in python json.dumps form, atomically, replaced', async () => {
    const p = join(dir, 'vm1.cpt');
    expect(await readCptFile(p)).toEqual([]);
    await writeCptFile(p, ['virtnbdbackup.0']);
    expect(readFileSync(p, 'latin1')).toBe('["virtnbdbackup.0"]');
    await writeCptFile(p, ['virtnbdbackup.0', 'virtnbdbackup.1', 'virtnbdbackup.2']);
    expect(readFileSync(p, 'latin1')).toBe('["virtnbdbackup.0", "virtnbdbackup.1", "virtnbdbackup.2"]');
    expect(await readCptFile(p)).toEqual(['virtnbdbackup.0', 'virtnbdbackup.1', 'virtnbdbackup.2']);
    await writeCptFile(p, []);
    expect(readFileSync(p, 'latin1')).toBe('[]');
    expect(await readCptFile(p)).toEqual([]);
    expect(ls()).toEqual(['vm1.cpt']); // no temporary files left
  });

  test('reads what the original wrote (and pretty-printed JSON)', async () => {
    const p = join(dir, 'fx.cpt');
    writeFileSync(p, '["virtnbdbackup.0", "virtnbdbackup.1", "virtnbdbackup.2", "virtnbdbackup.3"]');
    expect(await readCptFile(p)).toHaveLength(4);
    writeFileSync(p, '[\n  "virtnbdbackup.0"\n]\n');
    expect(await readCptFile(p)).toEqual(['virtnbdbackup.0']);
  });

  test('unreadable → Failed to read checkpoint file: [<reason>]', async () => {
    const p = join(dir, 'vm1.cpt');
    mkdirSync(p); // a directory cannot be read as a file (root reads anything else)
    const e = await rejection(readCptFile(p));
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toMatch(/^Failed to read checkpoint file: \[.*EISDIR.*\]$/);
  });

  test.each([
    ['', /JSON|Unexpected end/],
    ['["virtnbdbackup.0",', /JSON|Unexpected|Expected/],
    ['{"a": 1}', /expected a JSON array/],
    ['null', /found null/],
    ['[1]', /entry 0 is not a string/],
    ['["virtnbdbackup.0", "foo"]', /entry 1 \("foo"\) is not a checkpoint name/],
    ['["virtnbdbackup-manual"]', /is not a checkpoint name/],
    ['["virtnbdbackup.0", "virtnbdbackup.0"]', /listed twice/],
  ])('invalid content %j → Invalid checkpoint file: [<file>: <reason>]', async (content, reason) => {
    const p = join(dir, 'vm1.cpt');
    writeFileSync(p, content);
    const e = await rejection(readCptFile(p));
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message.startsWith(`Invalid checkpoint file: [${p}: `)).toBe(true);
    expect(e.message).toMatch(reason);
  });

  test('refuses to write anything but a list of our names; write failures are CheckpointErrors', async () => {
    const p = join(dir, 'vm1.cpt');
    await writeCptFile(p, ['virtnbdbackup.0']);
    await expect(writeCptFile(p, ['virtnbdbackup.0', 'x'])).rejects.toThrow(TypeError);
    expect(readFileSync(p, 'latin1')).toBe('["virtnbdbackup.0"]');
    const e = await rejection(writeCptFile(join(dir, 'missing', 'vm1.cpt'), ['virtnbdbackup.0']));
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toMatch(/^Extending checkpoint file failed: \[.*ENOENT/);
  });
});

describe('checkpoint XML', () => {
  test('§5.2 structure, with and without parent; parsed back', () => {
    const x = checkpointXml('virtnbdbackup.3', 'virtnbdbackup.2', ['vda', 'sda']);
    expect(x).toBe(
      '<domaincheckpoint>\n  <description>Backup checkpoint</description>\n  <name>virtnbdbackup.3</name>\n' +
        '  <parent><name>virtnbdbackup.2</name></parent>\n  <disks>\n    <disk name="vda"/>\n    <disk name="sda"/>\n  </disks>\n</domaincheckpoint>\n',
    );
    expect(parseCheckpointXml(x)).toEqual({ name: 'virtnbdbackup.3', parent: 'virtnbdbackup.2' });
    const y = checkpointXml('virtnbdbackup.0', '', ['vda']);
    expect(y).not.toContain('<parent>');
    expect(parseCheckpointXml(y)).toEqual({ name: 'virtnbdbackup.0', parent: '' });
    expect(checkpointXml('virtnbdbackup.0', '', ['a"b<c'])).toContain('<disk name="a&quot;b&lt;c"/>');
  });

  test('rejects names that are not ours and empty or duplicate disk lists', () => {
    expect(() => checkpointXml('manual', '', ['vda'])).toThrow(TypeError);
    expect(() => checkpointXml('virtnbdbackup.1', 'manual', ['vda'])).toThrow(TypeError);
    expect(() => checkpointXml('virtnbdbackup.1', 'virtnbdbackup.0', [])).toThrow(TypeError);
    expect(() => checkpointXml('virtnbdbackup.1', 'virtnbdbackup.0', ['vda', 'vda'])).toThrow(TypeError);
  });

  test('parseCheckpointXml reads the checkpoint name, not the embedded domain name; entities; errors', () => {
    expect(parseCheckpointXml(lvXml('virtnbdbackup.1', 'virtnbdbackup.0'))).toEqual({ name: 'virtnbdbackup.1', parent: 'virtnbdbackup.0' });
    expect(parseCheckpointXml("<?xml version='1.0'?>\n<domaincheckpoint><name>a&amp;b</name></domaincheckpoint>").name).toBe('a&b');
    expect(() => parseCheckpointXml('<domaincheckpoint><name>x</name>')).toThrow(/not well-formed/);
    expect(() => parseCheckpointXml('<domain><name>x</name></domain>')).toThrow(/domaincheckpoint/);
    expect(() => parseCheckpointXml('<domaincheckpoint><description>x</description></domaincheckpoint>')).toThrow(/no <name>/);
  });

  test('checkpointBitmapDisks lists the disks with checkpoint="bitmap" (D39), not those without or outside <disks>', () => {
    expect([...checkpointBitmapDisks(lvXml('virtnbdbackup.1', 'virtnbdbackup.0', true))]).toEqual(['vda']);
    const x =
      "<domaincheckpoint><name>virtnbdbackup.2</name><disks><disk name='vda' checkpoint='bitmap' bitmap='virtnbdbackup.2'/>" +
      "<disk name=\"sdb\" checkpoint=\"no\"/><disk name='vdc' checkpoint='bitmap'/></disks>" +
      "<domain type='qemu'><devices><disk name='sdb' checkpoint='bitmap'/></devices></domain></domaincheckpoint>";
    expect([...checkpointBitmapDisks(x)].sort()).toEqual(['vda', 'vdc']);
    expect(checkpointBitmapDisks('<domaincheckpoint><name>x</name>').size).toBe(0);
  });
});

describe('foreign checkpoints and validation', () => {
  test('findForeignCheckpoints lists every name that is not ours', async () => {
    const d = new FakeDomain().add('virtnbdbackup.0').add('virtnbdbackup-manual').add('mine').add('virtnbdbackup.1');
    expect(await findForeignCheckpoints(d)).toEqual(['mine', 'virtnbdbackup-manual']);
    expect(await findForeignCheckpoints(new FakeDomain().add('virtnbdbackup.0'))).toEqual([]);
  });

  test('valid: its own XML is redefined with REDEFINE|REDEFINE_VALIDATE, no warning', async () => {
    const d = new FakeDomain().add('virtnbdbackup.0').add('virtnbdbackup.1', 'virtnbdbackup.0');
    const log = recordingLogger();
    expect(await validateCheckpoint(await d.checkpointLookupByName('virtnbdbackup.1'), log)).toBe(true);
    const r = d.calls.filter((c) => c.op === 'redefine');
    expect(r).toHaveLength(1);
    expect(r[0]!.flags).toBe(REDEFINE_VALIDATE);
    expect(r[0]!.xml).toBe(lvXml('virtnbdbackup.1', 'virtnbdbackup.0'));
    expect(d.ops('xml')).toEqual([['virtnbdbackup.1', 0]]);
    expect(log.counts.warnings).toBe(0);
  });

  test('missing bitmap or any libvirt error: warning and invalid', async () => {
    const d = new FakeDomain().add('virtnbdbackup.0', undefined, false).add('virtnbdbackup.1');
    d.xmlFails.add('virtnbdbackup.1');
    const log = recordingLogger();
    expect(await validateCheckpoint(await d.checkpointLookupByName('virtnbdbackup.0'), log)).toBe(false);
    expect(await validateCheckpoint(await d.checkpointLookupByName('virtnbdbackup.1'), log)).toBe(false);
    expect(log.at('WARNING')).toEqual([
      "Failed to validate checkpoint: [checkpoint inconsistent: missing or broken bitmap 'virtnbdbackup.0' for disk 'vda']",
      'Failed to validate checkpoint: [internal error: cannot format]',
    ]);
  });
});

describe('planCheckpoint (§3.3)', () => {
  const cpt = ['virtnbdbackup.0', 'virtnbdbackup.1', 'virtnbdbackup.2'];
  const counted = (result: boolean) => {
    const f = { calls: 0, fn: async () => (f.calls++, result) };
    return f;
  };

  test('copy and full: virtnbdbackup.0 without parent, nothing validated', async () => {
    for (const level of ['copy', 'full'] as const) {
      for (const online of [true, false]) {
        const v = counted(true);
        expect(await planCheckpoint({ level, online, cpt, validateParent: v.fn })).toEqual({ level, fileLevel: level, name: 'virtnbdbackup.0', parent: '', fallbackFull: false });
        expect(v.calls).toBe(0);
      }
    }
  });

  test('online inc/diff with a valid parent: name N, parent = last entry', async () => {
    for (const level of ['inc', 'diff'] as const) {
      const v = counted(true);
      expect(await planCheckpoint({ level, online: true, cpt, validateParent: v.fn })).toEqual({ level, fileLevel: level, name: 'virtnbdbackup.3', parent: 'virtnbdbackup.2', fallbackFull: false });
      expect(v.calls).toBe(1);
    }
  });

  test('online inc/diff with an invalid parent: full named N, no parent, file level kept', async () => {
    for (const level of ['inc', 'diff'] as const) {
      const v = counted(false);
      expect(await planCheckpoint({ level, online: true, cpt, validateParent: v.fn })).toEqual({ level: 'full', fileLevel: level, name: 'virtnbdbackup.3', parent: '', fallbackFull: true });
      expect(v.calls).toBe(1);
    }
  });

  test('offline inc/diff: name := parent, no validation', async () => {
    for (const level of ['inc', 'diff'] as const) {
      const v = counted(false);
      expect(await planCheckpoint({ level, online: false, cpt, validateParent: v.fn })).toEqual({ level, fileLevel: level, name: 'virtnbdbackup.2', parent: 'virtnbdbackup.2', fallbackFull: false });
      expect(v.calls).toBe(0);
    }
  });

  test('inc/diff without checkpoints is fatal', async () => {
    for (const level of ['inc', 'diff'] as const) {
      for (const online of [true, false]) {
        const e = await rejection(planCheckpoint({ level, online, cpt: [], validateParent: async () => true }));
        expect(e).toBeInstanceOf(CheckpointError);
        expect(e.message).toBe('No existing checkpoints found, execute full backup first.');
      }
    }
  });
});

describe('redefineFromDirectory (§3.6)', () => {
  const put = (name: string, parent?: string): string => {
    const content = lvXml(name, parent);
    writeFileSync(join(dir, `${name}.xml`), content);
    return content;
  };
  /** Files for 0,1,2,10,11 (number order differs from name order); mtimes newest-first. */
  const chain = (d: FakeDomain): Map<string, string> => {
    const m = new Map<string, string>();
    const nums = [0, 1, 2, 10, 11];
    nums.forEach((n, i) => {
      const name = `virtnbdbackup.${n}`;
      m.set(name, put(name, i > 0 ? `virtnbdbackup.${nums[i - 1]}` : undefined));
      utimesSync(join(dir, `${name}.xml`), 2_000_000_000 - n * 1000, 2_000_000_000 - n * 1000);
      d.bitmaps.add(name);
    });
    return m;
  };

  test('redefines what libvirt lacks, by checkpoint number (D40), file content verbatim; foreign files untouched', async () => {
    const d = new FakeDomain();
    const contents = chain(d);
    writeFileSync(join(dir, 'other.xml'), lvXml('other'));
    writeFileSync(join(dir, 'virtnbdbackup-manual.xml'), lvXml('virtnbdbackup-manual'));
    writeFileSync(join(dir, 'notes.txt'), 'x');
    d.add('virtnbdbackup.1', 'virtnbdbackup.0');
    const log = recordingLogger();
    expect(await redefineFromDirectory(d, dir, log, {})).toEqual({ parentMissingBitmap: false });
    const r = d.calls.filter((c) => c.op === 'redefine');
    expect(r.map((c) => c.name)).toEqual(['virtnbdbackup.0', 'virtnbdbackup.2', 'virtnbdbackup.10', 'virtnbdbackup.11']);
    for (const c of r) {
      expect(c.flags).toBe(REDEFINE_VALIDATE);
      expect(c.xml).toBe(contents.get(c.name));
    }
    expect([...d.cps.keys()].sort()).toEqual(['virtnbdbackup.0', 'virtnbdbackup.1', 'virtnbdbackup.10', 'virtnbdbackup.11', 'virtnbdbackup.2']);
    expect(log.counts).toEqual({ warnings: 0, errors: 0 });
    // Second run: everything known, nothing redefined.
    d.calls.length = 0;
    await redefineFromDirectory(d, dir, log, {});
    expect(d.ops('redefine')).toEqual([]);
  });

  test('a missing directory is no error', async () => {
    const d = new FakeDomain();
    expect(await redefineFromDirectory(d, join(dir, 'nope'), recordingLogger(), {})).toEqual({ parentMissingBitmap: false });
  });

  test('lookup errors other than "no such checkpoint" are fatal', async () => {
    const d = new FakeDomain();
    chain(d);
    d.lookupFails.set('virtnbdbackup.2', new VirtError('Cannot recv data: Connection reset by peer', VIR_ERR.RPC));
    const log = recordingLogger();
    const e = await rejection(redefineFromDirectory(d, dir, log, {}));
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toBe('Failed to redefine checkpoints.');
    expect(log.at('ERROR')).toEqual(['Failed to look up checkpoint [virtnbdbackup.2]: Cannot recv data: Connection reset by peer']);
    expect(d.ops('redefine').map((c) => c[0])).toEqual(['virtnbdbackup.0', 'virtnbdbackup.1']);
  });

  test('invalid files are fatal: not XML, or naming another checkpoint', async () => {
    const d = new FakeDomain();
    writeFileSync(join(dir, 'virtnbdbackup.0.xml'), '<domaincheckpoint><name>virtnbdbackup.0</name>');
    let log = recordingLogger();
    expect((await rejection(redefineFromDirectory(d, dir, log, {}))).message).toBe('Failed to redefine checkpoints.');
    expect(log.at('ERROR')[0]).toMatch(/^Redefining checkpoint failed: \[virtnbdbackup\.0\]: invalid checkpoint file \[.*virtnbdbackup\.0\.xml\]: not well-formed/);
    writeFileSync(join(dir, 'virtnbdbackup.0.xml'), lvXml('virtnbdbackup.5'));
    log = recordingLogger();
    expect((await rejection(redefineFromDirectory(d, dir, log, {}))).message).toBe('Failed to redefine checkpoints.');
    expect(log.at('ERROR')[0]).toMatch(/describes checkpoint \[virtnbdbackup\.5\]$/);
    expect(d.ops('redefine')).toEqual([]);
  });

  test('other libvirt errors are fatal with the original ERROR line', async () => {
    const d = new FakeDomain();
    chain(d);
    d.redefineFails.set('virtnbdbackup.10', new VirtError("unsupported configuration: disk 'vdb' not found", VIR_ERR.INTERNAL_ERROR));
    const log = recordingLogger();
    const e = await rejection(redefineFromDirectory(d, dir, log, { neededParent: 'virtnbdbackup.10' }));
    expect(e.message).toBe('Failed to redefine checkpoints.');
    expect(log.at('ERROR')).toEqual(["Redefining checkpoint failed: [virtnbdbackup.10]: unsupported configuration: disk 'vdb' not found"]);
  });

  test('D36: the needed parent lost its bitmap → parentMissingBitmap, not fatal; older ones only warn', async () => {
    const d = new FakeDomain();
    chain(d);
    for (const n of ['virtnbdbackup.1', 'virtnbdbackup.10']) d.bitmaps.delete(n);
    const log = recordingLogger();
    expect(await redefineFromDirectory(d, dir, log, { neededParent: 'virtnbdbackup.10' })).toEqual({ parentMissingBitmap: true });
    expect([...d.cps.keys()].sort()).toEqual(['virtnbdbackup.0', 'virtnbdbackup.11', 'virtnbdbackup.2']);
    expect(log.counts.errors).toBe(0);
    expect(log.at('WARNING')).toEqual(["Checkpoint [virtnbdbackup.1] cannot be redefined, it is no longer usable: checkpoint inconsistent: missing or broken bitmap 'virtnbdbackup.1' for disk 'vda'"]);
  });

  test('D36: a lost bitmap of a checkpoint newer than the needed parent stays fatal', async () => {
    const d = new FakeDomain();
    chain(d);
    d.bitmaps.delete('virtnbdbackup.11');
    const log = recordingLogger();
    const e = await rejection(redefineFromDirectory(d, dir, log, { neededParent: 'virtnbdbackup.10' }));
    expect(e.message).toBe('Failed to redefine checkpoints.');
    expect(log.at('ERROR')).toEqual(["Redefining checkpoint failed: [virtnbdbackup.11]: checkpoint inconsistent: missing or broken bitmap 'virtnbdbackup.11' for disk 'vda'"]);
  });

  test('D36: with no parent needed (full) lost bitmaps only warn', async () => {
    const d = new FakeDomain();
    chain(d);
    d.bitmaps.clear();
    const log = recordingLogger();
    expect(await redefineFromDirectory(d, dir, log, {})).toEqual({ parentMissingBitmap: false });
    expect(log.at('WARNING')).toHaveLength(5);
    expect(d.cps.size).toBe(0);
  });
});

describe('saveCheckpointXml (FORMAT.md §6.4)', () => {
  test('writes libvirt XML with sizes, verbatim, atomically', async () => {
    const d = new FakeDomain().add('virtnbdbackup.0');
    const p = await saveCheckpointXml(d, 'virtnbdbackup.0', dir);
    expect(p).toBe(join(dir, 'virtnbdbackup.0.xml'));
    expect(readFileSync(p, 'utf8')).toBe(lvXml('virtnbdbackup.0', undefined, true));
    expect(d.ops('xml')).toEqual([['virtnbdbackup.0', CHECKPOINT_XML.SIZE]]);
    expect(ls()).toEqual(['virtnbdbackup.0.xml']);
  });

  test('without sizes when libvirt refuses the flag; errors are CheckpointErrors', async () => {
    const d = new FakeDomain().add('virtnbdbackup.1', 'virtnbdbackup.0');
    d.sizeUnsupported = true;
    await saveCheckpointXml(d, 'virtnbdbackup.1', dir);
    expect(readFileSync(join(dir, 'virtnbdbackup.1.xml'), 'utf8')).toBe(lvXml('virtnbdbackup.1', 'virtnbdbackup.0'));
    const e = await rejection(saveCheckpointXml(d, 'virtnbdbackup.7', dir));
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toMatch(/^Extending checkpoint file failed: \[.*virtnbdbackup\.7\.xml: Domain checkpoint not found/);
    await expect(saveCheckpointXml(d, '../x', dir)).rejects.toThrow(TypeError);
    expect(ls()).toEqual(['virtnbdbackup.1.xml']);
  });
});

describe('deleteOurCheckpoints (BEHAVIOUR.md §3.5, D29)', () => {
  test('our XML files only; listed ones (invalid → metadata only), unknown skipped, other ours too; foreign kept', async () => {
    for (const f of ['virtnbdbackup.0.xml', 'virtnbdbackup.1.xml', 'virtnbdbackup.12.xml', 'foreign.xml', 'virtnbdbackup-manual.xml', 'keep.txt']) writeFileSync(join(dir, f), 'x');
    const d = new FakeDomain().add('virtnbdbackup.5', 'virtnbdbackup.1').add('virtnbdbackup.0').add('virtnbdbackup.1', 'virtnbdbackup.0', false).add('foreign').add('virtnbdbackup.3');
    const log = recordingLogger();
    await deleteOurCheckpoints(d, ['virtnbdbackup.0', 'virtnbdbackup.1', 'virtnbdbackup.2'], dir, log);
    expect(ls()).toEqual(['foreign.xml', 'keep.txt', 'virtnbdbackup-manual.xml']);
    expect(d.ops('delete')).toEqual([
      ['virtnbdbackup.0', 0],
      ['virtnbdbackup.1', CHECKPOINT_DELETE.METADATA_ONLY],
      ['virtnbdbackup.3', 0],
      ['virtnbdbackup.5', 0],
    ]);
    expect([...d.cps.keys()]).toEqual(['foreign']);
    expect(d.bitmaps.has('virtnbdbackup.0')).toBe(false);
    expect(log.at('WARNING')).toEqual([
      'Checkpoint [virtnbdbackup.2] is not known to libvirt, skipping its removal.',
      "Failed to validate checkpoint: [checkpoint inconsistent: missing or broken bitmap 'virtnbdbackup.1' for disk 'vda']",
      'Checkpoint inconsistency detected, removing metadata for checkpoint.',
    ]);
    expect(log.counts.errors).toBe(0);
  });

  test('empty .cpt: every checkpoint of ours, oldest first; a missing directory is fine', async () => {
    const d = new FakeDomain().add('virtnbdbackup.10').add('mine').add('virtnbdbackup.2').add('virtnbdbackup.0');
    await deleteOurCheckpoints(d, [], join(dir, 'none'), recordingLogger());
    expect(d.ops('delete')).toEqual([
      ['virtnbdbackup.0', 0],
      ['virtnbdbackup.2', 0],
      ['virtnbdbackup.10', 0],
    ]);
    expect([...d.cps.keys()]).toEqual(['mine']);
  });

  test('an error: ERROR line, then Failed to remove checkpoint.', async () => {
    const d = new FakeDomain().add('virtnbdbackup.0').add('virtnbdbackup.1', 'virtnbdbackup.0');
    d.deleteFails.set('virtnbdbackup.0', new VirtError('internal error: unable to execute QEMU command', VIR_ERR.INTERNAL_ERROR));
    const log = recordingLogger();
    const e = await rejection(deleteOurCheckpoints(d, ['virtnbdbackup.0', 'virtnbdbackup.1'], dir, log));
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toBe('Failed to remove checkpoint.');
    expect(log.at('ERROR')).toEqual(['Error during checkpoint removal: [internal error: unable to execute QEMU command]']);
    expect(d.cps.has('virtnbdbackup.1')).toBe(true); // stopped at the first failure
    const d2 = new FakeDomain();
    d2.listFails = new VirtError('Cannot write data: Broken pipe', VIR_ERR.RPC);
    await expect(deleteOurCheckpoints(d2, [], dir, recordingLogger())).rejects.toThrow('Failed to remove checkpoint.');
  });
});

describe('interrupted runs (BEHAVIOUR.md §3.9)', () => {
  const CPT = ['virtnbdbackup.0', 'virtnbdbackup.1'];
  const T = 1_800_000_000;
  let cpdir: string;
  /** A completed chain full + inc.1 for vda and sda. */
  const completedChain = (): void => {
    cpdir = join(dir, 'checkpoints');
    mkdirSync(cpdir);
    for (const f of [
      'vm1.cpt',
      'vda.full.data',
      'vda.full.data.chksum',
      'sda.full.data',
      'vda.inc.virtnbdbackup.1.data',
      'vda.inc.virtnbdbackup.1.data.chksum',
      'sda.inc.virtnbdbackup.1.data',
      'vmconfig.virtnbdbackup.0.xml',
      'vmconfig.virtnbdbackup.1.xml',
      'vda.virtnbdbackup.1.qcow.json',
      'backup.inc.01012030101010.log',
    ]) {
      writeFileSync(join(dir, f), f);
    }
    for (const c of CPT) writeFileSync(join(cpdir, `${c}.xml`), c);
  };
  const chainDomain = (): FakeDomain => new FakeDomain().add('virtnbdbackup.0').add('virtnbdbackup.1', 'virtnbdbackup.0').add('foreign-one');
  const partialsIn = (): string[] => ls().filter((f) => f.endsWith('.data.partial'));
  const inspect = (d: FakeDomain, cpt: string[] = CPT, log = recordingLogger()): Promise<InterruptedRunState> =>
    inspectInterruptedRun({ dom: d, outputDir: dir, cpt, partialFiles: partialsIn(), log, checkpointDir: cpdir });
  const recoverable = (s: InterruptedRunState): RecoverableRun => {
    if (s.kind !== 'recoverable') throw new Error(`expected recoverable, got ${JSON.stringify(s)}`);
    return s;
  };
  const refused = (s: InterruptedRunState): string => {
    if (s.kind !== 'refuse') throw new Error(`expected refuse, got ${JSON.stringify(s)}`);
    return s.message;
  };
  const untouched = (): void => {
    for (const f of ['vm1.cpt', 'vda.full.data', 'vda.inc.virtnbdbackup.1.data', 'vmconfig.virtnbdbackup.1.xml', 'vda.virtnbdbackup.1.qcow.json', 'backup.inc.01012030101010.log']) {
      expect([f, readFileSync(join(dir, f), 'utf8')]).toEqual([f, f]);
    }
    expect(ls(cpdir)).toEqual(expect.arrayContaining(['virtnbdbackup.0.xml', 'virtnbdbackup.1.xml']));
  };

  test('a complete chain is clean (foreign checkpoints and listed ones do not matter)', async () => {
    completedChain();
    expect(await inspect(chainDomain())).toEqual({ kind: 'clean' });
  });

  test('online inc killed while writing: stale checkpoint N and its files → recovered', async () => {
    completedChain();
    for (const f of ['vda.inc.virtnbdbackup.2.data', 'vda.inc.virtnbdbackup.2.data.chksum', 'sda.inc.virtnbdbackup.2.data.partial']) writeFileSync(join(dir, f), 'new');
    const d = chainDomain().add('virtnbdbackup.2', 'virtnbdbackup.1');
    const s = recoverable(await inspect(d));
    expect(s).toEqual({
      kind: 'recoverable',
      staleCheckpoint: 'virtnbdbackup.2',
      partials: ['sda.inc.virtnbdbackup.2.data.partial'],
      files: ['vda.inc.virtnbdbackup.2.data', 'vda.inc.virtnbdbackup.2.data.chksum'],
    });
    const log = recordingLogger();
    await recoverInterruptedRun({ dom: d, outputDir: dir, state: s, log, unixTime: T });
    expect(d.ops('delete')).toEqual([['virtnbdbackup.2', 0]]);
    expect([...d.cps.keys()].sort()).toEqual(['foreign-one', 'virtnbdbackup.0', 'virtnbdbackup.1']);
    expect(d.bitmaps.has('virtnbdbackup.1')).toBe(true);
    expect(ls()).toEqual(
      expect.arrayContaining([`sda.inc.virtnbdbackup.2.data.partial.failed-${T}`, `vda.inc.virtnbdbackup.2.data.failed-${T}`, `vda.inc.virtnbdbackup.2.data.chksum.failed-${T}`]),
    );
    expect(ls().filter((f) => f.includes('virtnbdbackup.2') && !f.endsWith(`.failed-${T}`))).toEqual([]);
    expect(readFileSync(join(dir, `vda.inc.virtnbdbackup.2.data.failed-${T}`), 'utf8')).toBe('new');
    untouched();
    expect(log.at('WARNING')).toHaveLength(4);
    expect(log.at('WARNING')[0]).toBe('Removed checkpoint [virtnbdbackup.2] of an interrupted backup run (not listed in vm1.cpt).');
    // Afterwards the target is clean: moved files match no pattern.
    expect(await inspect(d)).toEqual({ kind: 'clean' });
  });

  test('killed between the checkpoint XML and .cpt: side files and checkpoints/N.xml moved aside too', async () => {
    completedChain();
    const run = ['vda.inc.virtnbdbackup.2.data', 'vda.inc.virtnbdbackup.2.data.chksum', 'sda.inc.virtnbdbackup.2.data', 'vmconfig.virtnbdbackup.2.xml', 'vda.virtnbdbackup.2.qcow.json', 'OVMF_VARS.fd.virtnbdbackup.2'];
    for (const f of run) writeFileSync(join(dir, f), 'new');
    writeFileSync(join(cpdir, 'virtnbdbackup.2.xml'), 'x');
    const d = chainDomain().add('virtnbdbackup.2', 'virtnbdbackup.1');
    const s = recoverable(await inspect(d));
    expect(s.staleCheckpoint).toBe('virtnbdbackup.2');
    expect(s.partials).toEqual([]);
    expect(s.files).toEqual([...run].sort());
    expect(s.checkpointXmlFile).toBe(join(cpdir, 'virtnbdbackup.2.xml'));
    await recoverInterruptedRun({ dom: d, outputDir: dir, state: s, log: recordingLogger(), unixTime: T });
    for (const f of run) expect(existsSync(join(dir, `${f}.failed-${T}`))).toBe(true);
    expect(ls(cpdir)).toEqual(['virtnbdbackup.0.xml', 'virtnbdbackup.1.xml', `virtnbdbackup.2.xml.failed-${T}`]);
    untouched();
  });

  test('files of an unrecorded checkpoint N without libvirt metadata (transient domain restarted) → recovered', async () => {
    completedChain();
    writeFileSync(join(dir, 'vda.inc.virtnbdbackup.2.data'), 'new');
    const s = recoverable(await inspect(chainDomain()));
    expect(s).toEqual({ kind: 'recoverable', partials: [], files: ['vda.inc.virtnbdbackup.2.data'] });
  });

  test('diff (or offline inc) killed: Unix-time partials and completed files of that run; no checkpoint', async () => {
    completedChain();
    for (const f of [`vda.diff.${T - 5}.data.partial`, `sda.diff.${T - 5}.data`, `sda.diff.${T - 5}.data.chksum`]) writeFileSync(join(dir, f), 'new');
    const d = chainDomain();
    const s = recoverable(await inspect(d));
    expect(s).toEqual({ kind: 'recoverable', partials: [`vda.diff.${T - 5}.data.partial`], files: [`sda.diff.${T - 5}.data`, `sda.diff.${T - 5}.data.chksum`] });
    await recoverInterruptedRun({ dom: d, outputDir: dir, state: s, log: recordingLogger(), unixTime: T });
    expect(d.ops('delete')).toEqual([]);
    expect(ls().filter((f) => f.includes(String(T - 5)))).toEqual([`sda.diff.${T - 5}.data.chksum.failed-${T}`, `sda.diff.${T - 5}.data.failed-${T}`, `vda.diff.${T - 5}.data.partial.failed-${T}`]);
    untouched();
  });

  test('only a stale checkpoint N (failed clean-up, or -s ended with -k) → it is deleted', async () => {
    completedChain();
    const d = chainDomain().add('virtnbdbackup.2', 'virtnbdbackup.1');
    const s = recoverable(await inspect(d));
    expect(s).toEqual({ kind: 'recoverable', staleCheckpoint: 'virtnbdbackup.2', partials: [], files: [] });
    await recoverInterruptedRun({ dom: d, outputDir: dir, state: s, log: recordingLogger(), unixTime: T });
    expect(d.cps.has('virtnbdbackup.2')).toBe(false);
    untouched();
  });

  test('shut-off domain: the stale checkpoint is kept with a warning, the files are moved', async () => {
    completedChain();
    writeFileSync(join(dir, 'vda.inc.virtnbdbackup.2.data.partial'), 'x');
    const d = chainDomain().add('virtnbdbackup.2', 'virtnbdbackup.1');
    d.inactive = true;
    const log = recordingLogger();
    await recoverInterruptedRun({ dom: d, outputDir: dir, state: recoverable(await inspect(d)), log, unixTime: T });
    expect(d.cps.has('virtnbdbackup.2')).toBe(true);
    expect(d.ops('delete')).toEqual([['virtnbdbackup.2', 0]]);
    expect(log.at('WARNING')[0]).toMatch(/^Checkpoint \[virtnbdbackup\.2\] of an interrupted backup run cannot be removed while the domain is shut off/);
    expect(partialsIn()).toEqual([]);
  });

  test('delete failure: inconsistent → metadata only; consistent → CheckpointError and nothing moved', async () => {
    completedChain();
    writeFileSync(join(dir, 'vda.inc.virtnbdbackup.2.data.partial'), 'x');
    const boom = new VirtError("internal error: bitmap 'virtnbdbackup.2' not found in backing chain of 'vda'", VIR_ERR.INTERNAL_ERROR);
    const d = chainDomain().add('virtnbdbackup.2', 'virtnbdbackup.1', false);
    d.deleteFails.set('virtnbdbackup.2', boom);
    const log = recordingLogger();
    await recoverInterruptedRun({ dom: d, outputDir: dir, state: recoverable(await inspect(d)), log, unixTime: T });
    expect(d.ops('delete')).toEqual([
      ['virtnbdbackup.2', 0],
      ['virtnbdbackup.2', CHECKPOINT_DELETE.METADATA_ONLY],
    ]);
    expect(log.at('WARNING')).toContain('Checkpoint inconsistency detected, removing metadata for checkpoint.');

    writeFileSync(join(dir, 'vda.inc.virtnbdbackup.2.data.partial'), 'x');
    const d2 = chainDomain().add('virtnbdbackup.2', 'virtnbdbackup.1');
    d2.deleteFails.set('virtnbdbackup.2', boom);
    const e = await rejection(recoverInterruptedRun({ dom: d2, outputDir: dir, state: recoverable(await inspect(d2)), log: recordingLogger(), unixTime: T + 1 }));
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e.message).toContain('virsh checkpoint-delete vm1 virtnbdbackup.2');
    expect(partialsIn()).toEqual(['vda.inc.virtnbdbackup.2.data.partial']);
  });

  test('never replaces an existing .failed- file', async () => {
    completedChain();
    writeFileSync(join(dir, `vda.diff.${T - 5}.data.partial`), 'new');
    writeFileSync(join(dir, `vda.diff.${T - 5}.data.partial.failed-${T}`), 'older');
    const s = recoverable(await inspect(chainDomain()));
    const e = await rejection(recoverInterruptedRun({ dom: chainDomain(), outputDir: dir, state: s, log: recordingLogger(), unixTime: T }));
    expect(e).toBeInstanceOf(CheckpointError);
    expect(readFileSync(join(dir, `vda.diff.${T - 5}.data.partial.failed-${T}`), 'utf8')).toBe('older');
    expect(readFileSync(join(dir, `vda.diff.${T - 5}.data.partial`), 'utf8')).toBe('new');
  });

  test('a set of the original whose .cpt lists the failed checkpoint is refused', async () => {
    completedChain();
    writeFileSync(join(dir, 'vda.inc.virtnbdbackup.2.data.partial'), 'x');
    const d = chainDomain().add('virtnbdbackup.2', 'virtnbdbackup.1');
    const m = refused(await inspect(d, [...CPT, 'virtnbdbackup.2']));
    expect(m).toContain('Checkpoint [virtnbdbackup.2] is listed in [vm1.cpt]');
    expect(m).toContain('vda.inc.virtnbdbackup.2.data.partial');
    expect(m).toMatch(/full backup/);
  });

  test.each([
    ['partial of a full', ['vda.full.data.partial'], [], /Unexpected partial file\(s\) \[vda\.full\.data\.partial\]/],
    ['partials of two runs', [`vda.diff.${T}.data.partial`, 'sda.inc.virtnbdbackup.2.data.partial'], [], /more than one backup run/],
    ['partial of a later checkpoint', ['vda.inc.virtnbdbackup.4.data.partial'], [], /belong to checkpoint \[virtnbdbackup\.4\].*next checkpoint of \[vm1\.cpt\] is \[virtnbdbackup\.2\]/],
    ['partial with an odd ident', ['vda.inc.foo.data.partial'], [], /not written by a backup of this chain/],
    ['unlisted checkpoint other than N', [], ['virtnbdbackup.3'], /Checkpoint\(s\) \[virtnbdbackup\.3\].*virsh checkpoint-delete vm1/],
    ['two unlisted checkpoints', ['vda.inc.virtnbdbackup.2.data.partial'], ['virtnbdbackup.2', 'virtnbdbackup.3'], /\[virtnbdbackup\.3\]/],
  ])('refused: %s', async (_what, partials, stale, message) => {
    completedChain();
    for (const f of partials) writeFileSync(join(dir, f), 'x');
    const d = chainDomain();
    for (const c of stale) d.add(c);
    expect(refused(await inspect(d))).toMatch(message);
  });

  test('refused: a listed checkpoint without any data file (the original registered it, the data never came)', async () => {
    completedChain();
    const m = refused(await inspect(chainDomain().add('virtnbdbackup.2', 'virtnbdbackup.1'), [...CPT, 'virtnbdbackup.2']));
    expect(m).toMatch(/^Checkpoint\(s\) \[virtnbdbackup\.2\] listed in \[vm1\.cpt\] have no data file/);
    // A diff that fell back to full carries the checkpoint name: that counts as its data.
    writeFileSync(join(dir, 'vda.diff.virtnbdbackup.2.data'), 'x');
    expect(await inspect(chainDomain().add('virtnbdbackup.2', 'virtnbdbackup.1'), [...CPT, 'virtnbdbackup.2'])).toEqual({ kind: 'clean' });
  });

  test('refused: data files of an unlisted checkpoint other than N; an empty .cpt', async () => {
    completedChain();
    writeFileSync(join(dir, 'vda.inc.virtnbdbackup.3.data'), 'x');
    expect(refused(await inspect(chainDomain()))).toMatch(/Data files of checkpoint\(s\) \[virtnbdbackup\.3\]/);
    rmSync(join(dir, 'vda.inc.virtnbdbackup.3.data'));
    writeFileSync(join(dir, 'vda.inc.virtnbdbackup.0.data.partial'), 'x');
    expect(refused(await inspect(new FakeDomain(), []))).toMatch(/lists no checkpoint/);
    expect(await inspect(new FakeDomain(), []).then((s) => s.kind)).toBe('refuse');
  });

  test('libvirt listing failure is a CheckpointError', async () => {
    completedChain();
    const d = chainDomain();
    d.listFails = new VirtError('Cannot recv data', VIR_ERR.RPC);
    await expect(inspect(d)).rejects.toThrow('Failed to list checkpoints: [Cannot recv data]');
  });

  test('a missing output directory holds no traces; a stale checkpoint alone is still found', async () => {
    const d = new FakeDomain().add('virtnbdbackup.0');
    const cpt = ['virtnbdbackup.0'];
    expect(await inspectInterruptedRun({ dom: d, outputDir: join(dir, 'missing'), cpt, partialFiles: [], log: recordingLogger() })).toEqual({ kind: 'clean' });
    d.add('virtnbdbackup.1', 'virtnbdbackup.0');
    expect(await inspectInterruptedRun({ dom: d, outputDir: join(dir, 'missing'), cpt, partialFiles: [], log: recordingLogger() })).toEqual({
      kind: 'recoverable',
      staleCheckpoint: 'virtnbdbackup.1',
      partials: [],
      files: [],
    });
  });
});
