/**
 * src/util/fault-point.ts: the spec parser, and in a child process (the built module): inert
 * without VIRTNBD_FAULT, SIGKILL at the named point, SIGSTOP (pause) then continue on SIGCONT,
 * the n-th hit, and the marker line.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { parseFaultSpecs } from '../../src/util/fault-point.js';
import { waitStopped } from './fault-helpers.js';

const MODULE = fileURLToPath(new URL('../../dist/src/util/fault-point.js', import.meta.url));
const script = `import { faultPoint } from ${JSON.stringify(MODULE)};
for (let i = 1; i <= 3; i++) { faultPoint('t:one'); process.stdout.write('one' + i + '\\n'); }
faultPoint('t:two'); process.stdout.write('end\\n');`;

const run = (fault: string | undefined, marker?: string) =>
  execa('node', ['--input-type=module', '-e', script], {
    reject: false,
    env: { VIRTNBD_FAULT: fault, VIRTNBD_FAULT_MARKER: marker },
    extendEnv: true,
  });

test('parses point, action and hit count; ignores empty entries', () => {
  expect(parseFaultSpecs('backup:mid-disk')).toEqual([{ point: 'backup:mid-disk', action: 'kill', hit: 1 }]);
  expect(parseFaultSpecs('backup:mid-disk:pause@3, prune:x:kill ,,')).toEqual([
    { point: 'backup:mid-disk', action: 'pause', hit: 3 },
    { point: 'prune:x', action: 'kill', hit: 1 },
  ]);
  expect(parseFaultSpecs(undefined)).toEqual([]);
  expect(parseFaultSpecs('')).toEqual([]);
});

test('inert unless named; SIGKILL at the named point and hit', async () => {
  const none = await run(undefined);
  expect([none.exitCode, none.stdout]).toEqual([0, 'one1\none2\none3\nend']);
  const other = await run('t:three');
  expect([other.exitCode, other.stdout]).toEqual([0, 'one1\none2\none3\nend']);
  const k = await run('t:one@2');
  expect([k.signal, k.stdout]).toEqual(['SIGKILL', 'one1']);
  expect(k.stderr).toMatch(/^virtnbd-fault: t:one kill [0-9]+$/m);
  const k2 = await run('t:two:kill');
  expect([k2.signal, k2.stdout]).toEqual(['SIGKILL', 'one1\none2\none3']);
});

test('pause stops the process at the point (marker written), SIGCONT lets it go on', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'virtnbd-fp-'));
  try {
    const marker = join(dir, 'marker');
    const p = run('t:one:pause', marker);
    await waitStopped(p.pid!, 30_000);
    expect(readFileSync(marker, 'utf8')).toBe(`virtnbd-fault: t:one pause ${p.pid}\n`);
    process.kill(p.pid!, 'SIGCONT');
    const r = await p;
    expect([r.exitCode, r.stdout]).toEqual([0, 'one1\none2\none3\nend']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
