import { execa } from 'execa';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  copyBootFiles,
  directorySink,
  formatOsinfo,
  writeAutostart,
  writeOsinfo,
  writeQcowInfo,
  writeVmconfig,
  type SideFileSink,
} from '../../../src/backup/side-files.js';
import type { BackupDisk } from '../../../src/backup/types.js';
import { recordingLogger } from './recording-logger.js';

let dir: string; // the backup directory
let src: string; // where "host" files live
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'virtnbd-side-'));
  src = mkdtempSync(join(tmpdir(), 'virtnbd-side-src-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
  rmSync(src, { recursive: true, force: true });
});

const ls = () => readdirSync(dir).sort();
const read = (name: string) => readFileSync(join(dir, name), 'utf8');

function qdisk(dev: string, path: string, over: Partial<BackupDisk> = {}): BackupDisk {
  return { dev, device: 'disk', type: 'file', format: 'qcow2', path, backingChain: [], qcow: true, ...over };
}

/** A sink recording calls, for the zip-independent parts. */
function memorySink(): SideFileSink & { files: Map<string, Buffer> } {
  const files = new Map<string, Buffer>();
  return {
    files,
    writeFile: async (name, content) => void files.set(name, Buffer.from(content)),
    copyFile: async (name, p) => void files.set(name, readFileSync(p)),
  };
}

describe('directorySink', () => {
  test('writes, replaces atomically, leaves no temporary files, sets mtime', async () => {
    const sink = directorySink(dir);
    await sink.writeFile('a.txt', 'one');
    await sink.writeFile('a.txt', Buffer.from('two'));
    const mtime = new Date('2024-05-06T07:08:09Z');
    await sink.writeFile('b.bin', Buffer.from([0, 1, 2, 255]), mtime);
    expect(ls()).toEqual(['a.txt', 'b.bin']);
    expect(read('a.txt')).toBe('two');
    expect([...readFileSync(join(dir, 'b.bin'))]).toEqual([0, 1, 2, 255]);
    expect(statSync(join(dir, 'b.bin')).mtime.getTime()).toBe(mtime.getTime());
  });

  test('copyFile copies the bytes; a missing source rejects and leaves nothing behind', async () => {
    const sink = directorySink(dir);
    const data = Buffer.alloc(300_000);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
    writeFileSync(join(src, 'VARS.fd'), data);
    await sink.copyFile('VARS.fd.virtnbdbackup.0', join(src, 'VARS.fd'));
    expect(readFileSync(join(dir, 'VARS.fd.virtnbdbackup.0')).equals(data)).toBe(true);
    await expect(sink.copyFile('x', join(src, 'missing'))).rejects.toThrow(/ENOENT/);
    expect(ls()).toEqual(['VARS.fd.virtnbdbackup.0']);
    // a source that cannot be read (a directory) fails after the temporary file may exist
    await expect(sink.copyFile('y', src)).rejects.toThrow();
    expect(ls()).toEqual(['VARS.fd.virtnbdbackup.0']);
  });

  test('names with a directory part are refused', async () => {
    const sink = directorySink(dir);
    for (const bad of ['', '.', '..', 'a/b', '../x', 'nul\0']) {
      await expect(sink.writeFile(bad, 'x')).rejects.toThrow(/Invalid side file name/);
    }
    expect(ls()).toEqual([]);
  });

  test('a write into a missing directory rejects', async () => {
    await expect(directorySink(join(dir, 'nope')).writeFile('a', 'x')).rejects.toThrow(/ENOENT/);
  });
});

