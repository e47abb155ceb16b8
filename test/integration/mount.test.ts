/**
 * `virtnbdmap -i SET --mount MP` end to end (real nbdkit, nbdfuse, loop devices, mount): backup
 * sets written from raw images (a whole-disk ext4, and a GPT disk with two ext4 partitions and a
 * swap partition), full + inc, plain and LZ4-compressed. For each: the marker files of both
 * backup points are read through the mount points, the mounts are read-only, and after SIGINT
 * (to the process, and to its whole process group as a terminal Ctrl-C does) the command exits
 * 0 leaving no mounts, loop devices, nbdfuse/nbdkit processes, created directories or temp
 * dirs. Error cases: missing mount point, a disk with nothing to mount (setup undone after
 * nbdkit and nbdfuse were started).
 * Builds nothing: the plugin .so and dist/ must exist (`npx tsc -p tsconfig.json` for dist).
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { watchJsonLine } from '../helpers/json-line.js';
import { execa, type ResultPromise } from 'execa';
import { writeImageChain } from '../../src/devtools/image-chain.js';
import { listLoops } from '../../src/mount/loop.js';
import { mountsUnder } from '../../src/mount/mounts.js';
import type { MountInfo } from '../../src/mount/run-mount.js';
import { pluginPath, workerPath } from '../../src/util/package-root.js';
import { alive } from '../helpers/procs.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = join(ROOT, 'bin', 'virtnbdmap');
const MiB = 1024 * 1024;

let scratch = '';
/** TMPDIR of the commands run here: must be empty after every run. */
let childTmp = '';
let logFile = '';
const sets: Record<string, string> = {};

function marker(kind: string, point: number): string {
  return `marker of ${kind} at backup point ${point}\n`;
}

async function mkfsExt4(dir: string, files: Record<string, string>, image: string, size: string): Promise<void> {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir);
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  await execa('mkfs.ext4', ['-q', '-F', '-d', dir, image, size]);
}

/** GPT disk: 1 = ext4 (20 MiB, marker), 2 = ext4 (8 MiB, second marker), 3 = swap (rest). */
async function partitionedImage(image: string, point: number): Promise<void> {
  rmSync(image, { force: true });
  await execa('truncate', ['-s', '64M', image]);
  await execa('sfdisk', ['-q', image], { input: 'label: gpt\n,20MiB,L\n,8MiB,L\n,,S\n' });
  const p1 = `${image}.p1`;
  const p2 = `${image}.p2`;
  const p3 = `${image}.p3`;
  await mkfsExt4(join(scratch, 'root'), { 'marker.txt': marker('partition 1', point) }, p1, '20M');
  await mkfsExt4(join(scratch, 'root'), { 'second.txt': `second partition, point ${point}\n` }, p2, '8M');
  await execa('truncate', ['-s', '8M', p3]);
  await execa('mkswap', ['-q', p3]);
  // partitions start at 1 MiB, 21 MiB, 29 MiB
  for (const [file, at] of [[p1, 1], [p2, 21], [p3, 29]] as const)
    await execa('dd', [`if=${file}`, `of=${image}`, 'bs=1M', `seek=${at}`, 'conv=notrunc', 'status=none']);
  for (const f of [p1, p2, p3]) rmSync(f);
}

/** Whether this kernel can mount minix (the tests use it as "recognised by blkid, not mountable"). */
function minixMountable(): boolean {
  return /\tminix$/m.test(readFileSync('/proc/filesystems', 'utf8'));
}

/** GPT disk: 1 = ext4 (marker of point 0), 2 = minix. */
async function mixedImage(image: string): Promise<void> {
  await execa('truncate', ['-s', '32M', image]);
  await execa('sfdisk', ['-q', image], { input: 'label: gpt\n,20MiB,L\n,,L\n' });
  const p1 = `${image}.p1`;
  const p2 = `${image}.p2`;
  await mkfsExt4(join(scratch, 'root'), { 'marker.txt': marker('partition 1', 0) }, p1, '20M');
  await execa('truncate', ['-s', '4M', p2]);
  await execa('mkfs.minix', [p2]);
  for (const [file, at] of [[p1, 1], [p2, 21]] as const)
    await execa('dd', [`if=${file}`, `of=${image}`, 'bs=1M', `seek=${at}`, 'conv=notrunc', 'status=none']);
  for (const f of [p1, p2]) rmSync(f);
}

