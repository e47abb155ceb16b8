/**
 * A small coverage-guided fuzzer for the TypeScript parsers (why not Jazzer.js: fuzz/README.md).
 *
 * Coverage comes from V8 itself: precise block coverage through an in-process inspector session
 * (`Profiler.startPreciseCoverage`, detailed, with call counts), taken after every execution. A
 * feature is one reported block range of the product's own code (dist/src, and the XML parser)
 * with its count in one of the AFL-style buckets 0, 1, 2, 3, 4–7, 8–15, 16–31, 32–127, 128+ (V8
 * reports the blocks whose count differs from the enclosing one). An input that reaches a new feature
 * joins the corpus; inputs are mutated libFuzzer-style (bit flips, interesting integers, hex and
 * decimal digits, inserts, erases, copies, splices with other corpus entries, dictionary tokens).
 *
 * A finding is: an exception the target does not declare as a rejection (a crash), one execution
 * slower than `slowMs` (a hang; a watchdog thread kills the process after `hangMs` without
 * progress, saving the input first), or one allocation through Buffer larger than the allocation
 * budget (64 MiB + 512 bytes per input byte: the caps of FORMAT.md, fuzz/README.md). Each finding's
 * input is written to `findingsDir`.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { prng } from '../src/devtools/prng.js';

export interface FuzzTarget {
  name: string;
  /** What the target parses (for the report). */
  what: string;
  /** Seed inputs (small). */
  seeds(): Buffer[];
  /** Tokens the mutator may insert or overwrite with. */
  dict?: string[];
  maxLen: number;
  /** One execution; throws only for findings or for declared rejections. */
  run(data: Buffer): void | Promise<void>;
  /** True for an exception that is a proper rejection (names file and offset, checked by the target). */
  isRejection(e: unknown): boolean;
}

export interface FuzzOptions {
  /** Wall-clock budget for this target. */
  seconds: number;
  seed: number;
  /** Where new corpus entries are written (and read back from at start); none: in memory only. */
  corpusDir?: string;
  findingsDir: string;
  slowMs?: number;
  hangMs?: number;
  /** Stop as soon as this many findings were made (default: run for `seconds`). */
  stopAfterFindings?: number;
  /** Coverage of scripts whose URL contains one of these (default: the product's dist/src/ and its XML parser). */
  coverageFilter?: string[];
}

export interface Finding {
  kind: 'crash' | 'slow' | 'allocation';
  message: string;
  file: string;
}

export interface FuzzStats {
  target: string;
  executions: number;
  seconds: number;
  corpus: number;
  seeds: number;
  features: number;
  rejections: number;
  accepted: number;
  maxAllocation: number;
  findings: Finding[];
}

const BUCKETS = [0, 1, 2, 3, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5];
function bucket(n: number): number {
  if (n < 16) return BUCKETS[n]!;
  if (n < 32) return 6;
  if (n < 128) return 7;
  return 8;
}

interface CoverageRange {
  startOffset: number;
  endOffset: number;
  count: number;
}
interface ScriptCoverage {
  scriptId: string;
  url: string;
  functions: Array<{ ranges: CoverageRange[] }>;
}

/** V8 precise coverage, read synchronously after each execution (counters are reset by each take). */
class Coverage {
  private readonly session = new Session();

  constructor(private readonly filter: readonly string[]) {
    this.session.connect();
    this.post('Profiler.enable');
    this.post('Profiler.startPreciseCoverage', { callCount: true, detailed: true });
  }

  private post(method: string, params?: object): unknown {
    let result: unknown;
    let error: Error | null = null;
    let done = false;
    this.session.post(method, params ?? {}, (e, r) => {
      error = e;
      result = r;
      done = true;
    });
    if (!done) throw new Error(`inspector: ${method} did not answer synchronously`);
    if (error) throw error;
    return result;
  }

