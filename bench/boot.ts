/**
 * Benchmark: boot from backup (issue 5) — time from the command to the guest's marker on its
 * serial console, booting from a backup chain (full + 10 incrementals) with
 * `virtnbdmap -i SET --boot`, against booting the same guest from its original image with
 * `virsh create`, side by side in one run (the order alternates run by run).
 *
 *   node dist/bench/boot.js [--runs N] [--keep]
 *
 * Set-up (under /var/tmp, removed at the end unless --keep): the tiny guest of
 * src/devtools/boot-guest.ts (Debian kernel + initrd, busybox root on a 64 MiB ext4) on a
 * 256 MiB qcow2 disk; booted once, backed up (full) with our virtnbdbackup, then 10 times:
 * 4 MiB of data written through qemu-io into the part of the disk after the file system plus
 * the marker rewritten (letters B … K), and an incremental backup. Each boot must print the
 * newest marker (K), or the run fails.
 * Target: boot from the chain ≤ 1.2× the boot from the original image (median of the runs).
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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
const SRC = `vnbd-bench-boot-${process.pid}`;
const BIN = (c: string): string => join(packageRoot(), 'bin', c);
const virsh = (...a: string[]) => execa('virsh', ['-c', URI, ...a]);

async function main(): Promise<void> {
  const work = mkdtempSync('/var/tmp/vnbd-bench-boot-');
  chmodSync(work, 0o755);
  try {
    const vm = await createDemoVm(work, SRC, 'A', { diskSizeMiB: 256 });
    await waitForMarker(vm.serialLog, 300_000);
    const xmlFor = (name: string, serialLog: string): string => guestDomainXml({ name, disk: vm.disk, format: 'qcow2', boot: vm.boot, serialLog });

    const set = join(work, 'set');
    const backup = (level: string) => execa(BIN('virtnbdbackup'), ['-U', URI, '-d', SRC, '-l', level, '-o', set, '--nocolor']);
    await backup('full');
    for (let i = 0; i < 10; i++) {
      const letter = String.fromCharCode(66 + i); // B … K
      for (let j = 0; j < 4; j++) await qemuIo(vm, `write -P ${0x20 + i} ${(64 + 16 * i + 4 * j) << 20} 1M`);
      await setMarker(vm, letter);
      await backup('inc');
    }
    await virsh('destroy', SRC);
    await virsh('undefine', SRC, '--checkpoints-metadata');
    const want = 'K'.repeat(24);

    const bootOriginal = async (run: number): Promise<number> => {
      const log = join(work, `orig-${run}.log`);
      const xml = join(work, `orig-${run}.xml`);
      writeFileSync(xml, xmlFor(`${SRC}-orig`, log));
      const t0 = performance.now();
      await virsh('create', xml);
      const m = await waitForMarker(log, 300_000);
      const t = performance.now() - t0;
      await virsh('destroy', `${SRC}-orig`);
      if (m.marker !== want) throw new Error(`original image booted with marker ${m.marker}`);
      return t;
    };
    const bootBackup = async (): Promise<number> => {
      const t0 = performance.now();
      const p = execa(BIN('virtnbdmap'), ['-i', set, '--boot', '--json', '--uri', URI, '--name', `${SRC}-bk`, '--shutdown-timeout', '0'], { reject: false });
      let out = '';
      p.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      while (!out.includes('\n')) {
        if (p.exitCode !== null) throw new Error(`virtnbdmap --boot failed: ${(await p).stderr}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      const info = JSON.parse(out.split('\n')[0]!) as { consoleLogs: string[] };
      const m = await waitForMarker(info.consoleLogs[0]!, 300_000);
      const t = performance.now() - t0;
      p.kill('SIGINT');
      const r = await p;
      if (r.exitCode !== 0) throw new Error(`virtnbdmap --boot exited ${r.exitCode}: ${r.stderr}`);
      if (m.marker !== want) throw new Error(`backup booted with marker ${m.marker}`);
      return t;
    };

    const orig: number[] = [];
    const bk: number[] = [];
    for (let run = 0; run < RUNS; run++) {
      if (run % 2 === 0) {
        orig.push(await bootOriginal(run));
        bk.push(await bootBackup());
      } else {
        bk.push(await bootBackup());
        orig.push(await bootOriginal(run));
      }
      process.stderr.write(`run ${run + 1}/${RUNS}: original ${(orig.at(-1)! / 1000).toFixed(1)} s, backup ${(bk.at(-1)! / 1000).toFixed(1)} s\n`);
    }
    const ratios = orig.map((o, i) => bk[i]! / o);
    const fmt = (xs: number[]) => xs.map((x) => (x / 1000).toFixed(1)).join(' / ');
    process.stdout.write(
      table(
        ['boot (command → marker on the console)', 'runs (s)', 'median (s)'],
        [
          ['original image (virsh create)', fmt(orig), (median(orig) / 1000).toFixed(1)],
          ['backup chain full + 10 inc (virtnbdmap --boot)', fmt(bk), (median(bk) / 1000).toFixed(1)],
        ],
      ) + '\n',
    );
    const r = median(ratios);
    process.stdout.write(`ratio backup / original: ${r.toFixed(2)}× (per run ${ratios.map((x) => x.toFixed(2)).join(' / ')})\n`);
    process.stdout.write(`${r <= 1.2 ? 'PASS' : 'FAIL'}: boot from backup ≤ 1.2× boot from the original image\n`);
  } finally {
    await execa('virsh', ['-c', URI, 'destroy', SRC], { reject: false });
    await execa('virsh', ['-c', URI, 'undefine', SRC, '--checkpoints-metadata'], { reject: false });
    if (!KEEP) rmSync(work, { recursive: true, force: true });
    else process.stderr.write(`kept ${work}\n`);
  }
}

await main();
