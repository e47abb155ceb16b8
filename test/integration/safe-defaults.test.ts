/**
 * Safe defaults (src/util/safe-defaults.ts) on real runs: a backup of a running TCG domain and a
 * restore of it create every file 0600 and every directory 0700 (an existing directory keeps its
 * mode), the restored disk is SHA-256-equal to the shadow copy, and the libvirt password given
 * by --password-file or VIRTNBD_PASSWORD appears in no log, no --json output, and in no child
 * process's command line or environment (read from /proc while the command runs).
 */
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { jest } from '@jest/globals';
import { execa } from 'execa';
import { TestVm } from '../helpers/test-vm.js';
import { fileSha } from '../helpers/map-sha.js';

jest.setTimeout(600_000);

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BACKUP = join(ROOT, 'bin', 'virtnbdbackup');
const RESTORE = join(ROOT, 'bin', 'virtnbdrestore');
const MiB = 1024 * 1024;
const SECRET = `s3cret-${process.pid}-${Math.random().toString(36).slice(2)}`;

let vm: TestVm;
let work: string;

beforeAll(async () => {
  vm = await TestVm.create({ disks: [{ dev: 'vda', bus: 'virtio', format: 'qcow2', size: 16 * MiB }] });
  work = mkdtempSync('/var/tmp/virtnbd-safe-');
});

afterAll(async () => {
  await vm?.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

/** Every file and directory below `dir` (not `dir` itself) with its permission bits. */
function modes(dir: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    const p = join(e.parentPath, e.name);
    out.push([p.slice(dir.length + 1), (statSync(p).mode & 0o777).toString(8)]);
  }
  return out.sort();
}

/** Descendants of `pid`, from /proc. */
function descendants(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const d of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'latin1');
      parent.set(Number(d), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      /* gone */
    }
  }
  const out: number[] = [];
  const walk = (p: number): void => {
    for (const [c, pp] of parent) if (pp === p) {
      out.push(c);
      walk(c);
    }
  };
  walk(pid);
  return out;
}

/**
 * Run a command while watching its children: returns the result and what the children's command
 * lines and environments held (NUL-separated, one string per process seen).
 */