  /** Feature keys reached since the last call. */
  take(): string[] {
    const r = this.post('Profiler.takePreciseCoverage') as { result: ScriptCoverage[] };
    const out: string[] = [];
    for (const s of r.result) {
      if (!this.filter.some((f) => s.url.includes(f))) continue;
      for (const f of s.functions) {
        // V8 reports a function's range and, inside it, only the blocks whose count differs from
        // their parent's (a block not reached shows as a range with count 0): the set of ranges
        // with their counts is the path signature, zero ranges included.
        if (f.ranges[0]!.count === 0) continue;
        for (const range of f.ranges) out.push(`${s.url}:${range.startOffset}:${range.endOffset}:${bucket(range.count)}`);
      }
    }
    return out;
  }

  close(): void {
    this.post('Profiler.stopPreciseCoverage');
    this.session.disconnect();
  }
}

const INTERESTING_8 = [0, 1, 0x7f, 0x80, 0xff, 0x20, 0x0d, 0x0a, 0x30, 0x39, 0x61, 0x66];
const INTERESTING_32 = [0, 1, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff, 0x184d2204];

/** libFuzzer-style mutations of one input. */
class Mutator {
  constructor(
    private readonly rnd: () => number,
    private readonly dict: Buffer[],
    private readonly maxLen: number,
  ) {}

  private int(n: number): number {
    return Math.floor(this.rnd() * n);
  }

  mutate(input: Buffer, corpus: readonly Buffer[]): Buffer {
    let b: Buffer = Buffer.from(input);
    const rounds = 1 + this.int(4);
    for (let i = 0; i < rounds; i++) b = this.once(b, corpus);
    return b.length > this.maxLen ? b.subarray(0, this.maxLen) : b;
  }

  private once(b: Buffer, corpus: readonly Buffer[]): Buffer {
    const at = (): number => this.int(Math.max(1, b.length));
    switch (this.int(12)) {
      case 0: // bit flip
        if (b.length) b[at()] ^= 1 << this.int(8);
        return b;
      case 1: // random byte
        if (b.length) b[at()] = this.int(256);
        return b;
      case 2: // interesting byte
        if (b.length) b[at()] = INTERESTING_8[this.int(INTERESTING_8.length)]!;
        return b;
      case 3: {
        // interesting 32-bit value, either endianness
        if (b.length < 4) return b;
        const p = this.int(b.length - 3);
        const v = INTERESTING_32[this.int(INTERESTING_32.length)]! >>> 0;
        if (this.rnd() < 0.5) b.writeUInt32LE(v, p);
        else b.writeUInt32BE(v, p);
        return b;
      }
      case 4: {
        // a digit (hex in headers, decimal in JSON)
        if (!b.length) return b;
        b[at()] = '0123456789abcdef'.charCodeAt(this.int(16));
        return b;
      }
      case 5: {
        // erase a range
        if (b.length < 2) return b;
        const p = at();
        const n = 1 + this.int(Math.min(64, b.length - p));
        return Buffer.concat([b.subarray(0, p), b.subarray(p + n)]);
      }
      case 6: {
        // insert random bytes
        const p = this.int(b.length + 1);
        const ins = Buffer.alloc(1 + this.int(8));
        for (let i = 0; i < ins.length; i++) ins[i] = this.int(256);
        return Buffer.concat([b.subarray(0, p), ins, b.subarray(p)]);
      }
      case 7: {
        // duplicate/copy a chunk inside the input
        if (b.length < 2) return b;
        const from = at();
        const n = 1 + this.int(Math.min(256, b.length - from));
        const to = this.int(b.length + 1);
        return Buffer.concat([b.subarray(0, to), b.subarray(from, from + n), b.subarray(to)]);
      }
      case 8: {
        // splice with another corpus entry
        const o = corpus[this.int(corpus.length)];
        if (!o || !o.length) return b;
        const cut = this.int(b.length + 1);
        const from = this.int(o.length);
        return Buffer.concat([b.subarray(0, cut), o.subarray(from)]);
      }
      case 9:
      case 10: {
        // dictionary token: insert or overwrite
        if (!this.dict.length) return b;
        const t = this.dict[this.int(this.dict.length)]!;
        const p = this.int(b.length + 1);
        if (this.rnd() < 0.5) return Buffer.concat([b.subarray(0, p), t, b.subarray(p)]);
        const c = Buffer.from(b);
        t.copy(c, p);
        return p + t.length > b.length ? Buffer.concat([c, t.subarray(b.length - p)]) : c;
      }
      default: {
        // truncate
        if (!b.length) return b;
        return b.subarray(0, at());
      }
    }
  }
}

