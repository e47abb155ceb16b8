/**
 * Running our commands the way a user would, for the demo: `run` (to completion, output kept),
 * `spawnJson` (a long-running `virtnbdmap … --json`, resolved with its first JSON line) and
 * `stop` (a signal, then the exit code). Long-running children are tracked so that the demo's
 * clean-up can stop whatever still runs; every wait honours an AbortSignal (the demo's Ctrl-C). Children
 * run in their own process group: a Ctrl-C on the terminal reaches only the demo, which then
 * signals each child exactly once and waits for its clean-up.
 */
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { packageRoot } from '../util/package-root.js';

/** Long-running children (spawnJson) not yet exited. */
const running = new Set<ResultPromise>();

/** Absolute path of one of our commands (bin/<name>). */
export function bin(name: 'virtnbdbackup' | 'virtnbdrestore' | 'virtnbdmap'): string {
  return join(packageRoot(), 'bin', name);
}

/** Text of a child's stdout+stderr, shortened to its last `lines` lines. */
function tailOf(text: unknown, lines = 25): string {
  return String(text ?? '').trimEnd().split('\n').slice(-lines).join('\n');
}

export interface RunResult {
  exitCode: number;
  /** stdout and stderr interleaved. */
  all: string;
}

/**
 * Run one of our commands to completion; throws (with its output's tail) if it does not exit 0.
 * On abort it gets SIGTERM (its own clean-up runs) and this waits for its exit.
 */
export async function run(cmd: string, args: string[], signal: AbortSignal, timeoutMs = 600_000): Promise<RunResult> {
  const p = execa(process.execPath, [cmd, ...args], {
    reject: false,
    all: true,
    stdin: 'ignore',
    detached: true,
    timeout: timeoutMs,
    cancelSignal: signal,
  });
  const r = await p;
  const all = String(r.all ?? '');
  if (r.isCanceled) throw new Error('interrupted');
  if (r.exitCode !== 0) throw new Error(`${cmd.split('/').pop()} ${args.join(' ')} exited with ${r.exitCode ?? r.signal}:\n${tailOf(all)}`);
  return { exitCode: 0, all };
}

export interface Spawned<T> {
  proc: ResultPromise;
  info: T;
  /** Everything it printed so far (stdout + stderr). */
  output: () => string;
}

/** Start `cmd ARGS` and wait for the first line on stdout that parses as JSON. */
export async function spawnJson<T>(cmd: string, args: string[], signal: AbortSignal, timeoutMs: number): Promise<Spawned<T>> {
  const proc = execa(process.execPath, [cmd, ...args], { reject: false, buffer: false, stdin: 'ignore', detached: true });
  running.add(proc);
  void proc.finally(() => running.delete(proc));
  let out = '';
  let all = '';
  proc.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    all += d.toString();
  });
  proc.stderr!.on('data', (d: Buffer) => (all += d.toString()));
  const name = `${cmd.split('/').pop()} ${args.join(' ')}`;
  const line = await new Promise<string>((resolve, reject) => {
    const done = (f: () => void): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      f();
    };
    const onAbort = (): void => done(() => reject(new Error('interrupted')));
    const timer = setTimeout(() => done(() => reject(new Error(`${name}: no JSON line within ${timeoutMs / 1000} s:\n${tailOf(all)}`))), timeoutMs);
    signal.addEventListener('abort', onAbort);
    proc.stdout!.on('data', () => {
      const l = out.split('\n').slice(0, -1).find((s) => s.startsWith('{'));
      if (l !== undefined) done(() => resolve(l));
    });
    void proc.then((r) => done(() => reject(new Error(`${name} exited (${r.exitCode ?? r.signal}) before printing its JSON line:\n${tailOf(all)}`))));
  }).catch(async (e: unknown) => {
    await stop(proc, 'SIGINT', 60_000);
    throw e;
  });
  return { proc, info: JSON.parse(line) as T, output: () => all };
}

const stopping = new Map<ResultPromise, Promise<number | undefined>>();

/**
 * Send `sig` once (a second Ctrl-C may cut a command's clean-up short), wait up to `timeoutMs`
 * for the exit (SIGKILL after that); returns the exit code. Calling it again for the same child
 * waits for the same exit.
 */
export function stop(proc: ResultPromise, sig: NodeJS.Signals, timeoutMs: number): Promise<number | undefined> {
  let p = stopping.get(proc);
  if (p === undefined) {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(sig);
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    p = proc.then((r) => r.exitCode).finally(() => clearTimeout(timer));
    stopping.set(proc, p);
  }
  return p;
}

/** Stop every child still running (clean-up after an error or Ctrl-C). */
export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((p) => stop(p, 'SIGINT', 90_000)));
}

/** Poll `probe` every 200 ms until it returns a value; throws after `timeoutMs` or on abort. */
export async function waitFor<T>(what: string, probe: () => T | undefined, timeoutMs: number, signal: AbortSignal): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (signal.aborted) throw new Error('interrupted');
    if (Date.now() > until) throw new Error(`${what}: nothing within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
