/**
 * The real `virtnbdmap` command (`node bin/virtnbdmap`, spawned) on the upstream fixture sets
 * (test/fixtures/upstream-sets, copied to a temp dir so that process checks see only ours):
 * every backup point served and copied out with nbdcopy against SHA256SUMS, clean SIGTERM
 * teardown, the original's `-f` form over TCP, --readonly incrementals, error exits, the
 * no-/dev/nbd* fallback, failures while starting/serving (port or socket taken, nbdkit killed),
 * and the start-up time of a 31-file chain.
 * Builds nothing: the plugin .so and dist/ must exist (`npx tsc -p tsconfig.json` for dist).
 */
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { watchJsonLine } from '../helpers/json-line.js';
import { execa, type ResultPromise } from 'execa';
import { SavesetWriter } from '../../src/saveset/writer.js';
import { buildMetadata } from '../../src/saveset/metadata.js';
import { NbdClient } from '../../src/nbd/client.js';
import { nbdDevicesPresent } from '../../src/map/device.js';
import { pluginPath, workerPath } from '../../src/util/package-root.js';
import { prng, randInt } from '../../src/devtools/prng.js';
import { sha256sums, diffIdentIn } from '../helpers/upstream-sets.js';
import { alive, freePort } from '../helpers/procs.js';
import { writeFrames } from '../helpers/saveset-edit.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = join(ROOT, 'bin', 'virtnbdmap');
const SETS = join(ROOT, 'test', 'fixtures', 'upstream-sets');

let scratch = '';
/** Copies of the fixture backup dirs: d1 (uncompressed), d2 (lz4). */
const setDir: Record<string, string> = {};
let logFile = '';

beforeAll(() => {
  const missing = [pluginPath(), workerPath(), join(ROOT, 'dist', 'src', 'cli', 'virtnbdmap.js')].filter((p) => !existsSync(p));
  if (missing.length > 0) throw new Error(`not built: ${missing.join(', ')} — run \`npm run build\` first`);
  scratch = mkdtempSync(join(tmpdir(), 'vnbd-map-cli-'));
  logFile = join(scratch, 'virtnbdmap.log');
  for (const set of ['d1', 'd2']) {
    setDir[set] = join(scratch, set);
    cpSync(join(SETS, set, 'backup'), setDir[set], { recursive: true });
  }
});

