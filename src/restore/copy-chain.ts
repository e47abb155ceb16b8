/**
 * Copy a resolved chain into a freshly created (all-zero) image, sparsely: only the data extents
 * of the resolved map are written, each byte once (BEHAVIOUR.md §11.6). Zero extents and holes
 * are never written, so the result stays thin.
 *
 * Two ways (`method`):
 *
 * - `own` (default): our copier reads the saveset payloads directly — plain preads at the map's
 *   file offsets, or one LZ4 decode per frame (validated, each frame decoded once however many
 *   slices of it survive) — and writes them through an NbdClient to a `qemu-nbd` serving the
 *   target in its created format (`--cache=none` where O_DIRECT works), 64 MiB in flight.
 * - `qemu-img`: serve the chain read-only with nbdkit + our plugin (src/map/nbdkit.ts) and run
 *   `qemu-img convert -n --target-is-zero` from that export into the image.
 *
 * Measured (2 cores, shared and loaded machine; 2 GiB disk, full + 10 incrementals, 1.15 GB of
 * resolved data; resolve + create + copy + fsync, to ext4, medians of 5 interleaved runs), as
 * speed relative to `startServer` + `qemu-img convert -O qcow2 <uri> out.qcow2` + fsync:
 * own 1.22× uncompressed / 1.42× LZ4; qemu-img method 1.02× / 1.13×; own with
 * `--cache=writeback` 0.86–1.17×. Hence `own` with cache=none by default.
 *
 * Every server started here (qemu-nbd, nbdkit) is stopped before copyChain settles, on success,
 * failure and abort alike.
 */
import { closeSync, constants as fsConstants, existsSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { execa, type ResultPromise } from 'execa';
import { ExtentKind, dataBytes, type ExtentMap, type MapExtent } from '../chain/extent-map.js';
import { decodeLz4FrameAsync } from '../saveset/lz4.js';
import { SavesetFormatError } from '../saveset/types.js';
import { nbdUri, startServer } from '../map/nbdkit.js';
import { NbdClient } from '../nbd/client.js';
import type { ImageFormat } from './target-image.js';

export type CopyMethod = 'own' | 'qemu-img';

export type Progress = (done: number, total: number) => void;

export interface CopyOptions {
  /** The resolved map of the chain (its `files` are the chain's data files, oldest first). */
  map: ExtentMap;
  /** The created image (all zeros) and its format. */
  target: { path: string; format: ImageFormat };
  method?: CopyMethod;
  /**
   * qemu-nbd cache mode for `own`. Default `none` (O_DIRECT: measured faster and no dirty page
   * build-up before the final fsync), `writeback` where the file system refuses O_DIRECT.
   */
  cache?: 'writeback' | 'none';
  /** Unix socket for qemu-nbd (`-f/--socketfile`); must not exist. Default: in a private temp dir. */
  socket?: string;
  /** Bytes of reads/decodes/writes in flight for `own` (default 64 MiB). */
  inflightBytes?: number;
  /** Largest piece of a raw extent read and written at once for `own` (default 4 MiB). */
  pieceSize?: number;
  /** Called with bytes of data written so far and the total data bytes. */
  progress?: Progress;
  signal?: AbortSignal;
  /** Debug messages (argv of the helpers started). */
  debug?: (msg: string) => void;
}

export interface CopyResult {
  /** Data bytes written (= dataBytes(map)). */
  bytes: number;
  seconds: number;
}

/** A failure while copying; the message names the file/offset or the helper that failed. */
export class CopyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CopyError';
  }
}

