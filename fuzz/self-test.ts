/**
 * `node dist/fuzz/self-test.js FINDINGS_DIR`: proves that the engine's coverage guidance works.
 * A planted bug sits behind three nested compares (1 in 4096 inputs at random); the engine must
 * find it as a crash, and must not report the declared rejection (RangeError). Prints one JSON
 * line: the finding kinds, the first three bytes (low nibbles) of the crashing input, the number
 * of coverage features and executions.
 *
 * It runs in a process of its own: V8's precise coverage is taken over every script of the
 * isolate, so inside a long test process (jest --runInBand, thousands of scripts loaded) each
 * execution costs far more and the time budget is spent on bookkeeping.
 */
import { readFileSync } from 'node:fs';
import { fuzz, type FuzzTarget } from './engine.js';

const findingsDir = process.argv[2];
if (findingsDir === undefined) {
  process.stderr.write('usage: node dist/fuzz/self-test.js FINDINGS_DIR\n');
  process.exit(2);
}

const target: FuzzTarget = {
  name: 'self-test',
  what: 'planted bug',
  seeds: () => [Buffer.from('hello world')],
  maxLen: 64,
  run(d) {
    if ((d[0]! & 15) === 5) {
      if ((d[1]! & 15) === 10) {
        if ((d[2]! & 15) === 3) throw new TypeError('planted');
      }
    }
    if (d.length > 40) throw new RangeError('too long: a declared rejection');
  },
  isRejection: (e) => e instanceof RangeError,
};

const s = await fuzz(target, { seconds: 30, seed: 7, findingsDir, coverageFilter: ['fuzz/self-test.js'], stopAfterFindings: 1 });
const first = s.findings[0] === undefined ? [] : [...readFileSync(s.findings[0].file).subarray(0, 3)].map((b) => b & 15);
process.stdout.write(JSON.stringify({ kinds: s.findings.map((f) => f.kind), first, features: s.features, executions: s.executions }) + '\n');
