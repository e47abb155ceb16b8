/**
 * qemu-nbd started on the remote host through ssh (BEHAVIOUR.md §4.2 remote variant, §11.9):
 * one server per disk on a TCP port, `--fork`ed so the ssh command returns once it listens, its
 * pid read back from a pid file made by the remote `mktemp` (D27). Not persistent: it exits after
 * our client disconnects; stop() also kills it if it is still there and removes the pid file, on
 * every path (D6).
 */
import type { Logger } from '../log/logger.js';
import { tcpNbdUri } from './host.js';
import { shellQuote } from './quote.js';
import { commandError, type SshSession } from './ssh.js';

export interface RemoteNbdOptions {
  ssh: SshSession;
  /** Image path on the remote host. */
  image: string;
  format: string;
  exportName: string;
  port: number;
  /** `-b` bind address ('' / undefined: none). */
  bindIp?: string;
  /** The host we connect to. */
  connectHost: string;
  readOnly: boolean;
  /** `--bitmap=<name>` (offline inc/diff). */
  bitmap?: string;
  tls: boolean;
  /** x509 directory on the remote host (`--tls-cert`). */
  tlsCert: string;
  /** More qemu-nbd arguments (e.g. `-e 2`, `--discard=unmap`). */
  extraArgs?: string[];
  log: Logger;
}

export interface RemoteNbdServer {
  uri: string;
  port: number;
  pid: number;
  /** Kill the server if it still runs, remove its pid file. Idempotent, never rejects. */
  stop(): Promise<void>;
}

/** qemu option values: a comma is written as two. */
const optValue = (v: string): string => v.replace(/,/g, ',,');

/** The qemu-nbd argument vector (tested in the unit tests). */
export function remoteQemuNbdArgs(o: Omit<RemoteNbdOptions, 'ssh' | 'log' | 'connectHost'>, pidFile: string): string[] {
  const args = ['qemu-nbd'];
  if (o.readOnly) args.push('-r');
  args.push(`--format=${o.format}`, '-x', o.exportName, o.image, '-p', String(o.port), '--pid-file', pidFile, '--fork');
  if (o.bindIp !== undefined && o.bindIp !== '') args.push('-b', o.bindIp);
  if (o.bitmap !== undefined) args.push(`--bitmap=${o.bitmap}`);
  if (o.tls) args.push('--object', `tls-creds-x509,id=tls0,endpoint=server,dir=${optValue(o.tlsCert)},verify-peer=false`, '--tls-creds', 'tls0');
  args.push(...(o.extraArgs ?? []));
  return args;
}

const PID_FILE = '\0pidfile';

/**
 * Starts the server in one ssh round trip (P7): the pid file is made by the remote `mktemp`
 * (removed again if qemu-nbd fails), qemu-nbd forks once it listens, and the script prints the
 * pid file's name and the pid.
 */
export async function startRemoteQemuNbd(o: RemoteNbdOptions): Promise<RemoteNbdServer> {
  const args = remoteQemuNbdArgs(o, PID_FILE);
  const cmd = args.map((a) => (a === PID_FILE ? '"$p"' : shellQuote(a))).join(' ');
  const label = args.map((a) => (a === PID_FILE ? '<pidfile>' : a)).join(' ');
  o.log.debug(`Remote: ${label}`);
  const script = [
    `p=$(mktemp -t virtnbd-nbd.XXXXXXXX) || exit 1`,
    `${cmd} || { rc=$?; rm -f -- "$p"; exit $rc; }`,
    `printf '%s\\n' "$p"; cat -- "$p"`,
  ].join('\n');
  const r = await o.ssh.runScript(script);
  const err = commandError(label, r);
  if (err) throw err;
  const [pidFile = '', text = ''] = r.stdout.toString('utf8').split('\n').map((l) => l.trim());
  const pid = Number(text);
  if (!pidFile.startsWith('/') || !/^[0-9]+$/.test(text) || !Number.isSafeInteger(pid) || pid <= 1) {
    if (pidFile.startsWith('/')) await o.ssh.remove(pidFile).catch(() => undefined);
    throw new Error(`qemu-nbd wrote no valid pid to [${pidFile}]: [${text}]`);
  }
  const uri = tcpNbdUri(o.connectHost, o.port, o.exportName, o.tls);
  o.log.info(`Started remote qemu-nbd for [${o.image}] on port [${o.port}]${o.bindIp ? ` address [${o.bindIp}]` : ''}, pid [${pid}], export [${uri}]`);
  let stopping: Promise<void> | undefined;
  return {
    uri,
    port: o.port,
    pid,
    stop: () =>
      (stopping ??= (async () => {
        // It normally exits by itself once our client disconnected (closing the image cleanly):
        // wait up to 3 s for that, then SIGTERM and wait up to 5 s. Only a process whose command
        // line is qemu-nbd's is signalled (the pid may have been reused meanwhile).
        const script = [
          `p=${pid}`,
          'alive() { grep -q qemu-nbd /proc/$p/cmdline 2>/dev/null; }',
          'i=0; while alive && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done',
          'if alive; then kill $p 2>/dev/null; i=0; while alive && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; fi',
          `rm -f -- ${shellQuote(pidFile)}`,
          'if alive; then echo "qemu-nbd $p still running" >&2; exit 1; fi',
        ].join('\n');
        try {
          await o.ssh.execScript(script, undefined, `stop qemu-nbd ${pid}`);
        } catch (e) {
          o.log.warn(`Failed to stop remote qemu-nbd [${pid}]: ${(e as Error).message}`);
        }
      })()),
  };
}
