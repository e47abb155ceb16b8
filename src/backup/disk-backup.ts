/**
 * Backs up one disk from an NBD export (BEHAVIOUR.md §7.1): connect (with retries while the
 * server comes up), plan the frames from the meta contexts, read the data with several requests
 * in flight and a fixed memory budget, and write a sparse stream (SavesetWriter) or a raw image
 * (RawImageWriter) that only gets its final name when complete.
 */
import { join } from 'node:path';
import { NbdClient, NbdError, CONTEXT_BASE_ALLOCATION } from '../nbd/client.js';
import { SavesetWriter } from '../saveset/writer.js';
import { formatChecksum } from '../saveset/adler32.js';
import type { ZipStreamWriter } from '../zip/index.js';
import { buildMetadata } from '../saveset/metadata.js';
import { humanSize } from '../util/humanize.js';
import { faultPoint } from '../util/fault-point.js';
import { explainIoError } from '../util/io-error.js';
import type { Logger } from '../log/logger.js';
import { clientExtentSource, dirtyBitmapContext, nbdinfoExtentSource, planExtents, type ExtentPlan, type PlannedExtent } from './extents.js';
import { RawImageWriter } from './raw-writer.js';
import type { ProgressBar } from '../util/progress.js';
import type { BackupDisk, BackupLevel } from './types.js';
import { sleep } from '../util/sleep.js';

/** Read size per NBD request; in-flight bytes per disk (the memory budget for reads). */
const PIECE = 2 << 20;
const WINDOW_BYTES = 32 << 20;
/** Connection attempts: first at once, then with back-off, ~20 s in all (BEHAVIOUR §6.2, P7). */
const CONNECT_BUDGET_MS = 20_000;

export type { ProgressBar };

export interface DiskBackupOptions {
  disk: BackupDisk;
  /** NBD URI of the disk's export. */
  uri: string;
  level: BackupLevel;
  /** Dirty bitmap exported for inc/diff (online: `backup-<dev>`). */
  bitmap?: string;
  /** Target directory and final file name (e.g. `vda.inc.virtnbdbackup.2.data`). */
  dir: string;
  fileName: string;
  /** Raw image instead of a stream (-t raw, raw disks). */
  raw: boolean;
  compress: false | number;
  checkpointName: string;
  parentCheckpoint: string;
  incremental: boolean;
  noSparseDetection: boolean;
  /** -q: extents from `nbdinfo --map`. */
  useNbdinfo: boolean;
  tls?: boolean;
  /** x509 directory for the TLS client (remote mode with --tls). */
  tlsCertificates?: string;
  log: Logger;
  progress?: (total: number) => ProgressBar;
  signal?: AbortSignal;
  /** Metadata date (tests). */
  date?: Date;
  /** Zip mode (-o -): the stream becomes an archive entry, followed by its `.chksum` entry. */
  zip?: ZipStreamWriter;
}

export interface DiskBackupResult {
  dev: string;
  path: string;
  /** Bytes written to the file (compressed size when compressing; data bytes for raw). */
  bytes: number;
  /** Uncompressed data bytes read from the export. */
  dataSize: number;
  virtualSize: number;
  checksum?: number;
}

/** Connects to the export, retrying while the server is not there yet. */
export async function connectWithRetry(uri: string, contexts: string[], log: Logger, signal?: AbortSignal, tls?: boolean, tlsCertificates?: string): Promise<NbdClient> {
  const started = Date.now();
  let delay = 100;
  for (let attempt = 1; ; attempt++) {
    try {
      return await NbdClient.connect(uri, {
        metaContexts: contexts,
        tls: tls === true ? 'require' : undefined,
        ...(tls === true && tlsCertificates !== undefined ? { tlsCertificates } : {}),
      });
    } catch (e) {
      const code = e instanceof NbdError ? e.code : undefined;
      const transient = code === 'ENOENT' || code === 'ECONNREFUSED' || code === 'ECONNRESET';
      if (!transient || signal?.aborted === true) throw new Error(`NBD endpoint: [${uri}]: connection failed: [${(e as Error).message}]`);
      if (Date.now() - started > CONNECT_BUDGET_MS) throw new Error('Timeout during connection to NBD server backend.');
      log.debug(`NBD server not ready (attempt ${attempt}: ${(e as Error).message}); retrying in ${delay} ms`);
      await sleep(delay, signal);
      delay = Math.min(delay * 2, 2000);
    }
  }
}

type Op = { kind: 'zero'; e: PlannedExtent } | { kind: 'begin'; e: PlannedExtent } | { kind: 'piece'; offset: number; length: number; last: boolean };

function* operations(plan: ExtentPlan, piece: number): Generator<Op> {
  for (const e of plan.extents) {
    if (!e.data) {
      yield { kind: 'zero', e };
      continue;
    }
    yield { kind: 'begin', e };
    const end = e.offset + e.length;
    for (let off = e.offset; off < end; off += piece) {
      const len = Math.min(piece, end - off);
      yield { kind: 'piece', offset: off, length: len, last: off + len === end };
    }
  }
}

interface Sink {
  zero(e: PlannedExtent): Promise<void>;
  begin(e: PlannedExtent): Promise<void>;
  piece(buf: Buffer, offset: number, last: boolean): Promise<void>;
}

