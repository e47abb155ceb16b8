/**
 * `losetup -J` and /proc/self/mountinfo parsing, and the undo stack (order, failures reported
 * without stopping the rest, moving steps between stacks), the mount point check.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { parseLosetupJson } from '../../../src/mount/loop.js';
import { checkMountpoint } from '../../../src/mount/run-mount.js';
import { parseMountinfo, mountsUnder, unescapeMountinfo } from '../../../src/mount/mounts.js';
import { UndoStack } from '../../../src/mount/undo.js';

const LOSETUP = `{
   "loopdevices": [
      {
         "name": "/dev/loop0",
         "sizelimit": 20971520,
         "offset": 1048576,
         "autoclear": false,
         "ro": false,
         "back-file": "/tmp/mexp/fuse/disk",
         "dio": false,
         "log-sec": 512
      },{
         "name": "/dev/loop1",
         "sizelimit": 0,
         "offset": 0,
         "autoclear": true,
         "ro": true,
         "back-file": "/tmp/x y/disk (deleted)",
         "dio": false,
         "log-sec": 512
      }
   ]
}`;

const MOUNTINFO = `27 1 0:26 / / rw,relatime - overlay overlay rw
42 27 0:39 / /tmp/virtnbd-mount-abc/fuse rw,nosuid,nodev,relatime - fuse /dev/fuse rw,user_id=0,group_id=0
43 27 7:0 / /tmp/mp/part1 ro,relatime - ext4 /dev/loop0 ro
44 27 7:1 / /tmp/mp\\040x/part2 ro,relatime - ext4 /dev/loop1 ro
45 27 7:2 / /tmp/mpother ro,relatime - ext4 /dev/loop2 ro
`;

describe('parseLosetupJson', () => {
  it('reads name, backing file, offset, size limit and read-only flag', () => {
    expect(parseLosetupJson(LOSETUP)).toEqual([
      { name: '/dev/loop0', backFile: '/tmp/mexp/fuse/disk', offset: 1048576, sizelimit: 20971520, readonly: false },
      { name: '/dev/loop1', backFile: '/tmp/x y/disk (deleted)', offset: 0, sizelimit: 0, readonly: true },
    ]);
  });

  it('treats empty output (no devices) as an empty list and rejects other output', () => {
    expect(parseLosetupJson('')).toEqual([]);
    expect(parseLosetupJson('{"loopdevices": []}')).toEqual([]);
    expect(() => parseLosetupJson('{"other": 1}')).toThrow(/loopdevices/);
  });
});

describe('mountinfo', () => {
  it('unescapes octal escapes', () => {
    expect(unescapeMountinfo('/a\\040b\\011c\\134d')).toBe('/a b\tc\\d');
  });

  it('lists mount points and filters those at or below a directory (not siblings with a common prefix)', () => {
    expect(parseMountinfo(MOUNTINFO)).toEqual(['/', '/tmp/virtnbd-mount-abc/fuse', '/tmp/mp/part1', '/tmp/mp x/part2', '/tmp/mpother']);
    expect(mountsUnder('/tmp/mp', MOUNTINFO)).toEqual(['/tmp/mp/part1']);
    expect(mountsUnder('/tmp/mp/', MOUNTINFO)).toEqual(['/tmp/mp/part1']);
    expect(mountsUnder('/tmp/mp x', MOUNTINFO)).toEqual(['/tmp/mp x/part2']);
    expect(mountsUnder('/tmp/mp/part1', MOUNTINFO)).toEqual(['/tmp/mp/part1']);
    expect(mountsUnder('/srv', MOUNTINFO)).toEqual([]);
  });
});

describe('UndoStack', () => {
  it('runs actions newest first, reports failures and still runs the rest', async () => {
    const done: string[] = [];
    const u = new UndoStack();
    u.push('a', () => void done.push('a'));
    u.push('b', () => {
      throw new Error('boom');
    });
    u.push('c', async () => {
      await new Promise((r) => setTimeout(r, 5));
      done.push('c');
    });
    const errors: string[] = [];
    const failures = await u.run((m) => errors.push(m));
    expect(done).toEqual(['c', 'a']);
    expect(failures).toEqual(['b: boom']);
    expect(errors).toEqual(['b: boom']);
    expect(u.size).toBe(0);
    expect(await u.run(() => undefined)).toEqual([]); // runs each action once
    expect(done).toEqual(['c', 'a']);
  });

  it('moveTo keeps the order above the target stack', async () => {
    const done: string[] = [];
    const outer = new UndoStack();
    outer.push('outer', () => void done.push('outer'));
    const local = new UndoStack();
    local.push('dir', () => void done.push('dir'));
    local.push('loop', () => void done.push('loop'));
    local.push('mount', () => void done.push('mount'));
    local.moveTo(outer);
    expect(local.size).toBe(0);
    await outer.run(() => undefined);
    expect(done).toEqual(['mount', 'loop', 'dir', 'outer']);
  });
});

describe('checkMountpoint', () => {
  it('accepts an existing directory (made absolute) and names the problem otherwise', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vnbd-mp-unit-'));
    try {
      writeFileSync(join(dir, 'file'), 'x');
      expect(checkMountpoint(dir)).toEqual({ dir });
      expect(checkMountpoint(relative(process.cwd(), dir))).toEqual({ dir });
      expect(checkMountpoint(join(dir, 'missing'))).toEqual({ error: `Mount point [${join(dir, 'missing')}] does not exist` });
      expect(checkMountpoint(join(dir, 'file'))).toEqual({ error: `Mount point [${join(dir, 'file')}] is not a directory` });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