beforeAll(async () => {
  const missing = [pluginPath(), workerPath(), join(ROOT, 'dist', 'src', 'cli', 'virtnbdmap.js')].filter((p) => !existsSync(p));
  if (missing.length > 0) throw new Error(`not built: ${missing.join(', ')} — run \`npm run build\` first`);
  scratch = mkdtempSync(join(tmpdir(), 'vnbd-mount-'));
  childTmp = join(scratch, 'tmp');
  mkdirSync(childTmp);
  logFile = join(scratch, 'virtnbdmap.log');
  const img = (n: string): string => join(scratch, n);
  await mkfsExt4(img('root'), { 'marker.txt': marker('whole disk', 0) }, img('whole0.img'), '64M');
  await mkfsExt4(img('root'), { 'marker.txt': marker('whole disk', 1), 'new.txt': 'added in point 1\n' }, img('whole1.img'), '64M');
  await partitionedImage(img('part0.img'), 0);
  await partitionedImage(img('part1.img'), 1);
  for (const kind of ['whole', 'part'])
    for (const [key, compress] of [['plain', false], ['lz4', 2]] as const) {
      const dir = join(scratch, `${kind}-${key}`);
      mkdirSync(dir);
      await writeImageChain(dir, 'vda', [{ image: img(`${kind}0.img`), level: 'full' }, { image: img(`${kind}1.img`), level: 'inc' }], compress);
      sets[`${kind}-${key}`] = dir;
    }
  await mixedImage(img('mixed.img'));
  await execa('truncate', ['-s', '8M', img('minix.img')]);
  await execa('mkfs.minix', [img('minix.img')]);
  for (const name of ['mixed', 'minix-only']) {
    const dir = join(scratch, name);
    mkdirSync(dir);
    await writeImageChain(dir, 'vda', [{ image: img(name === 'mixed' ? 'mixed.img' : 'minix.img'), level: 'full' }], false);
    sets[name] = dir;
  }
}, 120_000);

interface MountRun {
  proc: ResultPromise;
  info: MountInfo;
  stderr(): string;
}

const running = new Set<MountRun>();
afterEach(async () => {
  // a failed test must not leave its mounts behind for the next one
  for (const r of running) {
    r.proc.kill('SIGINT');
    await r.proc;
  }
  running.clear();
});

afterAll(async () => {
  if (!scratch) return;
  const left = mountsUnder(scratch);
  for (const m of left.reverse()) await execa('umount', ['-l', m], { reject: false });
  rmSync(scratch, { recursive: true, force: true });
});

function newMountpoint(): string {
  return mkdtempSync(join(scratch, 'mp-'));
}

function childEnv(): Record<string, string> {
  return { TMPDIR: childTmp };
}

/** Spawn `virtnbdmap ARGS --json` (own process group) and wait for its JSON line. */
async function startMount(args: string[], timeoutMs = 60_000): Promise<MountRun> {
  const proc = execa(process.execPath, [BIN, ...args, '--json', '-L', logFile], {
    reject: false,
    buffer: false,
    stdin: 'ignore',
    detached: true,
    env: childEnv(),
  });
  const watch = watchJsonLine(proc, timeoutMs);
  const line = await watch.line;
  const run: MountRun = { proc, info: JSON.parse(line) as MountInfo, stderr: watch.stderr };
  running.add(run);
  return run;
}

async function pgrep(pattern: string): Promise<number[]> {
  const r = await execa('pgrep', ['-f', '--', pattern], { reject: false });
  return String(r.stdout).split(/\s+/).filter(Boolean).map(Number).filter((p) => p !== process.pid);
}