/** Streams the plan through `sink` in order, keeping up to WINDOW_BYTES of reads in flight. */
async function transfer(client: NbdClient, plan: ExtentPlan, sink: Sink, onBytes: (n: number) => void, signal?: AbortSignal): Promise<void> {
  const piece = Math.min(PIECE, client.maxRequest());
  const ops = operations(plan, piece);
  // A fixed pool of read buffers (no allocation per piece): a buffer is reused once the sink
  // has consumed it (the writers copy or finish writing before their promise settles).
  const free: Buffer[] = Array.from({ length: Math.max(2, Math.ceil(WINDOW_BYTES / piece)) }, () => Buffer.allocUnsafe(piece));
  const queue: Array<{ op: Op; buf?: Buffer; read?: Promise<Buffer> }> = [];
  let exhausted = false;
  let pending: Op | undefined;
  const fill = (): void => {
    while (!exhausted) {
      const op = pending ?? ops.next().value;
      pending = undefined;
      if (op === undefined) {
        exhausted = true;
        return;
      }
      if (op.kind === 'piece') {
        const buf = free.pop();
        if (buf === undefined) {
          pending = op;
          return;
        }
        const read = client.preadInto(buf.subarray(0, op.length), op.offset);
        read.catch(() => undefined); // awaited in order below
        queue.push({ op, buf, read });
      } else queue.push({ op });
    }
  };
  fill();
  while (queue.length > 0) {
    if (signal?.aborted === true) throw new Error('backup interrupted');
    const { op, buf, read } = queue.shift()!;
    if (op.kind === 'zero') await sink.zero(op.e);
    else if (op.kind === 'begin') await sink.begin(op.e);
    else {
      const data = await read!;
      await sink.piece(data, op.offset, op.last);
      free.push(buf!);
      onBytes(op.length);
    }
    fill();
  }
}

export async function backupDisk(o: DiskBackupOptions): Promise<DiskBackupResult> {
  const log = o.log;
  const dev = o.disk.dev;
  const delta = o.level === 'inc' || o.level === 'diff';
  const bitmapCtx = delta && o.bitmap !== undefined ? dirtyBitmapContext(o.bitmap) : undefined;
  const contexts = [CONTEXT_BASE_ALLOCATION, ...(bitmapCtx !== undefined ? [bitmapCtx] : [])];
  if (o.disk.discard !== undefined) log.info(`Disk [${dev}] has discard option set: [${o.disk.discard}]`);
  const client = await connectWithRetry(o.uri, contexts, log, o.signal, o.tls, o.tlsCertificates);
  try {
    for (const c of contexts) {
      if (!client.canMetaContext(c) && !(c === CONTEXT_BASE_ALLOCATION && o.noSparseDetection && delta)) {
        throw new Error(`NBD export [${o.uri}] does not offer meta context [${c}]`);
      }
    }
    const size = client.size();
    const source = o.useNbdinfo ? nbdinfoExtentSource(o.uri) : clientExtentSource(client);
    const plan = await planExtents(source, { level: o.level, size, bitmap: o.bitmap, noSparseDetection: o.noSparseDetection });
    log.info(`Got ${plan.extents.length} extents to backup.`);
    log.info(`${dev}: virtual size: ${size} bytes [${humanSize(size)}]`);
    log.info(`${dev}: data to save: ${plan.dataSize} bytes [${humanSize(plan.dataSize)}]${delta ? `, zeroed or trimmed since the parent: ${plan.zeroSize} bytes [${humanSize(plan.zeroSize)}]` : ''}`);
    if (delta && plan.extents.length === 0) log.info(`${dev}: no changes since the parent checkpoint; writing a file without frames.`);
    const finalPath = join(o.dir, o.fileName);
    const bar = o.progress?.(plan.dataSize);
    let done = 0;
    const onBytes = (n: number): void => {
      done += n;
      bar?.update(done);
      faultPoint('backup:mid-disk'); // test/faults/: a piece of this disk is in its .partial file
    };
    try {
      if (o.raw) {
        const w = await RawImageWriter.create(finalPath, size);
        try {
          await transfer(client, plan, {
            zero: async () => undefined,
            begin: async () => undefined,
            piece: (buf, off) => w.write(buf, off),
          }, onBytes, o.signal);
          const r = await w.finish();
          return { dev, path: r.path, bytes: r.bytes, dataSize: plan.dataSize, virtualSize: size };
        } catch (e) {
          await w.abort();
          throw explainIoError(e, `${finalPath}.partial`);
        }
      }
      const meta = buildMetadata({
        virtualSize: size,
        dataSize: plan.dataSize,
        date: o.date,
        diskName: dev,
        diskFormat: o.disk.format,
        checkpointName: o.checkpointName,
        compressed: o.compress,
        parentCheckpoint: o.parentCheckpoint,
        incremental: o.incremental,
      });
      const w =
        o.zip !== undefined
          ? await SavesetWriter.createToSink(o.zip.startEntry(o.fileName, { zip64: true, mtime: new Date() }), meta, { compress: o.compress, name: o.fileName })
          : await SavesetWriter.create(finalPath, meta, { compress: o.compress });
      try {
        await transfer(client, plan, {
          zero: (e) => w.zero(e.offset, e.length),
          begin: (e) => w.beginData(e.offset, e.length),
          piece: async (buf, _off, last) => {
            await w.write(buf);
            if (last) await w.endData();
          },
        }, onBytes, o.signal);
        const r = await w.finish();
        if (o.zip !== undefined) await o.zip.addFile(`${o.fileName}.chksum`, Buffer.from(formatChecksum(r.checksum), 'latin1'), new Date());
        return { dev, path: r.path, bytes: r.bytes, dataSize: plan.dataSize, virtualSize: size, checksum: r.checksum };
      } catch (e) {
        await w.abort();
        throw o.zip !== undefined ? e : explainIoError(e, `${finalPath}.partial`);
      }
    } finally {
      bar?.done();
    }
  } finally {
    await client.close().catch(() => undefined);
  }
}
