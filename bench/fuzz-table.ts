/**
 * Coverage-guided fuzzing of the plugin shim's table parser (plugin/vnbd-table.c) with libFuzzer
 * (clang-14 -fsanitize=fuzzer,address,undefined; packages clang-14 libclang-rt-14-dev).
 *
 *   node dist/bench/fuzz-table.js [--seconds N] [--keep]     (default 300 s; scripts/fuzz-plugin-table.sh)
 *
 * Builds build/fuzz/table-fuzz from plugin/fuzz/table-fuzz.c, seeds a corpus with the extent
 * tables of every point of the fixture chains (test/fixtures/upstream-sets d1/d2, vda/sdb, file
 * names rewritten to /f0.. as the harness expects) and of plugin/fuzz/regressions/, first runs
 * every regression input once, then fuzzes for N seconds. Prints executions, corpus size and
 * any crash (saved under the run's artifact directory; each one is to become a file in
 * plugin/fuzz/regressions/ once fixed). Exit status 1 when a crash or leak was found.
 * test/integration/plugin-fuzz.test.ts runs a short (≤ 30 s) session of the same.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { indexSaveset } from '../src/saveset/reader.js';
import { resolveChain } from '../src/chain/resolve.js';
import { encodeTable } from '../src/worker/table.js';
import { packageRoot } from '../src/util/package-root.js';

export const CLANG = 'clang-14';

function root(): string {
  return packageRoot();
}

/** Build the harness (ASan + UBSan + libFuzzer); returns the binary's path. */
export async function buildFuzzer(): Promise<string> {
  const out = join(root(), 'build', 'fuzz');
  mkdirSync(out, { recursive: true });
  const bin = join(out, 'table-fuzz');
  const r = await execa(
    CLANG,
    ['-g', '-O1', '-std=gnu11', '-Wall', '-Wextra', '-fsanitize=fuzzer,address,undefined', '-fno-sanitize-recover=undefined',
      join(root(), 'plugin', 'fuzz', 'table-fuzz.c'), join(root(), 'plugin', 'vnbd-table.c'), '-o', bin],
    { reject: false, all: true },
  );
  if (r.exitCode !== 0) throw new Error(`building the fuzzer failed (needs ${CLANG} and libclang-rt-14-dev, see scripts/setup.sh):\n${r.all}`);
  return bin;
}

/** Tables of every point of the fixture chains, file names /f0.., into dir; returns how many. */
export function writeSeeds(dir: string): number {
  const sets = join(root(), 'test', 'fixtures', 'upstream-sets');
  let n = 0;
  for (const set of ['d1', 'd2']) {
    const backup = join(sets, set, 'backup');
    for (const disk of ['vda', 'sdb']) {
      const names = readdirSync(backup);
      const diff = names.find((x) => new RegExp(`^${disk}\\.diff\\.\\d+\\.data$`).test(x));
      const chain = [`${disk}.full.data`, ...[1, 2, 3].map((i) => `${disk}.inc.virtnbdbackup.${i}.data`)];
      const points = chain.map((_, k) => chain.slice(0, k + 1));
      if (diff) points.push([...chain.slice(0, 3), diff]);
      for (const p of points) {
        const map = resolveChain(p.map((f) => indexSaveset(join(backup, f))));
        writeFileSync(join(dir, `${set}-${disk}-${p.length}${p.some((f) => f.includes('diff')) ? 'd' : ''}.bin`), encodeTable({ ...map, files: map.files.map((_, i) => `/f${i}`) }));
        n++;
      }
    }
  }
  return n;
}

export const REGRESSIONS = (): string => join(root(), 'plugin', 'fuzz', 'regressions');

export interface FuzzResult {
  executions: number;
  corpusFiles: number;
  seeds: number;
  regressions: number;
  crashes: string[];
  output: string;
}

/** Run every regression input once, then fuzz for `seconds`. */
export async function runFuzzer(bin: string, work: string, seconds: number): Promise<FuzzResult> {
  const corpus = join(work, 'corpus');
  const seedDir = join(work, 'seeds');
  const artifacts = join(work, 'artifacts');
  for (const d of [corpus, seedDir, artifacts]) mkdirSync(d, { recursive: true });
  const seeds = writeSeeds(seedDir);
  const regDir = REGRESSIONS();
  const regs = existsSync(regDir) ? readdirSync(regDir).filter((f) => f.endsWith('.bin')).map((f) => join(regDir, f)) : [];
  let output = '';
  if (regs.length > 0) {
    const r = await execa(bin, [...regs], { reject: false, all: true });
    output += r.all;
    if (r.exitCode !== 0) return { executions: regs.length, corpusFiles: 0, seeds, regressions: regs.length, crashes: regs, output };
  }
  const r = await execa(
    bin,
    [corpus, seedDir, ...(regs.length ? [regDir] : []), `-max_total_time=${seconds}`, '-print_final_stats=1', `-artifact_prefix=${artifacts}/`, '-rss_limit_mb=2048', '-timeout=10'],
    { reject: false, all: true },
  );
  output += r.all;
  const executions = Number(/stat::number_of_executed_units:\s*(\d+)/.exec(r.all ?? '')?.[1] ?? 0);
  const crashes = readdirSync(artifacts).map((f) => join(artifacts, f));
  if (r.exitCode !== 0 && crashes.length === 0) crashes.push(`(libFuzzer exited ${r.exitCode})`);
  return { executions, corpusFiles: readdirSync(corpus).length, seeds, regressions: regs.length, crashes, output };
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  let seconds = 300;
  let keep = false;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--seconds' && /^\d+$/.test(argv[i + 1] ?? '')) seconds = Number(argv[++i]);
    else if (argv[i] === '--keep') keep = true;
    else {
      process.stderr.write('usage: node dist/bench/fuzz-table.js [--seconds N] [--keep]\n');
      process.exit(2);
    }
  }
  const bin = await buildFuzzer();
  const work = mkdtempSync(join(tmpdir(), 'vnbd-fuzz-table-'));
  const res = await runFuzzer(bin, work, seconds);
  process.stdout.write(
    `fuzz-table: ${seconds} s, ${res.executions} executions (${Math.round(res.executions / Math.max(1, seconds))}/s), ` +
      `${res.seeds} seeds, ${res.regressions} regression inputs, corpus ${res.corpusFiles} files, ${res.crashes.length} crashes\n`,
  );
  if (res.crashes.length > 0) {
    process.stdout.write(`${res.output.split('\n').slice(-40).join('\n')}\ncrashes: ${res.crashes.join(' ')} (kept in ${work})\n`);
    process.exit(1);
  }
  if (keep) process.stdout.write(`kept ${work}\n`);
  else rmSync(work, { recursive: true, force: true });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((e: unknown) => {
    process.stderr.write(`fuzz-table: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  });
}