/**
 * Loop devices left from runs here: backed by a file under the children's TMPDIR, or shown as
 * "/disk" (what losetup prints once the nbdfuse mount under a loop device is gone).
 */
async function leakedLoops(): Promise<string[]> {
  return (await listLoops()).filter((l) => l.backFile !== null && (l.backFile.startsWith(childTmp) || /^\/disk( |$)/.test(l.backFile))).map((l) => l.name);
}

/** The file-system type mounted at `path` (from mountinfo), or undefined. */
function mountedType(path: string): { fstype: string; options: string } | undefined {
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-');
    if (f[4] === path && sep > 0) return { fstype: f[sep + 1], options: f[5] };
  }
  return undefined;
}

/**
 * Stop `run` with SIGINT (to the process, or to its process group like a terminal Ctrl-C) and
 * check that everything it set up is gone. Checks first that the things looked for exist while
 * mounted, so that "none left" can fail.
 */
async function stopAndCheck(run: MountRun, mountpoint: string, how: 'process' | 'group' = 'process'): Promise<void> {
  const { info } = run;
  const fuseFile = info.disk;
  const runTmp = dirname(dirname(fuseFile)); // <TMPDIR>/virtnbd-mount-XXXX/fuse/disk
  expect(dirname(runTmp)).toBe(childTmp);
  expect(mountsUnder(mountpoint).sort()).toEqual(info.mounted.map((m) => m.path).sort());
  const loops = (await listLoops()).filter((l) => l.backFile?.startsWith(fuseFile));
  expect(loops.map((l) => l.name).sort()).toEqual(info.mounted.map((m) => m.device).sort());
  const fusePids = await pgrep(fuseFile);
  expect(fusePids.length).toBe(1);
  expect(alive(info.map.pid)).toBe(true);
  expect(readdirSync(childTmp).length).toBeGreaterThan(0);

  if (how === 'group') process.kill(-run.proc.pid!, 'SIGINT');
  else run.proc.kill('SIGINT');
  const r = await run.proc;
  running.delete(run);
  expect({ code: r.exitCode, stderr: run.stderr() }).toEqual({ code: 0, stderr: expect.stringContaining('cleanup done') as unknown });
  expect(run.stderr()).not.toMatch(/WARNING|ERROR/);

  expect(mountsUnder(mountpoint)).toEqual([]);
  expect(mountsUnder(runTmp)).toEqual([]);
  expect(await leakedLoops()).toEqual([]);
  for (const l of loops) expect((await listLoops()).map((x) => x.name)).not.toContain(l.name);
  expect(await pgrep(fuseFile)).toEqual([]);
  expect(await pgrep(runTmp)).toEqual([]);
  expect(alive(info.map.pid)).toBe(false);
  for (const p of fusePids) expect(alive(p)).toBe(false);
  expect(readdirSync(childTmp)).toEqual([]); // mount temp dir and nbdkit's temp dir removed
  // the partN directories it created are gone, the mount point itself stays
  expect(existsSync(mountpoint)).toBe(true);
  expect(readdirSync(mountpoint)).toEqual([]);
}

describe.each(['plain', 'lz4'])('whole-disk ext4, %s', (key) => {
  it.each([
    ['latest point', [] as string[], 1],
    ['--until virtnbdbackup.0', ['--until', 'virtnbdbackup.0'], 0],
  ])('%s: marker readable on MOUNTPOINT, read-only, clean Ctrl-C', async (_what, extra, point) => {
    const mp = newMountpoint();
    const run = await startMount(['-i', sets[`whole-${key}`], '--mount', mp, ...extra]);
    expect(run.info.backend).toBe('nbdfuse');
    expect(run.info.mountpoint).toBe(mp);
    expect(run.info.mounted).toEqual([
      { partition: null, fstype: 'ext4', device: expect.stringMatching(/^\/dev\/loop\d+$/) as unknown, path: mp, options: 'ro', offset: 0, size: 64 * MiB },
    ]);
    expect(run.info.skipped).toEqual([]);
    expect(run.info.map.checkpoint).toBe(`virtnbdbackup.${point}`);
    expect(readFileSync(join(mp, 'marker.txt'), 'utf8')).toBe(marker('whole disk', point));
    expect(existsSync(join(mp, 'new.txt'))).toBe(point === 1);
    expect(mountedType(mp)).toEqual({ fstype: 'ext4', options: expect.stringMatching(/^ro,/) as unknown });
    expect(() => writeFileSync(join(mp, 'x.txt'), 'x')).toThrow(/EROFS/);
    await stopAndCheck(run, mp);
  });
});