async function watched(p: Promise<{ exitCode?: number; all?: unknown }> & { pid?: number }): Promise<{ code: number | undefined; all: string; children: string[] }> {
  const seen = new Map<number, string>();
  let done = false;
  // A child caught between fork and exec still shows the parent's own argv and environment (the
  // user's command line, not something we passed on): only what a child runs after exec counts.
  const poll = (async () => {
    while (!done) {
      let own = '';
      try {
        own = readFileSync(`/proc/${p.pid!}/cmdline`, 'latin1');
      } catch {
        /* gone */
      }
      for (const c of descendants(p.pid!)) {
        try {
          const cmdline = readFileSync(`/proc/${c}/cmdline`, 'latin1');
          if (cmdline === own) continue;
          const text = cmdline + '\n' + readFileSync(`/proc/${c}/environ`, 'latin1');
          if (!seen.has(c) || text.length > seen.get(c)!.length) seen.set(c, text);
        } catch {
          /* gone */
        }
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  const r = await p;
  done = true;
  await poll;
  return { code: r.exitCode, all: String(r.all ?? ''), children: [...seen.values()] };
}

test('backup and restore: files 0600, directories 0700, existing modes kept, no secret anywhere', async () => {
  await vm.write('vda', 1 * MiB, 2 * MiB, 0x5a);
  await vm.write('vda', 9 * MiB, 1 * MiB, 0xa5);
  const shadow = vm.shadowSha('vda');
  const pwFile = join(work, 'password');
  writeFileSync(pwFile, `${SECRET}\n`, { mode: 0o600 });

  // full backup into a new directory, the password from a file
  const out = join(work, 'backup');
  const full = await watched(
    execa(BACKUP, ['-d', vm.name, '-l', 'full', '-o', out, '--nocolor', '--json', '--user', 'root', '--password-file', pwFile, '--socketfile', join(vm.dir, `nbd.${Date.now()}.sock`), '--scratchdir', vm.dir], {
      reject: false,
      all: true,
      stdin: 'ignore',
      env: { VIRTNBD_PASSWORD: 'not-this-one' },
    }),
  );
  expect({ code: full.code, all: full.code === 0 ? '' : full.all }).toEqual({ code: 0, all: '' });
  expect((statSync(out).mode & 0o777).toString(8)).toBe('700');
  const backupModes = modes(out);
  expect(backupModes.length).toBeGreaterThanOrEqual(6); // data, chksum, vmconfig, cpt, checkpoints/, xml, log, qcow.json
  for (const [name, mode] of backupModes) expect([name, mode]).toEqual([name, statSync(join(out, name)).isDirectory() ? '700' : '600']);
  expect(backupModes.map(([n]) => n)).toEqual(expect.arrayContaining(['vda.full.data', 'checkpoints', 'checkpoints/virtnbdbackup.0.xml']));

  // an incremental into the same directory after the user opened it up: its mode is kept
  chmodSync(out, 0o755);
  await vm.write('vda', 4 * MiB, 1 * MiB, 0x33);
  const shadowInc = vm.shadowSha('vda');
  const inc = await watched(
    execa(BACKUP, ['-d', vm.name, '-l', 'inc', '-o', out, '--nocolor', '--json', '--user', 'root', '--socketfile', join(vm.dir, `nbd.${Date.now()}.sock`), '--scratchdir', vm.dir], {
      reject: false,
      all: true,
      stdin: 'ignore',
      env: { VIRTNBD_PASSWORD: SECRET },
    }),
  );
  expect({ code: inc.code, all: inc.code === 0 ? '' : inc.all }).toEqual({ code: 0, all: '' });
  expect((statSync(out).mode & 0o777).toString(8)).toBe('755');
  for (const [name, mode] of modes(out)) expect([name, mode]).toEqual([name, statSync(join(out, name)).isDirectory() ? '700' : '600']);

  // restore into a new directory (qemu-img and qemu-nbd are children), the password in the environment
  const rout = join(work, 'restored');
  const log = join(work, 'logs', 'restore.log');
  mkdirSync(join(work, 'logs'), { mode: 0o755 });
  const rest = await watched(
    execa(RESTORE, ['-i', out, '-o', rout, '--nocolor', '-n', '-c', '--json', '-L', log, '--user', 'root'], {
      reject: false,
      all: true,
      stdin: 'ignore',
      env: { VIRTNBD_PASSWORD: SECRET },
    }),
  );
  expect({ code: rest.code, all: rest.code === 0 ? '' : rest.all }).toEqual({ code: 0, all: '' });
  expect(rest.children.length).toBeGreaterThan(0); // the watch saw qemu-img / qemu-nbd
  expect((statSync(rout).mode & 0o777).toString(8)).toBe('700');
  expect((statSync(log).mode & 0o777).toString(8)).toBe('600');
  const restoredModes = modes(rout);
  expect(restoredModes.map(([n]) => n)).toEqual(expect.arrayContaining(['vda.qcow2']));
  for (const [name, mode] of restoredModes) expect([name, mode]).toEqual([name, '600']);
  const raw = join(work, 'vda.raw');
  await execa('qemu-img', ['convert', '-O', 'raw', join(rout, 'vda.qcow2'), raw]);
  expect(await fileSha(raw)).toBe(shadowInc);
  expect(shadowInc).not.toBe(shadow);

  // the secret: not in any log, any output, any child's argv or environment
  const logs = [...readdirSync(out).filter((f) => f.endsWith('.log')).map((f) => readFileSync(join(out, f), 'utf8')), readFileSync(log, 'utf8')];
  expect(logs.length).toBeGreaterThanOrEqual(3);
  for (const text of [...logs, full.all, inc.all, rest.all, ...full.children, ...inc.children, ...rest.children]) expect(text.includes(SECRET)).toBe(false);
  expect(full.all.includes('not-this-one')).toBe(false);
});

test('--password on the command line: redacted in the log, never passed to children', async () => {
  const out = join(work, 'argv-restore');
  const log = join(work, 'argv.log');
  const r = await watched(
    execa(RESTORE, ['-i', join(work, 'backup'), '-o', out, '--nocolor', '-n', '-L', log, '--user', 'root', '--password', SECRET, '--until', 'virtnbdbackup.0'], {
      reject: false,
      all: true,
      stdin: 'ignore',
    }),
  );
  expect({ code: r.code, all: r.code === 0 ? '' : r.all }).toEqual({ code: 0, all: '' });
  const text = readFileSync(log, 'utf8');
  expect(text).toContain('--password ***');
  expect(text.includes(SECRET)).toBe(false);
  expect(r.children.length).toBeGreaterThan(0);
  for (const c of r.children) expect(c.includes(SECRET)).toBe(false);
});

test('bad password sources are usage errors', async () => {
  const both = await execa(RESTORE, ['-i', work, '-o', 'dump', '--password', 'x', '--password-file', '/nonexistent'], { reject: false, stdin: 'ignore' });
  expect(both.exitCode).toBe(2);
  expect(both.stderr).toContain('--password and --password-file cannot be used together');
  const missing = await execa(RESTORE, ['-i', work, '-o', 'dump', '--password-file', join(work, 'nope')], { reject: false, stdin: 'ignore' });
  expect(missing.exitCode).toBe(2);
  expect(missing.stderr).toContain(`Unable to read password file [${join(work, 'nope')}]`);
});

test('virtnbdbackup refuses a checkpoints link planted in the target before touching the domain', async () => {
  const out = join(work, 'planted');
  const elsewhere = join(work, 'elsewhere');
  mkdirSync(out);
  mkdirSync(elsewhere);
  symlinkSync(elsewhere, join(out, 'checkpoints'));
  const r = await execa(BACKUP, ['-d', vm.name, '-l', 'full', '-o', out, '--nocolor', '--socketfile', join(vm.dir, `nbd.${Date.now()}.sock`), '--scratchdir', vm.dir], {
    reject: false,
    all: true,
    stdin: 'ignore',
  });
  expect(r.exitCode).toBe(1);
  expect(String(r.all)).toContain(`Refusing to use [${join(out, 'checkpoints')}]: it is a symbolic link`);
  expect(readdirSync(elsewhere)).toEqual([]);
  expect(readdirSync(out).filter((n) => n.includes('.data'))).toEqual([]);
  const cps = await execa('virsh', ['checkpoint-list', '--name', vm.name]);
  expect(cps.stdout.trim().split('\n').filter(Boolean)).toEqual(['virtnbdbackup.0', 'virtnbdbackup.1']); // the two of the first test, no new one
});
