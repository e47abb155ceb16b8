/**
 * Property tests through the REAL plugin: random chains written by our SavesetWriter (random
 * extents of random, unaligned lengths, zero frames in incrementals, gaps, compressed and not)
 * are served by nbdkit + plugin/virtnbd-plugin.c (src/daemon/nbdkit.ts startServer) and compared
 * with an in-memory model of the disk: many random reads of random sizes and alignments in
 * parallel on one connection, the whole export, base:allocation, and (cow filter) writes.
 *
 * A failure names the seed in the test name; every chain is reproducible from it.
 * Builds nothing: the plugin .so and dist/src/worker/worker.js must exist (`npx tsc` for dist).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SavesetWriter } from '../../src/saveset/writer.js';
import { buildMetadata } from '../../src/saveset/metadata.js';
import { LZ4_CHUNK } from '../../src/saveset/types.js';
import { startServer, type Server } from '../../src/daemon/nbdkit.js';
import { NbdClient, STATE_HOLE, STATE_ZERO, type Extent } from '../../src/nbd/client.js';
import { pluginPath, workerPath } from '../../src/util/package-root.js';
import { prng, randInt } from '../../src/devtools/prng.js';
import { jest } from '@jest/globals';

// ~20 s for the whole file normally; LZ4 chunks of 32 MiB are decoded by Node workers and slow down
// a lot on a loaded machine (seen: 160 s). Correctness, not speed, is checked here.
jest.setTimeout(600_000);

const KiB = 1024;
const MiB = 1024 * KiB;
const READS = 500;
const IN_FLIGHT = 32;
const MAX_READ = 4 * MiB;

// ---------------------------------------------------------------------------------------------
// Chain plans (cheap, built at collection time so that test names can describe them)

interface PlanFrame {
  start: number;
  length: number;
  kind: 'data' | 'zero';
  /** Seed of the payload (data frames). */
  seed: number;
}

interface PlanFile {
  name: string;
  /** virtualSize recorded in this file (the disk may grow or shrink between backups). */
  size: number;
  incremental: boolean;
  checkpoint: string;
  parent: string;
  frames: PlanFrame[];
}

interface Plan {
  seed: number;
  compressed: boolean;
  readonly: boolean;
  /** Export size: the newest file's virtualSize. */
  size: number;
  files: PlanFile[];
  /** Offsets where something changes: frame edges, LZ4 chunk edges inside long frames. */
  boundaries: number[];
}

/** A frame length: often 1 byte or tiny, mostly unaligned, sometimes up to 512 KiB. */
function frameLen(r: () => number): number {
  const x = r();
  if (x < 0.1) return 1;
  if (x < 0.35) return randInt(r, 2, 700);
  if (x < 0.75) return randInt(r, 701, 70 * KiB);
  return randInt(r, 70 * KiB, 512 * KiB);
}