describe.each(['plain', 'lz4'])('partitioned disk (GPT: ext4, ext4, swap), %s', (key) => {
  it.each([
    ['latest point', [] as string[], 1],
    ['--until virtnbdbackup.0', ['--until', 'virtnbdbackup.0'], 0],
  ])('%s: each partition on MOUNTPOINT/partN, swap skipped, clean Ctrl-C', async (_what, extra, point) => {
    const mp = newMountpoint();
    const run = await startMount(['-i', sets[`part-${key}`], '--disk', 'vda', '--mount', mp, ...extra]);
    const loop = expect.stringMatching(/^\/dev\/loop\d+$/) as unknown;
    expect(run.info.mounted).toEqual([
      { partition: 1, fstype: 'ext4', device: loop, path: join(mp, 'part1'), options: 'ro', offset: 1 * MiB, size: 20 * MiB },
      { partition: 2, fstype: 'ext4', device: loop, path: join(mp, 'part2'), options: 'ro', offset: 21 * MiB, size: 8 * MiB },
    ]);
    expect(run.info.skipped).toEqual([{ partition: 3, fstype: 'swap', reason: expect.stringContaining('swap') as unknown }]);
    expect(run.info.failed).toEqual([]);
    expect(run.stderr()).toMatch(/INFO virtnbdmap: Partition 3 .*swap.*not mounted/);
    expect(readFileSync(join(mp, 'part1', 'marker.txt'), 'utf8')).toBe(marker('partition 1', point));
    expect(readFileSync(join(mp, 'part2', 'second.txt'), 'utf8')).toBe(`second partition, point ${point}\n`);
    expect(readdirSync(mp).sort()).toEqual(['part1', 'part2']);
    expect(() => writeFileSync(join(mp, 'part2', 'x.txt'), 'x')).toThrow(/EROFS/);
    await stopAndCheck(run, mp);
  });
});

