import { tryParseCommandLine, type CommandSpec, type ParseOutcome } from '../../../src/cli/argv.js';
import { virtnbdbackupSpec, virtnbdrestoreSpec, virtnbdmapSpec, type SpecEnv } from '../../../src/cli/specs.js';

export const ENV: SpecEnv = { euid: 1000, pid: 4242, home: '/home/tester', user: 'tester' };
export const backup = virtnbdbackupSpec(ENV);
export const restore = virtnbdrestoreSpec(ENV);
export const map = virtnbdmapSpec(ENV);

/** Parse and expect success; returns the values. */
export function ok(spec: CommandSpec, ...argv: string[]): Record<string, unknown> {
  const r = tryParseCommandLine(spec, argv);
  if (r.kind !== 'ok') throw new Error(`expected success for ${JSON.stringify(argv)}, got exit ${r.code}: ${r.stderr}`);
  return r.values;
}

/** Parse and expect a usage error (exit 2); returns the error message (after "<prog>: error: "). */
export function usage(spec: CommandSpec, ...argv: string[]): string {
  const r: ParseOutcome = tryParseCommandLine(spec, argv);
  if (r.kind !== 'exit' || r.code !== 2) throw new Error(`expected a usage error for ${JSON.stringify(argv)}, got ${JSON.stringify(r)}`);
  expect(r.stdout).toBe('');
  expect(r.stderr.startsWith(`usage: ${spec.prog} `)).toBe(true);
  const lines = r.stderr.trimEnd().split('\n');
  const last = lines[lines.length - 1];
  const prefix = `${spec.prog}: error: `;
  expect(last.startsWith(prefix)).toBe(true);
  return last.slice(prefix.length);
}

/** Parse and expect exit 0 with stdout output (help/version); returns stdout. */
export function exit0(spec: CommandSpec, ...argv: string[]): string {
  const r = tryParseCommandLine(spec, argv);
  if (r.kind !== 'exit' || r.code !== 0) throw new Error(`expected exit 0 for ${JSON.stringify(argv)}, got ${JSON.stringify(r)}`);
  expect(r.stderr).toBe('');
  return r.stdout;
}

/** Minimal required options of backup / restore / map. */
export const B = ['-d', 'vm1', '-o', '/b'];
export const R = ['-i', '/b', '-o', '/r'];
export const M = ['-f', '/b/sda.full.data'];
