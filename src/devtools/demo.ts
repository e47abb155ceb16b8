/**
 * The README's demo: the main job on a throw-away VM, with the real commands on real
 * libvirtd/qemu (TCG is enough). It creates a tiny guest (demo-vm.ts; its console prints the
 * marker stored in its /marker), backs it up running (full), changes the marker on the running
 * disk, backs it up again (inc), verifies the set, pulls /marker out of the full backup with
 * `virtnbdmap --mount`, boots a VM from the newest point with `virtnbdmap --boot`, restores the set
 * into a qcow2 image and reads /marker from it. Each step prints one line; a step that shows the
 * wrong content ends the demo with exit code 1. The VM, its checkpoints and the work directory
 * are removed at the end in every case (also after an error or Ctrl-C).
 */
import { mkdirSync, mkdtempSync, chmodSync, readFileSync, readdirSync, rmSync, existsSync } from 'node:fs';
import { basename, join } from 'node:path';
import { execa } from 'execa';
import { markerText, markersIn } from './boot-guest.js';
import { createDemoVm, removeDemoVm, setMarker, stopDemoVm, type DemoVm } from './demo-vm.js';
import { bin, run, spawnJson, stop, stopAll, waitFor } from './demo-proc.js';

const MARKER_TIMEOUT = 240_000;
const OLD = 'A';
const NEW = 'B';

const say = (s: string): void => void process.stdout.write(s + '\n');

/** A step whose result is not what the demo expects (exit 1 with this message). */
class WrongContent extends Error {}

function short(marker: string): string {
  const m = /^([A-Z])\1+$/.exec(marker);
  return m ? `${m[1]!.repeat(4)}… (${marker.length} × ${m[1]})` : JSON.stringify(marker);
}

function expectMarker(where: string, got: string, letter: string): void {
  if (got !== markerText(letter)) throw new WrongContent(`${where}: expected marker ${short(markerText(letter))}, found ${short(got)}`);
}

let t0 = Date.now();
function secs(since: number): string {
  return `${Math.round((Date.now() - since) / 1000)} s`;
}

/** virtnbdbackup's summary line (`Backup full of 1 disk(s) done in …`), without the log prefix. */
function summaryOf(output: string): string {
  const l = output.split('\n').find((s) => / disk\(s\) done in /.test(s));
  return l === undefined ? '(no summary line)' : l.slice(l.lastIndexOf('Backup ')).trim();
}

/** Unmount whatever is still mounted below `dir` (only after a failure), so that rm cannot reach a mount. */
async function unmountBelow(dir: string): Promise<void> {
  const mounts = readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[1] ?? '')
    .filter((m) => m === dir || m.startsWith(`${dir}/`))
    .reverse();
  for (const m of mounts) await execa('umount', ['-l', m], { reject: false });
}

interface MountJson {
  mountpoint: string;
  mounted: Array<{ path: string; fstype: string; device: string }>;
}

interface BootJson {
  name: string;
  consoleLogs: string[];
  disks: Array<{ dev: string; files: string[] }>;
}