function makePlan(seed: number, compressed: boolean, readonly: boolean, big: boolean, resize: boolean): Plan {
  const r = prng(seed);
  // 2–6 MiB; with `resize` not a multiple of 512 either
  let size = big ? 40 * MiB + randInt(r, 0, 255) * 4096 : randInt(r, 512, 1536) * 4096 + (resize ? randInt(r, 1, 4095) : 0);
  const seedOf = () => randInt(r, 1, 0x7fffffff);

  // The full tiles the disk with data and zero frames.
  const full: PlanFrame[] = [];
  const bigAt = big ? randInt(r, 1, 3 * MiB) : -1; // one data frame of 32 MiB + some bytes
  let pos = 0;
  while (pos < size) {
    if (big && pos >= bigAt && !full.some((f) => f.length > LZ4_CHUNK)) {
      const length = Math.min(LZ4_CHUNK + randInt(r, 1, 3 * MiB), size - pos);
      full.push({ start: pos, length, kind: 'data', seed: seedOf() });
      pos += length;
      continue;
    }
    const length = Math.min(frameLen(r), size - pos);
    full.push({ start: pos, length, kind: r() < 0.6 ? 'data' : 'zero', seed: seedOf() });
    pos += length;
  }
  const files: PlanFile[] = [{ name: 'vda.full.data', size, incremental: false, checkpoint: 'virtnbdbackup.0', parent: '', frames: full }];

  // 1–30 incrementals: data frames, zero frames and gaps (older data shows through).
  // With `resize` the disk also shrinks (at least once, half-way) and grows (at least at the end,
  // past its lowest size): a range cut off by a shrink must read as zeros after a regrow.
  const nInc = resize ? randInt(r, 3, 30) : randInt(r, 1, 30);
  let low = size;
  for (let n = 1; n <= nInc; n++) {
    if (resize) {
      if (n === Math.ceil(nInc / 2)) size = Math.max(64 * KiB, size - randInt(r, 256 * KiB, MiB));
      else if (n === nInc) size = Math.max(size, low + randInt(r, 256 * KiB, MiB));
      else if (r() < 0.3) size = Math.max(64 * KiB, size + randInt(r, -1 * MiB, 1 * MiB));
      low = Math.min(low, size);
    }
    // a grown disk is often not written at once: most incrementals stay below the lowest size
    const top = resize && r() < 0.7 ? low : size;
    const frames: PlanFrame[] = [];
    const maxFrames = randInt(r, 1, 25);
    pos = r() < 0.2 ? 0 : randInt(r, 0, Math.floor(top / 4));
    while (frames.length < maxFrames && pos < top) {
      const gap = frames.length > 0 && r() < 0.3 ? 0 : randInt(r, 1, Math.floor(top / 8));
      const start = frames.length === 0 ? pos : pos + gap;
      if (start >= top) break;
      const length = Math.min(frameLen(r), top - start);
      frames.push({ start, length, kind: r() < 0.65 ? 'data' : 'zero', seed: seedOf() });
      pos = start + length;
    }
    files.push({
      name: `vda.inc.virtnbdbackup.${n}.data`,
      size,
      incremental: true,
      checkpoint: `virtnbdbackup.${n}`,
      parent: `virtnbdbackup.${n - 1}`,
      frames,
    });
  }

  // every chain has at least one zero frame in an incremental
  if (!files.some((f) => f.incremental && f.frames.some((x) => x.kind === 'zero'))) {
    const inc = files.find((f) => f.incremental && f.frames.length > 0)!;
    inc.frames[inc.frames.length - 1].kind = 'zero';
  }

  const b = new Set<number>();
  for (const f of files) {
    b.add(f.size);
    for (const fr of f.frames) {
      b.add(fr.start);
      b.add(fr.start + fr.length);
      for (let c = fr.start + LZ4_CHUNK; c < fr.start + fr.length; c += LZ4_CHUNK) b.add(c);
    }
  }
  const boundaries = [...b].filter((x) => x > 0 && x < size).sort((x, y) => x - y);
  return { seed, compressed, readonly, size, files, boundaries };
}

