/**
 * "The original reads ours": chains written by our writer (src/devtools/image-chain.ts, the same
 * SavesetWriter that backup uses) are restored by the original virtnbdbackup's own
 * `virtnbdrestore --sequence` (Debian package, /usr/bin/virtnbdrestore), and every restored point
 * is byte-identical to the raw image it was written from — uncompressed and LZ4-compressed,
 * including a data frame above one 32 MiB LZ4 chunk (the trailer's `{total: [sizes]}` form).
 *
 * The images never turn data into zeros: the original's restore skips zero frames, so a range
 * that was data and is zeroed later keeps its stale bytes there (README "Compatibility notes").
 *
 * Needs libvirtd (the original connects to it even for --sequence; scripts/test.sh starts it),
 * qemu-img and qemu-nbd.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { writeImageChain, type ChainPoint } from '../../src/devtools/image-chain.js';
import { indexSaveset, readSavesetMetadata } from '../../src/saveset/reader.js';
import { LZ4_CHUNK } from '../../src/saveset/types.js';
import { prng, randInt } from '../../src/devtools/prng.js';

const ORIGINAL = '/usr/bin/virtnbdrestore';
const HAVE_ORIGINAL = existsSync(ORIGINAL);
if (!HAVE_ORIGINAL) {
  // Visible in the output: the suite below is reported as skipped, not as passed.
  // eslint-disable-next-line no-console
  console.warn(`original-compat: SKIPPED — ${ORIGINAL} is not installed (Debian package virtnbdbackup)`);
}
const describeOriginal = HAVE_ORIGINAL ? describe : describe.skip;

const MiB = 1024 * 1024;
const SIZE = 48 * MiB;
const DEV = 'vda';
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Fill [start, start+len) with non-zero-ish data: random bytes or a repeated pattern (compressible). */
function paint(img: Buffer, r: () => number, start: number, len: number, compressible: boolean): void {
  if (compressible) {
    const pat = Buffer.from(`virtnbd ${start.toString(16)} ${randInt(r, 0, 1e9)} `, 'latin1');
    for (let o = 0; o < len; o += pat.length) pat.copy(img, start + o, 0, Math.min(pat.length, len - o));
  } else {
    for (let o = 0; o < len; o++) img[start + o] = (r() * 255 + 1) | 0; // 1..255: never a zero run
  }
}

/**
 * Four points: full (random extents with holes, one data run of 32 MiB + 192 KiB), inc1 (data
 * rewritten in place and new data in holes), a diff on top of inc1, inc2 (relative to inc1, so it
 * includes the diff's changes). Data only ever replaces data or holes, never turns into zeros.
 */
function buildImages(dir: string): { points: ChainPoint[]; shas: string[] } {
  const r = prng(20240607);
  const img = Buffer.alloc(SIZE);
  // One long run crossing the 32 MiB LZ4 chunk: half random, half compressible 64 KiB pieces.
  const bigStart = 2 * MiB + 4096;
  const bigLen = LZ4_CHUNK + 192 * 1024 + 512;
  for (let o = 0; o < bigLen; o += 65536) paint(img, r, bigStart + o, Math.min(65536, bigLen - o), (o >> 16) % 2 === 1);
  // Scattered small extents (unaligned) with holes between them, after the long run.
  const smalls = (n: number): void => {
    for (let i = 0; i < n; i++) {
      const len = randInt(r, 1, 96) * 4096 + randInt(r, 0, 511);
      const start = randInt(r, 0, SIZE - len - 1);
      paint(img, r, start, len, r() < 0.5);
    }
  };
  for (let i = 0; i < 12; i++) {
    const len = randInt(r, 1, 64) * 4096 + randInt(r, 0, 511);
    const start = randInt(r, bigStart + bigLen + 65536, SIZE - len - 1);
    paint(img, r, start, len, r() < 0.5);
  }
  paint(img, r, SIZE - 3000, 3000, false); // the last bytes of the disk
  const points: ChainPoint[] = [];
  const shas: string[] = [];
  const save = (level: ChainPoint['level']): void => {
    const image = join(dir, `img${points.length}.raw`);
    writeFileSync(image, img);
    points.push({ image, level });
    shas.push(sha(img));
  };
  save('full');
  smalls(10);
  save('inc');
  smalls(6);
  save('diff');
  smalls(8);
  paint(img, r, 0, 5000, true); // the first bytes, a hole until now
  save('inc');
  return { points, shas };
}

