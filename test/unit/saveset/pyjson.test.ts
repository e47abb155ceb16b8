import { execFileSync } from 'node:child_process';
import { pyJsonDumps } from '../../../src/saveset/pyjson.js';

/** Python's json.dumps(v) and json.dumps(v, indent=4) for each value (passed to Python as JSON). */
function python(values: unknown[]): { flat: string; indented: string }[] {
  const script =
    'import json,sys\n' +
    'vals = json.loads(sys.stdin.read())\n' +
    'print(json.dumps([[json.dumps(v), json.dumps(v, indent=4)] for v in vals]))\n';
  const out = execFileSync('python3', ['-c', script], { input: JSON.stringify(values) }).toString('utf8');
  return (JSON.parse(out) as [string, string][]).map(([flat, indented]) => ({ flat, indented }));
}

const allControls = Array.from({ length: 0x80 }, (_, i) => String.fromCharCode(i)).join('');

const cases: unknown[] = [
  'plain',
  '',
  'quote " backslash \\ slash / tab \t nl \n cr \r bs \b ff \f',
  allControls,
  '\x7f del, é, ß, € and 😀 emoji, \u2028 \u2029 \ufeff \uffff',
  'lone \ud800 surrogate \udfff',
  0,
  -1,
  Number.MAX_SAFE_INTEGER,
  -Number.MAX_SAFE_INTEGER,
  true,
  false,
  null,
  [],
  {},
  [[]],
  [{}],
  { a: [], b: {} },
  [4408, 262199, 298, 131111, 4408],
  [1120, { '48213': [20101, 20098, 8014] }, 302],
  { 'é key': { nested: [1, 'two', [3, { four: null }], true] }, z: 1, a: 2 },
  { '': '', '"': '\\', 'x/y': ['/', '\u0000'] },
  {
    virtualSize: 4096, dataSize: 24, date: '2026-01-02T03:04:05.678901', diskName: 'sda', diskFormat: 'qcow2',
    checkpointName: 'virtnbdbackup.0', compressed: false, compressionMethod: 'lz4', parentCheckpoint: '',
    incremental: false, streamVersion: 2,
  },
];

describe('pyJsonDumps', () => {
  const expected = python(cases);
  test.each(cases.map((c, i) => [i, c]))('case %i equals Python json.dumps', (i, value) => {
    const e = expected[i as number]!;
    expect(pyJsonDumps(value)).toBe(e.flat);
    expect(pyJsonDumps(value, 4)).toBe(e.indented);
  });
  test('escapes are lower-case \\uXXXX and only ASCII comes out', () => {
    expect(pyJsonDumps('é😀\x7f')).toBe('"\\u00e9\\ud83d\\ude00\\u007f"');
    expect(pyJsonDumps({ k: 'v' }, 4)).toBe('{\n    "k": "v"\n}');
  });
  test('unsupported values throw', () => {
    expect(() => pyJsonDumps(1.5)).toThrow(TypeError);
    expect(() => pyJsonDumps(2 ** 53)).toThrow(TypeError);
    expect(() => pyJsonDumps({ a: undefined })).toThrow(TypeError);
    expect(() => pyJsonDumps(10n)).toThrow(TypeError);
  });
  test('a number option writes every number (nested, indented) its own way', () => {
    const number = (n: number): string => (Number.isInteger(n) ? String(n) : `f${n}`);
    expect(pyJsonDumps({ a: [1.5, 2], b: { c: 0.25 } }, 4, { number })).toBe('{\n    "a": [\n        f1.5,\n        2\n    ],\n    "b": {\n        "c": f0.25\n    }\n}');
    expect(pyJsonDumps([1.5], undefined, { number })).toBe('[f1.5]');
  });
});
