/**
 * Benchmark: restoring a backup chain (issue 4) — our `virtnbdrestore` against `qemu-img convert`
 * of the same chain served by our plugin, and against Debian's original `/usr/bin/virtnbdrestore`.
 *
 *   node dist/bench/restore.js [--quick] [--keep]        (npm run bench:restore)
 *
 * a. builds, under /var/tmp (removed at the end unless --keep), a chain of a 2 GiB disk holding
 *    ~1 GiB of data (`--quick`: 512 MiB / ~256 MiB): a full (data extents of 64 KiB–8 MiB, half
 *    incompressible bytes, half repeated short patterns, with holes between) and 10 incrementals
 *    (each rewriting ~4 % of the disk in random 4–512 KiB places, a fifth of them zeroed: zero
 *    frames), written with our writer (src/devtools/image-chain.ts) uncompressed and LZ4, plus a
 *    vmconfig and qcow.json; the raw image of the newest point is the reference;
 * b. measures, interleaved run by run (3 runs, medians), wall time of:
 *    - ours: `node bin/virtnbdrestore -i SET -o OUT -n -L LOG` (the real command: resolve, create,
 *      copy, fsync, rename, save the config, libvirt pool refresh);
 *    - convert: startMapping (src/map/virtnbdmap.ts, unix socket, `--no-device`, read-only) +
 *      `qemu-img convert -f raw -O qcow2 <uri> OUT` + fsync + stop;
 *    - engine (LZ4 set only, issue 13): our copier (copyChain, in-process like convert: no Node
 *      start-up) + resolve + `qemu-img create` + fsync, compared with convert of the plain set;
 *    - original: `/usr/bin/virtnbdrestore -i SET -o OUT --sequence <all files> -n` (it replays
 *      every file of the chain in turn; plain and LZ4 sets);
 *    (its forked qemu-nbd is waited for: the time ends when the image is unlocked);
 * c. checks every restored image: SHA-256 of its content (`qemu-img convert -O raw`) must equal
 *    the reference for ours and convert (exit 1 otherwise). The original skips zero frames, so
 *    its image is expected to differ; that is reported, not fatal.
 *
 * Ratios are medians of per-run ratios (speed of ours / speed of the other).
 * Targets: ours ≥ 0.9× convert, ≥ 3× the original. A missed target prints "below target".
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { fsyncFile } from '../src/util/atomic-file.js';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { execa } from 'execa';
import { writeImageFile } from '../src/devtools/image-chain.js';
import { chainFromDir, resolveSelected } from '../src/chain/index.js';
import { dataBytes } from '../src/chain/extent-map.js';
import { startMapping } from '../src/map/virtnbdmap.js';
import { copyChain } from '../src/restore/copy-chain.js';
import { packageRoot } from '../src/util/package-root.js';
import { contentSha, median, sha256File, table } from './bench-util.js';
import { applyPieces, createImage, fullPieces, incPieces, type Piece } from './bench-data.js';

const argv = process.argv.slice(2);
const QUICK = argv.includes('--quick');
const KEEP = argv.includes('--keep');
for (const a of argv) {
  if (a !== '--quick' && a !== '--keep') {
    process.stderr.write('usage: node dist/bench/restore.js [--quick] [--keep]\n');
    process.exit(2);
  }
}

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const SIZE = QUICK ? 512 * MiB : 2 * GiB;
const RUNS = 3;
const INCS = 10;
const INC_SHARE = 0.04;
const DEV = 'vda';
const ORIGINAL = '/usr/bin/virtnbdrestore';

const fmt = (n: number, d = 0): string => n.toFixed(d);
const human = (n: number): string => (n >= GiB ? `${fmt(n / GiB, 2)} GiB` : `${fmt(n / MiB)} MiB`);

function log(msg: string): void {
  process.stderr.write(`[restore] ${msg}\n`);
}

// ---------------------------------------------------------------- test data

const vmconfig = (): string =>
  `<domain type='kvm'>\n  <name>virtnbd-bench-restore</name>\n  <memory unit='KiB'>65536</memory>\n` +
  `  <os><type arch='x86_64'>hvm</type></os>\n  <devices>\n    <disk type='file' device='disk'>\n` +
  `      <driver name='qemu' type='qcow2'/>\n      <source file='/var/lib/libvirt/images/${DEV}.qcow2'/>\n` +
  `      <target dev='${DEV}' bus='virtio'/>\n    </disk>\n  </devices>\n</domain>\n`;

const qcowJson = (): string =>
  JSON.stringify({ 'virtual-size': SIZE, filename: `/var/lib/libvirt/images/${DEV}.qcow2`, format: 'qcow2', 'cluster-size': 65536, 'format-specific': { type: 'qcow2', data: { compat: '1.1', 'lazy-refcounts': false, 'compression-type': 'zlib' } } });

interface Sets {
  plain: string;
  lz4: string;
  /** Data file names, oldest first. */
  names: string[];
  reference: string;
  referenceSha: string;
}