describe('cleanup variants', () => {
  it('Ctrl-C to the whole process group (as a terminal sends it) still cleans up everything', async () => {
    const mp = newMountpoint();
    const run = await startMount(['-i', sets['part-lz4'], '--mount', mp]);
    expect(readFileSync(join(mp, 'part1', 'marker.txt'), 'utf8')).toBe(marker('partition 1', 1));
    await stopAndCheck(run, mp, 'group');
  });

  it('Ctrl-C during setup (right after nbdfuse started): exit 0, everything undone', async () => {
    const mp = newMountpoint();
    const proc = execa(process.execPath, [BIN, '-i', sets['part-lz4'], '--mount', mp, '--json', '-L', logFile], {
      reject: false,
      buffer: false,
      stdin: 'ignore',
      env: childEnv(),
    });
    let err = '';
    let sent = false;
    proc.stderr!.on('data', (c: Buffer) => {
      err += c.toString();
      if (!sent && /through nbdfuse/.test(err)) {
        sent = true;
        proc.kill('SIGINT');
      }
    });
    const r = await proc;
    expect(sent).toBe(true);
    expect({ code: r.exitCode, err }).toEqual({ code: 0, err: expect.stringMatching(/Signal SIGINT received/) as unknown });
    expect(err).not.toMatch(/WARNING|ERROR/);
    expect(mountsUnder(mp)).toEqual([]);
    expect(readdirSync(mp)).toEqual([]);
    expect(mountsUnder(childTmp)).toEqual([]);
    expect(readdirSync(childTmp)).toEqual([]);
    expect(await leakedLoops()).toEqual([]);
    expect(await pgrep(sets['part-lz4'])).toEqual([]);
    expect(await pgrep(childTmp)).toEqual([]);
  });

  it('-r: read-only loop devices, ext4 mounted ro,norecovery', async () => {
    const mp = newMountpoint();
    const run = await startMount(['-i', sets['whole-plain'], '-r', '--mount', mp]);
    expect(run.info.mounted.map((m) => m.options)).toEqual(['ro,norecovery']);
    const loops = (await listLoops()).filter((l) => l.name === run.info.mounted[0].device);
    expect(loops.map((l) => l.readonly)).toEqual([true]);
    expect(readFileSync(join(mp, 'marker.txt'), 'utf8')).toBe(marker('whole disk', 1));
    // -r logs the two warnings of the original; check the rest of the cleanup by hand
    run.proc.kill('SIGTERM');
    const r = await run.proc;
    running.delete(run);
    expect(r.exitCode).toBe(0);
    expect(mountsUnder(mp)).toEqual([]);
    expect(await leakedLoops()).toEqual([]);
    expect((await listLoops()).map((l) => l.name)).not.toContain(run.info.mounted[0].device);
    expect(await pgrep(run.info.disk)).toEqual([]);
    expect(alive(run.info.map.pid)).toBe(false);
    expect(readdirSync(childTmp)).toEqual([]);
  });

  it('a busy mount (a process inside it) is retried and unmounted once the process leaves', async () => {
    const mp = newMountpoint();
    const run = await startMount(['-i', sets['whole-plain'], '--mount', mp]);
    const holder = execa('sleep', ['1'], { cwd: mp, reject: false }); // keeps MP busy for ~1 s
    await new Promise((r) => setTimeout(r, 100));
    run.proc.kill('SIGINT');
    const r = await run.proc;
    running.delete(run);
    await holder;
    expect(r.exitCode).toBe(0);
    expect(run.stderr()).toMatch(/INFO virtnbdmap: \[.*\] was busy, unmounted at attempt \d+/);
    expect(run.stderr()).not.toMatch(/WARNING|ERROR|lazily/);
    expect(mountsUnder(mp)).toEqual([]);
    expect(readdirSync(childTmp)).toEqual([]);
  });

  it('a mount that stays busy is unmounted lazily with a warning; nothing is left once it is released', async () => {
    const mp = newMountpoint();
    const run = await startMount(['-i', sets['whole-plain'], '--mount', mp]);
    const loop = run.info.mounted[0].device;
    const holder = execa('sleep', ['8'], { cwd: mp, reject: false });
    await new Promise((r) => setTimeout(r, 100));
    run.proc.kill('SIGINT');
    const r = await run.proc;
    running.delete(run);
    expect(r.exitCode).toBe(0);
    expect(run.stderr()).toMatch(/WARNING virtnbdmap: \[.*\] was busy after \d+ attempts: lazily unmounted \(umount -l\)/);
    expect(alive(holder.pid!)).toBe(true); // still inside: the lazy path was really taken
    expect(mountsUnder(mp)).toEqual([]); // detached from the tree at once
    expect(await pgrep(run.info.disk)).toEqual([]);
    expect(alive(run.info.map.pid)).toBe(false);
    holder.kill('SIGKILL');
    await holder;
    // the loop device was marked autoclear: it goes away once the file system is released
    const deadline = Date.now() + 10_000;
    // (once the FUSE mount is gone, losetup shows the backing file as "/disk")
    const ours = async (): Promise<string[]> => (await listLoops()).filter((l) => l.name === loop).map((l) => l.name);
    while ((await ours()).length > 0 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 100));
    expect(await ours()).toEqual([]);
    expect(await leakedLoops()).toEqual([]);
    expect(mountsUnder(childTmp)).toEqual([]);
  });

  (minixMountable() ? it.skip : it)('a partition that fails to mount is a warning; the others stay mounted', async () => {
    const mp = newMountpoint();
    const run = await startMount(['-i', sets['mixed'], '--mount', mp]);
    expect(run.info.mounted.map((m) => [m.partition, m.fstype])).toEqual([[1, 'ext4']]);
    expect(run.info.failed).toEqual([{ partition: 2, error: expect.stringMatching(/Failed to mount .*minix/) as unknown }]);
    expect(run.stderr()).toMatch(/WARNING virtnbdmap: Partition 2 \(minix\): Failed to mount/);
    expect(readFileSync(join(mp, 'part1', 'marker.txt'), 'utf8')).toBe(marker('partition 1', 0));
    // the failed partition's loop device and directory were undone at once
    expect(readdirSync(mp)).toEqual(['part1']);
    expect((await listLoops()).filter((l) => l.backFile === run.info.disk).map((l) => l.name)).toEqual([run.info.mounted[0].device]);
    run.proc.kill('SIGINT');
    const r = await run.proc;
    running.delete(run);
    expect(r.exitCode).toBe(0);
    expect(mountsUnder(mp)).toEqual([]);
    expect(readdirSync(mp)).toEqual([]);
    expect(await leakedLoops()).toEqual([]);
    expect(readdirSync(childTmp)).toEqual([]);
  });
});

