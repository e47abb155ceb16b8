import { RAW_DISK_README_HINT, selectDisks, warnTpm, type DiskSelectionOptions } from '../../../src/backup/disk-selection.js';
import type { DomainConfig, DomainDisk } from '../../../src/xml/domain-types.js';
import { recordingLogger } from './recording-logger.js';

function disk(dev: string, over: Partial<DomainDisk> = {}): DomainDisk {
  return { dev, device: 'disk', type: 'file', format: 'qcow2', path: `/img/${dev}.qcow2`, backingChain: [], ...over };
}

function config(disks: DomainDisk[], over: Partial<DomainConfig> = {}): DomainConfig {
  return { name: 'vm1', uuid: 'u-1', disks, bootFiles: {}, tpmEmulated: false, incrementalBackupCapability: true, ...over };
}

async function run(disks: DomainDisk[], opts: Partial<DiskSelectionOptions> = {}, resolve?: (p: string, v: string) => Promise<string>) {
  const log = recordingLogger();
  const r = await selectDisks(config(disks), { raw: false, ...opts }, log, resolve);
  return { ...r, log, devs: r.disks.map((d) => d.dev) };
}

const RAW = (dev: string) => `Raw disk [${dev}] excluded by default, use option --raw to include.`;
const LUN = (dev: string) => `Skipping direct attached lun [${dev}], use option --raw to include.`;