/** Full + INCS incrementals, plain and LZ4, from two rolling raw images; the newest is the reference. */
async function buildSets(scratch: string): Promise<Sets> {
  const plain = join(scratch, 'set-plain');
  const lz4 = join(scratch, 'set-lz4');
  mkdirSync(plain);
  mkdirSync(lz4);
  const mods: Piece[][] = [fullPieces(SIZE, 4242)];
  for (let p = 1; p <= INCS; p++) mods.push(incPieces(SIZE, 4242 + p, INC_SHARE));
  const cur = join(scratch, 'cur.raw');
  const prev = join(scratch, 'prev.raw');
  createImage(cur, SIZE, mods[0]!);
  createImage(prev, SIZE, mods[0]!);
  const names: string[] = [];
  for (let p = 0; p <= INCS; p++) {
    if (p > 0) applyPieces(cur, mods[p]!); // cur = point p, prev = point p-1
    const name = p === 0 ? `${DEV}.full.data` : `${DEV}.inc.virtnbdbackup.${p}.data`;
    for (const [dir, compress] of [[plain, false], [lz4, 2]] as const) {
      await writeImageFile({
        image: cur,
        previous: p === 0 ? undefined : prev,
        out: join(dir, name),
        dev: DEV,
        level: p === 0 ? 'full' : 'inc',
        checkpointName: `virtnbdbackup.${p}`,
        parentCheckpoint: p === 0 ? '' : `virtnbdbackup.${p - 1}`,
        compress,
      });
    }
    names.push(name);
    if (p > 0 && p < INCS) applyPieces(prev, mods[p]!);
  }
  for (const dir of [plain, lz4]) {
    writeFileSync(join(dir, `vmconfig.virtnbdbackup.${INCS}.xml`), vmconfig());
    writeFileSync(join(dir, `${DEV}.virtnbdbackup.${INCS}.qcow.json`), qcowJson());
  }
  rmSync(prev);
  return { plain, lz4, names, reference: cur, referenceSha: await sha256File(cur) };
}

// ---------------------------------------------------------------- measuring


interface Variant {
  name: string;
  /** Restores into `out` (an empty directory); returns the restored image. */
  run(out: string, tag: string): Promise<string>;
  /** A differing image is an error (false: only reported). */
  mustMatch: boolean;
}

function ours(set: string): Variant['run'] {
  const bin = join(packageRoot(), 'bin', 'virtnbdrestore');
  return async (out, tag) => {
    const r = await execa(process.execPath, [bin, '-i', set, '-o', out, '-n', '-L', join(out, `${tag}.log`)], { reject: false, all: true });
    if (r.exitCode !== 0) throw new Error(`virtnbdrestore exited ${r.exitCode}:\n${r.all}`);
    return join(out, `${DEV}.qcow2`);
  };
}

function convert(set: string, scratch: string): Variant['run'] {
  return async (out, tag) => {
    const quiet = { debug: (): void => undefined, info: (): void => undefined, warn: (): void => undefined, error: (m: string): void => log(m) };
    const m = await startMapping(
      {
        input: set, disk: DEV, device: '/dev/nbd0', exportName: DEV, listenAddress: '127.0.0.1', listenPort: 10809,
        socket: join(scratch, `map-${tag}.sock`), readonly: true, hexdump: false, verbose: false, json: false, workers: 2, noDevice: true,
      },
      quiet,
    );
    const image = join(out, `${DEV}.qcow2`);
    try {
      const r = await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', m.info.uri, image], { reject: false, all: true });
      if (r.exitCode !== 0) throw new Error(`qemu-img convert exited ${r.exitCode}:\n${r.all}`);
      await fsyncFile(image);
    } finally {
      await m.close();
    }
    return image;
  };
}

