/**
 * One sequential pass over a sparse stream file that computes its Adler-32 and verifies its
 * structure at the same time (BEHAVIOUR.md §11.11 "Ours", §14 P6; FORMAT.md §2, §3, §9).
 *
 * The file is read front to back in large pieces straight into the checksum's buffer, three reads
 * ahead of the parser; every byte is checksummed exactly once, as it is read. Frame headers, the
 * metadata and the CRLFs are parsed from the same pieces; uncompressed payloads are only
 * checksummed; compressed payloads are cut into their LZ4 frames (sizes from the trailer, which
 * is read first with two small positioned reads at the end of the file) and every frame is
 * decoded with all its checksums and sizes checked (src/saveset/lz4.ts) while the next piece is
 * being read. Memory is bounded: four read buffers, one LZ4 frame (≤ 32 MiB as written) and its
 * decoded bytes.
 *
 * The decoding is liblz4's through the native addon (src/saveset/lz4.ts): lz4-napi 2.10's
 * decoders, sync and async, never release their output (native/lz4.cc).
 *
 * Problems are collected, not thrown. Problems that leave the frame walk in sync (a bad LZ4
 * frame, a frame out of range, a size mismatch) are recorded and the walk goes on; a problem in
 * the framing itself (a bad header, a missing CRLF, a truncated file) ends the walk, and the rest
 * of the file is still read for the checksum.
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { Logger } from '../log/logger.js';
import { parseHeader } from '../saveset/header.js';
import {
  decodeLz4Frame,
  decodeLz4FrameUnsized,
  LZ4_MAX_HEADER_LEN,
  LZ4_MIN_FRAME_LEN,
  parseLz4FrameHeader,
} from '../saveset/lz4.js';
import { parseMetadata } from '../saveset/metadata.js';
import {
  HEADER_LEN,
  MAX_LZ4_CHUNK_LEN,
  MAX_METADATA_LEN,
  MAX_TRAILER_LEN,
  SavesetFormatError,
  type Metadata,
} from '../saveset/types.js';
import { FastAdler32 } from '../saveset/adler32-wasm.js';

/** Default size of the sequential reads. */
export const VERIFY_READ_SIZE = 4 << 20;
/** Read buffers: one being parsed, the others being read into (reads in flight). */
const READ_DEPTH = 4;
/** Problems recorded per file before the rest are only counted. */
const DEFAULT_MAX_PROBLEMS = 100;

export interface StreamProblem {
  /** Byte offset in the file; absent for problems without a place (I/O errors). */
  offset?: number;
  message: string;
}

export interface StreamVerifyResult {
  /** Adler-32 of the complete file; undefined when the file could not be read to its end. */
  checksum: number | undefined;
  /** Bytes read and checksummed. */
  bytes: number;
  /** In file order. */
  problems: StreamProblem[];
  /** Set when the metadata could be parsed. */
  metadata?: Metadata;
  compressed?: boolean;
}

export interface StreamVerifyOptions {
  /** Size of the sequential reads (default 4 MiB). */
  readSize?: number;
  /** The `<dev>` of the file name: the metadata's `diskName` must equal it (FORMAT.md §9 check 18). */
  expectDev?: string;
  /** Receives warnings: ranges a base stream leaves uncovered (FORMAT.md §9 check 17). */
  log?: Logger;
  maxProblems?: number;
}

const CR = 0x0d;
const LF = 0x0a;

/** Sequential reader with reads ahead: every byte read is checksummed once, in order. */
class SeqReader {
  /** File offset of the next byte to hand out. */
  pos = 0;
  /** The piece being handed out: its file offset and length, in `buf`. */
  private bufStart = 0;
  private bufLen = 0;
  private buf: Buffer;
  /** Slices of the checksum's read buffer: one handed out, the others being read into. */
  private readonly slots: Buffer[];
  /** Reads in flight, in file order. */
  private queue: { slot: number; at: number; len: number; done: Promise<number | Error> }[] = [];
  private nextSlot = 0;
  private nextAt = 0;
  private eof = false;

  constructor(
    private readonly fh: FileHandle,
    private readonly file: string,
    private readonly adler: FastAdler32,
    depth: number,
  ) {
    const size = Math.floor(adler.readBuffer.length / depth);
    this.slots = Array.from({ length: depth }, (_, i) => adler.readBuffer.subarray(i * size, (i + 1) * size));
    this.buf = this.slots[0]!;
  }

