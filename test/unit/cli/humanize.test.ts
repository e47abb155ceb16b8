import { execFileSync } from 'node:child_process';
import { humanSize } from '../../../src/util/humanize.js';

/** The original's humanize() (BEHAVIOUR.md §7.4), run by python3 as the reference. */
const PY = `
import json, sys
def humanize(num, suffix="B"):
    for unit in ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi"]:
        if abs(num) < 1024.0:
            return f"{num:3.1f}{unit}{suffix}"
        num /= 1024.0
    return f"{num:.1f}Yi{suffix}"
print(json.dumps([humanize(v) for v in json.load(sys.stdin)]))
`;

function values(): number[] {
  const v = new Set<number>([0, 1, 2, 9, 10, 99, 100, 512, 1000, 1023, 1024, 1025, 1280, 1792, 2304, 65536, 131072]);
  for (let k = 0; k < 40; k++) v.add(256 + 512 * k); // exact .x5 ties in KiB
  for (let k = 0; k < 20; k++) v.add(2 ** 19 + 2 ** 20 * k); // ties in MiB
  for (let k = 0; k < 10; k++) v.add((2 ** 29) * (2 * k + 1)); // ties in GiB
  for (let e = 1; e < 63; e++) for (const d of [-1, 0, 1]) v.add(2 ** e + d);
  for (const p of [10, 20, 30, 40, 50, 60, 70, 80, 90]) for (const m of [1023.95, 1023.96, 1023.949, 0.05, 0.25, 0.75, 999.95]) v.add(Math.round(m * 2 ** p));
  let x = 0x9e3779b9;
  const rnd = () => ((x = (Math.imul(x ^ (x >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0) / 2 ** 32);
  for (let i = 0; i < 200; i++) v.add(Math.floor(rnd() * 2 ** (1 + Math.floor(rnd() * 52))));
  for (const f of [0.05, 0.15, 0.25, 0.35, 1.25, 1.35, 1023.95, 1023.96, 12.345, 2.5e-7]) v.add(f);
  for (const n of [-1, -1280, -1048576, -0.05]) v.add(n);
  v.add(2 ** 80); v.add(2 ** 90 + 2 ** 89 + 2 ** 85); v.add(1.5 * 2 ** 100);
  return [...v];
}

describe('humanSize', () => {
  test('BEHAVIOUR.md §7.4 examples', () => {
    expect(humanSize(0)).toBe('0.0B');
    expect(humanSize(1023)).toBe('1023.0B');
    expect(humanSize(1024)).toBe('1.0KiB');
    expect(humanSize(65536)).toBe('64.0KiB');
    expect(humanSize(131072)).toBe('128.0KiB');
    expect(humanSize(1280)).toBe('1.2KiB'); // half-even on the binary value, not toFixed's 1.3
    expect(humanSize(1792)).toBe('1.8KiB');
    expect(humanSize(1048575)).toBe('1024.0KiB'); // < 1024 KiB before rounding
    expect(humanSize(2 ** 80)).toBe('1.0YiB');
  });

  test('matches the original (python3) on a few hundred values', () => {
    const vals = values();
    expect(vals.length).toBeGreaterThan(300);
    const py = JSON.parse(execFileSync('python3', ['-c', PY], { input: JSON.stringify(vals) }).toString()) as string[];
    const mismatches = vals.map((v, i) => [v, humanSize(v), py[i]] as const).filter(([, a, b]) => a !== b);
    expect(mismatches).toEqual([]);
  });
});
