/**
 * Shared helpers of the fault-injection suite: running a command under a fault point, waiting for
 * a paused (SIGSTOPped) process, and the leftover check — everything a dead or failed run could
 * leave behind that is scoped to the test's own directories: `*.partial` and temp files, nbdkit /
 * qemu-nbd / nbdfuse / nbdcopy / virtnbd processes, loop devices, mounts, NBD sockets, a libvirt
 * backup job, transient domains named by the test.
 */
import { lstatSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa, type ResultPromise } from 'execa';
import type { VirtDomain } from '../../src/virt/client.js';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const bin = (name: 'virtnbdbackup' | 'virtnbdrestore' | 'virtnbdmap'): string => join(ROOT, 'bin', name);

export interface RunResult {
  code: number | undefined;
  signal: string | undefined;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end, optionally under VIRTNBD_FAULT. */
export async function runCmd(cmd: string, args: string[], fault?: string, env: Record<string, string> = {}): Promise<RunResult> {
  const r = await execa(cmd, args, { reject: false, stdin: 'ignore', timeout: 600_000, env: { ...env, ...(fault !== undefined ? { VIRTNBD_FAULT: fault } : {}) } });
  return { code: r.exitCode, signal: r.signal ?? undefined, stdout: r.stdout, stderr: r.stderr };
}

/** Starts a command (not awaited). */
export function startCmd(cmd: string, args: string[], fault?: string, env: Record<string, string> = {}): ResultPromise<{ reject: false; stdin: 'ignore'; all: true }> {
  return execa(cmd, args, { reject: false, stdin: 'ignore', all: true, env: { ...env, ...(fault !== undefined ? { VIRTNBD_FAULT: fault } : {}) } }) as never;
}

export function expectExit(r: RunResult, code: number): void {
  if (r.code !== code) throw new Error(`exited ${r.code}${r.signal !== undefined ? ` (${r.signal})` : ''}, expected ${code}:\n${r.stderr}`);
}

function procState(pid: number): string | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return undefined;
  }
}

/** Waits until the process is stopped (state T, a `:pause` fault point); throws if it ends first. */
export async function waitStopped(pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const st = procState(pid);
    if (st === 'T' || st === 't') return;
    if (st === undefined || st === 'Z') throw new Error(`process ${pid} ended before its fault point`);
    if (Date.now() > deadline) throw new Error(`process ${pid} did not reach its fault point in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Waits for a condition (polling), failing with `what` on timeout. */
export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function walk(dir: string, out: string[] = []): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return out;
  }
  for (const n of names) {
    const p = join(dir, n);
    let st;
    try {
      st = lstatSync(p);
    } catch {
      continue;
    }
    out.push(p);
    if (st.isDirectory()) walk(p, out);
  }
  return out;
}

const TOOLS = new Set(['nbdkit', 'qemu-nbd', 'nbdfuse', 'nbdcopy', 'nbdinfo']);

/** Processes (other than ours) whose command line names one of `scopes`: helper tools and our commands. */
export function scopedProcesses(scopes: readonly string[]): string[] {
  const found: string[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(p) || Number(p) === process.pid) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').filter((a) => a !== '');
      if (procState(Number(p)) === 'Z') continue;
    } catch {
      continue;
    }
    if (argv.length === 0) continue;
    const line = argv.join(' ');
    if (!scopes.some((s) => line.includes(s))) continue;
    const exe = (() => {
      try {
        return readlinkSync(`/proc/${p}/exe`);
      } catch {
        return argv[0]!;
      }
    })();
    const base = exe.split('/').pop()!;
    const isTool = TOOLS.has(base) || TOOLS.has(argv[0]!.split('/').pop()!);
    const isOurs = argv.some((a) => /\/bin\/virtnbd(backup|restore|map)$/.test(a));
    if (isTool || isOurs) found.push(`${p}: ${line.slice(0, 200)}`);
  }
  return found;
}

export interface Leftovers {
  files: string[];
  processes: string[];
  loops: string[];
  mounts: string[];
  sockets: string[];
  job: boolean;
  domains: string[];
}

/**
 * What is left in `scopes` (directories of the test): partial/temp files, processes, loop
 * devices backed by files there, mounts there, unix sockets (`socketsIn`, ignoring `keepSockets`),
 * an active job on `dom`, and live domains whose name starts with one of `domainPrefixes`;
 * `own`: the test's own mount points and loop-backing files.
 */
export async function leftovers(o: { scopes: string[]; socketsIn?: string[]; dom?: VirtDomain; domainPrefixes?: string[]; uri?: string; own?: string[] }): Promise<Leftovers> {
  const own = new Set(o.own ?? []);
  const files: string[] = [];
  const sockets: string[] = [];
  for (const s of o.scopes) {
    for (const p of walk(s)) {
      const n = p.split('/').pop()!;
      if (n.endsWith('.partial') || /^\..*\.tmp$/.test(n) || /\.partial\.[0-9a-f]+$/.test(n)) files.push(p);
    }
  }
  for (const s of o.socketsIn ?? []) {
    for (const p of walk(s)) {
      try {
        if (lstatSync(p).isSocket()) sockets.push(p);
      } catch {
        /* gone */
      }
    }
  }
  const loops: string[] = [];
  const lo = await execa('losetup', ['-J', '-l'], { reject: false });
  if (lo.exitCode === 0 && lo.stdout.trim() !== '') {
    for (const d of (JSON.parse(lo.stdout) as { loopdevices: Array<{ name: string; 'back-file': string | null }> }).loopdevices) {
      const bf = d['back-file'] ?? '';
      if (o.scopes.some((s) => bf.includes(s)) && !own.has(bf)) loops.push(`${d.name} ${bf}`);
    }
  }
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => l.split(' ')[4]!.replace(/\\040/g, ' '))
    .filter((mp) => o.scopes.some((s) => mp.startsWith(s)) && !own.has(mp));
  let job = false;
  if (o.dom !== undefined) {
    try {
      job = (await o.dom.jobInfo()).type !== 0;
    } catch {
      job = false; // the domain is gone
    }
  }
  const domains: string[] = [];
  if (o.domainPrefixes !== undefined && o.domainPrefixes.length > 0) {
    const l = await execa('virsh', ['-c', o.uri ?? 'qemu:///system', 'list', '--all', '--name'], { reject: false });
    for (const n of l.stdout.split('\n').map((x) => x.trim())) if (n !== '' && o.domainPrefixes.some((p) => n.startsWith(p))) domains.push(n);
  }
  return { files, processes: scopedProcesses(o.scopes), loops, mounts, sockets, job, domains };
}

export const NOTHING_LEFT: Leftovers = { files: [], processes: [], loops: [], mounts: [], sockets: [], job: false, domains: [] };

/** Waits (briefly) for processes to go, then returns what is left. */
export async function settledLeftovers(o: Parameters<typeof leftovers>[0], timeoutMs = 15_000): Promise<Leftovers> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const l = await leftovers(o);
    if (JSON.stringify(l) === JSON.stringify(NOTHING_LEFT) || Date.now() > deadline) return l;
    await new Promise((r) => setTimeout(r, 100));
  }
}
