/**
 * Benchmark: virtnbdprune (issue 11) — merging a chain into a synthetic full — against restoring
 * the same point with Debian's original `/usr/bin/virtnbdrestore` (and with ours, for reference).
 *
 *   node dist/bench/prune.js [--quick] [--keep]
 *
 * a. builds, under /var/tmp (removed at the end unless --keep), a chain of a 1 GiB disk
 *    (`--quick`: 256 MiB) — full + 10 incrementals, the same generator as bench/restore.ts — plain
 *    and LZ4, written with our writer; the raw image of the newest point is the reference;
 * b. per run (3 runs, interleaved, medians), on a fresh copy of the set (copying not timed):
 *    - prune: `node bin/virtnbdprune -i COPY --keep-last 1` — the newest point (inc 10) becomes a
 *      full: every extent of the resolved chain read once and written into a new stream
 *      (LZ4 sets: decoded and compressed again), fsync, rename, merged files removed;
 *    - original: `/usr/bin/virtnbdrestore -i SET -o OUT --sequence <all files> -n` of that point;
 *    - ours: `node bin/virtnbdrestore -i SET -o OUT -n` of that point;
 * c. checks the pruned set once per kind: our restore of it must equal the reference (exit 1 otherwise).
 * Also: prune time for the same data spread over 1 vs 10 incrementals (cost follows the data, not
 * the number of points).
 *
 * Data rate = resolved data bytes of the point / wall time. Target: prune ≥ 1.0× the original's restore.
 */
import { cpSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { loadavg } from 'node:os';
import { execa } from 'execa';
import { writeImageFile } from '../src/devtools/image-chain.js';
import { chainFromDir, resolveSelected } from '../src/chain/index.js';
import { dataBytes } from '../src/chain/extent-map.js';
import { packageRoot } from '../src/util/package-root.js';
import { contentSha, median, sha256File, table } from './bench-util.js';
import { applyPieces, createImage, fullPieces, incPieces, type Piece } from './bench-data.js';

const argv = process.argv.slice(2);
const QUICK = argv.includes('--quick');
const KEEP = argv.includes('--keep');
for (const a of argv) {
  if (a !== '--quick' && a !== '--keep') {
    process.stderr.write('usage: node dist/bench/prune.js [--quick] [--keep]\n');
    process.exit(2);
  }
}

const MiB = 1024 * 1024;
const SIZE = QUICK ? 256 * MiB : 1024 * MiB;
const RUNS = 3;
const INCS = 10;
const DEV = 'vda';
const ORIGINAL = '/usr/bin/virtnbdrestore';
const fmt = (n: number, d = 0): string => n.toFixed(d);
/** A tag as a path component (the original's NBD URI does not take spaces). */
const safe = (tag: string): string => tag.replace(/[^A-Za-z0-9]+/g, '-');
const log = (m: string): void => void process.stderr.write(`[prune] ${m}\n`);

const vmconfig = (): string =>
  `<domain type='kvm'>\n  <name>virtnbd-bench-prune</name>\n  <memory unit='KiB'>65536</memory>\n` +
  `  <os><type arch='x86_64'>hvm</type></os>\n  <devices>\n    <disk type='file' device='disk'>\n` +
  `      <driver name='qemu' type='qcow2'/>\n      <source file='/var/lib/libvirt/images/${DEV}.qcow2'/>\n` +
  `      <target dev='${DEV}' bus='virtio'/>\n    </disk>\n  </devices>\n</domain>\n`;

/** A chain of `incs` incrementals over the pieces `mods` (mods[0] = full), plain and LZ4; returns names. */
async function buildSet(scratch: string, tag: string, mods: Piece[][]): Promise<{ plain: string; lz4: string; names: string[]; reference: string }> {
  const plain = join(scratch, `${tag}-plain`);
  const lz4 = join(scratch, `${tag}-lz4`);
  mkdirSync(plain);
  mkdirSync(lz4);
  const cur = join(scratch, `${tag}-cur.raw`);
  const prev = join(scratch, `${tag}-prev.raw`);
  createImage(cur, SIZE, mods[0]!);
  createImage(prev, SIZE, mods[0]!);
  const names: string[] = [];
  const t0 = Date.now() / 1000 - 86400;
  for (let p = 0; p < mods.length; p++) {
    if (p > 0) applyPieces(cur, mods[p]!);
    const name = p === 0 ? `${DEV}.full.data` : `${DEV}.inc.virtnbdbackup.${p}.data`;
    for (const [dir, compress] of [[plain, false], [lz4, 2]] as const) {
      await writeImageFile({
        image: cur, previous: p === 0 ? undefined : prev, out: join(dir, name), dev: DEV, level: p === 0 ? 'full' : 'inc',
        checkpointName: `virtnbdbackup.${p}`, parentCheckpoint: p === 0 ? '' : `virtnbdbackup.${p - 1}`, compress,
      });
    }
    names.push(name);
    if (p > 0 && p < mods.length - 1) applyPieces(prev, mods[p]!);
  }
  for (const dir of [plain, lz4]) {
    writeFileSync(join(dir, `vmconfig.virtnbdbackup.${mods.length - 1}.xml`), vmconfig());
    writeFileSync(join(dir, `${DEV}.cpt`), JSON.stringify(names.map((_n, i) => `virtnbdbackup.${i}`)).replace(/","/g, '", "'));
    // the original's restore orders by mtime
    names.forEach((n, i) => utimesSync(join(dir, n), t0 + i * 60, t0 + i * 60));
  }
  await execa('sync');
  rmSync(prev);
  return { plain, lz4, names, reference: cur };
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
}

async function run(cmd: string, args: string[]): Promise<void> {
  const r = await execa(cmd, args, { reject: false, all: true });
  if (r.exitCode !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.exitCode}:\n${r.all}`);
}

async function main(): Promise<void> {
  const scratch = mkdtempSync('/var/tmp/virtnbd-bench-prune-');
  const root = packageRoot();
  let failed = false;
  try {
    const started = new Date();
    const load0 = loadavg()[0]!;
    log(`scratch ${scratch}; disk ${SIZE / MiB} MiB, full + ${INCS} inc, ${RUNS} runs${QUICK ? ' (quick)' : ''}`);
    const mods: Piece[][] = [fullPieces(SIZE, 777)];
    for (let p = 1; p <= INCS; p++) mods.push(incPieces(SIZE, 777 + p, 0.04));
    const set = await buildSet(scratch, 'chain', mods);
    // The same final content as one incremental (all changes in one file): cost must not follow the file count.
    const one = await buildSet(scratch, 'one', [mods[0]!, mods.slice(1).flat()]);
    const referenceSha = await sha256File(set.reference);
    const resolved = dataBytes(resolveSelected(chainFromDir(set.plain, { disk: DEV })).map);

    const pruneRun = (src: string) => async (tag: string): Promise<void> => {
      const copy = join(scratch, `prune-${safe(tag)}`);
      cpSync(src, copy, { recursive: true, preserveTimestamps: true });
      await execa('sync');
      const s = await timed(() => run(process.execPath, [join(root, 'bin', 'virtnbdprune'), '-i', copy, '--keep-last', '1', '-q', '-L', join(scratch, 'prune.log')]));
      times.get(tag.split('#')[0]!)!.push(s);
      if (tag.endsWith('#0')) {
        // check the pruned set once: its newest point restored by ours = the reference
        const out = join(scratch, `check-${safe(tag)}`);
        mkdirSync(out);
        await run(process.execPath, [join(root, 'bin', 'virtnbdrestore'), '-i', copy, '-o', out, '-n', '-L', join(out, 'r.log')]);
        const sha = await contentSha(join(out, `${DEV}.qcow2`), scratch);
        if (sha !== referenceSha) {
          process.stderr.write(`*** pruned set ${tag}: restored content ${sha} != reference ${referenceSha} ***\n`);
          failed = true;
        }
        rmSync(out, { recursive: true, force: true });
      }
      rmSync(copy, { recursive: true, force: true });
    };
    const restoreRun = (src: string, orig: boolean) => async (tag: string): Promise<void> => {
      const out = join(scratch, `out-${safe(tag)}`);
      mkdirSync(out);
      const s = await timed(async () => {
        if (orig) {
          await run(ORIGINAL, ['-i', src, '-o', out, '--sequence', set.names.join(','), '-n', '-f', join(out, 'nbd.sock'), '-L', join(out, 'r.log')]);
          for (let i = 0; (await execa('qemu-img', ['info', join(out, DEV)], { reject: false })).exitCode !== 0; i++) {
            if (i > 500) throw new Error('original: image still locked');
            await new Promise((r) => setTimeout(r, 20));
          }
        } else await run(process.execPath, [join(root, 'bin', 'virtnbdrestore'), '-i', src, '-o', out, '-n', '-L', join(out, 'r.log')]);
      });
      times.get(tag.split('#')[0]!)!.push(s);
      rmSync(out, { recursive: true, force: true });
    };
    const variants: [string, (tag: string) => Promise<void>][] = [
      ['prune, plain', pruneRun(set.plain)],
      ['original restore, plain', restoreRun(set.plain, true)],
      ['ours restore, plain', restoreRun(set.plain, false)],
      ['prune, LZ4', pruneRun(set.lz4)],
      ['original restore, LZ4', restoreRun(set.lz4, true)],
      ['ours restore, LZ4', restoreRun(set.lz4, false)],
      ['prune, plain, 1 inc', pruneRun(one.plain)],
      ['prune, LZ4, 1 inc', pruneRun(one.lz4)],
    ];
    const times = new Map<string, number[]>(variants.map(([n]) => [n, []]));
    for (let r = 0; r < RUNS; r++) {
      for (let k = 0; k < variants.length; k++) {
        const [name, fn] = variants[(k + r) % variants.length]!;
        await fn(`${name}#${r}`);
        log(`run ${r + 1}/${RUNS} ${name}: ${fmt(times.get(name)!.at(-1)!, 2)} s`);
      }
    }
    const med = (n: string): number => median(times.get(n)!);
    const ratio = (a: string, b: string): string => {
      const rs = times.get(a)!.map((s, i) => times.get(b)![i]! / s);
      return `${fmt(median(rs), 2)}× (${fmt(Math.min(...rs), 2)}–${fmt(Math.max(...rs), 2)})`;
    };
    const rows = variants.map(([n]) => {
      const kind = n.includes('LZ4') ? 'LZ4' : 'plain';
      const vs = n.startsWith('prune') && !n.endsWith('1 inc') ? ratio(n, `original restore, ${kind}`) : '';
      return [n, `${fmt(med(n), 2)} s`, `${fmt(resolved / 1e6 / med(n))} MB/s`, vs];
    });
    process.stdout.write(
      [
        `prune benchmark, ${started.toISOString()}${QUICK ? ' (--quick)' : ''}; ${RUNS} runs, medians; node ${process.version}`,
        `disk ${SIZE / MiB} MiB virtual, ${fmt(resolved / MiB)} MiB of resolved data at the newest point; full + ${INCS} inc (and the same content as full + 1 inc)`,
        `load average (1 min) ${fmt(load0, 2)} at the start, ${fmt(loadavg()[0]!, 2)} at the end`,
        '',
        table(['newest point of full + 10 inc', 'wall', 'data/s', 'prune vs original restore'], rows),
        '',
        `prune: node bin/virtnbdprune --keep-last 1 (synthetic full of the newest point, fsync, rename, 10 inc + old full removed);`,
        `original restore: ${ORIGINAL} --sequence <all files>; ours restore: node bin/virtnbdrestore. Target: prune ≥ 1.0× the original's restore.`,
        `cost vs number of points: 10 inc ${fmt(med('prune, plain'), 2)} s / 1 inc ${fmt(med('prune, plain, 1 inc'), 2)} s plain, ` +
          `${fmt(med('prune, LZ4'), 2)} s / ${fmt(med('prune, LZ4, 1 inc'), 2)} s LZ4.`,
        '',
      ].join('\n'),
    );
  } finally {
    if (KEEP) log(`kept ${scratch}`);
    else rmSync(scratch, { recursive: true, force: true });
  }
  if (failed) process.exit(1);
}

main().catch((e: unknown) => {
  process.stderr.write(`prune: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
