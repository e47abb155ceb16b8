/**
 * The report of `virtnbdmap --boot --verify` (issue 12): one entry per verified point, printed
 * as JSON lines (`--json`) or a table, and written into the report directory as `report.json`
 * and `report.txt` (each through a `.partial` file, fsynced, renamed).
 */
import { closeSync, fsyncSync, openSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';

/** Why a point failed. */
export type VerifyReason =
  /** --expect-console: the guest printed nothing at all within --timeout */
  | 'timeout'
  /** the guest crashed: libvirt state `crashed` (pvpanic) or a kernel panic on the console */
  | 'panic'
  /** --expect-console: the console has output, but nothing matched within --timeout */
  | 'console-mismatch'
  /** --expect-agent: the guest agent did not answer guest-ping within --timeout */
  | 'agent-silent'
  /** the guest powered off / the domain ended before every condition held */
  | 'stopped'
  /** the point could not be booted at all (exports, domain XML, libvirt) or an export died */
  | 'error'
  /** a signal stopped the verification */
  | 'interrupted';

export interface PointReport {
  /** The point's ident: its checkpoint name (`copy` for a copy backup). */
  checkpoint: string;
  passed: boolean;
  reason: VerifyReason | null;
  /** One line saying what happened. */
  detail: string;
  /** Name of the verify domain. */
  domain: string | null;
  /** Seconds: set-up (command → domain started), then from the domain's start to each condition. */
  seconds: {
    setup: number | null;
    console: number | null;
    agent: number | null;
    /** No condition: how long it was watched running. */
    running: number | null;
    /** The whole point, clean-up included. */
    total: number;
  };
  /** guest-get-osinfo's pretty name (or id), when the agent answered it. */
  os: string | null;
  screenshot: string | null;
  /** Copies of the boot's console logs in the report directory (the first is the serial console). */
  consoleLogs: string[];
}

export interface VerifyReport {
  backup: string;
  started: string;
  passed: boolean;
  points: PointReport[];
}

const s = (x: number | null): string => (x === null ? '-' : x.toFixed(1));

/** Fixed-width table, one row per point. */
export function reportTable(points: readonly PointReport[]): string {
  const head = ['checkpoint', 'result', 'reason', 'setup s', 'console s', 'agent s', 'running s', 'total s'];
  const rows = points.map((p) => [
    p.checkpoint,
    p.passed ? 'PASS' : 'FAIL',
    p.reason ?? '-',
    s(p.seconds.setup),
    s(p.seconds.console),
    s(p.seconds.agent),
    s(p.seconds.running),
    s(p.seconds.total),
  ]);
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]): string => r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd();
  const out = [line(head), line(w.map((n) => '-'.repeat(n))), ...rows.map(line)];
  for (const p of points) if (!p.passed) out.push(`${p.checkpoint}: ${p.detail}`);
  return out.join('\n') + '\n';
}

function writeDurable(path: string, text: string): void {
  const tmp = `${path}.partial`;
  const fd = openSync(tmp, 'w', 0o644);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

/** report.json and report.txt in `dir`; returns their paths. */
export function writeReport(dir: string, report: VerifyReport): { json: string; text: string } {
  const json = join(dir, 'report.json');
  const text = join(dir, 'report.txt');
  writeDurable(json, JSON.stringify(report, null, 2) + '\n');
  writeDurable(
    text,
    `Boot verification of [${report.backup}], started ${report.started}: ${report.passed ? 'PASSED' : 'FAILED'}\n\n` + reportTable(report.points),
  );
  return { json, text };
}
