/**
 * `node dist/fuzz/run.js [--seconds N] [--target NAME]... [--corpus DIR] [--findings DIR] [--seed N] [--json]`
 *
 * Fuzzes each target for N seconds (default 10) in this process and prints one line per target
 * (`--json`: one JSON object per line). Exit status 1 when any target had a finding (each
 * finding's input is in the findings directory), 2 for a usage error. scripts/fuzz.sh runs every
 * target in its own process (a hang kills only that one).
 */
import { join, resolve } from 'node:path';
import { fuzz, type FuzzStats } from './engine.js';
import { cleanScratch, prepareSeeds, TARGETS } from './targets.js';

function usage(msg: string): never {
  process.stderr.write(`fuzz: ${msg}\nusage: node dist/fuzz/run.js [--seconds N] [--target NAME]... [--corpus DIR] [--findings DIR] [--seed N] [--json]\ntargets: ${TARGETS.map((t) => t.name).join(', ')}\n`);
  process.exit(2);
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  let seconds = 10;
  let seed = 1;
  let corpus: string | undefined;
  let findings = resolve('fuzz-findings');
  let json = false;
  const names: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const val = (): string => args[++i] ?? usage(`${a} needs a value`);
    if (a === '--seconds') seconds = Number(val());
    else if (a === '--seed') seed = Number(val());
    else if (a === '--target') names.push(val());
    else if (a === '--corpus') corpus = resolve(val());
    else if (a === '--findings') findings = resolve(val());
    else if (a === '--json') json = true;
    else usage(`unknown argument ${a}`);
  }
  if (!(seconds > 0)) usage('--seconds must be a positive number');
  const targets = names.length ? names.map((n) => TARGETS.find((t) => t.name === n) ?? usage(`unknown target ${n}`)) : TARGETS;
  let bad = 0;
  try {
    await prepareSeeds();
    for (const t of targets) {
      const s: FuzzStats = await fuzz(t, { seconds, seed, findingsDir: findings, corpusDir: corpus ? join(corpus, t.name) : undefined });
      bad += s.findings.length;
      if (json) process.stdout.write(JSON.stringify(s) + '\n');
      else {
        process.stdout.write(
          `${t.name}: ${s.executions} executions in ${s.seconds} s, corpus ${s.corpus} (${s.seeds} seeds), ${s.features} coverage features, ` +
            `${s.rejections} rejected, ${s.accepted} accepted, largest allocation ${s.maxAllocation} bytes, ${s.findings.length} findings\n`,
        );
        for (const f of s.findings) process.stdout.write(`  ${f.kind}: ${f.message.split('\n').slice(0, 6).join('\n    ')}\n  input: ${f.file}\n`);
      }
    }
  } finally {
    cleanScratch();
  }
  return bad ? 1 : 0;
}

main().then(
  (rc) => process.exit(rc),
  (e: unknown) => {
    process.stderr.write(`fuzz: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);
