/**
 * Hostile input (fuzz/README.md): every saved finding stays fixed, and a short coverage-guided
 * run of every target (12 s each, ~75 s in all) finds nothing new.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cleanScratch, TARGETS } from '../../fuzz/targets.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const REGRESSIONS = join(ROOT, 'test', 'fuzz', 'regressions');
const SECONDS = Number(process.env['VIRTNBD_FUZZ_SECONDS'] ?? 12);

afterAll(() => cleanScratch());

describe('saved fuzz findings', () => {
  const cases = readdirSync(REGRESSIONS).flatMap((t) => readdirSync(join(REGRESSIONS, t)).map((f) => [t, f] as const));
  it('are there', () => {
    expect(cases.length).toBeGreaterThan(0);
  });
  it.each(cases)('%s/%s is rejected cleanly or accepted', async (target, file) => {
    const t = TARGETS.find((x) => x.name === target);
    expect(t).toBeDefined();
    const data = readFileSync(join(REGRESSIONS, target, file));
    let err: unknown;
    try {
      await t!.run(data);
    } catch (e) {
      err = e;
    }
    if (err !== undefined && !t!.isRejection(err)) throw err;
  });
});

describe('the engine', () => {
  it('finds a crash behind three nested compares (1 in 4096 at random) within seconds (coverage guidance works)', () => {
    const findings = mkdtempSync(join(tmpdir(), 'virtnbd-fuzz-self-'));
    try {
      const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'fuzz', 'self-test.js'), findings], { encoding: 'utf8', timeout: 90_000 });
      expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
      const s = JSON.parse(r.stdout) as { kinds: string[]; first: number[]; features: number; executions: number };
      expect(s.kinds).toEqual(['crash']);
      expect(s.first).toEqual([5, 10, 3]);
      expect(s.features).toBeGreaterThan(3);
    } finally {
      rmSync(findings, { recursive: true, force: true });
    }
  }, 120_000);
});

describe('short fuzz run', () => {
  it(`runs every target for ${SECONDS} s without a finding`, () => {
    const findings = mkdtempSync(join(tmpdir(), 'virtnbd-fuzz-findings-'));
    try {
      const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'fuzz', 'run.js'), '--seconds', String(SECONDS), '--json', '--findings', findings, '--seed', process.env['VIRTNBD_FUZZ_SEED'] ?? '1'], {
        encoding: 'utf8',
        timeout: (SECONDS * TARGETS.length + 120) * 1000,
      });
      const stats = r.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { target: string; executions: number; corpus: number; seeds: number; findings: unknown[] });
      const lines = stats.map((s) => `${s.target}: ${s.executions} executions, corpus ${s.corpus}`).join('\n');
      process.stdout.write(`fuzz: ${lines}\n`);
      expect({ status: r.status, signal: r.signal, stderr: r.stderr, findings: stats.flatMap((s) => s.findings) }).toEqual({ status: 0, signal: null, stderr: '', findings: [] });
      expect(stats.map((s) => s.target)).toEqual(TARGETS.map((t) => t.name));
      for (const s of stats) {
        expect(s.executions).toBeGreaterThan(50);
        expect(s.corpus).toBeGreaterThan(s.seeds > 0 ? 1 : 0);
      }
      rmSync(findings, { recursive: true, force: true }); // kept when anything failed, for the inputs
    } catch (e) {
      process.stderr.write(`fuzz: findings kept in ${findings}\n`);
      throw e;
    }
  }, (SECONDS * 6 + 180) * 1000);
});
