/**
 * Streaming writer of sparse stream files (FORMAT.md §2, §3, §5), bounded memory: at most one
 * 32 MiB LZ4 chunk, its compressed frame and a 1 MiB staging buffer for small writes.
 *
 * The file is written as `<final>.partial` and renamed to `<final>` only when complete; an
 * existing final file is never replaced. The `.chksum` file is written the same way.
 *
 * createToSink() writes the same byte stream into a SavesetSink instead (e.g. a zip entry for
 * `-o -`, FORMAT.md §7): no files, no `.chksum`; finish() ends the sink and returns the Adler-32
 * value so that the caller can store the checksum itself. Memory use is the same as for files.
 */
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { FileExistsError, pathExists, publishNoReplace, syncDir } from '../util/atomic-file.js';
import { Adler32, formatChecksum } from './adler32.js';
import { formatHeader } from './header.js';
import { compressChunkAsync } from './lz4.js';
import { metadataJson } from './metadata.js';
import { pyJsonDumps } from './pyjson.js';
import { LZ4_CHUNK, MAX_METADATA_LEN, MAX_TRAILER_LEN, type Metadata } from './types.js';

/**
 * Destination of a sink-mode writer. write() receives the stream's bytes in order and must have
 * consumed (or copied) `buf` when its promise resolves: the writer reuses its buffers.
 */
export interface SavesetSink {
  write(buf: Buffer): Promise<void>;
  end(): Promise<void>;
}

export interface SinkWriterOptions {
  /** LZ4 level recorded in the metadata; false = uncompressed. */
  compress: false | number;
  /** Returned as `path` by finish() (e.g. the zip entry name); default "". */
  name?: string;
}

export interface WriterOptions {
  /** LZ4 level recorded in the metadata; false = uncompressed. */
  compress: false | number;
  /** fsync the files and their directory before and after the rename (default true). */
  fsync?: boolean;
}

/** Misuse of the writer: a frame rule or a size contract was violated, or a target exists. */
export class SavesetWriterError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SavesetWriterError';
  }
}


const CRLF = Buffer.from('\r\n', 'latin1');
const STAGE_SIZE = 1 << 20;
/** Writes at least this long bypass the staging buffer. */
const DIRECT_MIN = 64 << 10;

type TrailerElement = number | Record<string, number[]>;

interface OpenData {
  start: number;
  length: number;
  /** Payload bytes received so far. */
  received: number;
  /** Compressed sizes of the LZ4 frames written so far. */
  csizes: number[];
}

const exists = pathExists;

/** Give `src` the name `dst`, failing if `dst` exists (util/atomic-file). */
async function publish(src: string, dst: string): Promise<void> {
  try {
    await publishNoReplace(src, dst);
  } catch (e) {
    if (e instanceof FileExistsError) throw new SavesetWriterError(e.message);
    throw e;
  }
}

const isCount = (n: number): boolean => Number.isSafeInteger(n) && n >= 0;

export class SavesetWriter {
  private fh: FileHandle | undefined;
  /** Set in sink mode (createToSink): the bytes go there instead of a file. */
  private sink: SavesetSink | undefined;
  private readonly adler = new Adler32();
  /** Bytes handed to emit() so far (= final file size at the end). */
  private pos = 0;
  /** Bytes actually written to the file. */
  private written = 0;
  private readonly stage = Buffer.allocUnsafe(STAGE_SIZE);
  private staged = 0;
  /** Reused buffer collecting one LZ4 chunk; allocated on first use. */
  private pending: Buffer | undefined;
  private fill = 0;
  private cur: OpenData | undefined;
  private lastEnd = 0;
  private dataSum = 0;
  private readonly trailer: TrailerElement[] = [];
  private state: 'open' | 'finished' | 'failed' | 'aborted' = 'open';
  private busy = false;
  /** Temporary files of ours that exist right now (removed by abort()). */
  private readonly temps = new Set<string>();

  private constructor(
    readonly finalPath: string,
    private readonly meta: Metadata,
    private readonly compress: boolean,
    private readonly fsync: boolean,
  ) {}

  get partialPath(): string {
    return `${this.finalPath}.partial`;
  }

