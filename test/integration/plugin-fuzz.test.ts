/**
 * A short libFuzzer session (20 s) on the plugin shim's table parser (bench/fuzz-table.ts,
 * plugin/fuzz/table-fuzz.c), seeded with the tables of every fixture chain point; the saved
 * regression inputs (plugin/fuzz/regressions/) run first. Longer runs: scripts/fuzz-plugin-table.sh.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REGRESSIONS, buildFuzzer, runFuzzer } from '../../bench/fuzz-table.js';

test('table parser: no crash, leak or failed invariant in 20 s of fuzzing; every regression input passes', async () => {
  const bin = await buildFuzzer();
  const work = mkdtempSync(join(tmpdir(), 'vnbd-fuzz-test-'));
  try {
    const res = await runFuzzer(bin, work, 20);
    process.stderr.write(`fuzz-table: ${res.executions} executions, ${res.seeds} seeds, ${res.regressions} regressions, corpus ${res.corpusFiles} files\n`);
    expect(res.crashes).toEqual([]);
    expect(res.regressions).toBe(readdirSync(REGRESSIONS()).filter((f) => f.endsWith('.bin')).length);
    expect(res.regressions).toBeGreaterThan(0);
    expect(res.seeds).toBeGreaterThanOrEqual(16);
    expect(res.executions).toBeGreaterThan(10_000);
    expect(res.corpusFiles).toBeGreaterThan(res.seeds);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}, 180_000);
