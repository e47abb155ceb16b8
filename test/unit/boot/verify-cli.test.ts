/** The `--boot --verify` options of virtnbdmap (src/cli/specs.ts) and what they refuse. */
import { map, ok, usage } from '../cli/helpers.js';

const I = ['-i', '/set', '--boot'];

test('defaults and values', () => {
  const v = ok(map, ...I, '--verify');
  expect([v.verify, v.allPoints, v.timeout, v.expectConsole, v.expectAgent, v.screenshot, v.reportDir]).toEqual([true, false, 300, undefined, false, undefined, undefined]);
  const w = ok(map, ...I, '--verify', '--all-points', '--timeout', '90', '--expect-console', 'login:', '--expect-agent', '--screenshot', '/r/s.png', '--report-dir', '/r');
  expect([w.allPoints, w.timeout, w.expectConsole, w.expectAgent, w.screenshot, w.reportDir]).toEqual([true, 90, 'login:', true, '/r/s.png', '/r']);
  // prefixes: --veri is ours, --verb stays the original --verbose, --a and --sc are unique
  expect(ok(map, ...I, '--veri').verify).toBe(true);
  expect(ok(map, ...I, '--verb').verbose).toBe(true);
  expect(ok(map, ...I, '--veri', '--a').allPoints).toBe(true);
  expect(ok(map, ...I, '--veri', '--sc', 'x.png').screenshot).toBe('x.png');
});

test('refusals (exit 2)', () => {
  expect(usage(map, '-i', '/set', '--verify')).toBe('argument --verify: requires --boot');
  expect(usage(map, ...I, '--all-points')).toBe('argument --all-points: requires --verify');
  expect(usage(map, ...I, '--timeout', '10')).toBe('argument --timeout: requires --verify');
  expect(usage(map, ...I, '--expect-console', 'x')).toBe('argument --expect-console: requires --verify');
  expect(usage(map, ...I, '--expect-agent')).toBe('argument --expect-agent: requires --verify');
  expect(usage(map, ...I, '--screenshot', 'a.png')).toBe('argument --screenshot: requires --verify');
  expect(usage(map, ...I, '--report-dir', '/r')).toBe('argument --report-dir: requires --verify');
  expect(usage(map, ...I, '--verify', '--migrate-to', '/x')).toBe('argument --migrate-to: not allowed with argument --verify');
  expect(usage(map, ...I, '--verify', '--keep-overlays', '--overlay-dir', '/o')).toBe('argument --keep-overlays: not allowed with argument --verify');
  expect(usage(map, ...I, '--verify', '--all-points', '--until', 'cp')).toBe('argument --all-points: not allowed with argument --until');
  expect(usage(map, ...I, '--verify', '--expect-console', '(')).toMatch(/^argument --expect-console: invalid regular expression: /);
  expect(usage(map, ...I, '--verify', '--timeout', '0')).toMatch(/--timeout/);
});