  /**
   * Start `${finalPath}.partial` (refused if it or `finalPath` exists) and write the meta frame.
   * `meta.compressed` must equal `opts.compress`; `meta.dataSize` must be the sum of the data
   * frame lengths that will be written (checked by finish()).
   */
  static async create(finalPath: string, meta: Metadata, opts: WriterOptions): Promise<SavesetWriter> {
    const json = SavesetWriter.validate(meta, opts.compress);
    for (const p of [finalPath, `${finalPath}.chksum`]) {
      if (await exists(p)) throw new SavesetWriterError(`${p} already exists; not replacing it`);
    }
    const w = new SavesetWriter(finalPath, meta, opts.compress !== false, opts.fsync ?? true);
    w.fh = await open(w.partialPath, 'wx');
    w.temps.add(w.partialPath);
    await w.start(json);
    return w;
  }

  /**
   * Write the stream into `sink` instead of a file (same bytes as create() would write) and
   * write the meta frame. finish() ends the sink and returns the checksum; no file is created.
   * abort() only marks the writer dead: ending or discarding the sink is the caller's business.
   */
  static async createToSink(sink: SavesetSink, meta: Metadata, opts: SinkWriterOptions): Promise<SavesetWriter> {
    const json = SavesetWriter.validate(meta, opts.compress);
    const w = new SavesetWriter(opts.name ?? '', meta, opts.compress !== false, false);
    w.sink = sink;
    await w.start(json);
    return w;
  }

  /** Check metadata and options; the metadata JSON to write. */
  private static validate(meta: Metadata, compress: false | number): Buffer {
    if (compress !== false && !Number.isSafeInteger(compress)) {
      throw new SavesetWriterError(`compression level must be an integer, got ${compress}`);
    }
    if (meta.compressed !== compress) {
      throw new SavesetWriterError(`metadata "compressed" (${meta.compressed}) differs from the writer option (${compress})`);
    }
    if (compress !== false && meta.compressionMethod !== 'lz4') {
      throw new SavesetWriterError(`compression method must be lz4, got ${JSON.stringify(meta.compressionMethod)}`);
    }
    if (!isCount(meta.virtualSize) || !isCount(meta.dataSize) || meta.dataSize > meta.virtualSize) {
      throw new SavesetWriterError(`bad virtualSize/dataSize ${meta.virtualSize}/${meta.dataSize}`);
    }
    const json = Buffer.from(metadataJson(meta), 'utf8');
    if (json.length > MAX_METADATA_LEN) throw new SavesetWriterError(`metadata JSON of ${json.length} bytes exceeds 1 MiB`);
    return json;
  }

  /** The meta frame; on failure the writer is aborted. */
  private async start(json: Buffer): Promise<void> {
    try {
      await this.emit(formatHeader('meta', 0, json.length));
      await this.emit(json);
      await this.emit(CRLF);
    } catch (e) {
      await this.abort();
      throw e;
    }
  }

  /** Run one public operation: refuses overlapping calls and calls after a failure. */
  private async op<T>(fn: () => Promise<T>): Promise<T> {
    if (this.busy) throw new SavesetWriterError('concurrent call on a SavesetWriter');
    if (this.state !== 'open') throw new SavesetWriterError(`writer is ${this.state}`);
    this.busy = true;
    try {
      return await fn();
    } catch (e) {
      this.state = 'failed';
      throw e;
    } finally {
      this.busy = false;
    }
  }

  private async writeOut(buf: Buffer): Promise<void> {
    if (this.sink) {
      await this.sink.write(buf);
      this.written += buf.length;
      return;
    }
    let off = 0;
    while (off < buf.length) {
      const { bytesWritten } = await this.fh!.write(buf, off, buf.length - off, this.written);
      off += bytesWritten;
      this.written += bytesWritten;
    }
  }

  private async flush(): Promise<void> {
    if (this.staged === 0) return;
    const n = this.staged;
    this.staged = 0;
    await this.writeOut(this.stage.subarray(0, n));
  }