describe('selectDisks (BEHAVIOUR.md §6.1)', () => {
  test('rule 14: a qcow2 file disk is kept with path, format, chain, discard, alias and qcow flag', async () => {
    const d = disk('vda', { discard: 'unmap', alias: 'virtio-disk0', backingChain: ['/img/base.qcow2'] });
    const r = await run([d]);
    expect(r.disks).toEqual([{ ...d, qcow: true }]);
    expect(r.errors).toBe(0);
    expect(r.log.records).toEqual([]);
    // the result does not share the chain array with the input
    r.disks[0]!.backingChain.push('x');
    expect(d.backingChain).toEqual(['/img/base.qcow2']);
  });

  test('document order is kept', async () => {
    const r = await run([disk('vdb'), disk('sda'), disk('vda')]);
    expect(r.devs).toEqual(['vdb', 'sda', 'vda']);
  });

  test('rule 2: --exclude skips with a warning, before any other rule', async () => {
    const r = await run([disk('vda'), disk('vdb'), disk('sdc', { device: 'cdrom' }), disk('vdn', { type: 'network' })], { exclude: ['vdb', 'sdc', 'vdn'] });
    expect(r.devs).toEqual(['vda']);
    expect(r.log.at('WARNING')).toEqual([
      'Excluding disk [vdb] from backup as requested',
      'Excluding disk [sdc] from backup as requested',
      'Excluding disk [vdn] from backup as requested',
    ]);
    expect(r.errors).toBe(0);
    expect(r.log.counts).toEqual({ warnings: 3, errors: 0 });
  });

  test('rule 3: --include keeps only that disk; the others are INFO', async () => {
    const r = await run([disk('vda'), disk('vdb'), disk('vdc', { format: 'raw' })], { include: 'vdb' });
    expect(r.devs).toEqual(['vdb']);
    expect(r.log.at('INFO')).toEqual([
      'Skipping disk: [vda] as requested: does not match disk [vdb]',
      'Skipping disk: [vdc] as requested: does not match disk [vdb]',
    ]);
    expect(r.log.counts).toEqual({ warnings: 0, errors: 0 });
  });

  test('rule 3 after rule 2: an included disk that is also excluded is excluded', async () => {
    const r = await run([disk('vda')], { include: 'vda', exclude: ['vda'] });
    expect(r.devs).toEqual([]);
    expect(r.log.at('WARNING')).toEqual(['Excluding disk [vda] from backup as requested']);
  });

  test('rule 4: cdrom and floppy are skipped with INFO, also with --raw', async () => {
    for (const raw of [false, true]) {
      const r = await run([disk('sdc', { device: 'cdrom', format: 'raw' }), disk('fda', { device: 'floppy', format: 'raw', path: '' }), disk('vda')], { raw });
      expect(r.devs).toEqual(['vda']);
      expect(r.log.at('INFO')).toEqual(['Skipping attached [cdrom] device: [sdc].', 'Skipping attached [floppy] device: [fda].']);
      expect(r.log.counts).toEqual({ warnings: 0, errors: 0 });
    }
  });

  test('rule 5: a volume disk gets the resolved path', async () => {
    const calls: string[] = [];
    const r = await run([disk('vde', { type: 'volume', path: '', volume: { pool: 'default', volume: 'v.qcow2' } })], {}, async (p, v) => {
      calls.push(`${p}/${v}`);
      return '/var/lib/libvirt/images/v.qcow2';
    });
    expect(calls).toEqual(['default/v.qcow2']);
    expect(r.disks).toMatchObject([{ dev: 'vde', path: '/var/lib/libvirt/images/v.qcow2', qcow: true, volume: { pool: 'default', volume: 'v.qcow2' } }]);
    expect(r.errors).toBe(0);
  });

  test('rule 5: lookup failure, no resolver, or no pool/volume → ERROR naming the disk, skipped, counted', async () => {
    const vol = disk('vde', { type: 'volume', path: '', volume: { pool: 'default', volume: 'v.qcow2' } });
    const failing = await run([vol, disk('vda')], {}, async () => {
      throw new Error('Storage volume not found: no storage vol with matching name');
    });
    expect(failing.devs).toEqual(['vda']);
    expect(failing.errors).toBe(1);
    expect(failing.log.at('ERROR')).toEqual([
      'Failed to detect path of storage volume [v.qcow2] in pool [default] of disk [vde]: [Storage volume not found: no storage vol with matching name]',
    ]);
    const noResolver = await run([vol]);
    expect(noResolver.devs).toEqual([]);
    expect(noResolver.errors).toBe(1);
    expect(noResolver.log.at('ERROR')[0]).toMatch(/\[vde\]/);
    const incomplete = await run([disk('vdf', { type: 'volume', path: '' })], {}, async () => '/x');
    expect(incomplete.errors).toBe(1);
    expect(incomplete.log.at('ERROR')[0]).toMatch(/\[vdf\]/);
  });

  test('rule 7: raw block device without --raw → raw warning; with --raw kept; qcow2 on block always kept (D14)', async () => {
    const rawBlock = disk('vdc', { type: 'block', format: 'raw', path: '/dev/vg/raw' });
    const qcowBlock = disk('vdd', { type: 'block', format: 'qcow2', path: '/dev/vg/q' });
    const without = await run([rawBlock, qcowBlock]);
    expect(without.devs).toEqual(['vdd']);
    expect(without.disks[0]).toMatchObject({ path: '/dev/vg/q', qcow: true });
    expect(without.log.at('WARNING')).toEqual([RAW('vdc')]);
    const withRaw = await run([rawBlock, qcowBlock], { raw: true });
    expect(withRaw.disks).toMatchObject([{ dev: 'vdc', path: '/dev/vg/raw', qcow: false }, { dev: 'vdd' }]);
    expect(withRaw.log.records).toEqual([]);
  });

  test('rule 8: network disks are an ERROR, also with --raw', async () => {
    const r = await run([disk('vdf', { type: 'network', format: 'raw', path: '' }), disk('vda')], { raw: true });
    expect(r.devs).toEqual(['vda']);
    expect(r.errors).toBe(1);
    expect(r.log.at('ERROR')).toEqual(['Unsupported network disk type for disk [vdf]']);
  });

  test('rule 9: other disk types are an ERROR', async () => {
    const r = await run([disk('vdn', { type: 'nvme' }), disk('vdv', { type: 'vhostuser' })]);
    expect(r.devs).toEqual([]);
    expect(r.errors).toBe(2);
    expect(r.log.at('ERROR')).toEqual(['Unsupported disk type [nvme] for disk [vdn]', 'Unsupported disk type [vhostuser] for disk [vdv]']);
  });

  test('rule 10: no source path is an ERROR (file and block)', async () => {
    const r = await run([disk('vdg', { path: '' }), disk('vdh', { type: 'block', path: '' })]);
    expect(r.devs).toEqual([]);
    expect(r.errors).toBe(2);
    expect(r.log.at('ERROR')).toEqual(['Unable to detect disk source for disk [vdg]', 'Unable to detect disk source for disk [vdh]']);
  });

  test('a disk without target dev is an ERROR', async () => {
    const r = await run([disk('')]);
    expect(r.devs).toEqual([]);
    expect(r.errors).toBe(1);
  });

  test('rules 11–13: lun and raw format without --raw → warning plus README hint per disk', async () => {
    const r = await run(
      [
        disk('sdb', { type: 'volume', device: 'lun', format: 'raw', path: '', volume: { pool: 'iscsi', volume: 'unit:0:0:1' } }),
        disk('vdb', { format: 'raw', path: '/img/scratch.img' }),
        disk('vda'),
      ],
      {},
      async () => '/dev/disk/by-path/ip-10.0.0.1:3260-iscsi-lun-1',
    );
    expect(r.devs).toEqual(['vda']);
    expect(r.log.at('WARNING')).toEqual([LUN('sdb'), RAW_DISK_README_HINT, RAW('vdb'), RAW_DISK_README_HINT]);
    expect(r.errors).toBe(0);
    expect(r.log.counts).toEqual({ warnings: 4, errors: 0 });
  });

  test('rule 11 also for a lun whose format is not raw', async () => {
    const r = await run([disk('sdb', { type: 'file', device: 'lun', format: '', path: '/img/lun' })]);
    expect(r.devs).toEqual([]);
    expect(r.log.at('WARNING')).toEqual([LUN('sdb'), RAW_DISK_README_HINT]);
  });

  test('a raw block lun without --raw is caught by rule 7 first (raw warning, table order)', async () => {
    const r = await run([disk('sdb', { type: 'block', device: 'lun', format: 'raw', path: '/dev/sdz' })]);
    expect(r.devs).toEqual([]);
    expect(r.log.at('WARNING')).toEqual([RAW('sdb')]);
  });

  test('rule 13: the hint is left out for libvirt ≤ 1010000', async () => {
    const r = await run([disk('vdb', { format: 'raw' })], { libvirtVersion: 1010000 });
    expect(r.log.at('WARNING')).toEqual([RAW('vdb')]);
    const newer = await run([disk('vdb', { format: 'raw' })], { libvirtVersion: 9000000 });
    expect(newer.log.at('WARNING')).toEqual([RAW('vdb'), RAW_DISK_README_HINT]);
  });

  test('--raw keeps raw files and luns, marked non-qcow', async () => {
    const r = await run([disk('sdb', { type: 'block', device: 'lun', format: 'raw', path: '/dev/sdz' }), disk('vdb', { format: 'raw', path: '/img/s.img' })], { raw: true });
    expect(r.disks).toMatchObject([
      { dev: 'sdb', device: 'lun', path: '/dev/sdz', qcow: false },
      { dev: 'vdb', path: '/img/s.img', qcow: false },
    ]);
    expect(r.log.records).toEqual([]);
  });

  test('qcow means the format starts with "qcow"', async () => {
    const r = await run([disk('a', { format: 'qcow' }), disk('b', { format: 'qcow2' }), disk('c', { format: 'vmdk' }), disk('d', { format: '' })], { raw: true });
    expect(r.disks.map((d) => d.qcow)).toEqual([true, true, false, false]);
  });

  test('a mixed domain: errors counted, selection continues', async () => {
    const r = await run(
      [
        disk('vda'),
        disk('vdb', { format: 'raw' }),
        disk('vdf', { type: 'network', path: '' }),
        disk('sdc', { device: 'cdrom', format: 'raw' }),
        disk('vdg', { path: '' }),
        disk('vdd', { type: 'block', path: '/dev/vg/q' }),
      ],
      { exclude: ['vdx'] },
    );
    expect(r.devs).toEqual(['vda', 'vdd']);
    expect(r.errors).toBe(2);
    expect(r.log.counts.errors).toBe(2);
  });
});

describe('warnTpm (BEHAVIOUR.md §1 step 18)', () => {
  test('two warnings naming the swtpm directory of the uuid', () => {
    const log = recordingLogger();
    warnTpm(config([], { tpmEmulated: true, uuid: '4f1d0a2e-8a3c-4b55-9d1e-0c2f5a7b9e11' }), log);
    expect(log.records).toEqual([
      { level: 'WARNING', message: 'Emulated TPM device attached: User action required.' },
      { level: 'WARNING', message: 'Please manually backup contents of: [/var/lib/libvirt/swtpm/4f1d0a2e-8a3c-4b55-9d1e-0c2f5a7b9e11/]' },
    ]);
  });

  test('nothing without an emulated TPM', () => {
    const log = recordingLogger();
    warnTpm(config([]), log);
    expect(log.records).toEqual([]);
  });
});