  /** Keep all slots but the current piece's busy with the next pieces of the file. */
  private issue(): void {
    while (!this.eof && this.queue.length < this.slots.length - 1) {
      const slot = this.nextSlot;
      const into = this.slots[slot]!;
      const at = this.nextAt;
      const done = this.fh.read(into, 0, into.length, at).then(
        (r) => r.bytesRead,
        (e: unknown) => (e instanceof Error ? e : new Error(String(e))),
      );
      this.queue.push({ slot, at, len: into.length, done });
      this.nextSlot = (slot + 1) % this.slots.length;
      this.nextAt += into.length;
    }
  }

  /** Make the next piece current (checksumming it); 0 at the end of the file. */
  private async readNext(): Promise<number> {
    this.issue();
    const head = this.queue.shift();
    if (!head) return 0;
    const got = await head.done;
    if (got instanceof Error) throw got;
    this.bufStart = head.at;
    this.bufLen = got;
    this.buf = this.slots[head.slot]!;
    if (got < head.len) {
      // the end of the file (or a short read): the reads behind this one are misplaced
      await this.settle();
      this.nextAt = head.at + got;
      this.nextSlot = (head.slot + 1) % this.slots.length;
      if (got === 0) this.eof = true;
    }
    if (got > 0) this.adler.update(this.buf.subarray(0, got));
    return got;
  }

  /** Consume `n` bytes, handing them to `sink` in pieces that are valid during the call only. */
  async pass(n: number, sink?: (piece: Buffer) => void): Promise<void> {
    while (n > 0) {
      let avail = this.bufStart + this.bufLen - this.pos;
      if (avail === 0) {
        avail = await this.readNext();
        if (avail === 0) throw new SavesetFormatError(this.file, this.pos, 'unexpected end of file (did it shrink while being read?)');
      }
      const k = Math.min(avail, n);
      const off = this.pos - this.bufStart;
      if (sink) sink(this.buf.subarray(off, off + k));
      this.pos += k;
      n -= k;
    }
  }

  /** The next `n` bytes; a view valid until the next call, or a copy when they span two pieces. */
  async take(n: number): Promise<Buffer> {
    const off = this.pos - this.bufStart;
    if (off + n <= this.bufLen) {
      this.pos += n;
      return this.buf.subarray(off, off + n);
    }
    const out = Buffer.allocUnsafe(n);
    let got = 0;
    await this.pass(n, (p) => {
      p.copy(out, got);
      got += p.length;
    });
    return out;
  }

  /** Read the rest of the file (checksumming it); returns the number of bytes read in total. */
  async drain(): Promise<number> {
    while ((await this.readNext()) > 0);
    this.pos = this.bufStart;
    return this.bufStart;
  }

  /** Wait for the reads still in flight and forget them (before the file is closed). */
  async settle(): Promise<void> {
    const q = this.queue;
    this.queue = [];
    for (const r of q) await r.done;
  }
}

/** Positioned read of exactly `len` bytes (the caller has checked that they exist). */
async function readExact(fh: FileHandle, file: string, pos: number, len: number): Promise<Buffer> {
  const b = Buffer.allocUnsafe(len);
  let got = 0;
  while (got < len) {
    const { bytesRead } = await fh.read(b, got, len - got, pos + got);
    if (bytesRead === 0) throw new SavesetFormatError(file, pos + got, 'unexpected end of file (did it shrink while being read?)');
    got += bytesRead;
  }
  return b;
}

interface TrailerEntry {
  total: number;
  sizes: number[];
}

const isPositiveInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v > 0;

/**
 * Locate and parse the trailer of a compressed stream (FORMAT.md §3.3, §3.4; §9 checks 11, 13).
 * `framesAt` is where the first frame after the metadata starts. Returns where the stop header
 * must be and one entry per data frame.
 */