  /** Append bytes to the file (the checksum follows every byte in file order). */
  private async emit(buf: Buffer): Promise<void> {
    this.adler.update(buf);
    this.pos += buf.length;
    if (buf.length >= DIRECT_MIN) {
      await this.flush();
      await this.writeOut(buf);
      return;
    }
    if (this.staged + buf.length > STAGE_SIZE) await this.flush();
    buf.copy(this.stage, this.staged);
    this.staged += buf.length;
  }

  private checkExtent(start: number, length: number): void {
    if (this.cur) throw new SavesetWriterError('a data frame is still open');
    if (!isCount(start) || !isCount(length) || length === 0) {
      throw new SavesetWriterError(`bad extent ${start}+${length}: start and length must be safe integers, length > 0`);
    }
    if (start < this.lastEnd) throw new SavesetWriterError(`extent at ${start} overlaps or precedes the previous one ending at ${this.lastEnd}`);
    if (length > this.meta.virtualSize - start) {
      throw new SavesetWriterError(`extent ${start}+${length} exceeds the virtual size ${this.meta.virtualSize}`);
    }
  }

  /** A `zero` frame: the range reads as zeros / is unallocated. */
  async zero(start: number, length: number): Promise<void> {
    return this.op(async () => {
      this.checkExtent(start, length);
      this.lastEnd = start + length;
      await this.emit(formatHeader('zero', start, length));
    });
  }

  /** Open a `data` frame of `length` payload bytes; send them with write(), close with endData(). */
  async beginData(start: number, length: number): Promise<void> {
    return this.op(async () => {
      this.checkExtent(start, length);
      if (length > this.meta.dataSize - this.dataSum) {
        throw new SavesetWriterError(`data frames would exceed the metadata dataSize ${this.meta.dataSize}`);
      }
      this.lastEnd = start + length;
      this.dataSum += length;
      this.cur = { start, length, received: 0, csizes: [] };
      this.fill = 0;
      await this.emit(formatHeader('data', start, length));
    });
  }

  private async emitChunk(data: Buffer): Promise<void> {
    const frame = await compressChunkAsync(data, this.meta.compressed === false ? 2 : this.meta.compressed);
    this.cur!.csizes.push(frame.length);
    await this.emit(frame);
  }

  /** Payload bytes of the open data frame, in order, in pieces of any size. */
  async write(chunk: Buffer): Promise<void> {
    return this.op(async () => {
      const cur = this.cur;
      if (!cur) throw new SavesetWriterError('write() without an open data frame');
      if (chunk.length > cur.length - cur.received) {
        throw new SavesetWriterError(`data frame at ${cur.start}: more than its ${cur.length} bytes written`);
      }
      if (!this.compress) {
        cur.received += chunk.length;
        await this.emit(chunk);
        return;
      }
      let off = 0;
      while (off < chunk.length) {
        const pieceSize = Math.min(LZ4_CHUNK, cur.length - (cur.received - this.fill));
        const take = Math.min(pieceSize - this.fill, chunk.length - off);
        if (this.fill === 0 && take === pieceSize) {
          await this.emitChunk(chunk.subarray(off, off + take));
        } else {
          if (!this.pending || this.pending.length < pieceSize) this.pending = Buffer.allocUnsafe(pieceSize);
          chunk.copy(this.pending, this.fill, off, off + take);
          this.fill += take;
          if (this.fill === pieceSize) {
            this.fill = 0;
            await this.emitChunk(this.pending.subarray(0, pieceSize));
          }
        }
        off += take;
        cur.received += take;
      }
    });
  }

  /**
   * Append one complete, already compressed LZ4 frame that decodes to `usize` bytes to the open data
   * frame of a compressed stream, exactly where write() would have put a chunk of that size: at a
   * chunk boundary (nothing pending), and `usize` must be the chunk size there (LZ4_CHUNK, or the
   * rest of the frame). Used to copy frames of another stream verbatim (virtnbdprune); the caller
   * has decoded (and so checked) the frame.
   */
  async writeLz4Frame(frame: Buffer, usize: number): Promise<void> {
    return this.op(async () => {
      const cur = this.cur;
      if (!this.compress) throw new SavesetWriterError('writeLz4Frame() on an uncompressed stream');
      if (!cur) throw new SavesetWriterError('writeLz4Frame() without an open data frame');
      const expected = Math.min(LZ4_CHUNK, cur.length - cur.received);
      if (this.fill !== 0 || usize !== expected || usize === 0) {
        throw new SavesetWriterError(`data frame at ${cur.start}: an LZ4 frame of ${usize} bytes does not fit here (chunk of ${expected} bytes, ${this.fill} pending)`);
      }
      cur.csizes.push(frame.length);
      cur.received += usize;
      await this.emit(frame);
    });
  }

