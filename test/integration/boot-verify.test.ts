/**
 * `virtnbdmap --boot --verify` (issue 12) — all real: libvirtd + qemu (TCG) running the tiny
 * Debian-kernel + busybox guest of src/devtools/boot-guest.ts, whose init prints
 * `VIRTNBD-MARKER <marker> BOOT <n>` on its serial console; backups made by our real
 * `virtnbdbackup` of the running guest; `virtnbdmap --boot --verify` spawned as a user (or cron)
 * would run it.
 *
 * One chain shared by every test (boots under TCG are slow; few of them):
 *   virtnbdbackup.0  full, marker A                                  → boots
 *   virtnbdbackup.1  inc,  marker changed to B on the running disk   → boots
 *   virtnbdbackup.2  inc,  /sbin/init overwritten (after its #! line) with spaces on the running
 *                          disk: init exits at once, the kernel panics → unbootable on purpose
 * The source guest has a NIC (user networking), VNC graphics and a VGA card, so isolation (no NIC
 * in the verify domain) and screenshots are checked on the real thing. After every test the
 * backup files must be byte-identical (SHA-256) and nothing may be left: no verify domain, no
 * nbdkit serving the set, no run directory.
 */
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inflateSync } from 'node:zlib';
import { jest } from '@jest/globals';
import { execa } from 'execa';
import { buildGuestRoot, copyBootFiles, guestDomainXml, markerOffset, waitForMarker } from '../../src/devtools/boot-guest.js';
import { qemuIo, setMarker, type DemoVm } from '../../src/devtools/demo-vm.js';
import type { PointReport, VerifyReport } from '../../src/boot/verify-report.js';

jest.setTimeout(900_000);

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = (c: string): string => join(ROOT, 'bin', c);
const URI = 'qemu:///system';
const SRC = `vnbd-verify-src-${process.pid}`;
const BOOT_TIMEOUT = 240_000;
const GOOD = 'VIRTNBD-MARKER [A-Z]+ BOOT 2';

let work = '';
let set = '';
let sums = new Map<string, string>();

const virsh = (...args: string[]) => execa('virsh', ['-c', URI, ...args], { reject: false });

function sha(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** SHA-256 of every file of the backup set (data, vmconfig, boot files, checksums…). */
function setSums(): Map<string, string> {
  const m = new Map<string, string>();
  for (const e of readdirSync(set, { withFileTypes: true, recursive: true })) {
    const path = join(e.parentPath ?? e.path, e.name);
    m.set(path, e.isFile() ? sha(path) : e.isDirectory() ? 'dir' : 'other');
  }
  return m;
}

async function backup(level: string): Promise<void> {
  const r = await execa(BIN('virtnbdbackup'), ['-U', URI, '-d', SRC, '-l', level, '-o', set, '--nocolor'], { reject: false, all: true });
  if (r.exitCode !== 0) throw new Error(`virtnbdbackup -l ${level} failed (${r.exitCode}):\n${r.all}`);
}

const runDirs = (): string[] => readdirSync('/var/tmp').filter((f) => f.startsWith('virtnbd-boot-'));

beforeAll(async () => {
  work = mkdtempSync('/var/tmp/vnbd-verify-test-');
  chmodSync(work, 0o755);
  set = join(work, 'set');
  // the guest, with a NIC, VNC and a VGA card
  const boot = copyBootFiles(join(work, 'boot'));
  const raw = join(work, 'root.img');
  await buildGuestRoot(work, raw, 'A');
  const offset = await markerOffset(raw);
  const initBlock = Number((await execa('debugfs', ['-R', 'bmap /sbin/init 0', raw])).stdout.trim().split('\n').at(-1));
  const initLen = (await execa('debugfs', ['-R', 'cat /sbin/init', raw], { stripFinalNewline: false })).stdout.length;
  expect(initBlock).toBeGreaterThan(0);
  expect(initLen).toBeGreaterThan(20);
  const disk = join(work, `${SRC}.qcow2`);
  await execa('qemu-img', ['convert', '-O', 'qcow2', raw, disk]);
  rmSync(raw);
  chmodSync(disk, 0o666);
  const serialLog = join(work, 'serial.log');
  const xml = guestDomainXml({ name: SRC, disk, format: 'qcow2', boot, serialLog }).replace(
    '  </devices>',
    `    <interface type='user'><mac address='52:54:00:7e:57:01'/><model type='virtio'/></interface>
    <graphics type='vnc' autoport='yes' listen='127.0.0.1'/>
    <video><model type='vga'/></video>
  </devices>`,
  );
  writeFileSync(join(work, 'src.xml'), xml);
  expect((await virsh('define', join(work, 'src.xml'))).exitCode).toBe(0);
  expect((await virsh('start', SRC)).exitCode).toBe(0);
  const vm: DemoVm = { name: SRC, disk, serialLog, markerOffset: offset, boot };
  expect(await waitForMarker(serialLog, BOOT_TIMEOUT)).toEqual({ marker: 'A'.repeat(24), boot: 1 });

  await backup('full');
  await setMarker(vm, 'B');
  await backup('inc');
  // break init: keep "#!/bin/sh\n", blank out the rest, so it exits at once (kernel panic)
  await qemuIo(vm, `write -P 0x20 ${initBlock * 4096 + 10} ${initLen - 10}`);
  await backup('inc');
  await virsh('destroy', SRC);
  await virsh('undefine', SRC, '--checkpoints-metadata');
  sums = setSums();
});

afterAll(async () => {
  for (const line of (await virsh('list', '--all', '--name')).stdout.split('\n')) {
    const n = line.trim();
    if (n.includes(SRC)) {
      await virsh('destroy', n);
      await virsh('undefine', n, '--checkpoints-metadata');
    }
  }
  if (work) rmSync(work, { recursive: true, force: true });
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  seconds: number;
}

async function verify(args: string[], cwd = work): Promise<Run> {
  const t0 = Date.now();
  const r = await execa(BIN('virtnbdmap'), ['-i', set, '--boot', '--verify', '--uri', URI, '--nocolor', ...args], { reject: false, cwd });
  return { code: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr), seconds: (Date.now() - t0) / 1000 };
}

const jsonLines = (r: Run): PointReport[] =>
  r.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as PointReport);