async function readTrailer(fh: FileHandle, file: string, S: number, framesAt: number): Promise<{ stopAt: number; trailer: TrailerEntry[] }> {
  const err = (at: number, reason: string): SavesetFormatError => new SavesetFormatError(file, at, `trailer missing/corrupt: ${reason}`);
  if (S - HEADER_LEN - 2 - HEADER_LEN < framesAt) throw err(S, 'file too short for stop, trailer and comp frames');
  const compAt = S - HEADER_LEN;
  const tail = await readExact(fh, file, compAt - 2, HEADER_LEN + 2);
  let ch;
  try {
    ch = parseHeader(tail.subarray(2), file, compAt);
  } catch (e) {
    if (e instanceof SavesetFormatError) throw err(e.offset, `no valid comp header at the end of the file (${e.reason})`);
    throw e;
  }
  if (ch.kind !== 'comp' || ch.start !== 0) throw err(compAt, 'the last 40 bytes are not a "comp" header with start 0');
  const t = ch.length;
  if (t > MAX_TRAILER_LEN) throw err(compAt + 22, `trailer length ${t} exceeds 64 MiB`);
  if (t > compAt - 2 - HEADER_LEN - framesAt) throw err(compAt + 22, `trailer length ${t} runs past the frames`);
  if (tail[0] !== CR || tail[1] !== LF) throw new SavesetFormatError(file, compAt - 2, 'bad terminator: no CRLF after the trailer JSON');
  const trailerAt = compAt - 2 - t;
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(await readExact(fh, file, trailerAt, t)));
  } catch (e) {
    if (e instanceof SavesetFormatError) throw e;
    throw err(trailerAt, `not valid JSON (${(e as Error).message})`);
  }
  if (!Array.isArray(parsed)) throw err(trailerAt, 'not a JSON array');
  const trailer = parsed.map((el: unknown, i): TrailerEntry => {
    const bad = (reason: string): SavesetFormatError => new SavesetFormatError(file, trailerAt, `bad trailer element #${i}: ${reason}`);
    if (typeof el === 'number') {
      if (!isPositiveInt(el) || el > S) throw bad(`${el} is not a positive integer within the file size`);
      return { total: el, sizes: [el] };
    }
    if (typeof el !== 'object' || el === null || Array.isArray(el)) throw bad('neither an integer nor an object');
    const keys = Object.keys(el);
    if (keys.length !== 1) throw bad(`object has ${keys.length} members, expected exactly one`);
    const list = (el as Record<string, unknown>)[keys[0]!];
    if (!Array.isArray(list) || list.length === 0) throw bad('value is not a non-empty list');
    let sum = 0;
    for (const s of list) {
      if (!isPositiveInt(s) || s > S) throw bad(`size ${JSON.stringify(s)} is not a positive integer within the file size`);
      sum += s;
      if (sum > S) throw bad('sizes add up to more than the file size');
    }
    if (keys[0] !== String(sum)) throw bad(`key ${JSON.stringify(keys[0])} is not the sum of its sizes (${sum})`);
    return { total: sum, sizes: list as number[] };
  });
  return { stopAt: trailerAt - HEADER_LEN, trailer };
}

