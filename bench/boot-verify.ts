/**
 * Benchmark: boot verification (issue 12) — how long `virtnbdmap --boot --verify` takes per
 * backup point, next to a plain boot of the source image, side by side in one run (the order
 * alternates run by run).
 *
 *   node dist/bench/boot-verify.js [--runs N] [--keep]
 *
 * Set-up (under /var/tmp, removed at the end unless --keep): the tiny guest of
 * src/devtools/boot-guest.ts on a 256 MiB qcow2 disk, booted once, backed up (full) with our
 * virtnbdbackup, then 3 times: 4 MiB written through qemu-io after the file system, the marker
 * rewritten (B, C, D) and an incremental backup — a chain of 4 points.
 *
 * Measured (wall clock, the command's start to its end, so set-up, boot, check, power-off and
 * clean-up are all in):
 *  - plain boot: `virsh create` of the source image until its marker is on the serial console,
 *    then `virsh destroy`;
 *  - verify one point: `virtnbdmap -i SET --boot --verify --expect-console <marker of the point>`
 *    of the newest point (full + 3 inc);
 *  - verify every point: `--all-points` once, divided by the number of points.
 * Reported: medians, and the ratio verify / plain boot (no target: a verify is a boot plus about
 * a second of set-up and clean-up).
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { execa } from 'execa';
import { guestDomainXml, waitForMarker } from '../src/devtools/boot-guest.js';
import { createDemoVm, qemuIo, setMarker } from '../src/devtools/demo-vm.js';
import { packageRoot } from '../src/util/package-root.js';
import { median, table } from './bench-util.js';

const URI = 'qemu:///system';
const args = process.argv.slice(2);
const RUNS = args.includes('--runs') ? Number(args[args.indexOf('--runs') + 1]) : 3;
const KEEP = args.includes('--keep');
const SRC = `vnbd-bench-verify-${process.pid}`;
const INCS = 3;
const BIN = (c: string): string => join(packageRoot(), 'bin', c);
const virsh = (...a: string[]) => execa('virsh', ['-c', URI, ...a]);

interface Point {
  checkpoint: string;
  passed: boolean;
  seconds: { setup: number | null; console: number | null; total: number };
}

async function main(): Promise<void> {
  const work = mkdtempSync('/var/tmp/vnbd-bench-verify-');
  chmodSync(work, 0o755);
  try {
    const vm = await createDemoVm(work, SRC, 'A', { diskSizeMiB: 256 });
    await waitForMarker(vm.serialLog, 300_000);
    const set = join(work, 'set');
    const backup = (level: string) => execa(BIN('virtnbdbackup'), ['-U', URI, '-d', SRC, '-l', level, '-o', set, '--nocolor']);
    await backup('full');
    for (let i = 0; i < INCS; i++) {
      for (let j = 0; j < 4; j++) await qemuIo(vm, `write -P ${0x20 + i} ${(64 + 16 * i + 4 * j) << 20} 1M`);
      await setMarker(vm, String.fromCharCode(66 + i)); // B, C, D
      await backup('inc');
    }
    await virsh('destroy', SRC);
    await virsh('undefine', SRC, '--checkpoints-metadata');
    const newest = String.fromCharCode(65 + INCS).repeat(24);

    const plainBoot = async (run: number): Promise<number> => {
      const log = join(work, `plain-${run}.log`);
      const xml = join(work, `plain-${run}.xml`);
      writeFileSync(xml, guestDomainXml({ name: `${SRC}-plain`, disk: vm.disk, format: 'qcow2', boot: vm.boot, serialLog: log }));
      const t0 = performance.now();
      await virsh('create', xml);
      const m = await waitForMarker(log, 300_000);
      await virsh('destroy', `${SRC}-plain`);
      const t = performance.now() - t0;
      if (m.marker !== newest) throw new Error(`source image booted with marker ${m.marker}`);
      return t;
    };
    const verify = async (run: string, extra: string[]): Promise<{ ms: number; points: Point[] }> => {
      const rd = join(work, `report-${run}`);
      const t0 = performance.now();
      const r = await execa(BIN('virtnbdmap'), ['-i', set, '--boot', '--verify', '--uri', URI, '--json', '--nocolor', '--report-dir', rd, '--timeout', '300', ...extra], {
        reject: false,
      });
      const ms = performance.now() - t0;
      if (r.exitCode !== 0) throw new Error(`virtnbdmap --verify exited ${r.exitCode}: ${r.stderr}`);
      const points = (JSON.parse(readFileSync(join(rd, 'report.json'), 'utf8')) as { points: Point[] }).points;
      return { ms, points };
    };

    const plain: number[] = [];
    const one: number[] = [];
    const setup: number[] = [];
    const toMarker: number[] = [];
    for (let run = 0; run < RUNS; run++) {
      const v = async (): Promise<void> => {
        const r = await verify(`one-${run}`, ['--expect-console', `VIRTNBD-MARKER ${newest} BOOT 2`]);
        one.push(r.ms);
        setup.push(r.points[0]!.seconds.setup! * 1000);
        toMarker.push(r.points[0]!.seconds.console! * 1000);
      };
      if (run % 2 === 0) {
        plain.push(await plainBoot(run));
        await v();
      } else {
        await v();
        plain.push(await plainBoot(run));
      }
      process.stderr.write(`run ${run + 1}/${RUNS}: plain boot ${(plain.at(-1)! / 1000).toFixed(1)} s, verify ${(one.at(-1)! / 1000).toFixed(1)} s\n`);
    }
    const all = await verify('all', ['--all-points', '--expect-console', 'VIRTNBD-MARKER [A-Z]+ BOOT 2']);
    const perPoint = all.ms / all.points.length;
    const s = (x: number): string => (x / 1000).toFixed(1);
    const fmt = (xs: number[]): string => xs.map(s).join(' / ');
    process.stdout.write(
      table(
        ['measurement (wall clock)', 'runs (s)', 'median (s)'],
        [
          ['plain boot of the source image (virsh create → marker → destroy)', fmt(plain), s(median(plain))],
          [`verify newest point, full + ${INCS} inc (command → exit)`, fmt(one), s(median(one))],
          ['  of which set-up (command → domain started)', fmt(setup), s(median(setup))],
          ['  of which domain start → console marker', fmt(toMarker), s(median(toMarker))],
          [`verify --all-points, ${all.points.length} points, per point`, s(perPoint), s(perPoint)],
        ],
      ) + '\n',
    );
    const ratios = plain.map((p, i) => one[i]! / p);
    process.stdout.write(`ratio verify / plain boot: ${median(ratios).toFixed(2)}× (per run ${ratios.map((x) => x.toFixed(2)).join(' / ')}); ` + `--all-points per point / plain boot: ${(perPoint / median(plain)).toFixed(2)}×\n`);
  } finally {
    await execa('virsh', ['-c', URI, 'destroy', SRC], { reject: false });
    await execa('virsh', ['-c', URI, 'undefine', SRC, '--checkpoints-metadata'], { reject: false });
    await execa('virsh', ['-c', URI, 'destroy', `${SRC}-plain`], { reject: false });
    if (!KEEP) rmSync(work, { recursive: true, force: true });
    else process.stderr.write(`kept ${work}\n`);
  }
}

await main();