/** Nothing of ours left running, the backup untouched. */
async function expectNothingLeft(before: string[]): Promise<void> {
  const names = (await virsh('list', '--all', '--name')).stdout.split('\n').map((s) => s.trim());
  expect(names.filter((n) => n.includes(SRC))).toEqual([]);
  const nbdkits = (await execa('pgrep', ['-af', 'nbdkit'], { reject: false })).stdout.split('\n').filter((l) => l.includes(set));
  expect(nbdkits).toEqual([]);
  expect(runDirs().filter((d) => !before.includes(d))).toEqual([]);
  expect(setSums()).toEqual(sums);
}

/** Width and height of a PNG, after checking its signature and that its pixels inflate to the right size. */
function pngSize(file: string): { width: number; height: number } {
  const b = readFileSync(file);
  expect(b.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
  const width = b.readUInt32BE(16);
  const height = b.readUInt32BE(20);
  const idat: Buffer[] = [];
  for (let p = 8; p < b.length; ) {
    const len = b.readUInt32BE(p);
    if (b.toString('latin1', p + 4, p + 8) === 'IDAT') idat.push(b.subarray(p + 8, p + 8 + len));
    p += 12 + len;
  }
  expect(inflateSync(Buffer.concat(idat)).length).toBe(height * (1 + width * 3));
  return { width, height };
}

test('--all-points over a chain with one bad point: exactly that one fails (panic), the others pass with their own marker; one report', async () => {
  const before = runDirs();
  const rd = join(work, 'report-all');
  const r = await verify(['--all-points', '--expect-console', GOOD, '--timeout', '150', '--json', '--report-dir', rd, '--screenshot', join(rd, 'screen.png')]);
  expect(r.code).toBe(1);
  const points = jsonLines(r);
  expect(points.map((p) => [p.checkpoint, p.passed, p.reason])).toEqual([
    ['virtnbdbackup.2', false, 'panic'],
    ['virtnbdbackup.1', true, null],
    ['virtnbdbackup.0', true, null],
  ]);
  // the bad point failed well within the timeout
  expect(points[0]!.seconds.total).toBeLessThan(150);
  expect(points[0]!.detail).toMatch(/panic/i);
  // each boot's console log is kept next to the report and shows that point's data
  const consoleOf = (p: PointReport): string => readFileSync(p.consoleLogs[0]!, 'latin1');
  expect(points.every((p) => p.consoleLogs[0]!.startsWith(rd + '/'))).toBe(true);
  expect(consoleOf(points[0]!)).toMatch(/Kernel panic/);
  expect(consoleOf(points[0]!)).not.toMatch(/VIRTNBD-MARKER/);
  expect(consoleOf(points[1]!)).toContain(`VIRTNBD-MARKER ${'B'.repeat(24)} BOOT 2`);
  expect(consoleOf(points[2]!)).toContain(`VIRTNBD-MARKER ${'A'.repeat(24)} BOOT 2`);
  for (const p of points.slice(1)) {
    expect(p.seconds.console).toBeGreaterThan(0);
    expect(p.seconds.console).toBeLessThanOrEqual(150);
    // a real screenshot of the VGA screen, per point
    expect(p.screenshot).toBe(join(rd, `screen-${p.checkpoint}.png`));
    const size = pngSize(p.screenshot!);
    expect(size.width).toBeGreaterThanOrEqual(320);
    expect(size.height).toBeGreaterThanOrEqual(200);
  }
  // the report files hold the same
  const report = JSON.parse(readFileSync(join(rd, 'report.json'), 'utf8')) as VerifyReport;
  expect(report.passed).toBe(false);
  expect(report.points).toEqual(points);
  const table = readFileSync(join(rd, 'report.txt'), 'utf8');
  expect(table).toMatch(/virtnbdbackup\.2\s+FAIL\s+panic/);
  expect(table).toMatch(/virtnbdbackup\.1\s+PASS/);
  await expectNothingLeft(before);
});

test('a good point without conditions passes after running --timeout/2 s, isolated (no NIC) and headless; default report directory', async () => {
  const before = runDirs();
  const cwd = mkdtempSync(join(work, 'cwd-'));
  const name = `${SRC}-iso`;
  const proc = verify(['--until', 'virtnbdbackup.1', '--timeout', '40', '--name', name], cwd);
  // while it runs: the live domain has no interface and its VNC listens nowhere
  let live = '';
  for (let i = 0; i < 600 && live === ''; i++) {
    const x = await virsh('dumpxml', name);
    if (x.exitCode === 0 && x.stdout.includes('<devices>')) live = x.stdout;
    else await new Promise((res) => setTimeout(res, 100));
  }
  expect(live).not.toBe('');
  expect(live).not.toContain('<interface');
  expect(live).toMatch(/<graphics type='vnc'[^>]*>\s*<listen type='none'\/>/);
  expect(live).not.toMatch(/<graphics[^>]*port=/);
  expect(live).toMatch(/<panic model='isa'/);
  expect(live).toMatch(/<on_crash>preserve<\/on_crash>/);
  const r = await proc;
  expect(r.code).toBe(0);
  expect(r.seconds).toBeGreaterThanOrEqual(20);
  expect(r.stdout).toMatch(/virtnbdbackup\.1\s+PASS/);
  const dirs = readdirSync(cwd).filter((d) => d.startsWith('virtnbd-verify-'));
  expect(dirs).toHaveLength(1);
  const report = JSON.parse(readFileSync(join(cwd, dirs[0]!, 'report.json'), 'utf8')) as VerifyReport;
  expect(report.passed).toBe(true);
  expect(report.points[0]!.seconds.running).toBeGreaterThanOrEqual(20);
  // (under TCG on a busy machine the marker may come after 20 s: whatever it printed is this point's)
  const text = readFileSync(report.points[0]!.consoleLogs[0]!, 'latin1');
  expect(text).not.toMatch(/panic/i);
  for (const m of text.matchAll(/VIRTNBD-MARKER (\S+) BOOT (\d+)/g)) expect([m[1], m[2]]).toEqual(['B'.repeat(24), '2']);
  await expectNothingLeft(before);
});

test('console mismatch: the point prints another marker than the one expected', async () => {
  const before = runDirs();
  const rd = join(work, 'report-mismatch');
  const r = await verify(['--until', 'virtnbdbackup.1', '--expect-console', `VIRTNBD-MARKER ${'A'.repeat(24)}`, '--timeout', '60', '--json', '--report-dir', rd]);
  expect(r.code).toBe(1);
  const [p] = jsonLines(r);
  expect(p).toMatchObject({ checkpoint: 'virtnbdbackup.1', passed: false, reason: 'console-mismatch' });
  expect(p!.detail).toContain(`VIRTNBD-MARKER ${'B'.repeat(24)} BOOT 2`); // the last line it printed
  await expectNothingLeft(before);
});

test('--expect-agent on a guest without an agent: console matched, agent silent', async () => {
  const before = runDirs();
  const rd = join(work, 'report-agent');
  const r = await verify(['--until', 'virtnbdbackup.0', '--expect-console', GOOD, '--expect-agent', '--timeout', '60', '--json', '--report-dir', rd]);
  expect(r.code).toBe(1);
  const [p] = jsonLines(r);
  expect(p).toMatchObject({ checkpoint: 'virtnbdbackup.0', passed: false, reason: 'agent-silent', os: null });
  expect(p!.seconds.console).toBeGreaterThan(0);
  expect(p!.seconds.agent).toBeNull();
  await expectNothingLeft(before);
});

test('refusals: a report directory inside the backup, --verify without --boot, --all-points with --until, a bad regex', async () => {
  const inside = await verify(['--report-dir', join(set, 'report')]);
  expect(inside.code).toBe(2);
  expect(inside.stderr).toMatch(/inside the backup directory/);
  expect(existsSync(join(set, 'report'))).toBe(false);
  const inCwd = await verify([], set);
  expect(inCwd.code).toBe(2);
  const noBoot = await execa(BIN('virtnbdmap'), ['-i', set, '--verify'], { reject: false });
  expect(noBoot.exitCode).toBe(2);
  expect(noBoot.stderr).toMatch(/--verify: requires --boot/);
  const both = await verify(['--all-points', '--until', 'virtnbdbackup.1']);
  expect(both.code).toBe(2);
  const re = await verify(['--expect-console', '(']);
  expect(re.code).toBe(2);
  expect(re.stderr).toMatch(/invalid regular expression/);
  expect(setSums()).toEqual(sums);
});