/** Verify one stream file in one sequential pass; never throws for problems of the file itself. */
export async function verifyStreamFile(path: string, opts: StreamVerifyOptions = {}): Promise<StreamVerifyResult> {
  const readSize = opts.readSize ?? VERIFY_READ_SIZE;
  const maxProblems = opts.maxProblems ?? DEFAULT_MAX_PROBLEMS;
  const problems: StreamProblem[] = [];
  let unlisted = 0;
  const problem = (offset: number | undefined, message: string): void => {
    if (problems.length >= maxProblems) {
      unlisted++;
      return;
    }
    problems.push(offset === undefined ? { message } : { offset, message });
  };
  const fromError = (e: unknown): void => {
    if (e instanceof SavesetFormatError) problem(e.offset, e.reason);
    else problem(undefined, `read error: ${(e as Error).message}`);
  };

  const result: StreamVerifyResult = { checksum: undefined, bytes: 0, problems };
  const adler = new FastAdler32(READ_DEPTH * readSize);
  const fh = await open(path, 'r');
  try {
    const st = await fh.stat();
    const S = st.size;
    const r = new SeqReader(fh, path, adler, READ_DEPTH);
    const fmt = (at: number, reason: string): SavesetFormatError => new SavesetFormatError(path, at, reason);

    /** Holds one LZ4 frame at a time (reused: decoding is synchronous). */
    let scratch = Buffer.alloc(0);
    /** Its decoded bytes, only checked, never kept: reused too (a fresh 32 MiB buffer per frame
     * cost more page faults than liblz4 spent decoding; bench/README.md, restore). */
    let decodedScratch = Buffer.alloc(0);
    /** Cut the payload of a compressed data frame into its LZ4 frames and decode each. */
    const checkChunks = async (headerAt: number, length: number, sizes: readonly number[]): Promise<void> => {
      let total = 0;
      let unknown = false;
      for (let i = 0; i < sizes.length; i++) {
        const csize = sizes[i]!;
        const off = r.pos;
        if (csize < LZ4_MIN_FRAME_LEN || csize > MAX_LZ4_CHUNK_LEN) {
          problem(off, `corrupt LZ4 frame: size ${csize} from the trailer is ${csize < LZ4_MIN_FRAME_LEN ? 'too short for an LZ4 frame' : 'above the 256 MiB limit'}`);
          await r.pass(csize);
          unknown = true;
          continue;
        }
        if (scratch.length < csize) scratch = Buffer.allocUnsafe(csize);
        const chunk = scratch.subarray(0, csize);
        let got = 0;
        await r.pass(csize, (p) => {
          p.copy(chunk, got);
          got += p.length;
        });
        let usize: number | undefined;
        try {
          usize = parseLz4FrameHeader(chunk.subarray(0, Math.min(csize, LZ4_MAX_HEADER_LEN)), path, off).contentSize;
        } catch (e) {
          fromError(e);
          unknown = true;
          continue;
        }
        if (usize === undefined && i === sizes.length - 1 && !unknown) usize = length - total;
        if (usize === undefined) {
          // No content-size field in a frame of several LZ4 frames (no known writer does this):
          // only decoding tells the size. Rare, so the synchronous decoder is acceptable here.
          try {
            total += decodeLz4FrameUnsized(chunk, MAX_LZ4_CHUNK_LEN, path, off).length;
          } catch (e) {
            fromError(e);
            unknown = true;
          }
          continue;
        }
        if (usize > MAX_LZ4_CHUNK_LEN || usize > length) {
          problem(off, `corrupt LZ4 frame: content size ${usize} exceeds ${usize > length ? `the data frame's ${length} bytes` : 'the 256 MiB limit'}`);
          unknown = true;
          continue;
        }
        total += usize;
        try {
          if (decodedScratch.length < usize) decodedScratch = Buffer.allocUnsafe(usize);
          decodeLz4Frame(chunk, usize, path, off, decodedScratch); // every checksum present, the exact size
        } catch (e) {
          fromError(e);
        }
      }
      if (!unknown && total !== length) {
        problem(headerAt, `corrupt compressed data: LZ4 frames decode to ${total} bytes, the data frame has ${length}`);
      }
    };

    const walk = async (): Promise<void> => {
      // §9 checks 1, 4, 5: the meta frame
      if (S < HEADER_LEN) throw fmt(0, `not a sparse stream: file has only ${S} bytes`);
      const mh = parseHeader(await r.take(HEADER_LEN), path, 0);
      if (mh.kind !== 'meta' || mh.start !== 0) throw fmt(0, 'not a sparse stream: the first frame is not "meta" with start 0');
      const n = mh.length;
      if (n > MAX_METADATA_LEN) throw fmt(22, `bad metadata: length ${n} exceeds 1 MiB`);
      if (n > S - HEADER_LEN - 2) throw fmt(22, `bad metadata: length ${n} runs past the end of the file`);
      const { metadata, compressed } = parseMetadata(await r.take(n), path, HEADER_LEN);
      result.metadata = metadata;
      result.compressed = compressed;
      if (opts.expectDev !== undefined && metadata.diskName !== opts.expectDev) {
        problem(HEADER_LEN, `metadata names disk [${metadata.diskName}] but the file name says [${opts.expectDev}]`);
      }
      const expectCrlf = async (what: string): Promise<void> => {
        const at = r.pos;
        const b = await r.take(2);
        if (b[0] !== CR || b[1] !== LF) throw fmt(at, `bad terminator: no CRLF after ${what}`);
      };
      await expectCrlf('the metadata JSON');

      // §9 checks 10, 11, 13: where the stop header must be
      let stopAt = S - HEADER_LEN;
      let trailer: TrailerEntry[] | undefined;
      if (compressed) ({ stopAt, trailer } = await readTrailer(fh, path, S, r.pos));

      // §9 checks 2, 3, 6–10, 12, 14, 16, 17: the frame walk
      const vs = metadata.virtualSize;
      const base = !metadata.incremental;
      const gaps: [number, number][] = [];
      let lastEnd = 0;
      let dataSum = 0;
      let dataCount = 0;
      for (;;) {
        const at = r.pos;
        if (at === stopAt) {
          const h = parseHeader(await r.take(HEADER_LEN), path, at);
          if (h.kind !== 'stop') {
            throw fmt(at, compressed
              ? `trailer/frames disagree: expected the stop header here, found "${h.kind}"`
              : `truncated file: expected the stop header at the end of the file, found "${h.kind}"`);
          }
          if (h.start !== 0 || h.length !== 0) problem(at, 'stop frame must have start 0 and length 0');
          break;
        }
        if (at + HEADER_LEN > stopAt) {
          throw fmt(at, compressed ? `trailer/frames disagree: frames run past the stop header position ${stopAt}` : 'truncated file: no stop frame');
        }
        const h = parseHeader(await r.take(HEADER_LEN), path, at);
        if (h.kind === 'stop') {
          throw fmt(at, compressed
            ? `trailer/frames disagree: stop frame at ${at}, the trailer places it at ${stopAt}`
            : `trailing garbage: ${S - at - HEADER_LEN} bytes after the stop frame`);
        }
        if (h.kind !== 'data' && h.kind !== 'zero') throw fmt(at, `unexpected "${h.kind}" frame`);
        const { start, length } = h;
        if (length === 0) problem(at, `frame out of range: ${h.kind} frame with length 0`);
        else if (start > vs || length > vs - start) problem(at, `frame out of range: ${start}+${length} exceeds the virtual size ${vs}`);
        if (start < lastEnd) problem(at, `unsorted/overlapping frames: start ${start} is before the end ${lastEnd} of the previous frame`);
        else if (base && start > lastEnd) gaps.push([lastEnd, start]);
        lastEnd = Math.max(lastEnd, start + length);
        if (h.kind === 'zero') continue;

        const payloadAt = r.pos;
        if (trailer) {
          const entry = trailer[dataCount];
          if (!entry) throw fmt(at, `trailer count mismatch: more data frames than the ${trailer.length} trailer elements`);
          if (entry.total > stopAt - payloadAt - 2) throw fmt(at, `trailer/frames disagree: payload of ${entry.total} bytes runs past the stop header`);
          await checkChunks(at, length, entry.sizes);
        } else {
          if (length > stopAt - payloadAt - 2) throw fmt(at, `truncated file: payload of ${length} bytes runs past the end of the file`);
          await r.pass(length);
        }
        await expectCrlf(`the payload of the data frame at ${at}`);
        dataSum += length;
        dataCount++;
      }
      if (trailer && dataCount !== trailer.length) {
        problem(stopAt + HEADER_LEN, `trailer count mismatch: ${trailer.length} trailer elements for ${dataCount} data frames`);
      }
      if (dataSum !== metadata.dataSize) {
        problem(HEADER_LEN, `size mismatch: data frames hold ${dataSum} bytes, metadata dataSize is ${metadata.dataSize}`);
      }
      if (base && lastEnd < vs) gaps.push([lastEnd, vs]);
      if (gaps.length > 0 && opts.log) {
        const [a, b] = gaps[0]!;
        opts.log.warn(
          `${path}: the frames of this full backup leave ${gaps.length} range(s) of the disk uncovered ` +
            `(first: bytes ${a} to ${b}); they read as zeros.`,
        );
      }
    };

    let readable = true;
    try {
      await walk();
    } catch (e) {
      fromError(e);
      if (!(e instanceof SavesetFormatError)) readable = false;
    }
    if (readable) {
      try {
        result.bytes = await r.drain();
        result.checksum = adler.digest();
        if (result.bytes !== S) problem(Math.min(S, result.bytes), `the file changed size while being read (${S} → ${result.bytes} bytes)`);
      } catch (e) {
        fromError(e);
      }
    }
    await r.settle();
  } finally {
    await fh.close();
  }
  problems.sort((a, b) => (a.offset ?? Number.MAX_SAFE_INTEGER) - (b.offset ?? Number.MAX_SAFE_INTEGER));
  if (unlisted > 0) problems.push({ message: `${unlisted} further problem(s) not listed` });
  return result;
}