function abortError(signal: AbortSignal): Error {
  const r: unknown = signal.reason;
  return r instanceof Error ? r : new CopyError('restore aborted');
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Copies the data of `o.map` into `o.target`; resolves when the image is complete and closed. */
export async function copyChain(o: CopyOptions): Promise<CopyResult> {
  const t0 = performance.now();
  if (o.signal?.aborted) throw abortError(o.signal);
  const total = dataBytes(o.map);
  if ((o.method ?? 'own') === 'qemu-img') await copyWithQemuImg(o, total);
  else await copyOwn(o, total);
  return { bytes: total, seconds: (performance.now() - t0) / 1000 };
}

// ------------------------------------------------------------------------------------ qemu-nbd

interface QemuNbd {
  uri: string;
  /** Resolves with qemu-nbd's exit once it has ended (it exits after our client disconnects). */
  exited: Promise<{ code: number | undefined; signal: string | undefined; stderr: string }>;
  /** Kill (SIGTERM, then SIGKILL) if still running and remove the temp dir. Idempotent. */
  stop(): Promise<void>;
}

/** True when `path` can be opened with O_DIRECT (qemu's cache=none). */
function directIoWorks(path: string): boolean {
  const flag = fsConstants.O_DIRECT;
  if (flag === undefined) return false;
  try {
    closeSync(openSync(path, fsConstants.O_RDWR | flag));
    return true;
  } catch {
    return false;
  }
}

/** Start qemu-nbd (foreground, not persistent) on a unix socket for `path`. */
async function startQemuNbd(path: string, format: ImageFormat, cache: string, socket: string | undefined, debug?: (m: string) => void): Promise<QemuNbd> {
  if (socket !== undefined && existsSync(socket)) throw new CopyError(`socket path [${socket}] exists; refusing to replace it`);
  const dir = mkdtempSync(join(tmpdir(), 'virtnbd-restore-'));
  const sock = socket ?? join(dir, 'nbd.sock');
  const args = ['--format', format, '--cache', cache, '--aio', 'threads', '-x', 'restore', '-k', sock, path];
  debug?.(`qemu-nbd ${args.join(' ')}`);
  const child: ResultPromise = execa('qemu-nbd', args, { reject: false, stdin: 'ignore', stdout: 'ignore', stderr: 'pipe', cleanup: true });
  let done = false;
  const exited = child.then((r) => {
    done = true;
    return { code: r.exitCode, signal: r.signal, stderr: String(r.stderr ?? '').trim() };
  });
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      if (!done) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
      if (socket !== undefined) rmSync(socket, { force: true });
      rmSync(dir, { recursive: true, force: true });
    })());
  const deadline = Date.now() + 30_000;
  while (!existsSync(sock)) {
    if (done) {
      const r = await exited;
      await stop();
      throw new CopyError(`qemu-nbd failed to start for [${path}] (exit ${r.code ?? r.signal}): ${r.stderr}`);
    }
    if (Date.now() > deadline) {
      await stop();
      throw new CopyError(`qemu-nbd did not start within 30 s for [${path}]`);
    }
    await sleep(5);
  }
  return { uri: nbdUri('restore', sock), exited, stop };
}

/** Connect to a server that has just created its socket (it may not be listening for a moment). */
async function connectRetry(uri: string, exited: Promise<unknown>): Promise<NbdClient> {
  let gone = false;
  void exited.then(() => (gone = true));
  for (let i = 0; ; i++) {
    try {
      return await NbdClient.connect(uri);
    } catch (e) {
      if (gone || i >= 100) throw e;
      await sleep(10);
    }
  }
}

// ------------------------------------------------------------------------------------ own copier

/** A bound on bytes in flight. */
class Budget {
  private used = 0;
  private readonly waiters: { n: number; go: () => void }[] = [];
  constructor(private readonly limit: number) {}
  async take(n: number): Promise<number> {
    const want = Math.min(n, this.limit);
    if (this.used + want <= this.limit && this.waiters.length === 0) {
      this.used += want;
      return want;
    }
    await new Promise<void>((go) => this.waiters.push({ n: want, go }));
    return want;
  }
  give(n: number): void {
    this.used -= n;
    while (this.waiters.length > 0 && this.used + this.waiters[0].n <= this.limit) {
      const w = this.waiters.shift()!;
      this.used += w.n;
      w.go();
    }
  }
}