describeOriginal("the original's virtnbdrestore reads our chains", () => {
  let work: string;
  let points: ChainPoint[];
  let shas: string[];
  const sets: Record<'plain' | 'lz4', { dir: string; names: string[] }> = {} as never;

  beforeAll(async () => {
    const lib = await execa('sh', ['-c', 'pgrep -x libvirtd >/dev/null || (virtlogd -d; libvirtd -d; sleep 1)'], { reject: false });
    if (lib.exitCode !== 0) throw new Error(`cannot start libvirtd: ${lib.stderr}`);
    work = mkdtempSync('/var/tmp/virtnbd-compat-');
    ({ points, shas } = buildImages(work));
    for (const [key, compress] of [['plain', false], ['lz4', 2]] as const) {
      const dir = join(work, key);
      mkdirSync(dir);
      const names = await writeImageChain(dir, DEV, points, compress);
      // The original's restore reads the newest vmconfig*.xml even with --sequence (to copy it
      // and to look for loader/nvram files): a minimal domain is enough.
      writeFileSync(
        join(dir, 'vmconfig.virtnbdbackup.0.xml'),
        `<domain type='qemu'>\n  <name>virtnbd-compat</name>\n  <memory unit='KiB'>32768</memory>\n` +
          `  <os><type arch='x86_64'>hvm</type></os>\n  <devices>\n    <disk type='file' device='disk'>\n` +
          `      <driver name='qemu' type='qcow2'/>\n      <source file='/nonexistent/${DEV}.qcow2'/>\n` +
          `      <target dev='${DEV}' bus='virtio'/>\n    </disk>\n  </devices>\n</domain>\n`,
      );
      sets[key] = { dir, names };
    }
  }, 60_000);

  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test('the chains have the shapes under test', () => {
    expect(new Set(shas).size).toBe(points.length); // every point differs from the others
    expect(sets.plain.names).toEqual([`${DEV}.full.data`, `${DEV}.inc.virtnbdbackup.1.data`, expect.stringMatching(/^vda\.diff\.\d+\.data$/), `${DEV}.inc.virtnbdbackup.2.data`]);
    const full = indexSaveset(join(sets.lz4.dir, sets.lz4.names[0]!));
    const big = full.frames.find((f) => f.kind === 'data' && f.length > LZ4_CHUNK);
    expect(big?.kind === 'data' && big.chunks?.length).toBe(2); // trailer element {total: [c1, c2]}
    const trailer = readFileSync(join(sets.lz4.dir, sets.lz4.names[0]!), 'latin1');
    expect(trailer).toMatch(/\{"\d+": \[\d+, \d+\]\}/);
    // Every incremental changes data or holes only: no zero frame in the deltas.
    for (const n of sets.plain.names.slice(1)) {
      expect(indexSaveset(join(sets.plain.dir, n)).frames.every((f) => f.kind === 'data')).toBe(true);
    }
  });

  const cases: [string, 'plain' | 'lz4', number[]][] = [];
  for (const key of ['plain', 'lz4'] as const) {
    cases.push([`${key} full`, key, [0]], [`${key} full+inc1`, key, [0, 1]], [`${key} full+inc1+diff`, key, [0, 1, 2]], [`${key} full+inc1+inc2`, key, [0, 1, 3]]);
  }

  test.each(cases)('%s: virtnbdrestore --sequence restores the exact image', async (_label, key, idx) => {
    const { dir, names } = sets[key];
    const out = mkdtempSync(join(work, 'out-'));
    const seq = idx.map((i) => names[i]!).join(',');
    const r = await execa(
      ORIGINAL,
      ['-i', dir, '-o', join(out, 'restore'), '--sequence', seq, '-n', '-f', join(out, 'nbd.sock'), '-L', join(out, 'restore.log')],
      { reject: false, timeout: 60_000, all: true },
    );
    if (r.exitCode !== 0) throw new Error(`virtnbdrestore exited ${r.exitCode}:\n${r.all}`);
    expect(r.all).not.toMatch(/ERROR|CRITICAL|Traceback/);
    const raw = join(out, 'restored.raw');
    await execa('qemu-img', ['convert', '-O', 'raw', join(out, 'restore', DEV), raw]);
    expect(sha(readFileSync(raw))).toBe(shas[idx[idx.length - 1]!]);
    rmSync(out, { recursive: true, force: true });
  });

  test.each(['plain', 'lz4'] as const)('%s: virtnbdrestore -o dump prints our metadata', async (key) => {
    const { dir, names } = sets[key];
    const log = join(work, `dump-${key}.log`);
    const r = await execa(ORIGINAL, ['-i', dir, '-o', 'dump', '-L', log], { reject: false, timeout: 30_000 });
    if (r.exitCode !== 0) throw new Error(`virtnbdrestore -o dump exited ${r.exitCode}:\n${r.stdout}\n${r.stderr}`);
    const dumped = JSON.parse(r.stdout.slice(r.stdout.indexOf('['))) as Record<string, unknown>[];
    const ours = names.map((n) => readSavesetMetadata(join(dir, n)).raw);
    const byCheckpointAndLevel = (m: Record<string, unknown>): string => `${String(m.checkpointName)}/${String(m.incremental)}/${String(m.dataSize)}`;
    expect(dumped.map(byCheckpointAndLevel).sort()).toEqual(ours.map(byCheckpointAndLevel).sort());
    for (const m of ours) expect(dumped).toContainEqual(m);
    for (const m of dumped) {
      expect(m).toMatchObject({ diskName: DEV, virtualSize: SIZE, compressed: key === 'lz4' ? 2 : false, streamVersion: 2 });
    }
  });
});
