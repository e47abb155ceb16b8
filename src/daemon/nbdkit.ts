/**
 * Start and supervise one nbdkit process serving a resolved backup chain through our plugin shim
 * (plugin/virtnbd-plugin.c). Used by virtnbdmap, restore ("map, then copy sparsely") and boot.
 * nbdkit runs in the foreground under us (`-f`, `--exit-with-parent`); readiness is its pid file.
 */
import { mkdtempSync, existsSync, rmSync, readFileSync, lstatSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { pluginPath, workerPath } from '../util/package-root.js';
import { createRunDir } from '../util/run-dir.js';
import { sleep } from '../util/sleep.js';

export interface ServeOptions {
  /** Data files of the chain, oldest (base) first. */
  files: readonly string[];
  /** Serve on this unix socket ... */
  socket?: string;
  /** ... or on TCP. */
  tcp?: { address: string; port: number };
  exportName: string;
  /** No cow filter and a read-only export. Default: cow filter, writable. */
  readonly?: boolean;
  /** nbdkit threads (-t). */
  threads?: number;
  /** Worker processes for compressed data. */
  workers?: number;
  /** More plugin parameters (docs/PROTOCOL.md), e.g. `cache=512M`, `lz4=worker`. */
  pluginParams?: readonly string[];
  /** Maximum request size through the blocksize filter (compat `-b`); none by default. */
  blocksize?: number;
  hexdump?: boolean;
  /** nbdkit -v (debug messages of nbdkit and the plugin). */
  verbose?: boolean;
  /** Where nbdkit's stderr goes; default: a file in the server's temp dir. */
  logFile?: string;
  /** Milliseconds to wait for nbdkit to become ready. */
  startTimeoutMs?: number;
}

export interface Server {
  uri: string;
  pid: number;
  /** nbdkit's log file (its stderr). */
  logFile: string;
  /** Temp dir holding the pid file and the default log. */
  tmpDir: string;
  /** Resolves when nbdkit exits, with its exit code or signal. */
  exited: Promise<{ code: number | undefined; signal: string | undefined }>;
  /** Stop nbdkit: SIGTERM, then SIGKILL after `graceMs`. Idempotent. */
  stop(graceMs?: number): Promise<void>;
}

export function nbdUri(exportName: string, socket?: string, tcp?: { address: string; port: number }): string {
  const name = encodeURIComponent(exportName).replace(/%2F/g, '/');
  if (socket) return `nbd+unix:///${name}?socket=${encodeURIComponent(socket).replace(/%2F/g, '/')}`;
  if (!tcp) throw new Error('nbdUri: neither socket nor tcp given');
  const host = tcp.address.includes(':') ? `[${tcp.address}]` : tcp.address;
  return `nbd://${host}:${tcp.port}/${name}`;
}

/** The nbdkit argument vector for `opts` (exported for tests and --verbose logging). */
export function nbdkitArgs(opts: ServeOptions, pidFile: string): string[] {
  const args = ['-f', '--exit-with-parent', '-P', pidFile, '-e', opts.exportName];
  if (opts.socket) args.push('-U', opts.socket);
  else if (opts.tcp) args.push('-i', opts.tcp.address, '-p', String(opts.tcp.port));
  else throw new Error('serve: neither socket nor tcp given');
  if (opts.threads) args.push('-t', String(opts.threads));
  if (opts.verbose || opts.hexdump) args.push('-v');
  // Same filter order as the original: blocksize (outermost) splits requests before cow.
  if (opts.blocksize) args.push('--filter=blocksize');
  if (opts.readonly) args.push('-r');
  else args.push('--filter=cow');
  args.push(pluginPath(), `node=${process.execPath}`, `worker=${workerPath()}`);
  if (opts.workers) args.push(`workers=${opts.workers}`);
  if (opts.hexdump) args.push('hexdump=1');
  for (const f of opts.files) args.push(`file=${f}`);
  if (opts.pluginParams) args.push(...opts.pluginParams);
  if (opts.blocksize) args.push(`maxlen=${opts.blocksize}`);
  return args;
}

/** The last lines of a log file ('' when unreadable). */
export function tail(path: string, lines = 15): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/** True when something accepts connections on the unix socket `path`. */
function socketInUse(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** A unix socket path must be free: a stale socket (nobody listening) is removed, anything else refused. */
async function claimSocketPath(path: string): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new Error(`socket path [${path}] exists and is not a socket; refusing to replace it`);
  if (await socketInUse(path)) throw new Error(`socket [${path}] is in use by another server`);
  rmSync(path, { force: true });
}

/** Start nbdkit and wait until it accepts connections; throws with nbdkit's messages on failure. */
export async function startServer(opts: ServeOptions): Promise<Server> {
  if (opts.socket) await claimSocketPath(opts.socket);
  if (!existsSync(pluginPath())) throw new Error(`Failed to locate nbdkit plugin: [${pluginPath()}] (run npm run build)`);
  if (!existsSync(workerPath())) throw new Error(`Failed to locate plugin worker: [${workerPath()}] (run npm run build)`);
  const tmpDir = await createRunDir(join(tmpdir(), 'virtnbd-nbdkit-'), 'nbdkit of virtnbd'); // owner.json: swept if we die
  const pidFile = join(tmpDir, 'nbdkit.pid');
  const logFile = opts.logFile ?? join(tmpDir, 'nbdkit.log');
  const child = execa('nbdkit', nbdkitArgs(opts, pidFile), {
    stdin: 'ignore',
    stdout: { file: logFile, append: true },
    stderr: { file: logFile, append: true },
    reject: false,
    cleanup: true,
    // own process group: a terminal's Ctrl-C reaches us, and we stop nbdkit after whatever uses
    // the export (a device, a mount, a VM) is gone; --exit-with-parent still ends it with us
    detached: true,
  });
  const exited = child.then((r) => ({ code: r.exitCode, signal: r.signal }));
  let done = false;
  void exited.then(() => (done = true));
  const deadline = Date.now() + (opts.startTimeoutMs ?? 30_000);
  while (!existsSync(pidFile)) {
    if (done) {
      const r = await exited;
      // read the log before its directory is removed
      const msg = `nbdkit failed to start (exit ${r.code ?? r.signal}):\n${tail(logFile)}`;
      rmSync(tmpDir, { recursive: true, force: true });
      throw new Error(msg);
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      await exited;
      const msg = `nbdkit did not become ready within ${opts.startTimeoutMs ?? 30_000} ms:\n${tail(logFile)}`;
      rmSync(tmpDir, { recursive: true, force: true });
      throw new Error(msg);
    }
    await sleep(10);
  }
  // nbdkit 1.32 writes the pid file before the plugin's .after_fork (which loads the extent table),
  // so only a completed NBD handshake proves the export is ready (or that start-up failed).
  const uri = nbdUri(opts.exportName, opts.socket, opts.tcp);
  const probe = execa('nbdinfo', ['--size', uri], { reject: false, timeout: Math.max(1000, deadline - Date.now()) });
  const first = await Promise.race([probe.then(() => 'probe' as const), exited.then(() => 'exited' as const)]);
  if (first === 'exited') {
    probe.kill();
    const r = await exited;
    const msg = `nbdkit failed to start (exit ${r.code ?? r.signal}):\n${tail(logFile)}`;
    if (opts.socket) rmSync(opts.socket, { force: true });
    rmSync(tmpDir, { recursive: true, force: true });
    throw new Error(msg);
  }
  const pr = await probe;
  if (pr.exitCode !== 0) {
    child.kill('SIGKILL');
    await exited;
    const msg = `nbdkit export did not answer (${pr.stderr.trim()}):\n${tail(logFile)}`;
    if (opts.socket) rmSync(opts.socket, { force: true });
    rmSync(tmpDir, { recursive: true, force: true });
    throw new Error(msg);
  }
  let stopping: Promise<void> | undefined;
  const stop = (graceMs = 5000): Promise<void> =>
    (stopping ??= (async () => {
      if (!done) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }
      if (opts.socket) rmSync(opts.socket, { force: true });
      // a given log file lies outside tmpDir: the directory (pid file, owner.json) goes either way
      rmSync(tmpDir, { recursive: true, force: true });
    })());
  return { uri, pid: child.pid ?? -1, logFile, tmpDir, exited, stop };
}