/** Reads exactly buf.length bytes at `pos`, or fails naming the file and offset. */
async function readFully(fh: FileHandle, file: string, buf: Buffer, pos: number): Promise<void> {
  let got = 0;
  while (got < buf.length) {
    const { bytesRead } = await fh.read(buf, got, buf.length - got, pos + got);
    if (bytesRead === 0) throw new SavesetFormatError(file, pos + got, `unexpected end of file (${buf.length - got} bytes missing)`);
    got += bytesRead;
  }
}

/** A write job: guest-contiguous raw extents (batched), or all surviving slices of one LZ4 frame. */
type Job = { kind: 'raw'; start: number; parts: MapExtent[]; length: number } | { kind: 'lz4'; slices: MapExtent[] };

const frameKey = (e: MapExtent): string => `${e.file}:${e.fileOffset}`;

/** The jobs of a map in guest order: raw runs up to `piece` bytes, one job per LZ4 frame (at its first slice). */
function* jobsOf(map: ExtentMap, piece: number): Generator<Job> {
  const frames = new Map<string, MapExtent[]>();
  for (const e of map.extents) {
    if (e.kind !== ExtentKind.Lz4) continue;
    const k = frameKey(e);
    const list = frames.get(k);
    if (list) list.push(e);
    else frames.set(k, [e]);
  }
  let run: Job & { kind: 'raw' } = { kind: 'raw', start: 0, parts: [], length: 0 };
  const flush = function* (): Generator<Job> {
    if (run.parts.length > 0) yield run;
    run = { kind: 'raw', start: 0, parts: [], length: 0 };
  };
  for (const e of map.extents) {
    if (e.kind === ExtentKind.Raw) {
      for (let off = 0; off < e.length; ) {
        if (run.parts.length > 0 && (run.start + run.length !== e.start + off || run.length >= piece)) yield* flush();
        if (run.parts.length === 0) run.start = e.start + off;
        const n = Math.min(piece - run.length, e.length - off);
        run.parts.push({ ...e, start: e.start + off, length: n, fileOffset: e.fileOffset + off });
        run.length += n;
        off += n;
      }
      continue;
    }
    yield* flush();
    if (e.kind === ExtentKind.Lz4) {
      const k = frameKey(e);
      const slices = frames.get(k);
      if (slices) {
        frames.delete(k);
        yield { kind: 'lz4', slices };
      }
    }
  }
  yield* flush();
}

/** Our copier: saveset payloads → NbdClient → qemu-nbd → image. */
async function copyOwn(o: CopyOptions, total: number): Promise<void> {
  const cache = o.cache ?? (directIoWorks(o.target.path) ? 'none' : 'writeback');
  const nbd = await startQemuNbd(o.target.path, o.target.format, cache, o.socket, o.debug);
  let client: NbdClient | undefined;
  try {
    client = await connectRetry(nbd.uri, nbd.exited);
    if (client.size() < o.map.size) throw new CopyError(`target image [${o.target.path}] is smaller (${client.size()}) than the disk (${o.map.size})`);
    await writeExtents(o, client, total);
    await client.flush();
    await client.shutdown();
    client = undefined;
    const r = await nbd.exited;
    if (r.code !== 0) throw new CopyError(`qemu-nbd serving [${o.target.path}] failed (exit ${r.code ?? r.signal}): ${r.stderr}`);
  } finally {
    if (client) await client.abort().catch(() => undefined);
    await nbd.stop();
  }
}