/** Our copy engine in-process (copyChain, `own`): like convert, without Node start-up (issue 13). */
function engine(set: string): Variant['run'] {
  return async (out) => {
    const { map } = resolveSelected(chainFromDir(set, { disk: DEV }));
    const image = join(out, `${DEV}.qcow2`);
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', image, String(map.size)]);
    await copyChain({ map, target: { path: image, format: 'qcow2' } });
    await fsyncFile(image);
    return image;
  };
}

function original(set: string, names: string[]): Variant['run'] {
  return async (out, tag) => {
    const r = await execa(
      ORIGINAL,
      ['-i', set, '-o', out, '--sequence', names.join(','), '-n', '-f', join(out, 'nbd.sock'), '-L', join(out, `${tag}.log`)],
      { reject: false, all: true },
    );
    if (r.exitCode !== 0) throw new Error(`${ORIGINAL} exited ${r.exitCode}:\n${r.all}`);
    // Its forked qemu-nbd ends a moment after the command: the image is ready once it is unlocked.
    const image = join(out, DEV);
    for (let i = 0; (await execa('qemu-img', ['info', image], { reject: false })).exitCode !== 0; i++) {
      if (i > 500) throw new Error(`${image} still locked 10 s after ${ORIGINAL} ended`);
      await new Promise((res) => setTimeout(res, 20));
    }
    return image;
  };
}

interface Sample {
  seconds: number;
  match: boolean;
}

