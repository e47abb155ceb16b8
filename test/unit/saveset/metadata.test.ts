import { execFileSync } from 'node:child_process';
import { buildMetadata, formatDate, metadataJson, parseMetadata } from '../../../src/saveset/metadata.js';
import { SavesetFormatError } from '../../../src/saveset/types.js';
import { meta } from './helpers.js';

// FORMAT.md §8, verbatim (315 bytes)
const EXAMPLE = `{
    "virtualSize": 4096,
    "dataSize": 24,
    "date": "2026-01-02T03:04:05.678901",
    "diskName": "sda",
    "diskFormat": "qcow2",
    "checkpointName": "virtnbdbackup.0",
    "compressed": false,
    "compressionMethod": "lz4",
    "parentCheckpoint": "",
    "incremental": false,
    "streamVersion": 2
}`;

const parse = (o: unknown) => parseMetadata(Buffer.from(typeof o === 'string' ? o : JSON.stringify(o)), 'f.data', 40);
function reject(o: unknown): SavesetFormatError {
  try {
    parse(o);
  } catch (e) {
    expect(e).toBeInstanceOf(SavesetFormatError);
    expect((e as SavesetFormatError).offset).toBe(40);
    return e as SavesetFormatError;
  }
  throw new Error(`accepted ${JSON.stringify(o)}`);
}
const base = JSON.parse(EXAMPLE) as Record<string, unknown>;

describe('metadataJson', () => {
  test('FORMAT.md §8 example byte for byte', () => {
    const m = meta({ dataSize: 24 });
    expect(metadataJson(m)).toBe(EXAMPLE);
    expect(Buffer.byteLength(metadataJson(m))).toBe(315);
    expect(Buffer.byteLength(metadataJson({ ...m, compressed: 2 }))).toBe(311);
  });
  test('key order is fixed whatever the object order', () => {
    const m = meta({ dataSize: 24 });
    const shuffled = Object.fromEntries(Object.entries(m).reverse()) as typeof m;
    expect(metadataJson(shuffled)).toBe(EXAMPLE);
  });
  test('buildMetadata fills method, version, parent', () => {
    const m = buildMetadata({
      virtualSize: 4096, dataSize: 24, date: '2026-01-02T03:04:05.678901', diskName: 'sda', diskFormat: 'qcow2',
      checkpointName: 'virtnbdbackup.0', compressed: false, incremental: false,
    });
    expect(metadataJson(m)).toBe(EXAMPLE);
  });
});

describe('formatDate', () => {
  test('local time, microseconds, fraction omitted when 0', () => {
    expect(formatDate(new Date(2026, 0, 2, 3, 4, 5, 678))).toBe('2026-01-02T03:04:05.678000');
    expect(formatDate(new Date(2026, 10, 28, 16, 48, 42, 0))).toBe('2026-11-28T16:48:42');
    expect(formatDate(new Date(999, 11, 31, 23, 59, 59, 1))).toBe('0999-12-31T23:59:59.001000');
  });
  test('matches Python datetime.isoformat for the same local time', () => {
    const d = new Date(2026, 5, 7, 8, 9, 10, 120);
    const py = execFileSync('python3', ['-c', 'import datetime; print(datetime.datetime(2026,6,7,8,9,10,120000).isoformat(), end="")']).toString();
    expect(formatDate(d)).toBe(py);
  });
});

describe('parseMetadata', () => {
  test('the example parses to the normalised metadata', () => {
    const r = parse(EXAMPLE);
    expect(r.metadata).toEqual(meta({ dataSize: 24 }));
    expect(r.compressed).toBe(false);
    expect(r.raw).toEqual(base);
  });
  test('compressed: integer level, 0 included; true tolerated', () => {
    expect(parse({ ...base, compressed: 16 })).toMatchObject({ compressed: true, metadata: { compressed: 16 } });
    expect(parse({ ...base, compressed: 0 })).toMatchObject({ compressed: true, metadata: { compressed: 0 } });
    expect(parse({ ...base, compressed: true }).compressed).toBe(true);
    reject({ ...base, compressed: 'yes' });
    reject({ ...base, compressed: null });
    reject({ ...base, compressed: 1.5 });
  });
  test('compressionMethod must be lz4 only when compressed', () => {
    reject({ ...base, compressed: 2, compressionMethod: 'zstd' });
    const { compressionMethod: _m, ...noMethod } = base;
    reject({ ...noMethod, compressed: 2 });
    expect(parse({ ...base, compressionMethod: 'zstd' }).compressed).toBe(false);
  });
  test('stream version 1 is never compressed; version key spellings', () => {
    const { streamVersion: _v, ...noVersion } = base;
    expect(parse({ ...noVersion, 'stream-version': 1, compressed: 2 })).toMatchObject({ compressed: false, metadata: { streamVersion: 1, compressed: false } });
    expect(parse({ ...noVersion, 'stream-version': 2, compressed: 2 })).toMatchObject({ compressed: true, metadata: { streamVersion: 2 } });
    // "stream-version" is looked up first
    expect(parse({ ...base, 'stream-version': 1, compressed: 2 }).compressed).toBe(false);
    const { compressed: _c, compressionMethod: _cm, ...v1 } = { ...base, streamVersion: 1 } as Record<string, unknown>;
    expect(parse(v1).metadata).toMatchObject({ streamVersion: 1, compressed: false, compressionMethod: 'lz4' });
    // version 2 without the key: not compressed
    const { compressed: _c2, ...noCompressed } = base;
    expect(parse(noCompressed).compressed).toBe(false);
    reject(noVersion);
    reject({ ...base, streamVersion: 3 });
    reject({ ...base, streamVersion: '2' });
  });
  test('legacy parentCheckpoint false, unknown keys ignored', () => {
    const r = parse({ ...base, parentCheckpoint: false, extra: { a: [1] } });
    expect(r.metadata.parentCheckpoint).toBe('');
    expect(r.raw['extra']).toEqual({ a: [1] });
    expect(Object.keys(r.metadata)).not.toContain('extra');
  });
  test('required keys and types (check 5), object and JSON (check 4)', () => {
    for (const k of ['virtualSize', 'dataSize', 'incremental', 'checkpointName', 'parentCheckpoint']) {
      const { [k]: _drop, ...rest } = base;
      reject(rest);
    }
    reject({ ...base, virtualSize: -1 });
    reject({ ...base, virtualSize: 2 ** 53 });
    reject({ ...base, dataSize: 1.5 });
    reject({ ...base, dataSize: '24' });
    reject({ ...base, incremental: 0 });
    reject({ ...base, checkpointName: 0 });
    reject({ ...base, parentCheckpoint: true });
    reject({ ...base, diskName: 5 });
    reject([base]);
    reject('null');
    reject('{"virtualSize": 1,');
    reject('');
    expect(() => parseMetadata(Buffer.from([0x7b, 0xff, 0x7d]), 'f', 40)).toThrow(SavesetFormatError);
  });
});
