/**
 * `virtnbdmap -i DIR --boot --verify`: prove that a backup point boots (issue 12).
 *
 * Each point (the newest, `--until CP`, or with `--all-points` every point of the chain, newest
 * first) is booted exactly as `--boot` does (boot-session.ts: exports through the plugin with the
 * cow filter, so the backup files are only read; the domain derived from the point's vmconfig),
 * but isolated and headless (verify-config.ts: no NIC, no shared host directory, graphics listen
 * nowhere, every console logged to a file, pvpanic + on_crash=preserve). Then it is watched until
 * every requested condition holds:
 *   - `--expect-console REGEX`: the serial console log matches REGEX;
 *   - `--expect-agent`: the guest agent answers `guest-ping` (then `guest-get-osinfo` is asked
 *     for the report; no answer to that is no failure);
 *   - neither: the guest keeps running for `--timeout`/2 seconds.
 * A crash (libvirt state `crashed`, or a kernel panic on the console) fails the point at once, so
 * does a guest that stops before its conditions hold; `--timeout` seconds after the domain's
 * start, what is still missing fails it (reasons: verify-report.ts). With `--screenshot FILE.png`
 * the screen is saved as PNG while the guest still runs (when the domain has a video device).
 * The domain is then powered off (after `--shutdown-timeout`, default 0 here: its writes are
 * discarded anyway), its console logs are copied into the report directory, and everything else
 * is removed as `--boot` does.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { extname, isAbsolute, join, relative, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { selectPointFiles } from '../chain/point.js';
import { VIR_ERR, DOMAIN_STATE, type VirtDomain } from '../virt/client.js';
import type { MapLog } from '../map/virtnbdmap.js';
import { startBootSession, stopDomain, type BootOptions, type BootSession } from './boot-session.js';
import { bootSignals } from './run-boot.js';
import { verifyVmconfig } from './verify-config.js';
import { screenshotPng } from './screenshot.js';
import { reportTable, writeReport, type PointReport, type VerifyReason, type VerifyReport } from './verify-report.js';
import { sleep } from '../util/sleep.js';

export interface VerifyOptions extends BootOptions {
  allPoints: boolean;
  /** Seconds from the domain's start until every condition must hold. */
  timeout: number;
  expectConsole?: RegExp;
  expectAgent: boolean;
  /** PNG file; with allPoints each point's file gets `-<checkpoint>` before the extension. */
  screenshot?: string;
  /** Where report.json, report.txt and the console logs go (default: ./virtnbd-verify-<time>). */
  reportDir?: string;
}

/** Usage problems found before anything starts (exit 2). */
export class VerifyUsageError extends Error {}

/** Kernel messages of a guest that crashed (Linux). */
const PANIC_RE = /Kernel panic - not syncing[^\n]*/;
const POLL_MS = 250;

const secs = (ms: number): number => Math.round(ms / 100) / 10;

/** A file name part from a checkpoint name. */
const safe = (ident: string): string => ident.replace(/[^A-Za-z0-9._-]/g, '_');

/** `report-dir` default: ./virtnbd-verify-YYYYMMDD-HHMMSS. */
export function defaultReportDir(now = new Date()): string {
  const p = (n: number): string => String(n).padStart(2, '0');
  return resolve(`virtnbd-verify-${now.getFullYear()}${p(now.getMonth() + 1)}${p(now.getDate())}-${p(now.getHours())}${p(now.getMinutes())}${p(now.getSeconds())}`);
}

/** True when `path` is `dir` or inside it. */
export function isInside(path: string, dir: string): boolean {
  const r = relative(resolve(dir), resolve(path));
  return r === '' || (!r.startsWith('..') && !isAbsolute(r));
}

/** The screenshot file of a point: FILE itself, or FILE-<checkpoint>.png with several points. */
export function screenshotPath(file: string, ident: string, several: boolean): string {
  const abs = resolve(file);
  if (!several) return abs;
  const ext = extname(abs);
  return `${abs.slice(0, abs.length - ext.length)}-${safe(ident)}${ext || '.png'}`;
}

function readConsole(files: readonly string[]): string {
  let text = '';
  for (const f of files) {
    try {
      text += readFileSync(f, 'latin1');
    } catch {
      // not created (yet)
    }
  }
  return text;
}

const lastLine = (text: string): string => {
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
  const l = lines.at(-1) ?? '';
  return l.length > 160 ? `${l.slice(0, 160)}…` : l;
};

type DomState = 'running' | 'crashed' | 'stopped';

async function domState(dom: VirtDomain): Promise<DomState> {
  try {
    const s = await dom.state();
    if (s.state === DOMAIN_STATE.CRASHED) return 'crashed';
    if (s.state === DOMAIN_STATE.SHUTOFF || s.state === DOMAIN_STATE.SHUTDOWN) return 'stopped';
    return 'running';
  } catch (e) {
    if ((e as { code?: number }).code === VIR_ERR.NO_DOMAIN) return 'stopped';
    throw e;
  }
}

