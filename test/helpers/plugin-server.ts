/**
 * nbdkit + our plugin for the plugin tests: start on a unix socket (ready = first successful NBD
 * connection), read through libnbd's Python binding or nbdcopy, stop. Every server started is
 * stopped by stopAll() (call it in afterEach).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa, type ResultPromise } from 'execa';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const PLUGIN = join(ROOT, 'build', 'Release', 'nbdkit-virtnbd-plugin.so');
export const WORKER = join(ROOT, 'dist', 'src', 'worker', 'worker.js');

/** libnbd's Python binding; nbdsh's `python3` may be another interpreter than the system one. */
const NBD_OPS = `
import sys, json, hashlib, nbd
h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(sys.argv[1])
out = []
for op in json.loads(sys.argv[2]):
    try:
        if op[0] == 'pread':
            b = h.pread(op[2], op[1])
            out.append({'ok': True, 'sha': hashlib.sha256(b).hexdigest()})
        elif op[0] == 'extents1':
            ents = []
            def cb(meta, off, entries, err):
                ents.extend(entries)
                return 0
            h.block_status(op[2], op[1], cb, nbd.CMD_FLAG_REQ_ONE)
            out.append({'ok': True, 'entries': ents})
    except nbd.Error as e:
        out.append({'ok': False, 'errno': e.errno, 'msg': e.string})
h.shutdown()
print(json.dumps(out))
`;

export type OpResult = { ok: true; sha?: string; entries?: number[] } | { ok: false; errno: string; msg: string };
export type Op = [string, number, number];

export interface PluginServer {
  uri: string;
  pid: number;
  stderr(): string;
  stop(): Promise<void>;
}

const running = new Set<PluginServer>();
let python: string | undefined;

export function checkBuilt(): void {
  const missing = [PLUGIN, WORKER].filter((p) => !existsSync(p));
  if (missing.length > 0) throw new Error(`not built: ${missing.join(', ')} — run \`npm run build\` first`);
}

async function pythonWithNbd(): Promise<string> {
  if (python) return python;
  for (const p of ['/usr/bin/python3', 'python3']) {
    if ((await execa(p, ['-c', 'import nbd'], { reject: false })).exitCode === 0) return (python = p);
  }
  return (python = 'python3');
}

export async function stopAll(): Promise<void> {
  for (const s of [...running]) await s.stop();
}

export interface ServeOptions {
  cow?: boolean;
  params?: string[];
  verbose?: boolean;
  env?: Record<string, string>;
}

/** nbdkit serving `files` with our plugin, in a new directory under `scratch`. */
export async function serve(scratch: string, files: string[], opts: ServeOptions = {}): Promise<PluginServer> {
  const dir = mkdtempSync(join(scratch, 'srv-'));
  const sock = join(dir, 'sock');
  const pidFile = join(dir, 'pid');
  const args = ['-f', '--exit-with-parent', '-U', sock, '-P', pidFile];
  if (opts.verbose) args.push('-v');
  if (opts.cow) args.push('--filter=cow');
  args.push(PLUGIN, `node=${process.execPath}`, ...files.map((f) => `file=${f}`), ...(opts.params ?? []));
  const proc: ResultPromise = execa('nbdkit', args, {
    reject: false, stdin: 'ignore', stdout: 'ignore', stderr: 'pipe', buffer: false,
    env: opts.env, extendEnv: true,
  });
  let log = '';
  proc.stderr?.on('data', (c: Buffer) => (log += c.toString()));
  let exited = false;
  const done = proc.then(() => void (exited = true));
  const deadline = Date.now() + 20_000;
  while (!(existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim() !== '')) {
    if (exited) throw new Error(`nbdkit exited before it was ready:\n${log}`);
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`nbdkit not ready after 20 s:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  // nbdkit writes the pid file before .after_fork: a connection (held in the listen backlog until
  // the table is loaded) is the real readiness check.
  const probe = await execa('nbdinfo', ['--size', `nbd+unix:///?socket=${sock}`], { reject: false, timeout: 30_000 });
  if (probe.exitCode !== 0) {
    await done;
    throw new Error(`nbdkit failed to start:\n${log}`);
  }
  const server: PluginServer = {
    uri: `nbd+unix:///?socket=${sock}`,
    pid: proc.pid!,
    stderr: () => log,
    stop: async () => {
      running.delete(server);
      if (!exited) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
        await done;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  running.add(server);
  return server;
}

/** nbdkit with our plugin that must fail to start: its exit code and stderr. */
export async function serveFails(scratch: string, files: string[], params: string[], env: Record<string, string> = {}): Promise<{ code: number | undefined; stderr: string; ms: number }> {
  const dir = mkdtempSync(join(scratch, 'fail-'));
  const t0 = Date.now();
  const r = await execa('nbdkit', ['-f', '-U', join(dir, 'sock'), PLUGIN, `node=${process.execPath}`, ...files.map((f) => `file=${f}`), ...params], {
    reject: false, timeout: 60_000, stdin: 'ignore', env, extendEnv: true,
  });
  rmSync(dir, { recursive: true, force: true });
  return { code: r.exitCode, stderr: String(r.stderr), ms: Date.now() - t0 };
}

export async function nbdOps(uri: string, ops: Op[]): Promise<OpResult[]> {
  const r = await execa(await pythonWithNbd(), ['-c', NBD_OPS, uri, JSON.stringify(ops)], { reject: false });
  if (r.exitCode !== 0) throw new Error(`libnbd helper failed: ${r.stderr}\n${[...running].map((s) => s.stderr()).join('\n')}`);
  return JSON.parse(r.stdout) as OpResult[];
}

export async function copyAndHash(scratch: string, uri: string, extraArgs: string[] = []): Promise<{ code: number | undefined; sha: string; stderr: string }> {
  const out = join(scratch, `copy-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}.raw`);
  const r = await execa('nbdcopy', [...extraArgs, uri, out], { reject: false });
  const sha = r.exitCode === 0 ? createHash('sha256').update(readFileSync(out)).digest('hex') : '';
  rmSync(out, { force: true });
  return { code: r.exitCode, sha, stderr: String(r.stderr) };
}

export const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