async function writeExtents(o: CopyOptions, client: NbdClient, total: number): Promise<void> {
  const map = o.map;
  const piece = Math.min(o.pieceSize ?? 4 << 20, client.maxRequest());
  const budget = new Budget(Math.max(o.inflightBytes ?? 64 << 20, piece));
  const handles = new Map<number, Promise<FileHandle>>();
  const fileOf = (i: number): Promise<FileHandle> => {
    let h = handles.get(i);
    if (!h) {
      h = open(map.files[i], 'r');
      handles.set(i, h);
    }
    return h;
  };
  const free: Buffer[] = [];
  let done = 0;
  let failure: unknown;
  const running = new Set<Promise<void>>();
  const advance = (n: number): void => {
    done += n;
    o.progress?.(done, total);
  };

  const rawJob = async (job: Job & { kind: 'raw' }): Promise<void> => {
    const whole = free.pop() ?? Buffer.allocUnsafeSlow(piece);
    const buf = whole.subarray(0, job.length);
    try {
      let at = 0;
      for (const p of job.parts) {
        await readFully(await fileOf(p.file), map.files[p.file], buf.subarray(at, at + p.length), p.fileOffset);
        at += p.length;
      }
      await client.pwrite(buf, job.start);
    } finally {
      free.push(whole);
    }
    advance(job.length);
  };

  const lz4Job = async (slices: MapExtent[]): Promise<void> => {
    const f = slices[0];
    const file = map.files[f.file];
    const frame = Buffer.allocUnsafe(f.csize);
    await readFully(await fileOf(f.file), file, frame, f.fileOffset);
    const decoded = await decodeLz4FrameAsync(frame, f.usize, file, f.fileOffset);
    await Promise.all(slices.map((s) => client.pwrite(decoded.subarray(s.sliceOffset, s.sliceOffset + s.length), s.start)));
    advance(slices.reduce((n, s) => n + s.length, 0));
  };

  try {
    for (const job of jobsOf(map, piece)) {
      if (failure !== undefined) break;
      if (o.signal?.aborted) {
        failure = abortError(o.signal);
        break;
      }
      const cost = job.kind === 'raw' ? job.length : job.slices[0].usize + job.slices[0].csize;
      const took = await budget.take(cost);
      if (failure !== undefined) {
        budget.give(took);
        break;
      }
      const p: Promise<void> = (job.kind === 'raw' ? rawJob(job) : lz4Job(job.slices))
        .catch((e: unknown) => {
          failure ??= e;
        })
        .finally(() => {
          budget.give(took);
          running.delete(p);
        });
      running.add(p);
    }
    await Promise.all(running);
  } finally {
    await Promise.all(running);
    for (const h of handles.values()) await h.then((fh) => fh.close()).catch(() => undefined);
  }
  if (failure !== undefined) throw failure;
  if (done !== total) throw new CopyError(`copied ${done} data bytes, expected ${total}`);
}

// ------------------------------------------------------------------------------------ qemu-img

/** nbdkit + our plugin serving the chain, `qemu-img convert -n --target-is-zero` into the image. */
async function copyWithQemuImg(o: CopyOptions, total: number): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'virtnbd-restore-'));
  const srv = await startServer({ files: o.map.files, socket: join(dir, 'map.sock'), exportName: 'chain', readonly: true }).catch((e: unknown) => {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  });
  try {
    const args = ['convert', '-p', '-n', '--target-is-zero', '-W', '-f', 'raw', '-O', o.target.format, srv.uri, o.target.path];
    o.debug?.(`qemu-img ${args.join(' ')}`);
    const child = execa('qemu-img', args, { reject: false, stdin: 'ignore', stdout: 'pipe', stderr: 'pipe', buffer: { stdout: false, stderr: true }, cancelSignal: o.signal });
    child.stdout?.on('data', (c: Buffer) => {
      const m = /\(([0-9.]+)\/100%\)[^(]*$/.exec(c.toString('latin1'));
      if (m) o.progress?.(Math.min(total, Math.round((Number(m[1]) / 100) * total)), total);
    });
    const r = await child;
    if (o.signal?.aborted) throw abortError(o.signal);
    if (r.exitCode !== 0) throw new CopyError(`qemu-img convert into [${o.target.path}] failed (exit ${r.exitCode ?? r.signal}): ${String(r.stderr).trim()}`);
    o.progress?.(total, total);
  } finally {
    await srv.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