describe('side files (FORMAT.md §6.5–6.8)', () => {
  test('vmconfig.<ident>.xml holds the XML verbatim', async () => {
    const xml = "<domain type='kvm'>\n  <name>vm1</name>\n</domain>\n";
    expect(await writeVmconfig(directorySink(dir), 'virtnbdbackup.0', xml)).toBe('vmconfig.virtnbdbackup.0.xml');
    expect(ls()).toEqual(['vmconfig.virtnbdbackup.0.xml']);
    expect(read('vmconfig.virtnbdbackup.0.xml')).toBe(xml);
  });

  test('autostart.<ident> is exactly the 4 bytes True', async () => {
    await writeAutostart(directorySink(dir), '1795884514');
    expect(ls()).toEqual(['autostart.1795884514']);
    expect(readFileSync(join(dir, 'autostart.1795884514'))).toEqual(Buffer.from('True'));
  });

  test('osinfo.<ident> is json.dumps(info, indent=4): key order kept, ASCII escapes, no trailing newline', async () => {
    const info = { 'os.id': 'debian', 'os.pretty-name': 'Debian GNU/Linux 12 (bookworm) “x” é', hostname: 'vm1', 'fs.count': 2, 'fs.0.mountpoint': '/', 'fs.1.mountpoint': 'C:\\', 'x.flag': true };
    await writeOsinfo(directorySink(dir), 'virtnbdbackup.3', info);
    const text = read('osinfo.virtnbdbackup.3');
    expect(text).toBe(
      '{\n' +
        '    "os.id": "debian",\n' +
        '    "os.pretty-name": "Debian GNU/Linux 12 (bookworm) \\u201cx\\u201d \\u00e9",\n' +
        '    "hostname": "vm1",\n' +
        '    "fs.count": 2,\n' +
        '    "fs.0.mountpoint": "/",\n' +
        '    "fs.1.mountpoint": "C:\\\\",\n' +
        '    "x.flag": true\n' +
        '}',
    );
    expect(JSON.parse(text)).toEqual(info);
    expect(formatOsinfo({})).toBe('{}');
    expect(formatOsinfo({ big: 2 ** 60, f: 1.5 })).toBe('{\n    "big": 1152921504606846976,\n    "f": 1.5\n}');
  });

  test('boot files: <basename>.<ident>, or <basename> for copy runs; a missing file is a warning', async () => {
    writeFileSync(join(src, 'OVMF_CODE.fd'), 'code');
    writeFileSync(join(src, 'vm1_VARS.fd'), 'vars');
    const boot = { loader: join(src, 'OVMF_CODE.fd'), nvram: join(src, 'vm1_VARS.fd'), kernel: join(src, 'vmlinuz-missing') };
    const log = recordingLogger();
    const names = await copyBootFiles(directorySink(dir), boot, 'virtnbdbackup.0', log);
    expect(names).toEqual(['OVMF_CODE.fd.virtnbdbackup.0', 'vm1_VARS.fd.virtnbdbackup.0']);
    expect(ls()).toEqual(names);
    expect(read('OVMF_CODE.fd.virtnbdbackup.0')).toBe('code');
    expect(read('vm1_VARS.fd.virtnbdbackup.0')).toBe('vars');
    expect(log.counts).toEqual({ warnings: 1, errors: 0 });
    expect(log.at('WARNING')[0]).toContain(join(src, 'vmlinuz-missing'));
    expect(log.at('WARNING')[0]).toMatch(/ENOENT|no such file/i);

    const copyLog = recordingLogger();
    await copyBootFiles(directorySink(dir), { nvram: join(src, 'vm1_VARS.fd') }, null, copyLog);
    expect(read('vm1_VARS.fd')).toBe('vars');
    expect(copyLog.counts.warnings).toBe(0);
  });

  test('boot files through a fetch function (remote mode)', async () => {
    const sink = memorySink();
    const log = recordingLogger();
    const fetched: string[] = [];
    await copyBootFiles(sink, { loader: '/usr/share/OVMF/OVMF_CODE.fd', initrd: '/boot/initrd.img' }, 'copy', log, {
      fetch: async (p) => {
        fetched.push(p);
        if (p.endsWith('initrd.img')) throw new Error('Permission denied');
        return Buffer.from(`remote:${p}`);
      },
    });
    expect(fetched).toEqual(['/usr/share/OVMF/OVMF_CODE.fd', '/boot/initrd.img']);
    expect([...sink.files.keys()]).toEqual(['OVMF_CODE.fd.copy']);
    expect(sink.files.get('OVMF_CODE.fd.copy')!.toString()).toBe('remote:/usr/share/OVMF/OVMF_CODE.fd');
    expect(log.at('WARNING')).toEqual(['Failed to save boot file [/boot/initrd.img] (initrd): [Permission denied]']);
  });

  test('qcow.json from a real qemu-img info; non-qcow disks skipped; missing image → warning', async () => {
    const img = join(src, 'vm1.qcow2');
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=131072,lazy_refcounts=on', img, '64M']);
    const log = recordingLogger();
    const disks = [
      qdisk('vda', img),
      qdisk('vdb', join(src, 'raw.img'), { format: 'raw', qcow: false }),
      qdisk('vdc', join(src, 'gone.qcow2')),
    ];
    const names = await writeQcowInfo(directorySink(dir), disks, 'virtnbdbackup.0', log);
    expect(names).toEqual(['vda.virtnbdbackup.0.qcow.json']);
    expect(ls()).toEqual(['vda.virtnbdbackup.0.qcow.json']);
    const text = read('vda.virtnbdbackup.0.qcow.json');
    expect(text.endsWith('\n')).toBe(false);
    const info = JSON.parse(text) as { 'virtual-size': number; 'cluster-size': number; format: string; 'format-specific': { data: { 'lazy-refcounts': boolean } } };
    expect(info.format).toBe('qcow2');
    expect(info['virtual-size']).toBe(64 * 1024 * 1024);
    expect(info['cluster-size']).toBe(131072);
    expect(info['format-specific'].data['lazy-refcounts']).toBe(true);
    // exactly qemu-img's output minus the final newline
    const direct = await execa('qemu-img', ['info', img, '--output', 'json', '--force-share'], { stripFinalNewline: false });
    expect(text).toBe(direct.stdout.replace(/\n$/, ''));
    expect(log.at('WARNING')).toHaveLength(1);
    expect(log.at('WARNING')[0]).toMatch(/^Failed to read qcow image info: \[.*gone\.qcow2.*\]$/s);
  });

  test('qcow.json: runner output that is not JSON is a warning, nothing written', async () => {
    const log = recordingLogger();
    const sink = memorySink();
    await writeQcowInfo(sink, [qdisk('vda', '/x.qcow2')], '1700000000', log, { qemuImgInfo: async () => 'qemu-img: oops\n' });
    expect(sink.files.size).toBe(0);
    expect(log.at('WARNING')).toHaveLength(1);
    expect(log.at('WARNING')[0]).toMatch(/^Failed to read qcow image info: \[/);
    const ok = memorySink();
    await writeQcowInfo(ok, [qdisk('vda', '/x.qcow2')], '1700000000', recordingLogger(), { qemuImgInfo: async (p) => `{"filename": "${p}"}\n` });
    expect(ok.files.get('vda.1700000000.qcow.json')!.toString()).toBe('{"filename": "/x.qcow2"}');
  });
});
