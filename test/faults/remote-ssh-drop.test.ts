/**
 * Faults, point 3 (remote): the ssh connection dropped in the middle of a remote backup
 * (`qemu+ssh://`, test sshd of test/helpers/ssh-server.ts). The run is stopped after its first
 * piece (`backup:mid-disk:pause`), every connection of the test sshd is cut (its per-connection
 * processes killed: libvirt's ssh transport and our ssh session), then the run goes on. It must
 * end with exit 1 and an error naming the lost connection, keep nothing of the run, and the next
 * ordinary remote inc must succeed (ending the job libvirt kept for the dead connection); every
 * committed point maps SHA-256-equal to its shadow copy.
 */
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { TestVm } from '../helpers/test-vm.js';
import { chainSha } from '../helpers/map-sha.js';
import { freePort } from '../helpers/procs.js';
import { startTestSshd, type TestSshd } from '../helpers/ssh-server.js';
import { bin, expectExit, runCmd, startCmd, waitStopped } from './fault-helpers.js';

jest.setTimeout(900_000);

const MiB = 1024 * 1024;
let vm: TestVm;
let sshd: TestSshd | undefined;
let tmp = '';
let uri = '';
let nbdPort = 0;
let pathEnv: Record<string, string> = {};
const points: Array<{ cp: string; vda: string }> = [];

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'virtnbd-fault-ssh-'));
  sshd = await startTestSshd(tmp);
  // the commands spawned here find this `ssh` first: the test's known-hosts file, nothing in ~/.ssh
  const wrapDir = join(tmp, 'bin');
  mkdirSync(wrapDir);
  writeFileSync(join(wrapDir, 'ssh'), `#!/bin/sh\nexec /usr/bin/ssh -o UserKnownHostsFile=${sshd.knownHosts} "$@"\n`, { mode: 0o755 });
  pathEnv = { PATH: `${wrapDir}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}` };
  uri = `qemu+ssh://root@127.0.0.1:${sshd.port}/system?keyfile=${sshd.key}&no_verify=1&command=${sshd.sshWrapper}`;
  nbdPort = await freePort();
  vm = await TestVm.create({ persistent: true, disks: [{ dev: 'vda', bus: 'virtio', format: 'qcow2', size: 96 * MiB }] });
});

afterAll(async () => {
  await vm?.cleanup();
  await sshd?.stop();
  if (tmp !== '') rmSync(tmp, { recursive: true, force: true });
});

const dir = (): string => join(vm.dir, 'remote-set');
const cpt = (): string[] => JSON.parse(readFileSync(join(dir(), `${vm.name}.cpt`), 'utf8')) as string[];
const args = (level: string): string[] => [
  '-U', uri, '--ssh-user', 'root', '--ssh-port', String(sshd!.port), '--ssh-private-key', sshd!.key, '-P', String(nbdPort),
  '-d', vm.name, '--nocolor', '-l', level, '-o', dir(), '--scratchdir', vm.dir,
];

/** The per-connection processes of the test sshd (children of its listener). */
function sshdConnections(): number[] {
  const listener = Number(readFileSync(join(tmp, 'sshd.pid'), 'utf8').trim());
  const kids: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(p)) continue;
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === listener) kids.push(Number(p));
    } catch {
      /* gone */
    }
  }
  return kids;
}

async function ordinary(level: string): Promise<string> {
  const r = await runCmd(bin('virtnbdbackup'), args(level), undefined, pathEnv);
  expectExit(r, 0);
  const c = cpt();
  points.push({ cp: c[c.length - 1]!, vda: vm.shadowSha('vda') });
  expect((await vm.dom.jobInfo()).type).toBe(0);
  return r.stderr;
}

test('remote full starts the chain', async () => {
  await ordinary('full');
});

test('ssh dropped mid-transfer: exit 1 naming the lost connection, nothing kept; the next remote inc succeeds', async () => {
  await vm.write('vda', 8 * MiB, 48 * MiB, 0x71); // more than the reads in flight: the run needs the server after the pause
  const before = { cpt: cpt(), data: readdirSync(dir()).filter((n) => n.endsWith('.data')).sort() };
  const child = startCmd(bin('virtnbdbackup'), args('inc'), 'backup:mid-disk:pause', pathEnv);
  await waitStopped(child.pid!, 300_000).catch(async (e: Error) => {
    throw new Error(`${e.message}:\n${(await child).all}`);
  });
  const conns = sshdConnections();
  expect(conns.length).toBeGreaterThan(0);
  for (const pid of conns) process.kill(pid, 'SIGKILL');
  process.kill(child.pid!, 'SIGCONT');
  const r = await child;
  if (r.exitCode !== 1) throw new Error(`expected exit 1, got ${r.exitCode} ${r.signal}:\n${r.all}`);
  const errors = (r.all ?? '').split('\n').filter((l) => / (ERROR|CRITICAL) /.test(l));
  process.stderr.write(`remote-ssh-drop run: ${errors.join('\n  ')}\n`);
  if (errors.length === 0 || !/connection|ssh|libvirt/i.test(errors[0]!)) throw new Error(`the first error does not name the lost connection:\n${r.all}`);
  expect({ cpt: cpt(), data: readdirSync(dir()).filter((n) => n.endsWith('.data')).sort() }).toEqual(before);
  expect(readdirSync(dir()).filter((n) => n.endsWith('.partial'))).toEqual([]);

  const log = await ordinary('inc');
  expect(log).toMatch(/WARNING/);
});

test('every committed point maps SHA-256-equal to its shadow copy', async () => {
  expect(points.length).toBe(2);
  for (const p of points) expect([p.cp, (await chainSha(dir(), 'vda', p.cp)).sha]).toEqual([p.cp, p.vda]);
});
