/**
 * BitLocker recovery-key export for Windows guests (BEHAVIOUR.md §10.3, FORMAT.md §6.8).
 *
 * Only when the agent's guest info says `os.id == "mswindows"`. Through the guest agent's
 * `guest-exec` (output captured; `guest-exec-status` polled every 0.5 s for up to 30 s; output
 * base64-decoded; a non-zero exit code is a failure): first `manage-bde.exe -status` to see
 * whether the tools exist (INFO either way; when they are missing nothing else happens), then for
 * every guest mount point containing `:` `manage-bde.exe -protectors -get <mount point>` (the
 * trailing `\` removed, so `C:\` → `C:`), its raw output saved through the side-file sink as
 * `bitlocker.recovery.key.<VOL>.<ident>`, VOL being the mount point with `\` and `:` removed
 * (`C`). A failing volume is a warning (counted for `--strict`) and the others are still saved;
 * a failing sink write rejects, like the other side files.
 *
 * The agent is a one-method interface ({@link GuestAgent}; VirtDomain fits it), and the poll
 * interval, the time limit, sleeping and the clock are injectable, so the logic is unit-tested
 * with a fake agent. There is no Windows guest (nor any guest agent) on the development machine,
 * so no integration test runs manage-bde for real.
 */
import type { Logger } from '../log/logger.js';
import { checkSideFileName, type SideFileSink } from './side-files.js';
import { sleep as defaultSleep } from '../util/sleep.js';

/** Sends one guest-agent JSON command and resolves to the agent's JSON reply. */
export interface GuestAgent {
  agentCommand(cmd: string, timeoutS: number): Promise<string>;
}

export interface GuestExecOptions {
  /** Between two `guest-exec-status` calls. Default 500 ms. */
  pollIntervalMs?: number;
  /** How long the command may run before it counts as failed. Default 30 000 ms. */
  timeoutMs?: number;
  /** Timeout handed to libvirt for each single agent command, in seconds. Default 10. */
  agentTimeoutS?: number;
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
}

export interface GuestExecResult {
  exitCode: number;
  stdout: Buffer;
  stderr: Buffer;
}

type Guest = Record<string, number | string | boolean>;

const MANAGE_BDE = 'manage-bde.exe';

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The `return` member of an agent reply; an `error` member (or anything else) rejects. */
async function agentReturn(agent: GuestAgent, cmd: object, timeoutS: number): Promise<Record<string, unknown>> {
  const name = String((cmd as { execute?: unknown }).execute);
  const reply = await agent.agentCommand(JSON.stringify(cmd), timeoutS);
  let parsed: unknown;
  try {
    parsed = JSON.parse(reply);
  } catch {
    throw new Error(`Invalid reply from guest agent to ${name}: ${reply.slice(0, 200)}`);
  }
  if (isObject(parsed) && isObject(parsed.error)) {
    throw new Error(`Guest agent ${name} failed: ${String(parsed.error.desc ?? parsed.error.class ?? 'unknown error')}`);
  }
  if (!isObject(parsed) || !isObject(parsed.return)) throw new Error(`Unexpected reply from guest agent to ${name}: ${reply.slice(0, 200)}`);
  return parsed.return;
}

function decode(v: unknown): Buffer {
  return typeof v === 'string' ? Buffer.from(v, 'base64') : Buffer.alloc(0);
}

/**
 * Runs `path args…` in the guest through `guest-exec` with captured output and polls
 * `guest-exec-status` until the process has exited. Rejects on agent errors and when the
 * process is still running after `timeoutMs`. The exit code is returned, not judged.
 */
export async function guestExec(agent: GuestAgent, path: string, args: string[], opts: GuestExecOptions = {}): Promise<GuestExecResult> {
  const interval = opts.pollIntervalMs ?? 500;
  const limit = opts.timeoutMs ?? 30_000;
  const agentTimeout = opts.agentTimeoutS ?? 10;
  const sleep = opts.sleep ?? defaultSleep;
  const now = opts.now ?? Date.now;

  const started = await agentReturn(agent, { execute: 'guest-exec', arguments: { path, arg: args, 'capture-output': true } }, agentTimeout);
  const pid = started.pid;
  if (typeof pid !== 'number' || !Number.isInteger(pid)) throw new Error(`guest-exec returned no pid for [${path}]`);
  const t0 = now();
  for (;;) {
    const st = await agentReturn(agent, { execute: 'guest-exec-status', arguments: { pid } }, agentTimeout);
    if (st.exited === true) {
      const exitCode = typeof st.exitcode === 'number' ? st.exitcode : typeof st.signal === 'number' ? -1 : 0;
      return { exitCode, stdout: decode(st['out-data']), stderr: decode(st['err-data']) };
    }
    if (now() - t0 >= limit) throw new Error(`[${path}] did not finish within ${limit / 1000} s`);
    await sleep(interval);
  }
}

/** Failure text of an exited command: stderr, else stdout, else the exit code. */
function failure(r: GuestExecResult): string {
  const text = r.stderr.toString('utf8').trim() || r.stdout.toString('utf8').trim();
  return text !== '' ? `exit code ${r.exitCode}: ${text}` : `exit code ${r.exitCode}`;
}

/** Mount points from guest info (`fs.count`, `fs.<i>.mountpoint`) that contain `:`. */
export function windowsMountpoints(info: Guest): string[] {
  const count = typeof info['fs.count'] === 'number' ? info['fs.count'] : 0;
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const mp = info[`fs.${i}.mountpoint`];
    if (typeof mp === 'string' && mp.includes(':') && !out.includes(mp)) out.push(mp);
  }
  return out;
}

/** `C:\` → `C` (BEHAVIOUR.md §10.3: `\` and `:` removed). */
export function volumeName(mountpoint: string): string {
  return mountpoint.replace(/[\\:]/g, '');
}

/**
 * BEHAVIOUR.md §10.3: exports the BitLocker recovery information of every volume of a Windows
 * guest as `bitlocker.recovery.key.<VOL>.<ident>`. Does nothing unless `os.id` is `mswindows`.
 * Returns the names written.
 */
export async function saveBitlockerKeys(agent: GuestAgent, info: Guest, sink: SideFileSink, ident: string, log: Logger, opts: GuestExecOptions = {}): Promise<string[]> {
  if (info['os.id'] !== 'mswindows') return [];
  try {
    const st = await guestExec(agent, MANAGE_BDE, ['-status'], opts);
    if (st.exitCode !== 0) throw new Error(failure(st));
  } catch (e) {
    log.info(`BitLocker tools not available in guest, not saving recovery keys: [${(e as Error).message}]`);
    return [];
  }
  log.info('BitLocker tools found in guest, saving recovery keys.');

  const written: string[] = [];
  const done = new Set<string>();
  for (const mp of windowsMountpoints(info)) {
    const vol = volumeName(mp);
    if (done.has(vol)) continue;
    done.add(vol);
    const name = `bitlocker.recovery.key.${vol}.${ident}`;
    let out: Buffer;
    try {
      checkSideFileName(name);
      const target = mp.length > 1 && mp.endsWith('\\') ? mp.slice(0, -1) : mp;
      const r = await guestExec(agent, MANAGE_BDE, ['-protectors', '-get', target], opts);
      if (r.exitCode !== 0) throw new Error(failure(r));
      out = r.stdout;
    } catch (e) {
      log.warn(`Failed to query BitLocker recovery key for volume [${vol}]: [${(e as Error).message}]`);
      continue;
    }
    await sink.writeFile(name, out);
    log.info(`Saved BitLocker recovery key for volume [${vol}] as [${name}]`);
    written.push(name);
  }
  return written;
}