/** The osinfo the agent gives (pretty-name, else name + version, else id), or null. */
async function agentOs(dom: VirtDomain): Promise<string | null> {
  try {
    const r = JSON.parse(await dom.agentCommand('{"execute":"guest-get-osinfo"}', 5)) as { return?: Record<string, unknown> };
    const o = r.return ?? {};
    const s = (k: string): string | undefined => (typeof o[k] === 'string' ? (o[k] as string) : undefined);
    return s('pretty-name') ?? ([s('name'), s('version')].filter(Boolean).join(' ') || s('id') || null);
  } catch {
    return null;
  }
}

interface Outcome {
  passed: boolean;
  reason: VerifyReason | null;
  detail: string;
  console: number | null;
  agent: number | null;
  running: number | null;
  os: string | null;
}

/** Watch the booted domain until its conditions hold, it fails, or the time is up. */
async function watch(session: BootSession, o: VerifyOptions, interrupted: () => string | undefined): Promise<Outcome> {
  const { dom, info } = session;
  const t0 = performance.now();
  const deadline = t0 + o.timeout * 1000;
  const needConsole = o.expectConsole !== undefined;
  const needAgent = o.expectAgent;
  const res: Outcome = { passed: false, reason: null, detail: '', console: null, agent: null, running: null, os: null };
  let died: string | undefined;
  for (const x of session.exports) void x.server.exited.then(() => (died ??= x.dev));
  const fail = (reason: VerifyReason, detail: string): Outcome => ({ ...res, passed: false, reason, detail });
  for (;;) {
    const now = performance.now();
    const el = secs(now - t0);
    const signal = interrupted();
    if (signal !== undefined) return fail('interrupted', `interrupted by ${signal} after ${el} s`);
    if (died !== undefined) return fail('error', `the export of disk [${died}] stopped unexpectedly`);
    const text = readConsole(info.consoleLogs);
    if (needConsole && res.console === null && o.expectConsole!.test(text)) res.console = el;
    const state = await domState(dom);
    const panic = PANIC_RE.exec(text);
    if (state === 'crashed') return fail('panic', `the guest crashed after ${el} s (libvirt state: crashed)${panic ? `: ${panic[0].trim()}` : ''}`);
    if (panic !== null) return fail('panic', `kernel panic on the console after ${el} s: ${panic[0].trim()}`);
    if (state === 'running' && needAgent && res.agent === null) {
      try {
        await dom.agentCommand('{"execute":"guest-ping"}', 2);
        res.agent = secs(performance.now() - t0);
        res.os = await agentOs(dom);
      } catch {
        // not (yet) answering
      }
    }
    const conditions = needConsole || needAgent;
    if (!conditions && state === 'running') res.running = el;
    const held = conditions ? (!needConsole || res.console !== null) && (!needAgent || res.agent !== null) : el >= o.timeout / 2;
    if (held) {
      const what = [
        res.console !== null ? `console matched after ${res.console} s` : '',
        res.agent !== null ? `agent answered after ${res.agent} s${res.os ? ` (${res.os})` : ''}` : '',
        conditions ? '' : `kept running for ${el} s`,
      ].filter(Boolean);
      return { ...res, passed: true, detail: what.join(', ') };
    }
    if (state === 'stopped') {
      const last = lastLine(text);
      return fail('stopped', `the guest stopped after ${el} s before ${conditions ? 'its conditions held' : `running ${o.timeout / 2} s`}${last ? `; last console line: ${last}` : ''}`);
    }
    if (now >= deadline) {
      if (needConsole && res.console === null) {
        if (text.trim() === '') return fail('timeout', `the guest printed nothing on its console within ${o.timeout} s`);
        return fail('console-mismatch', `the console did not match ${String(o.expectConsole)} within ${o.timeout} s; last line: ${lastLine(text)}`);
      }
      return fail('agent-silent', `the guest agent did not answer guest-ping within ${o.timeout} s`);
    }
    await sleep(POLL_MS);
  }
}

/** Does the running domain have a screen to take (a video device)? */
async function hasScreen(dom: VirtDomain): Promise<boolean> {
  const xml = await dom.xmlDesc();
  const m = /<video\b[\s\S]*?<model\s+type=['"]([^'"]+)['"]/.exec(xml);
  return m !== null && m[1] !== 'none';
}

/** The points to verify: [{ until }] newest first (until undefined = the newest point). */
function pointsOf(o: VerifyOptions): Array<string | undefined> {
  if (!o.allPoints) return [o.until];
  const p = selectPointFiles(resolve(o.input), undefined, undefined);
  return p.idents.map((id, i) => (i === 0 ? undefined : id));
}