async function demo(work: string, name: string, signal: AbortSignal, vmRef: { vm?: DemoVm }): Promise<void> {
  const set = join(work, 'backup');
  const URI = ['-U', 'qemu:///system'];

  // 1: the VM
  let t = Date.now();
  const vm = await createDemoVm(work, name, OLD);
  vmRef.vm = vm;
  const first = await waitFor('the demo VM\'s boot marker', () => markersIn(vm.serialLog).at(-1), MARKER_TIMEOUT, signal);
  expectMarker('demo VM console', first.marker, OLD);
  say(`1/6 created demo VM ${name} (busybox guest, 64 MiB qcow2 disk, TCG) and booted it; console: "VIRTNBD-MARKER ${short(first.marker)} BOOT ${first.boot}" — ${secs(t)}`);

  // 2: full, change, inc
  t = Date.now();
  const full = await run(bin('virtnbdbackup'), [...URI, '-d', name, '-l', 'full', '-o', set, '-n'], signal);
  await setMarker(vm, NEW);
  const inc = await run(bin('virtnbdbackup'), [...URI, '-d', name, '-l', 'inc', '-o', set, '-n'], signal);
  say(`2/6 virtnbdbackup -l full, marker changed to ${short(markerText(NEW))} on the running disk, virtnbdbackup -l inc — ${secs(t)}`);
  for (const r of [full, inc]) say(`      ${summaryOf(r.all)}`);
  say(`      ${set}: ${readdirSync(set).filter((f) => f.endsWith('.data')).sort().join(', ')}`);
  // The original VM is not needed any more: as if it were lost, everything below uses the backup.
  await stopDemoVm(name);

  // 3: verify
  t = Date.now();
  const ver = await run(bin('virtnbdrestore'), ['-i', set, '-o', 'verify', '-L', join(work, 'virtnbdrestore.log')], signal);
  const oks = ver.all.split('\n').filter((l) => l.includes('OK: [')).length;
  say(`3/6 virtnbdrestore -o verify: ${oks} data file(s) OK (checksums and structure) — ${secs(t)}`);

  // 4: single-file restore from the full backup
  t = Date.now();
  const mp = join(work, 'mnt');
  mkdirSync(mp);
  const mnt = await spawnJson<MountJson>(bin('virtnbdmap'), ['-i', set, '--until', 'virtnbdbackup.0', '--mount', mp, '--json', '-L', join(work, 'virtnbdmap.log')], signal, 120_000);
  let old: string;
  try {
    old = readFileSync(join(mp, 'marker'), 'latin1');
  } finally {
    const code = await stop(mnt.proc, 'SIGINT', 90_000);
    if (code !== 0) throw new Error(`virtnbdmap --mount exited with ${code} after Ctrl-C:\n${mnt.output().trimEnd().split('\n').slice(-15).join('\n')}`);
  }
  expectMarker('virtnbdmap --mount of virtnbdbackup.0', old, OLD);
  const fs = mnt.info.mounted[0];
  say(`4/6 virtnbdmap --until virtnbdbackup.0 --mount: ${fs ? `${fs.fstype} on ${fs.device}` : 'mounted'}, /marker = ${short(old)} (the full backup's), unmounted — ${secs(t)}`);

  // 5: boot from the newest point
  t = Date.now();
  const bootRun = await spawnJson<BootJson>(bin('virtnbdmap'), ['-i', set, '--boot', '--json', '--shutdown-timeout', '0', '-L', join(work, 'virtnbdmap.log')], signal, 180_000);
  let booted: { marker: string; boot: number };
  try {
    const log = bootRun.info.consoleLogs[0];
    if (log === undefined) throw new Error('virtnbdmap --boot: no console log in its JSON line');
    booted = await waitFor(`the marker on ${bootRun.info.name}'s console`, () => markersIn(log).at(-1), MARKER_TIMEOUT, signal);
  } finally {
    const code = await stop(bootRun.proc, 'SIGINT', 120_000);
    if (code !== 0) throw new Error(`virtnbdmap --boot exited with ${code} after Ctrl-C:\n${bootRun.output().trimEnd().split('\n').slice(-15).join('\n')}`);
  }
  expectMarker('VM booted from the backup', booted.marker, NEW);
  say(`5/6 virtnbdmap --boot: VM ${bootRun.info.name} ran from the backup (no restore); console: "VIRTNBD-MARKER ${short(booted.marker)} BOOT ${booted.boot}"; Ctrl-C stopped it — ${secs(t)}`);

  // 6: restore
  t = Date.now();
  const out = join(work, 'restore');
  await run(bin('virtnbdrestore'), ['-i', set, '-o', out, '-L', join(work, 'virtnbdrestore.log')], signal);
  const image = join(out, basename(vm.disk));
  if (!existsSync(image)) throw new Error(`virtnbdrestore wrote no ${image} (found: ${readdirSync(out).join(', ')})`);
  const raw = join(work, 'restored.raw');
  await execa('qemu-img', ['convert', '-O', 'raw', image, raw]);
  const restored = (await execa('debugfs', ['-R', 'cat /marker', raw], { stderr: 'ignore' })).stdout;
  expectMarker('restored image', restored, NEW);
  say(`6/6 virtnbdrestore -o ${out}: ${basename(image)} (qcow2) holds /marker = ${short(restored)} — ${secs(t)}`);
}

async function main(): Promise<number> {
  t0 = Date.now();
  const ac = new AbortController();
  let caught: string | undefined;
  const onSignal = (s: NodeJS.Signals): void => {
    if (caught) return;
    caught = s;
    say(`\n${s} received: stopping and cleaning up…`);
    ac.abort();
  };
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, onSignal);

  const work = mkdtempSync('/var/tmp/virtnbd-demo-');
  chmodSync(work, 0o755);
  const name = `virtnbd-demo-${process.pid}`;
  const vmRef: { vm?: DemoVm } = {};
  say(`virtnbd demo: back up a running VM, verify, pull a file out, boot from the backup, restore (work dir ${work})`);
  let code = 0;
  try {
    await demo(work, name, ac.signal, vmRef);
    say(`Demo finished in ${secs(t0)}: every step showed the content it was backed up with.`);
  } catch (e) {
    code = 1;
    const msg = caught ? `interrupted by ${caught}` : (e as Error).message;
    process.stderr.write(`\nDemo FAILED${e instanceof WrongContent ? ' (wrong content)' : ''}: ${msg}\n`);
  } finally {
    await stopAll();
    const problems: string[] = [];
    for (const n of [`restore_${name}`, name]) {
      const p = await removeDemoVm(n);
      if (p) problems.push(p);
    }
    await unmountBelow(work);
    try {
      rmSync(work, { recursive: true, force: true });
    } catch (e) {
      problems.push(`remove ${work}: ${(e as Error).message}`);
    }
    if (problems.length > 0) {
      code = 1;
      process.stderr.write(`Clean-up incomplete:\n  ${problems.join('\n  ')}\n`);
    } else say(`Cleaned up: demo VM ${name} and its checkpoints undefined, ${work} removed.`);
  }
  return code;
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    process.stderr.write(`demo failed: ${err.message}\n`);
    process.exit(1);
  },
);