/** Payload of a data frame: random, a short repeated pattern (compressible), a mix, or zeros. */
function payload(seed: number, length: number): Buffer {
  const r = prng(seed);
  const buf = Buffer.alloc(length);
  const mode = r();
  if (mode < 0.05) return buf; // a data frame of zeros is still data
  const random = (from: number, to: number) => {
    let i = from;
    for (; i + 4 <= to; i += 4) buf.writeUInt32LE((r() * 0x100000000) >>> 0, i);
    for (; i < to; i++) buf[i] = (r() * 256) | 0;
  };
  const pattern = (from: number, to: number) => {
    const p = Buffer.alloc(randInt(r, 1, 64));
    for (let i = 0; i < p.length; i++) p[i] = (r() * 256) | 0;
    buf.fill(p, from, to);
  };
  if (mode < 0.45) random(0, length);
  else if (mode < 0.7) pattern(0, length);
  else {
    for (let at = 0; at < length; at += 4096) (r() < 0.5 ? random : pattern)(at, Math.min(at + 4096, length));
  }
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Writing the chain and modelling the disk

interface Model {
  bytes: Buffer;
  /** 1 = data, 0 = zero frame or never written (a hole). */
  cls: Uint8Array;
}

async function writeChain(plan: Plan, dir: string): Promise<{ paths: string[]; model: Model }> {
  const max = Math.max(...plan.files.map((f) => f.size));
  const bytes = Buffer.alloc(max);
  const cls = new Uint8Array(max);
  const paths: string[] = [];
  const date = new Date(2024, 0, 1, 12, 0, 0);
  for (const [i, f] of plan.files.entries()) {
    const dataSize = f.frames.filter((x) => x.kind === 'data').reduce((a, x) => a + x.length, 0);
    const compress = plan.compressed ? 2 : false;
    const meta = buildMetadata({
      virtualSize: f.size,
      dataSize,
      date: new Date(date.getTime() + i * 3600_000),
      diskName: 'vda',
      diskFormat: 'qcow2',
      checkpointName: f.checkpoint,
      parentCheckpoint: f.parent,
      compressed: compress,
      incremental: f.incremental,
    });
    // what lies beyond this backup's size was cut off by a shrink
    bytes.fill(0, f.size);
    cls.fill(0, f.size);
    const path = join(dir, f.name);
    const w = await SavesetWriter.create(path, meta, { compress, fsync: false });
    try {
      for (const fr of f.frames) {
        if (fr.kind === 'zero') {
          await w.zero(fr.start, fr.length);
          bytes.fill(0, fr.start, fr.start + fr.length);
          cls.fill(0, fr.start, fr.start + fr.length);
        } else {
          const p = payload(fr.seed, fr.length);
          if (fr.length > 8 * MiB) {
            // long frames in uneven pieces, as a backup streams them
            await w.beginData(fr.start, fr.length);
            for (let at = 0; at < fr.length; ) {
              const n = Math.min(fr.length - at, 5 * MiB + 12_345);
              await w.write(p.subarray(at, at + n));
              at += n;
            }
            await w.endData();
          } else {
            await w.data(fr.start, p);
          }
          p.copy(bytes, fr.start);
          cls.fill(1, fr.start, fr.start + fr.length);
        }
      }
      await w.finish();
    } catch (e) {
      await w.abort();
      throw e;
    }
    paths.push(path);
  }
  return { paths, model: { bytes: bytes.subarray(0, plan.size), cls: cls.subarray(0, plan.size) } };
}

/** The model's runs of equal class: [offset, length, hole?]. */
function modelRuns(cls: Uint8Array): [number, number, boolean][] {
  const out: [number, number, boolean][] = [];
  let start = 0;
  for (let i = 1; i <= cls.length; i++) {
    if (i === cls.length || cls[i] !== cls[start]) {
      out.push([start, i - start, cls[start] === 0]);
      start = i;
    }
  }
  return out;
}

function reportedRuns(ext: Extent[]): [number, number, boolean][] {
  const out: [number, number, boolean][] = [];
  for (const e of ext) {
    const hole = (e.flags & STATE_HOLE) !== 0;
    const last = out[out.length - 1];
    if (last && last[2] === hole && last[0] + last[1] === e.offset) last[1] += e.length;
    else out.push([e.offset, e.length, hole]);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Reads

interface Read {
  offset: number;
  length: number;
}

/** Random reads: log-uniform lengths 1 B .. 4 MiB, half straddling a boundary, some aligned. */
function randomReads(r: () => number, size: number, boundaries: number[], count: number): Read[] {
  const out: Read[] = [];
  for (let i = 0; i < count; i++) {
    let length = Math.max(1, Math.min(size, Math.floor(Math.exp(r() * Math.log(MAX_READ + 1)))));
    const a = r();
    if (a < 0.15) length = Math.max(4096, length - (length % 4096));
    else if (a < 0.25) length = Math.max(512, length - (length % 512));
    length = Math.min(length, size);
    let offset: number;
    if (r() < 0.5 && boundaries.length > 0) {
      const b = boundaries[randInt(r, 0, boundaries.length - 1)];
      offset = length === 1 ? b - randInt(r, 0, 1) : b - randInt(r, 1, length - 1); // b inside (offset, offset+length)
    } else {
      offset = randInt(r, 0, size - length);
      const c = r();
      if (c < 0.1) offset -= offset % 65536;
      else if (c < 0.2) offset -= offset % 512;
    }
    offset = Math.max(0, Math.min(offset, size - length));
    out.push({ offset, length });
  }
  return out;
}

/** Runs `fn` over `items` with at most `limit` in flight; never rejects (failures are returned). */
async function pool<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<{ item: T; error: unknown }[]> {
  const failures: { item: T; error: unknown }[] = [];
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const item = items[next++];
      try {
        await fn(item);
      } catch (error) {
        failures.push({ item, error });
      }
    }
  };
  await Promise.all(Array.from({ length: limit }, lane));
  return failures;
}

function describeMismatch(got: Buffer, want: Buffer, rd: Read): string {
  let i = 0;
  while (i < got.length && got[i] === want[i]) i++;
  return `read ${rd.offset}+${rd.length}: first difference at ${rd.offset + i} (got ${got[i]}, want ${want[i]})`;
}

/** Issues the reads with IN_FLIGHT in flight on one connection; returns the mismatch messages. */
async function checkReads(c: NbdClient, model: Buffer, reads: Read[]): Promise<string[]> {
  const bad: string[] = [];
  const failures = await pool(reads, IN_FLIGHT, async (rd) => {
    const got = await c.pread(rd.length, rd.offset);
    const want = model.subarray(rd.offset, rd.offset + rd.length);
    if (!got.equals(want)) bad.push(describeMismatch(got, want, rd));
  });
  for (const f of failures) bad.push(`read ${f.item.offset}+${f.item.length} failed: ${(f.error as Error).message}`);
  return bad;
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const fileSha = (p: string): string => sha256(readFileSync(p));

// ---------------------------------------------------------------------------------------------

let scratch = '';
const servers = new Set<Server>();

beforeAll(() => {
  const missing = [pluginPath(), workerPath()].filter((p) => !existsSync(p));
  if (missing.length > 0) throw new Error(`not built: ${missing.join(', ')} — run \`npm run build\` first`);
  scratch = mkdtempSync(join(tmpdir(), 'vnbd-property-'));
});

afterEach(async () => {
  for (const s of servers) await s.stop();
  servers.clear();
});

afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

// seed, compressed, readonly, big, resize
const CASES: [number, boolean, boolean, boolean, boolean][] = [
  [0x5eed01, false, true, false, false],
  [0x5eed02, false, false, false, false],
  [0x5eed03, false, true, false, true], // odd sizes, the disk grows and shrinks between backups
  [0x5eed0a, true, false, false, true],
  [0x5eed05, true, true, false, false],
  [0x5eed06, true, false, true, false], // a data frame > 32 MiB: several LZ4 chunks, an object trailer
];
const plans = CASES.map(([seed, compressed, ro, big, resize]) => makePlan(seed, compressed, ro, big, resize));

describe('random chains through the real plugin match the in-memory model', () => {
  const resized = (p: Plan) => {
    const n = p.files.filter((f, i) => i > 0 && f.size !== p.files[i - 1].size).length;
    return n > 0 ? `, resized ${n} time(s)` : '';
  };
  test.each(plans.map((p) => [p.seed.toString(16), p.compressed ? 'lz4' : 'raw', p.readonly ? 'read-only' : 'cow filter', p.size, p.files.length - 1, resized(p), p]))(
    'seed 0x%s: %s, %s, %d bytes, full + %d incrementals%s',
    async (_seed, _c, _m, _size, _n, _r, plan) => {
      const p = plan as Plan;
      const dir = mkdtempSync(join(scratch, `seed-${p.seed.toString(16)}-`));
      const { paths, model } = await writeChain(p, dir);
      const before = paths.map(fileSha);
      expect(p.files.some((f) => f.incremental && f.frames.some((x) => x.kind === 'zero'))).toBe(true);
      if (p.size > LZ4_CHUNK) expect(p.files[0].frames.some((f) => f.kind === 'data' && f.length > LZ4_CHUNK)).toBe(true);

      const server = await startServer({ files: paths, socket: join(dir, 'nbd.sock'), exportName: 'vda', readonly: p.readonly, workers: 2 });
      servers.add(server);
      const c = await NbdClient.connect(server.uri, { metaContexts: ['base:allocation'] });
      try {
        expect(c.size()).toBe(p.size);
        expect(c.info.readOnly).toBe(p.readonly);

        // 1. random reads, IN_FLIGHT at a time on one connection
        const r = prng(p.seed ^ 0xa5a5a5);
        const reads = randomReads(r, p.size, p.boundaries, READS);
        expect(reads.filter((x) => p.boundaries.some((b) => x.offset < b && b < x.offset + x.length)).length).toBeGreaterThan(READS / 3);
        const bad = await checkReads(c, model.bytes, reads);
        expect(bad.slice(0, 10)).toEqual([]);
        expect(c.stats().maxInFlight).toBeGreaterThan(1);

        // 2. the whole export
        expect(sha256(await c.pread(p.size, 0))).toBe(sha256(model.bytes));

        // 3. base:allocation: holes (zero frames, gaps over holes) are reported as zero; data never as a hole
        const ext = await c.blockStatusAll('base:allocation', 0, p.size);
        const want = modelRuns(model.cls);
        expect(want.some((x) => x[2])).toBe(true);
        for (const e of ext) if (e.flags & STATE_HOLE) expect(e.flags & STATE_ZERO).toBe(STATE_ZERO);
        // exactly the model's classification (nbdkit 1.32's cow filter passes unwritten blocks' extents through)
        expect(reportedRuns(ext)).toEqual(want);

        if (p.readonly) {
          await expect(c.pwrite(Buffer.alloc(512, 1), 0)).rejects.toThrow();
        } else {
          // 4. writes through the cow filter read back; the backup files are untouched
          const wr = prng(p.seed ^ 0x5a5a5a);
          const written = Buffer.from(model.bytes);
          const writes: Read[] = [];
          for (let i = 0; i < 24; i++) {
            const length = Math.min(p.size, i % 4 === 0 ? randInt(wr, 1, 600) : randInt(wr, 1, 300 * KiB));
            const nearB = p.boundaries[randInt(wr, 0, p.boundaries.length - 1)];
            const offset = Math.max(0, Math.min(p.size - length, wr() < 0.5 ? nearB - randInt(wr, 0, length) : randInt(wr, 0, p.size - length)));
            writes.push({ offset, length });
            const data = payload(randInt(wr, 1, 0x7fffffff), length);
            if (data.every((x) => x === 0)) data.fill(0x5a);
            await c.pwrite(data, offset);
            data.copy(written, offset);
          }
          await c.flush();
          const afterWrites = await checkReads(c, written, [...writes, ...randomReads(wr, p.size, p.boundaries, 150)]);
          expect(afterWrites.slice(0, 10)).toEqual([]);
          expect(sha256(await c.pread(p.size, 0))).toBe(sha256(written));
        }
      } finally {
        await c.close();
      }
      await server.stop();
      servers.delete(server);
      expect(paths.map(fileSha)).toEqual(before);
      rmSync(dir, { recursive: true, force: true });
    },
  );
});
