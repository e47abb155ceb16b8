/**
 * `virtnbdmap -i DIR --boot`: boot a VM straight from a backup point (issue 5).
 *
 * 1. The point's vmconfig (newest, or `--until`) names the disks; every disk in the backup gets
 *    its own export (exports.ts: plugin + cow filter on a unix socket), nothing is replayed or
 *    copied first.
 * 2. Boot files (kernel, initrd, loader, nvram) are copied from the backup into the run
 *    directory (qemu may change nvram, and libvirt relabels files it hands to qemu: the backup's
 *    own files are never given to it).
 * 3. The domain XML is derived from the vmconfig (boot-config.ts) and started as a transient
 *    domain named `--name` or `restore_<original>`.
 *    (Steps 1–3 and the clean-up are boot-session.ts, shared with `--verify`, verify.ts.)
 * 4. Foreground until Ctrl-C/SIGTERM/SIGHUP, or until the VM stops by itself: then the VM is shut
 *    down (ACPI request, powered off after --shutdown-timeout), the exports stopped and the run
 *    directory removed (overlays kept with --keep-overlays).
 *    With `--migrate-to DIR` the disks are moved onto new images while the VM runs
 *    (migrate.ts); the command then ends and leaves an ordinary persistent domain running.
 */
import { tail } from '../daemon/nbdkit.js';
import type { MapLog } from '../map/virtnbdmap.js';
import { domainGone, startBootSession, BootError, type BootOptions, type BootSession } from './boot-session.js';
import type { DiskExport } from './exports.js';
import { DOMAIN_START, type VirtDomain } from '../virt/client.js';
import { MigrateError, migrateToStorage } from './migrate.js';
import { sleep } from '../util/sleep.js';

export { BootError, type BootOptions, type BootInfo } from './boot-session.js';


/**
 * Installs SIGINT/SIGTERM/SIGHUP handlers for the whole command: the first signal resolves
 * `signalled`, later ones are only logged (a terminal sends Ctrl-C to the whole group: a second
 * one must not kill us half-way through the clean-up). `step()` throws once a signal came.
 */
export function bootSignals(log: MapLog): { signalled: Promise<End>; step: () => void; interrupted: () => string | undefined } {
  let interrupted: string | undefined;
  const signalled = new Promise<End>((resolveEnd) => {
    for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const)
      process.on(s, () => {
        if (interrupted !== undefined) {
          log.info(`${s} received again: already stopping.`);
          return;
        }
        interrupted = s;
        resolveEnd({ kind: 'signal', signal: s });
      });
  });
  const step = (): void => {
    if (interrupted !== undefined) throw new BootError(`Interrupted by ${interrupted}`);
  };
  return { signalled, step, interrupted: () => interrupted };
}

/** Boot, serve, wait, clean up. Returns the exit code. */
export async function runBoot(o: BootOptions, log: MapLog, out: (s: string) => void): Promise<number> {
  // signals during set-up end it cleanly too (checked between the steps)
  const { signalled, step } = bootSignals(log);
  let session: BootSession | undefined;
  try {
    session = await startBootSession(o, log, { step, startFlags: o.migrateTo === undefined ? undefined : DOMAIN_START.NONE });
    const { info, dom, exports } = session;
    const name = info.name;
    if (o.json) out(JSON.stringify(info) + '\n');

    let failed = false;
    if (o.migrateTo !== undefined) {
      try {
        const res = await migrateToStorage(dom, exports, { dir: o.migrateTo }, log);
        session.release();
        log.info(
          `Domain [${name}] runs on ${[...res.images.values()].join(', ')}; the backup is released. ` +
            `It is an ordinary persistent domain now (virsh shutdown/start ${name}).`,
        );
        if (o.json) out(JSON.stringify({ migrated: true, name, images: Object.fromEntries(res.images), files: res.files }) + '\n');
        await session.cleanup();
        return 0;
      } catch (e) {
        log.error((e as Error).message);
        if (e instanceof MigrateError && e.switched.length === exports.length) {
          // nothing needs the backup any more: leave the VM running
          session.release();
          await session.cleanup();
          return 1;
        }
        // the VM still needs the exports: keep serving it until told to stop
        log.error(`[${name}] keeps running from the backup; Ctrl-C stops it.`);
        failed = true;
      }
    }

    step();
    log.info(`Press Ctrl-C (or send SIGTERM) to stop [${name}] and clean up.`);
    const why = await waitForEnd(dom, exports, signalled);
    if (why.kind === 'signal') log.info(`Signal ${why.signal} received, stopping [${name}]`);
    else if (why.kind === 'domain') log.info(`Domain [${name}] has stopped.`);
    else log.error(`The export of disk [${why.dev}] stopped unexpectedly; its last messages:\n${tail(why.log)}`);
    await session.cleanup();
    return why.kind === 'server' || failed ? 1 : 0;
  } catch (e) {
    log.error((e as Error).message);
    await session?.cleanup();
    return 1;
  }
}

export type End = { kind: 'signal'; signal: string } | { kind: 'domain' } | { kind: 'server'; dev: string; log: string };

async function waitForEnd(dom: VirtDomain, exports: readonly DiskExport[], signal: Promise<End>): Promise<End> {
  let stop = false;
  const servers = exports.map((x) => x.server.exited.then((): End => ({ kind: 'server', dev: x.dev, log: x.server.logFile })));
  const domain = (async (): Promise<End> => {
    while (!stop) {
      await sleep(1000);
      if (await domainGone(dom).catch(() => false)) return { kind: 'domain' };
    }
    return { kind: 'domain' };
  })();
  const end = await Promise.race([signal, domain, ...servers]);
  stop = true;
  return end;
}