const running = new Set<MapRun>();
afterEach(async () => {
  for (const m of running) {
    m.proc.kill('SIGKILL');
    await m.proc;
    if (m.info) {
      try {
        process.kill(m.info.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
  running.clear();
});

afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

interface MapInfo {
  uri: string;
  pid: number;
  exportName: string;
  socket: string | null;
  address: string | null;
  port: number | null;
  size: number;
  device: string | null;
  readonly: boolean;
  files: string[];
  checkpoint: string | null;
  nbdkitLog: string;
}

interface MapRun {
  proc: ResultPromise;
  info?: MapInfo;
  stderr(): string;
  /** Milliseconds from spawn to the JSON line. */
  readyMs: number;
}

/** Spawn `node bin/virtnbdmap ARGS --json -L log` and wait for the JSON line on stdout. */
async function startMap(args: string[], timeoutMs = 30_000): Promise<MapRun> {
  const t0 = performance.now();
  const proc = execa(process.execPath, [BIN, ...args, '--json', '-L', logFile], { reject: false, buffer: false, stdin: 'ignore' });
  const watch = watchJsonLine(proc, timeoutMs);
  const run: MapRun = { proc, stderr: watch.stderr, readyMs: 0 };
  running.add(run);
  const line = await watch.line;
  run.readyMs = performance.now() - t0;
  run.info = JSON.parse(line) as MapInfo;
  return run;
}

/** Run virtnbdmap expecting it to exit by itself (errors). */
async function runMapExit(args: string[]): Promise<{ code: number | undefined; stdout: string; stderr: string }> {
  const r = await execa(process.execPath, [BIN, ...args, '-L', logFile], { reject: false, stdin: 'ignore', timeout: 30_000 });
  return { code: r.exitCode, stdout: String(r.stdout), stderr: String(r.stderr) };
}

async function pgrep(pattern: string): Promise<number[]> {
  const r = await execa('pgrep', ['-f', '--', pattern], { reject: false });
  return String(r.stdout).split(/\s+/).filter(Boolean).map(Number).filter((p) => p !== process.pid);
}

/** SIGTERM → exit 0; socket, nbdkit, workers and nbdkit's temp dir gone. */
async function stopAndCheck(run: MapRun, processPattern: string): Promise<void> {
  const info = run.info!;
  // while serving, the patterns do find nbdkit and its workers, if any (so that "none left" means
  // something); the plugin decodes LZ4 itself and stops its resolving worker after start-up, so
  // usually there are none (lz4=worker keeps them)
  const children = String((await execa('ps', ['-o', 'pid=', '--ppid', String(info.pid)], { reject: false })).stdout)
    .split(/\s+/)
    .filter(Boolean)
    .map(Number);
  const before = await pgrep(processPattern);
  expect(before).toContain(info.pid);
  for (const w of children) expect(before).toContain(w);
  if (info.socket) expect(await pgrep(info.socket)).toContain(info.pid);
  run.proc.kill('SIGTERM');
  const r = await run.proc;
  running.delete(run);
  expect({ code: r.exitCode, signal: r.signal }).toEqual({ code: 0, signal: undefined });
  expect(run.stderr()).toMatch(/Signal SIGTERM received, cleaning up/);
  if (info.socket) expect(existsSync(info.socket)).toBe(false);
  expect(existsSync(dirname(info.nbdkitLog))).toBe(false);
  // workers exit on EOF of their socket once nbdkit is gone: allow them a moment
  const deadline = Date.now() + 5000;
  let left: number[] = [];
  for (;;) {
    left = [...[info.pid, ...children].filter(alive), ...(info.socket ? await pgrep(info.socket) : []), ...(await pgrep(processPattern))];
    if (left.length === 0 || Date.now() > deadline) break;
    await new Promise((res) => setTimeout(res, 100));
  }
  expect(left).toEqual([]);
}

/** nbdcopy the whole export to a pipe (no temp file) and hash what arrives. */
async function nbdcopySha(uri: string): Promise<string> {
  const h = createHash('sha256');
  const p = execa('nbdcopy', [uri, '-'], { reject: false, buffer: { stdout: false, stderr: true }, stdin: 'ignore' });
  p.stdout!.on('data', (c: Buffer) => h.update(c));
  const r = await p;
  expect(r.stderr).toBe('');
  expect(r.exitCode).toBe(0);
  return h.digest('hex');
}

const diffIdent = (set: string, disk: string): string => diffIdentIn(join(SETS, set, 'backup'), disk);

let sockN = 0;
const newSocket = (): string => {
  const d = join(scratch, `s${++sockN}`);
  mkdirSync(d);
  return join(d, 'nbd.sock');
};

// [set, disk, until (undefined = newest), reference point]
const POINTS: [string, string, string | undefined, string][] = [];
for (const set of ['d1', 'd2']) {
  POINTS.push(
    [set, 'vda', undefined, '3'],
    [set, 'vda', 'virtnbdbackup.0', '0'],
    [set, 'vda', 'virtnbdbackup.1', '1'],
    [set, 'vda', 'virtnbdbackup.2', '2'],
    [set, 'vda', diffIdent(set, 'vda'), 'diff3'],
    [set, 'sdb', undefined, '3'],
    [set, 'sdb', diffIdent(set, 'sdb'), 'diff3'],
  );
}

describe('-i DIR --disk D --socket S --json --no-device', () => {
  test.each(POINTS.map(([set, disk, until, point]) => [set, disk, until ? `--until ${until}` : '(newest)', point, until] as const))(
    '%s %s %s = point %s; SIGTERM cleans up',
    async (set, disk, _label, point, until) => {
    const socket = newSocket();
    const args = ['-i', setDir[set], '--disk', disk, '--socket', socket, '--no-device', ...(until ? ['--until', until] : [])];
    const run = await startMap(args);
    const info = run.info!;
    expect(info.socket).toBe(socket);
    expect(info.uri).toBe(`nbd+unix:///sda?socket=${socket}`);
    expect(info.exportName).toBe('sda');
    expect(info.device).toBeNull();
    expect(info.readonly).toBe(false);
    expect(info.files[0]).toBe(join(setDir[set], `${disk}.full.data`));
    expect(info.checkpoint).toBe(until === undefined ? 'virtnbdbackup.3' : until.startsWith('virtnbdbackup.') ? until : 'virtnbdbackup.2');
    expect(info.size).toBe((disk === 'vda' ? 64 : 32) << 20);
    expect(alive(info.pid)).toBe(true);
    expect(await nbdcopySha(info.uri)).toBe(sha256sums(set).get(`${disk}.${point}.raw`));
    await stopAndCheck(run, setDir[set]);
    },
  );
});

test("the original's -f FILE,FILE,... form over TCP (-l, -p)", async () => {
  const port = await freePort();
  const d = setDir.d2;
  const files = ['vda.full.data', 'vda.inc.virtnbdbackup.1.data', 'vda.inc.virtnbdbackup.2.data'].map((n) => join(d, n));
  const run = await startMap(['-f', files.join(','), '-l', '127.0.0.1', '-p', String(port), '--no-device']);
  const info = run.info!;
  expect(info.uri).toBe(`nbd://127.0.0.1:${port}/sda`);
  expect({ socket: info.socket, address: info.address, port: info.port }).toEqual({ socket: null, address: '127.0.0.1', port });
  expect(info.files).toEqual(files);
  expect(info.checkpoint).toBe('virtnbdbackup.2');
  expect(await nbdcopySha(info.uri)).toBe(sha256sums('d2').get('vda.2.raw'));
  await stopAndCheck(run, d);
});

test('--readonly maps an incremental chain (the original refused it); the export refuses writes', async () => {
  const socket = newSocket();
  const run = await startMap(['-i', setDir.d1, '--disk', 'vda', '--socket', socket, '--no-device', '--readonly']);
  const info = run.info!;
  expect(info.readonly).toBe(true);
  expect(info.files.length).toBeGreaterThan(1);
  expect(run.stderr()).toMatch(/mapped readonly/);
  const c = await NbdClient.connect(info.uri);
  try {
    expect(c.info.readOnly).toBe(true);
    await expect(c.pwrite(Buffer.alloc(4096, 0xab), 0)).rejects.toThrow();
    const head = await c.pread(4096, 0);
    expect(head.equals(Buffer.alloc(4096, 0xab))).toBe(false);
  } finally {
    await c.close();
  }
  expect(await nbdcopySha(info.uri)).toBe(sha256sums('d1').get('vda.3.raw'));
  await stopAndCheck(run, setDir.d1);
});

describe('errors', () => {
  test('-i a directory without data files: exit 1 with a message', async () => {
    const empty = join(scratch, 'empty');
    mkdirSync(empty, { recursive: true });
    writeFileSync(join(empty, 'notes.txt'), 'nothing here\n');
    const r = await runMapExit(['-i', empty, '--no-device', '--socket', newSocket()]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/No data files found in directory/);
    expect(r.stdout).toBe('');
  });

  test('--until a checkpoint that does not exist: exit 1, the available points are listed', async () => {
    const r = await runMapExit(['-i', setDir.d1, '--disk', 'vda', '--until', 'virtnbdbackup.9', '--no-device', '--socket', newSocket()]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/virtnbdbackup\.9/);
    for (const cp of ['virtnbdbackup.0', 'virtnbdbackup.1', 'virtnbdbackup.2', 'virtnbdbackup.3', diffIdent('d1', 'vda')]) {
      expect(r.stderr).toContain(cp);
    }
  });

  test('-f starting with an incremental: exit 1', async () => {
    const d = setDir.d1;
    const r = await runMapExit(['-f', `${join(d, 'vda.inc.virtnbdbackup.1.data')},${join(d, 'vda.full.data')}`, '--no-device', '--socket', newSocket()]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('Sequence must start with full or copy backup');
  });

  test('a set with two disks and no --disk: exit 1 naming the disks', async () => {
    const r = await runMapExit(['-i', setDir.d1, '--no-device', '--socket', newSocket()]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/sdb, vda/);
    expect(r.stderr).toContain('--disk');
  });

  test('neither -f nor -i: usage error, exit 2', async () => {
    const r = await runMapExit(['--no-device']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/usage: virtnbdmap/);
    expect(r.stderr).toMatch(/-f\/--file -i\/--input is required/);
  });

  test('-d /dev/sda: exit 1, not an NBD device', async () => {
    const r = await runMapExit(['-f', join(setDir.d1, 'vda.full.data'), '-d', '/dev/sda', '--socket', newSocket()]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('seems not to be an NBD device');
  });

  test('a socket path that is a regular file: exit 1, the file is untouched', async () => {
    const path = newSocket();
    writeFileSync(path, 'precious\n');
    const r = await runMapExit(['-i', setDir.d1, '--disk', 'vda', '--no-device', '--socket', path]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/exists and is not a socket/);
    expect(readFileSync(path, 'utf8')).toBe('precious\n');
    expect(await pgrep(path)).toEqual([]);
  });
});

describe('failures while starting or serving', () => {
  test("a TCP port in use: exit 1 with nbdkit's reason (its log used to be read after removal)", async () => {
    const blocker = createServer();
    await new Promise<void>((res) => blocker.listen(0, '127.0.0.1', res));
    const port = (blocker.address() as { port: number }).port;
    try {
      const r = await runMapExit(['-f', join(setDir.d1, 'vda.full.data'), '-p', String(port), '--no-device']);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('nbdkit failed to start');
      expect(r.stderr).toContain('Address already in use');
    } finally {
      blocker.close();
    }
  });

  test('a socket another server listens on: exit 1, that server keeps serving', async () => {
    const socket = newSocket();
    const first = await startMap(['-i', setDir.d1, '--disk', 'sdb', '--socket', socket, '--no-device']);
    const r = await runMapExit(['-i', setDir.d1, '--disk', 'vda', '--socket', socket, '--no-device']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/is in use by another server/);
    expect(await nbdcopySha(first.info!.uri)).toBe(sha256sums('d1').get('sdb.3.raw'));
    await stopAndCheck(first, setDir.d1);
  });

  test('nbdkit killed under it: exit 1 with its last messages, socket and temp dir removed', async () => {
    const socket = newSocket();
    const run = await startMap(['-i', setDir.d2, '--disk', 'vda', '--socket', socket, '--no-device']);
    const info = run.info!;
    process.kill(info.pid, 'SIGKILL');
    const r = await run.proc;
    running.delete(run);
    expect(r.exitCode).toBe(1);
    expect(run.stderr()).toMatch(/nbdkit exited unexpectedly \(SIGKILL\)/);
    expect(existsSync(socket)).toBe(false);
    expect(existsSync(dirname(info.nbdkitLog))).toBe(false);
    const deadline = Date.now() + 5000;
    while ((await pgrep(setDir.d2)).length > 0 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 100));
    expect(await pgrep(setDir.d2)).toEqual([]);
  });
});

const noNbd = !nbdDevicesPresent();
(noNbd ? test : test.skip)('without --no-device on a machine without /dev/nbd*: still serves, logs the URI', async () => {
  const socket = newSocket();
  const run = await startMap(['-i', setDir.d2, '--disk', 'sdb', '--socket', socket]);
  const info = run.info!;
  expect(info.device).toBeNull();
  const line = run.stderr().split('\n').find((l) => l.includes('no kernel NBD devices'));
  expect(line).toBeDefined();
  expect(line).toContain(info.uri);
  expect(await nbdcopySha(info.uri)).toBe(sha256sums('d2').get('sdb.3.raw'));
  await stopAndCheck(run, setDir.d2);
});

test('start-up time of a chain of 1 full + 30 incrementals', async () => {
  const dir = join(scratch, 'long-chain');
  mkdirSync(dir);
  const size = 8 << 20;
  const r = prng(0x31);
  const model = Buffer.alloc(size);
  for (let n = 0; n <= 30; n++) {
    const frames: { start: number; data?: Buffer; zero?: number }[] = [];
    if (n === 0) {
      for (let at = 0; at < size; at += 1 << 20) {
        const d = Buffer.alloc(256 << 10, n + 1 + at / (1 << 20));
        frames.push({ start: at, data: d });
      }
    } else {
      let at = randInt(r, 0, 64 << 10);
      for (let k = 0; k < 20 && at < size - 70_000; k++) {
        if (r() < 0.25) frames.push({ start: at, zero: randInt(r, 1, 5000) });
        else frames.push({ start: at, data: Buffer.alloc(randInt(r, 1, 60_000), randInt(r, 1, 255)) });
        at += (frames[frames.length - 1].data?.length ?? frames[frames.length - 1].zero!) + randInt(r, 0, 300_000);
      }
    }
    const meta = buildMetadata({
      virtualSize: size,
      dataSize: frames.reduce((a, f) => a + (f.data?.length ?? 0), 0),
      date: new Date(2024, 0, 1, 0, n),
      diskName: 'vda',
      diskFormat: 'qcow2',
      checkpointName: `virtnbdbackup.${n}`,
      parentCheckpoint: n === 0 ? '' : `virtnbdbackup.${n - 1}`,
      compressed: n % 3 === 2 ? 2 : false, // a chain may mix compressed and uncompressed files
      incremental: n > 0,
    });
    const name = n === 0 ? 'vda.full.data' : `vda.inc.virtnbdbackup.${n}.data`;
    const w = await SavesetWriter.create(join(dir, name), meta, { compress: meta.compressed, fsync: false });
    await writeFrames(w, frames, model);
  }
  const socket = newSocket();
  const run = await startMap(['-i', dir, '--socket', socket, '--no-device']);
  console.log(`virtnbdmap: spawn → JSON line for 1 full + 30 incrementals: ${run.readyMs.toFixed(0)} ms`);
  expect(run.info!.files.length).toBe(31);
  expect(run.info!.checkpoint).toBe('virtnbdbackup.30');
  expect(run.readyMs).toBeLessThan(10_000);
  expect(await nbdcopySha(run.info!.uri)).toBe(createHash('sha256').update(model).digest('hex'));
  await stopAndCheck(run, dir);
});