/** The watchdog: a thread that saves the current input and kills the process when an execution hangs. */
function startWatchdog(shared: SharedArrayBuffer, file: string, hangMs: number): Worker {
  const src = `
    const { workerData } = require('node:worker_threads');
    const { writeFileSync } = require('node:fs');
    const meta = new Int32Array(workerData.shared, 0, 4);
    const bytes = new Uint8Array(workerData.shared, 16);
    let last = -1, since = Date.now();
    setInterval(() => {
      const n = Atomics.load(meta, 0);
      if (n !== last || Atomics.load(meta, 2) === 0) { last = n; since = Date.now(); return; }
      if (Date.now() - since > workerData.hangMs) {
        const len = Atomics.load(meta, 1);
        writeFileSync(workerData.file, bytes.slice(0, len));
        process.stderr.write('fuzz: HANG: an execution ran for more than ' + workerData.hangMs + ' ms; input saved in ' + workerData.file + '\\n');
        process.kill(process.pid, 'SIGKILL');
      }
    }, 200).unref();
  `;
  const w = new Worker(src, { eval: true, workerData: { shared, file, hangMs } });
  w.unref();
  return w;
}

/** Buffer allocations above the budget are recorded (the largest one is kept). */
class AllocationWatch {
  largest = 0;
  private readonly orig = { alloc: Buffer.alloc, allocUnsafe: Buffer.allocUnsafe, allocUnsafeSlow: Buffer.allocUnsafeSlow };

  install(): void {
    const track = (n: number): void => {
      if (typeof n === 'number' && n > this.largest) this.largest = n;
    };
    const o = this.orig;
    Buffer.alloc = ((size: number, ...rest: unknown[]) => {
      track(size);
      return (o.alloc as (...a: unknown[]) => Buffer)(size, ...rest);
    }) as typeof Buffer.alloc;
    Buffer.allocUnsafe = ((size: number) => {
      track(size);
      return o.allocUnsafe(size);
    }) as typeof Buffer.allocUnsafe;
    Buffer.allocUnsafeSlow = ((size: number) => {
      track(size);
      return o.allocUnsafeSlow(size);
    }) as typeof Buffer.allocUnsafeSlow;
  }

  uninstall(): void {
    Buffer.alloc = this.orig.alloc;
    Buffer.allocUnsafe = this.orig.allocUnsafe;
    Buffer.allocUnsafeSlow = this.orig.allocUnsafeSlow;
  }
}

/** The allocation budget for one input of `len` bytes (fuzz/README.md). */
export const allocationBudget = (len: number): number => 64 * 1024 * 1024 + 512 * len;

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex').slice(0, 16);