  /** Close the open data frame; exactly `length` bytes must have been written. */
  async endData(): Promise<void> {
    return this.op(async () => {
      const cur = this.cur;
      if (!cur) throw new SavesetWriterError('endData() without an open data frame');
      if (cur.received !== cur.length) {
        throw new SavesetWriterError(`data frame at ${cur.start}: ${cur.received} of ${cur.length} bytes written`);
      }
      if (this.compress) {
        if (cur.length < LZ4_CHUNK) {
          this.trailer.push(cur.csizes[0]!);
        } else {
          const total = cur.csizes.reduce((a, b) => a + b, 0);
          this.trailer.push({ [String(total)]: cur.csizes });
        }
      }
      this.cur = undefined;
      await this.emit(CRLF);
    });
  }

  /** A complete data frame: beginData + write + endData. */
  async data(start: number, payload: Buffer): Promise<void> {
    await this.beginData(start, payload.length);
    await this.write(payload);
    await this.endData();
  }

  private async closeFile(sync: boolean): Promise<void> {
    const fh = this.fh;
    if (!fh) return;
    this.fh = undefined;
    try {
      if (sync) await fh.sync();
    } finally {
      await fh.close();
    }
  }

  private async writeChecksumFile(value: number): Promise<void> {
    const path = `${this.finalPath}.chksum`;
    const tmp = `${path}.partial`;
    const fh = await open(tmp, 'wx');
    this.temps.add(tmp);
    try {
      await fh.writeFile(formatChecksum(value), 'latin1');
      if (this.fsync) await fh.sync();
    } finally {
      await fh.close();
    }
    await publish(tmp, path);
    this.temps.delete(tmp);
  }

  /**
   * Write the stop frame (and, compressed, the trailer and comp frame), make the file durable,
   * rename it to its final name and write its `.chksum` file. In sink mode: end the sink
   * instead (no files); `path` is the `name` option.
   */
  async finish(): Promise<{ path: string; bytes: number; checksum: number }> {
    return this.op(async () => {
      if (this.cur) throw new SavesetWriterError('finish() with a data frame still open');
      if (this.dataSum !== this.meta.dataSize) {
        throw new SavesetWriterError(`data frames hold ${this.dataSum} bytes, metadata dataSize says ${this.meta.dataSize}`);
      }
      await this.emit(formatHeader('stop', 0, 0));
      if (this.compress) {
        const json = Buffer.from(pyJsonDumps(this.trailer), 'latin1');
        if (json.length > MAX_TRAILER_LEN) throw new SavesetWriterError(`trailer of ${json.length} bytes exceeds 64 MiB`);
        await this.emit(json);
        await this.emit(CRLF);
        await this.emit(formatHeader('comp', 0, json.length));
      }
      await this.flush();
      this.pending = undefined;
      if (this.sink) {
        await this.sink.end();
        this.state = 'finished';
        return { path: this.finalPath, bytes: this.pos, checksum: this.adler.digest() };
      }
      await this.closeFile(this.fsync);
      await publish(this.partialPath, this.finalPath);
      this.temps.delete(this.partialPath);
      if (this.fsync) await syncDir(dirname(this.finalPath));
      const checksum = this.adler.digest();
      await this.writeChecksumFile(checksum);
      if (this.fsync) await syncDir(dirname(this.finalPath));
      this.state = 'finished';
      return { path: this.finalPath, bytes: this.pos, checksum };
    });
  }

  /** Close and remove the temporary files; a no-op after finish(). */
  async abort(): Promise<void> {
    if (this.state === 'finished' || this.state === 'aborted') return;
    this.state = 'aborted';
    try {
      await this.closeFile(false);
    } catch {
      // the file is removed anyway
    }
    for (const p of this.temps) {
      try {
        await unlink(p);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
    }
    this.temps.clear();
  }
}
