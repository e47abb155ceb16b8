/**
 * A private, unprivileged libvirtd for integration tests that need a qemu.conf of their own (e.g.
 * `backup_tls_x509_cert_dir`) without touching the system daemon or /etc: libvirtd is started as
 * user `nobody` (setpriv) with HOME and the XDG_* directories in a fresh temp directory, so it
 * runs in session mode and reads `$XDG_CONFIG_HOME/libvirt/qemu.conf`. (As root, `qemu:///session`
 * would just reach the system daemon.) Root reaches it through its socket:
 * `qemu:///session?socket=<socket>`; its qemu processes run as `nobody` (TCG only) and log to
 * `<logDir>/<domain>.log`.
 *
 * stop() destroys whatever domains are still running (pid files of the daemon, as a fallback),
 * stops the daemon and removes the directory.
 */
import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { alive } from './procs.js';

const NOBODY_UID = 65534;
const NOBODY_GID = 65534;

export interface SessionLibvirtd {
  /** the daemon's temp directory (HOME, XDG dirs) */
  dir: string;
  /** the daemon's read-write unix socket */
  socket: string;
  /** URI for a local connection as root */
  uri: string;
  /** where the daemon's qemu writes `<domain>.log` */
  logDir: string;
  uid: number;
  gid: number;
  /** the daemon's stderr so far */
  output(): string;
  /**
   * Kills the daemon with `signal` (its qemu processes keep running) and starts it again on the
   * same directories, so it reconnects to them; resolves when the new daemon answers (faults suite).
   */
  restart(signal?: NodeJS.Signals): Promise<void>;
  stop(): Promise<void>;
}

/** Recursively hands `path` to the daemon's user. */
export function chownTree(path: string, uid = NOBODY_UID, gid = NOBODY_GID): void {
  chownSync(path, uid, gid);
  for (const e of readdirSync(path, { withFileTypes: true })) {
    const p = join(path, e.name);
    if (e.isDirectory()) chownTree(p, uid, gid);
    else chownSync(p, uid, gid);
  }
}

/** Starts the daemon with `qemuConf` as its qemu.conf; waits until its socket answers. */
export async function startSessionLibvirtd(qemuConf: string): Promise<SessionLibvirtd> {
  const dir = mkdtempSync('/var/tmp/virtnbd-libvirtd-');
  chmodSync(dir, 0o755);
  const env = {
    HOME: join(dir, 'home'),
    XDG_CONFIG_HOME: join(dir, 'config'),
    XDG_RUNTIME_DIR: join(dir, 'run'),
    XDG_CACHE_HOME: join(dir, 'cache'),
    XDG_DATA_HOME: join(dir, 'data'),
  };
  for (const d of Object.values(env)) mkdirSync(d, { mode: 0o700 });
  mkdirSync(join(env.XDG_CONFIG_HOME, 'libvirt'));
  writeFileSync(join(env.XDG_CONFIG_HOME, 'libvirt', 'qemu.conf'), qemuConf);
  chownTree(dir);
  const socket = join(env.XDG_RUNTIME_DIR, 'libvirt', 'libvirt-sock');
  let stderr = '';
  let daemon!: ResultPromise;
  let exited = false;
  const spawnDaemon = (): void => {
    const d: ResultPromise = execa('setpriv', [`--reuid=${NOBODY_UID}`, `--regid=${NOBODY_GID}`, '--clear-groups', 'libvirtd', '--timeout', '0'], {
      env: { ...env, PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' },
      extendEnv: false,
      reject: false,
      stdin: 'ignore',
      stdout: 'ignore',
      stderr: 'pipe',
      buffer: false,
    });
    d.stderr?.on('data', (c: Buffer) => {
      stderr += c.toString('utf8');
    });
    exited = false;
    void d.then(() => {
      if (daemon === d) exited = true;
    });
    daemon = d;
  };
  spawnDaemon();
  const uri = `qemu:///session?socket=${socket}`;
  const logDir = join(env.XDG_CACHE_HOME, 'libvirt', 'qemu', 'log');
  const runDir = join(env.XDG_RUNTIME_DIR, 'libvirt', 'qemu', 'run');

  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      if (!exited && existsSync(socket)) {
        // domains first: libvirtd leaves its qemu processes running when it stops
        const list = await execa('virsh', ['-c', uri, 'list', '--name'], { reject: false, stdin: 'ignore' });
        for (const name of list.stdout.split('\n').map((s) => s.trim()).filter((s) => s !== '')) {
          await execa('virsh', ['-c', uri, 'destroy', name], { reject: false, stdin: 'ignore' });
        }
      }
      if (existsSync(runDir)) {
        for (const f of readdirSync(runDir).filter((n) => n.endsWith('.pid'))) {
          const pid = Number(readFileSync(join(runDir, f), 'utf8').trim());
          if (Number.isSafeInteger(pid) && pid > 1 && alive(pid)) process.kill(pid, 'SIGKILL');
        }
      }
      daemon.kill('SIGTERM');
      const t = setTimeout(() => daemon.kill('SIGKILL'), 10_000);
      await daemon;
      clearTimeout(t);
      rmSync(dir, { recursive: true, force: true });
    })();
    return stopped;
  };

  const waitAnswer = async (): Promise<void> => {
    for (let i = 0; ; i++) {
      if (exited) {
        await stop();
        throw new Error(`libvirtd (session, as nobody) exited at start:\n${stderr}`);
      }
      if (existsSync(socket)) {
        const r = await execa('virsh', ['-c', uri, 'uri'], { reject: false, stdin: 'ignore' });
        if (r.exitCode === 0) break;
      }
      if (i > 150) {
        await stop();
        throw new Error(`libvirtd (session, as nobody) did not answer on ${socket}:\n${stderr}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  await waitAnswer();
  const restart = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    const old = daemon;
    old.kill(signal);
    await old;
    spawnDaemon();
    await waitAnswer();
  };
  return { dir, socket, uri, logDir, uid: NOBODY_UID, gid: NOBODY_GID, output: () => stderr, restart, stop };
}