/** Fuzz one target for `opts.seconds`. */
export async function fuzz(target: FuzzTarget, opts: FuzzOptions): Promise<FuzzStats> {
  const rnd = prng(opts.seed);
  const slowMs = opts.slowMs ?? 2000;
  const hangMs = opts.hangMs ?? 10_000;
  mkdirSync(opts.findingsDir, { recursive: true });
  if (opts.corpusDir) mkdirSync(opts.corpusDir, { recursive: true });

  const shared = new SharedArrayBuffer(16 + target.maxLen);
  const meta = new Int32Array(shared, 0, 4);
  const bytes = new Uint8Array(shared, 16);
  const watchdog = startWatchdog(shared, join(opts.findingsDir, `${target.name}-hang.bin`), hangMs);

  const coverage = new Coverage(opts.coverageFilter ?? ['/dist/src/', '/node_modules/fast-xml-parser/']);
  const allocs = new AllocationWatch();
  const features = new Set<string>();
  const corpus: Buffer[] = [];
  const findings: Finding[] = [];
  const seenFinding = new Set<string>();
  const stats: FuzzStats = {
    target: target.name,
    executions: 0,
    seconds: 0,
    corpus: 0,
    seeds: 0,
    features: 0,
    rejections: 0,
    accepted: 0,
    maxAllocation: 0,
    findings,
  };

  const finding = (kind: Finding['kind'], message: string, input: Buffer): void => {
    // one finding per kind and place: the error's name and the first stack frame (not its message, which may quote the input)
    const lines = message.split('\n');
    const where = lines.find((l) => l.trimStart().startsWith('at ')) ?? lines[0]!.replace(/[0-9]+/g, 'N');
    const key = `${kind}:${lines[0]!.split(':')[0]}:${where}`;
    if (seenFinding.has(key)) return;
    seenFinding.add(key);
    const file = join(opts.findingsDir, `${target.name}-${kind}-${sha(input)}.bin`);
    writeFileSync(file, input);
    findings.push({ kind, message, file });
  };

  /** Run one input; true when it reached a new feature. */
  const execute = async (input: Buffer): Promise<boolean> => {
    const data = input.length > target.maxLen ? input.subarray(0, target.maxLen) : input;
    bytes.set(data);
    Atomics.store(meta, 1, data.length);
    Atomics.store(meta, 2, 1);
    allocs.largest = 0;
    const t0 = performance.now();
    try {
      await target.run(data);
      stats.accepted++;
    } catch (e) {
      if (target.isRejection(e)) stats.rejections++;
      else finding('crash', e instanceof Error ? `${e.name}: ${e.message}\n${e.stack ?? ''}` : String(e), data);
    }
    const ms = performance.now() - t0;
    Atomics.store(meta, 2, 0);
    Atomics.add(meta, 0, 1);
    stats.executions++;
    if (ms > slowMs) finding('slow', `one execution took ${Math.round(ms)} ms (limit ${slowMs} ms)`, data);
    if (allocs.largest > stats.maxAllocation) stats.maxAllocation = allocs.largest;
    if (allocs.largest > allocationBudget(data.length)) {
      finding('allocation', `allocated ${allocs.largest} bytes for a ${data.length}-byte input (budget ${allocationBudget(data.length)})`, data);
    }
    let fresh = false;
    for (const f of coverage.take()) {
      if (!features.has(f)) {
        features.add(f);
        fresh = true;
      }
    }
    return fresh;
  };

  allocs.install();
  const start = performance.now();
  try {
    const initial = target.seeds();
    stats.seeds = initial.length;
    if (opts.corpusDir) {
      for (const name of readdirSync(opts.corpusDir).sort()) initial.push(readFileSync(join(opts.corpusDir, name)));
    }
    coverage.take(); // drop what loading did
    for (const s of initial) {
      if (await execute(s)) corpus.push(s);
    }
    if (corpus.length === 0) corpus.push(initial[0] ?? Buffer.alloc(0));
    const mutator = new Mutator(rnd, (target.dict ?? []).map((t) => Buffer.from(t, 'latin1')), target.maxLen);
    const deadline = start + opts.seconds * 1000;
    while (performance.now() < deadline && findings.length < (opts.stopAfterFindings ?? Infinity)) {
      // prefer recent entries a little (they opened new paths)
      const i = rnd() < 0.3 ? corpus.length - 1 - Math.floor(rnd() * Math.min(8, corpus.length)) : Math.floor(rnd() * corpus.length);
      const input = mutator.mutate(corpus[i]!, corpus);
      if (await execute(input)) {
        corpus.push(input);
        if (opts.corpusDir) writeFileSync(join(opts.corpusDir, sha(input)), input);
      }
    }
  } finally {
    allocs.uninstall();
    coverage.close();
    await watchdog.terminate();
  }
  stats.seconds = Math.round((performance.now() - start) / 100) / 10;
  stats.corpus = corpus.length;
  stats.features = features.size;
  return stats;
}