/** Boot, check and remove one point. */
async function verifyPoint(
  o: VerifyOptions,
  until: string | undefined,
  several: boolean,
  reportDir: string,
  log: MapLog,
  signals: { step: () => void; interrupted: () => string | undefined },
): Promise<PointReport> {
  const t0 = performance.now();
  const rep: PointReport = {
    checkpoint: until ?? 'newest',
    passed: false,
    reason: null,
    detail: '',
    domain: null,
    seconds: { setup: null, console: null, agent: null, running: null, total: 0 },
    os: null,
    screenshot: null,
    consoleLogs: [],
  };
  let session: BootSession | undefined;
  try {
    session = await startBootSession({ ...o, until }, log, {
      step: signals.step,
      editVmconfig: (xml) => verifyVmconfig(xml, log, { agent: o.expectAgent }),
    });
    rep.checkpoint = session.ident;
    rep.domain = session.info.name;
    rep.seconds.setup = secs(performance.now() - t0);
    log.info(`Verifying point [${session.ident}] as [${session.info.name}] (up to ${o.timeout} s).`);
    const r = await watch(session, o, signals.interrupted);
    Object.assign(rep, { passed: r.passed, reason: r.reason, detail: r.detail, os: r.os });
    Object.assign(rep.seconds, { console: r.console, agent: r.agent, running: r.running });

    if (o.screenshot !== undefined && (await domState(session.dom)) === 'running') {
      const file = screenshotPath(o.screenshot, session.ident, several);
      try {
        if (await hasScreen(session.dom)) {
          const size = await screenshotPng(o.uri, session.info.name, file);
          rep.screenshot = file;
          log.info(`Screenshot of [${session.ident}]: [${file}] (${size.width}×${size.height})`);
        } else log.warn(`Point [${session.ident}]: the domain has no video device, no screenshot taken.`);
      } catch (e) {
        log.warn(`Point [${session.ident}]: no screenshot: ${(e as Error).message}`);
      }
    }
    await stopDomain(session.dom, o.shutdownTimeout, log).catch((e: Error) => log.error(`Could not stop [${session!.info.name}]: ${e.message}`));
    session.info.consoleLogs.forEach((f, i) => {
      if (!existsSync(f)) return;
      const dest = join(reportDir, `${safe(session!.ident)}.console${i === 0 ? '' : i + 1}.log`);
      copyFileSync(f, dest);
      rep.consoleLogs.push(dest);
    });
  } catch (e) {
    const signal = signals.interrupted();
    rep.reason = signal !== undefined ? 'interrupted' : 'error';
    rep.detail = signal !== undefined ? `interrupted by ${signal}` : (e as Error).message;
  } finally {
    await session?.cleanup();
  }
  rep.seconds.total = secs(performance.now() - t0);
  return rep;
}

/** Verify the point(s), write the report; returns the exit code (0 all passed, 1 otherwise, 2 usage). */
export async function runVerify(o: VerifyOptions, log: MapLog, out: (s: string) => void): Promise<number> {
  const input = resolve(o.input);
  const reportDir = o.reportDir !== undefined ? resolve(o.reportDir) : defaultReportDir();
  const checks: Array<[string | undefined, string]> = [
    [o.reportDir !== undefined ? reportDir : undefined, '--report-dir'],
    [o.screenshot, '--screenshot'],
  ];
  for (const [path, opt] of checks)
    if (path !== undefined && isInside(path, input)) {
      log.error(`${opt} [${resolve(path)}] is inside the backup directory [${input}], which verify never writes to: choose another place.`);
      return 2;
    }
  if (o.reportDir === undefined && isInside(reportDir, input)) {
    log.error(`The current directory is inside the backup directory [${input}]: give --report-dir.`);
    return 2;
  }
  const signals = bootSignals(log);
  let until: Array<string | undefined>;
  try {
    until = pointsOf(o);
  } catch (e) {
    log.error((e as Error).message);
    return 1;
  }
  mkdirSync(reportDir, { recursive: true, mode: 0o755 });
  const report: VerifyReport = { backup: input, started: new Date().toISOString(), passed: false, points: [] };
  for (const u of until) {
    const p = await verifyPoint(o, u, until.length > 1, reportDir, log, signals);
    report.points.push(p);
    if (p.passed) log.info(`Point [${p.checkpoint}]: PASSED (${p.detail}).`);
    else log.error(`Point [${p.checkpoint}]: FAILED, ${p.reason}: ${p.detail}`);
    if (o.json) out(JSON.stringify(p) + '\n');
    if (signals.interrupted() !== undefined) break;
  }
  report.passed = report.points.length === until.length && report.points.every((p) => p.passed);
  const files = writeReport(reportDir, report);
  if (!o.json) out(reportTable(report.points));
  log.info(`Report: [${files.json}], [${files.text}]; console logs in [${reportDir}].`);
  return report.passed ? 0 : 1;
}
