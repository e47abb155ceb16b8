/**
 * Named fault points for the fault-injection suite (test/faults/): compiled into the product,
 * inert unless the environment variable VIRTNBD_FAULT names the point.
 *
 *   VIRTNBD_FAULT=<spec>[,<spec>…]     <spec> = <point>[:kill|:pause][@<n>]
 *
 * `<point>` is the exact name given to `faultPoint()` (e.g. `backup:mid-disk`, `prune:before-delete`);
 * `kill` (the default) SIGKILLs the own process on the spot, as a host crash or `kill -9` would;
 * `pause` SIGSTOPs it, so a test can act at that exact moment (destroy the VM, kill a server,
 * SIGKILL it) and then SIGCONT or kill it; `@<n>` fires on the n-th time the point is reached
 * (default: the first). Before stopping, one line `virtnbd-fault: <point> <action> <pid>` is
 * written to stderr (synchronously) and, when VIRTNBD_FAULT_MARKER names a file, appended to that
 * file, so a test waits for a condition instead of sleeping.
 *
 * Hand-written: a dozen lines; no library does "stop this process at a named place".
 */
import { appendFileSync, writeSync } from 'node:fs';

export type FaultAction = 'kill' | 'pause';

interface FaultSpec {
  point: string;
  action: FaultAction;
  hit: number;
}

/** Parses VIRTNBD_FAULT (exported for the unit test). Malformed entries are ignored. */
export function parseFaultSpecs(value: string | undefined): FaultSpec[] {
  if (value === undefined || value.trim() === '') return [];
  const specs: FaultSpec[] = [];
  for (const raw of value.split(',')) {
    let s = raw.trim();
    let hit = 1;
    const at = /@([0-9]+)$/.exec(s);
    if (at !== null) {
      hit = Math.max(1, Number(at[1]));
      s = s.slice(0, at.index);
    }
    let action: FaultAction = 'kill';
    const act = /:(kill|pause)$/.exec(s);
    if (act !== null) {
      action = act[1] as FaultAction;
      s = s.slice(0, act.index);
    }
    if (s !== '') specs.push({ point: s, action, hit });
  }
  return specs;
}

const hits = new Map<string, number>();
let cached: { value: string | undefined; specs: FaultSpec[] } | undefined;

/** Reached a named point: kills or stops the process when VIRTNBD_FAULT says so; otherwise nothing. */
export function faultPoint(point: string): void {
  const value = process.env.VIRTNBD_FAULT;
  if (value === undefined || value === '') return;
  if (cached === undefined || cached.value !== value) cached = { value, specs: parseFaultSpecs(value) };
  const n = (hits.get(point) ?? 0) + 1;
  hits.set(point, n);
  const spec = cached.specs.find((s) => s.point === point && s.hit === n);
  if (spec === undefined) return;
  const line = `virtnbd-fault: ${point} ${spec.action} ${process.pid}\n`;
  try {
    writeSync(2, line);
  } catch {
    /* stderr closed: the marker file still tells */
  }
  const marker = process.env.VIRTNBD_FAULT_MARKER;
  if (marker !== undefined && marker !== '') {
    try {
      appendFileSync(marker, line);
    } catch {
      /* the test's marker directory is gone: nothing to tell */
    }
  }
  process.kill(process.pid, spec.action === 'kill' ? 'SIGKILL' : 'SIGSTOP');
}