async function main(): Promise<void> {
  const scratch = mkdtempSync('/var/tmp/virtnbd-bench-restore-');
  const onSignal = (): void => {
    if (!KEEP) rmSync(scratch, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let failed = false;
  try {
    const started = new Date();
    const loadStart = loadavg()[0]!;
    log(`scratch ${scratch}; disk ${human(SIZE)}, full + ${INCS} inc, ${RUNS} runs${QUICK ? ' (quick)' : ''}`);
    let t = performance.now();
    const sets = await buildSets(scratch);
    await execa('sync');
    log(`sets written in ${fmt((performance.now() - t) / 1000, 1)} s`);
    const resolved = dataBytes(resolveSelected(chainFromDir(sets.plain, { disk: DEV })).map);
    const setBytes = (dir: string): number => readdirSync(dir).filter((n) => n.endsWith('.data')).reduce((n, f) => n + statSync(join(dir, f)).size, 0);
    const fullBytes = (dir: string): number => statSync(join(dir, sets.names[0]!)).size;

    const variants: Variant[] = [
      { name: 'ours, plain', run: ours(sets.plain), mustMatch: true },
      { name: 'convert, plain', run: convert(sets.plain, scratch), mustMatch: true },
      { name: 'original, plain', run: original(sets.plain, sets.names), mustMatch: false },
      { name: 'ours, LZ4', run: ours(sets.lz4), mustMatch: true },
      { name: 'convert, LZ4', run: convert(sets.lz4, scratch), mustMatch: true },
      { name: 'original, LZ4', run: original(sets.lz4, sets.names), mustMatch: false },
      { name: 'engine, LZ4', run: engine(sets.lz4), mustMatch: true },
    ];
    const samples = new Map<string, Sample[]>(variants.map((v) => [v.name, []]));
    const startup: number[] = [];
    t = performance.now();
    for (let run = 0; run < RUNS; run++) {
      // The command's fixed cost (Node start-up and module loading), which convert (in-process here) does not pay.
      const t1 = performance.now();
      await execa(process.execPath, [join(packageRoot(), 'bin', 'virtnbdrestore'), '--version']);
      startup.push((performance.now() - t1) / 1000);
      for (let k = 0; k < variants.length; k++) {
        const v = variants[(k + run) % variants.length]!;
        const out = join(scratch, `out-${run}-${k}`);
        mkdirSync(out);
        const t0 = performance.now();
        const image = await v.run(out, `r${run}`);
        const seconds = (performance.now() - t0) / 1000;
        const sha = await contentSha(image, scratch);
        const match = sha === sets.referenceSha;
        if (!match && v.mustMatch) {
          process.stderr.write(`\n*** ${v.name}: restored image ${image} has SHA-256 ${sha}, the reference ${sets.referenceSha} ***\n\n`);
          failed = true;
        }
        samples.get(v.name)!.push({ seconds, match });
        log(`run ${run + 1}/${RUNS} ${v.name}: ${fmt(seconds, 2)} s${match ? '' : ' (content differs)'}`);
        if (!KEEP || match) rmSync(out, { recursive: true, force: true });
      }
    }
    log(`measured in ${fmt((performance.now() - t) / 1000, 1)} s`);

    const secs = (n: string): number[] => samples.get(n)!.map((s) => s.seconds);
    const ratio = (ourName: string, other: string): { med: number; min: number; max: number } => {
      const r = secs(ourName).map((s, i) => secs(other)[i]! / s);
      return { med: median(r), min: Math.min(...r), max: Math.max(...r) };
    };
    const rows = variants.map((v) => {
      const s = secs(v.name);
      const kind = v.name.split(',')[1]!.trim();
      const oursName = `ours, ${kind}`;
      let vs = '';
      let verdict = '';
      if (!v.name.startsWith('ours') && !v.name.startsWith('engine')) {
        const r = ratio(oursName, v.name);
        const target = v.name.startsWith('convert') ? 0.9 : 3;
        vs = `${fmt(r.med, 2)}× (${fmt(r.min, 2)}–${fmt(r.max, 2)})`;
        verdict = r.med >= target ? `ok (≥ ${target}×)` : `below target ${target}×`;
      }
      const m = samples.get(v.name)!;
      const content = m.every((x) => x.match) ? 'identical' : m.some((x) => x.match) ? 'differs sometimes' : 'differs';
      return [v.name, `${fmt(median(s), 2)} s`, `${fmt(Math.min(...s), 2)}–${fmt(Math.max(...s), 2)} s`, `${fmt(resolved / 1e6 / median(s))} MB/s`, vs, verdict, content];
    });
    const qemuVersion = (await execa('qemu-img', ['--version'])).stdout.split('\n')[0]!.trim();
    process.stdout.write(
      [
        `restore benchmark, ${started.toISOString()}${QUICK ? ' (--quick)' : ''}; ${RUNS} runs, medians; ${qemuVersion}, node ${process.version}`,
        `disk ${human(SIZE)} virtual, ${human(resolved)} of resolved data (data/s below = this / wall); full + ${INCS} inc: ` +
          `plain ${human(setBytes(sets.plain))} (full ${human(fullBytes(sets.plain))}), LZ4 ${human(setBytes(sets.lz4))} (full ${human(fullBytes(sets.lz4))})`,
        `load average (1 min) ${fmt(loadStart, 2)} at the start, ${fmt(loadavg()[0]!, 2)} at the end; ` +
          `\`node bin/virtnbdrestore --version\` takes ${fmt(median(startup), 2)} s (start-up included in "ours")`,
        '',
        table(['restore of full + 10 inc', 'wall', 'runs', 'data/s', 'ours is … faster', 'target', 'content'], rows),
        (() => {
          // issue 13: restoring an LZ4 chain at least as fast as converting the same chain served uncompressed
          // (command: includes Node start-up, which convert, run in-process here, does not pay; engine: copyChain in-process)
          const r = ratio('ours, LZ4', 'convert, plain');
          const e = ratio('engine, LZ4', 'convert, plain');
          return (
            `ours, LZ4 vs convert, plain (the same chain uncompressed): command ${fmt(r.med, 2)}× (${fmt(r.min, 2)}–${fmt(r.max, 2)}), ` +
            `engine ${fmt(e.med, 2)}× (${fmt(e.min, 2)}–${fmt(e.max, 2)}) — ${e.med >= 1 ? 'engine ok (≥ 1.0×)' : 'below target 1.0×'}`
          );
        })(),
        '',
        'ours: node bin/virtnbdrestore -i SET -o OUT; convert: startMapping (--no-device) + qemu-img convert -O qcow2 + fsync;',
        `original: ${ORIGINAL} --sequence <all files> (replays every file; skips zero frames, so its image differs).`,
        '',
      ].join('\n'),
    );
  } finally {
    if (KEEP) log(`kept ${scratch}`);
    else rmSync(scratch, { recursive: true, force: true });
  }
  if (failed) {
    process.stderr.write('restore: a restored image differs from the reference (see above)\n');
    process.exit(1);
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`restore: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
