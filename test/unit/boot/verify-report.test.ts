/** The verify report (src/boot/verify-report.ts) and verify's path rules (src/boot/verify.ts). */
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { reportTable, writeReport, type PointReport } from '../../../src/boot/verify-report.js';
import { defaultReportDir, isInside, screenshotPath } from '../../../src/boot/verify.js';

const point = (checkpoint: string, passed: boolean, extra: Partial<PointReport> = {}): PointReport => ({
  checkpoint,
  passed,
  reason: passed ? null : 'panic',
  detail: passed ? 'console matched after 12.3 s' : 'kernel panic on the console after 8.1 s: Kernel panic - not syncing: Attempted to kill init!',
  domain: 'restore_vm1',
  seconds: { setup: 0.9, console: passed ? 12.3 : null, agent: null, running: null, total: 14.2 },
  os: null,
  screenshot: null,
  consoleLogs: [`/r/${checkpoint}.console.log`],
  ...extra,
});

test('table: one row per point, failures explained below', () => {
  const t = reportTable([point('virtnbdbackup.2', false), point('virtnbdbackup.1', true)]);
  const lines = t.trimEnd().split('\n');
  expect(lines[0]).toMatch(/^checkpoint\s+result\s+reason\s+setup s\s+console s\s+agent s\s+running s\s+total s$/);
  expect(lines[2]).toMatch(/^virtnbdbackup\.2\s+FAIL\s+panic\s+0\.9\s+-\s+-\s+-\s+14\.2$/);
  expect(lines[3]).toMatch(/^virtnbdbackup\.1\s+PASS\s+-\s+0\.9\s+12\.3\s+-\s+-\s+14\.2$/);
  expect(lines[4]).toBe('virtnbdbackup.2: kernel panic on the console after 8.1 s: Kernel panic - not syncing: Attempted to kill init!');
});

test('report.json and report.txt are written whole, no .partial left', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vnbd-report-'));
  try {
    const report = { backup: '/b/vm1', started: '2026-12-04T02:00:00.000Z', passed: false, points: [point('a', false), point('b', true)] };
    const files = writeReport(dir, report);
    expect(JSON.parse(readFileSync(files.json, 'utf8'))).toEqual(report);
    expect(readFileSync(files.text, 'utf8')).toMatch(/^Boot verification of \[\/b\/vm1\], started 2026-12-04T02:00:00.000Z: FAILED\n\ncheckpoint/);
    expect(readdirSync(dir).sort()).toEqual(['report.json', 'report.txt']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('paths: inside the backup, screenshot per point, default report directory', () => {
  expect(isInside('/b/vm1', '/b/vm1')).toBe(true);
  expect(isInside('/b/vm1/r', '/b/vm1/')).toBe(true);
  expect(isInside('/b/vm1-r', '/b/vm1')).toBe(false);
  expect(isInside('/b', '/b/vm1')).toBe(false);
  expect(isInside('/b/vm1/../x', '/b/vm1')).toBe(false);
  expect(screenshotPath('/r/s.png', 'virtnbdbackup.3', false)).toBe('/r/s.png');
  expect(screenshotPath('/r/s.png', 'virtnbdbackup.3', true)).toBe('/r/s-virtnbdbackup.3.png');
  expect(screenshotPath('/r/shot', 'a/b', true)).toBe('/r/shot-a_b.png');
  expect(screenshotPath('s.png', 'c', false)).toBe(resolve('s.png'));
  expect(defaultReportDir(new Date(2026, 11, 4, 3, 5, 9))).toBe(resolve('virtnbd-verify-20261204-030509'));
});
