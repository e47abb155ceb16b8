/**
 * src/restore/define.ts with a fake libvirt connection: the autostart flag, the define error
 * message, autostart failures, and the pool matching of refreshPoolFor (trailing slash, symlinked
 * output directory, inactive pools, refresh and listing failures). The real libvirt path is
 * covered by test/integration/restore-define.test.ts.
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineRestored, refreshPoolFor } from '../../../src/restore/define.js';
import { VirtError, type StoragePoolInfo, type VirtConnection, type VirtDomain } from '../../../src/virt/client.js';
import { recordingLogger } from '../backup/recording-logger.js';

interface FakeState {
  defined: string[];
  autostart: boolean[];
  refreshed: string[];
}

function fakeConn(o: { defineError?: string; autostartError?: string; pools?: StoragePoolInfo[]; listError?: string; refreshError?: string }): { conn: VirtConnection; state: FakeState } {
  const state: FakeState = { defined: [], autostart: [], refreshed: [] };
  const dom = {
    name: 'restore_vm1',
    setAutostart: async (flag: boolean) => {
      if (o.autostartError !== undefined) throw new VirtError(o.autostartError, 1);
      state.autostart.push(flag);
    },
  } as unknown as VirtDomain;
  const conn = {
    defineXML: async (xml: string) => {
      if (o.defineError !== undefined) throw new VirtError(o.defineError, 27);
      state.defined.push(xml);
      return dom;
    },
    storagePools: async () => {
      if (o.listError !== undefined) throw new VirtError(o.listError, 1);
      return o.pools ?? [];
    },
    refreshStoragePool: async (name: string) => {
      if (o.refreshError !== undefined) throw new VirtError(o.refreshError, 55);
      state.refreshed.push(name);
    },
  } as unknown as VirtConnection;
  return { conn, state };
}

describe('defineRestored', () => {
  test('defines; autostart only when asked', async () => {
    for (const autostart of [false, true]) {
      const { conn, state } = fakeConn({});
      const log = recordingLogger();
      const dom = await defineRestored(conn, '<domain/>', { autostart }, log);
      expect(dom.name).toBe('restore_vm1');
      expect(state.defined).toEqual(['<domain/>']);
      expect(state.autostart).toEqual(autostart ? [true] : []);
      expect(log.at('INFO')).toEqual(autostart ? ['Defined domain [restore_vm1]', 'Marked domain [restore_vm1] for autostart'] : ['Defined domain [restore_vm1]']);
    }
  });

  test('refused definition: Failed to define domain: [<reason>], nothing else happens', async () => {
    const { conn, state } = fakeConn({ defineError: 'XML error: bad thing' });
    const log = recordingLogger();
    await expect(defineRestored(conn, '<domain/>', { autostart: true }, log)).rejects.toThrow(new Error('Failed to define domain: [XML error: bad thing]'));
    expect(state.autostart).toEqual([]);
    expect(log.records).toEqual([]);
  });

  test('autostart failure: an error is logged, the domain is still returned', async () => {
    const { conn } = fakeConn({ autostartError: 'cannot create symlink' });
    const log = recordingLogger();
    const dom = await defineRestored(conn, '<domain/>', { autostart: true }, log);
    expect(dom.name).toBe('restore_vm1');
    expect(log.at('ERROR')).toEqual(['Failed to set autostart for domain [restore_vm1]: [cannot create symlink]']);
  });
});

describe('refreshPoolFor', () => {
  let tmp = '';
  beforeAll(() => {
    tmp = mkdtempSync(join(tmpdir(), 'virtnbd-pool-'));
    mkdirSync(join(tmp, 'images'));
    symlinkSync(join(tmp, 'images'), join(tmp, 'link'));
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  const pools = (): StoragePoolInfo[] => [
    { name: 'default', active: true, targetPath: '/var/lib/libvirt/images' },
    { name: 'rbd', active: true },
    { name: 'imgs', active: true, targetPath: `${join(tmp, 'images')}/` },
    { name: 'old', active: false, targetPath: join(tmp, 'images') },
  ];

  test('matching active pools are refreshed (trailing slashes, relative paths, symlinks); inactive ones are left alone', async () => {
    for (const out of [join(tmp, 'images'), `${join(tmp, 'images')}/`, join(tmp, 'link')]) {
      const { conn, state } = fakeConn({ pools: pools() });
      const log = recordingLogger();
      expect(await refreshPoolFor(conn, out, log)).toEqual(['imgs']);
      expect(state.refreshed).toEqual(['imgs']);
      expect(log.counts).toEqual({ warnings: 0, errors: 0 });
      expect(log.at('INFO')).toContain(`Storage pool [old] of [${out.replace(/\/$/, '')}] is not active, not refreshing it.`);
    }
  });

  test('no pool for the directory, listing or refresh failure: warnings, restore goes on', async () => {
    const none = recordingLogger();
    expect(await refreshPoolFor(fakeConn({ pools: pools() }).conn, join(tmp, 'other'), none)).toEqual([]);
    expect(none.at('WARNING')).toEqual([`No storage pool with target path [${join(tmp, 'other')}] found, not refreshing.`]);

    const list = recordingLogger();
    expect(await refreshPoolFor(fakeConn({ listError: 'no connection' }).conn, join(tmp, 'images'), list)).toEqual([]);
    expect(list.at('WARNING')).toEqual([`Unable to list storage pools, not refreshing the pool of [${join(tmp, 'images')}]: [no connection]`]);

    const refresh = recordingLogger();
    expect(await refreshPoolFor(fakeConn({ pools: pools(), refreshError: 'pool busy' }).conn, join(tmp, 'images'), refresh)).toEqual([]);
    expect(refresh.at('WARNING')).toEqual(['Failed to refresh storage pool [imgs]: [pool busy]']);
    expect(refresh.counts.errors).toBe(0);
  });
});