describe('errors', () => {
  it('missing mount point: clear error, exit 1, nothing started', async () => {
    const mp = join(scratch, 'does-not-exist');
    const r = await execa(process.execPath, [BIN, '-i', sets['whole-plain'], '--mount', mp, '--json', '-L', logFile], {
      reject: false,
      stdin: 'ignore',
      env: childEnv(),
      timeout: 30_000,
    });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`ERROR virtnbdmap: Mount point [${mp}] does not exist`);
    expect(r.stdout).toBe('');
    expect(existsSync(mp)).toBe(false);
    expect(readdirSync(childTmp)).toEqual([]);
    expect(await pgrep(sets['whole-plain'])).toEqual([]);
  });

  (minixMountable() ? it.skip : it)('nothing could be mounted (only a file system the kernel lacks): exit 1, all undone', async () => {
    const mp = newMountpoint();
    const r = await execa(process.execPath, [BIN, '-i', sets['minix-only'], '--mount', mp, '--json', '-L', logFile], {
      reject: false,
      stdin: 'ignore',
      env: childEnv(),
      timeout: 60_000,
    });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/WARNING virtnbdmap: Disk \(minix\): Failed to mount/);
    expect(r.stderr).toMatch(/ERROR virtnbdmap: Nothing could be mounted/);
    expect(r.stdout).toBe('');
    expect(mountsUnder(mp)).toEqual([]);
    expect(readdirSync(childTmp)).toEqual([]);
    expect(await leakedLoops()).toEqual([]);
    expect(await pgrep(sets['minix-only'])).toEqual([]);
  });

  it('a disk with nothing to mount: exit 1 after undoing nbdkit, nbdfuse and the temp dirs', async () => {
    const img = join(scratch, 'blank.img');
    await execa('truncate', ['-s', '16M', img]);
    writeFileSync(img, Buffer.alloc(4096, 0x5a), { flag: 'r+' }); // data, but no signature
    const dir = join(scratch, 'blank-set');
    mkdirSync(dir);
    await writeImageChain(dir, 'vda', [{ image: img, level: 'full' }], false);
    const mp = newMountpoint();
    const r = await execa(process.execPath, [BIN, '-i', dir, '--mount', mp, '--json', '-L', logFile], {
      reject: false,
      stdin: 'ignore',
      env: childEnv(),
      timeout: 60_000,
    });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/ERROR virtnbdmap: Nothing to mount: the disk holds no file system and no partition table/);
    expect(r.stderr).toMatch(/through nbdfuse/); // it got that far: there was something to undo
    expect(r.stdout).toBe('');
    expect(mountsUnder(mp)).toEqual([]);
    expect(readdirSync(mp)).toEqual([]);
    expect(readdirSync(childTmp)).toEqual([]);
    expect(await pgrep(dir)).toEqual([]);
    expect(await leakedLoops()).toEqual([]);
  });
});
