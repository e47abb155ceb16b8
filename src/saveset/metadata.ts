/**
 * The metadata JSON of a stream (FORMAT.md §2.5) and its validation (§9 checks 4–5).
 */
import { pyJsonDumps } from './pyjson.js';
import { MAX_METADATA_LEN, SavesetFormatError, type Metadata } from './types.js';

export { MAX_METADATA_LEN };

/** The stream version our writer records. */
export const STREAM_VERSION = 2;

/** What a caller must supply to build the metadata of a new stream. */
export interface MetadataParams {
  virtualSize: number;
  dataSize: number;
  /** A Date is formatted with formatDate(); a string is used verbatim. Default: now. */
  date?: Date | string;
  diskName: string;
  diskFormat: string;
  checkpointName: string;
  compressed: false | number;
  /** Default "". */
  parentCheckpoint?: string;
  incremental: boolean;
}

/** Metadata for a new stream, with `compressionMethod` "lz4" and `streamVersion` 2. */
export function buildMetadata(p: MetadataParams): Metadata {
  return {
    virtualSize: p.virtualSize,
    dataSize: p.dataSize,
    date: typeof p.date === 'string' ? p.date : formatDate(p.date ?? new Date()),
    diskName: p.diskName,
    diskFormat: p.diskFormat,
    checkpointName: p.checkpointName,
    compressed: p.compressed,
    compressionMethod: 'lz4',
    parentCheckpoint: p.parentCheckpoint ?? '',
    incremental: p.incremental,
    streamVersion: STREAM_VERSION,
  };
}

/** The metadata JSON exactly as the original writes it: keys in §2.5 order, `json.dumps(indent=4)`. */
export function metadataJson(meta: Metadata): string {
  const ordered = {
    virtualSize: meta.virtualSize,
    dataSize: meta.dataSize,
    date: meta.date,
    diskName: meta.diskName,
    diskFormat: meta.diskFormat,
    checkpointName: meta.checkpointName,
    compressed: meta.compressed,
    compressionMethod: meta.compressionMethod,
    parentCheckpoint: meta.parentCheckpoint,
    incremental: meta.incremental,
    streamVersion: meta.streamVersion,
  };
  return pyJsonDumps(ordered, 4);
}

const pad = (n: number, w = 2): string => String(n).padStart(w, '0');

/**
 * Python's `datetime.now().isoformat()` for `d` in local time: `YYYY-MM-DDTHH:MM:SS.ffffff`, the
 * fraction omitted when it is 0 (a Date has millisecond resolution, so ffffff ends in 000).
 */
export function formatDate(d: Date): string {
  if (Number.isNaN(d.getTime())) throw new RangeError('formatDate: invalid Date');
  const base =
    `${pad(d.getFullYear(), 4)}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}` +
    `T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const ms = d.getMilliseconds();
  return ms === 0 ? base : `${base}.${pad(ms * 1000, 6)}`;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const has = (o: Record<string, unknown>, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k);

/**
 * Parse and validate the metadata JSON (`json` was read at `offset` of `file`), applying the
 * reader rules of FORMAT.md §2.5 and check 5 of §9. `compressed` tells whether data payloads are LZ4.
 */
export function parseMetadata(
  json: Buffer,
  file: string,
  offset: number,
): { metadata: Metadata; raw: Record<string, unknown>; compressed: boolean } {
  const bad = (reason: string): SavesetFormatError => new SavesetFormatError(file, offset, `bad metadata: ${reason}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(json));
  } catch (e) {
    throw bad(`not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (!isObject(parsed)) throw bad('not a JSON object');
  const raw = parsed;

  const versionKey = has(raw, 'stream-version') ? 'stream-version' : has(raw, 'streamVersion') ? 'streamVersion' : undefined;
  if (versionKey === undefined) throw bad('no stream version (neither "stream-version" nor "streamVersion")');
  const version = raw[versionKey];
  if (version !== 1 && version !== 2) throw bad(`unsupported stream version ${JSON.stringify(version)}`);

  for (const k of ['virtualSize', 'dataSize'] as const) {
    if (!isCount(raw[k])) throw bad(`"${k}" must be a non-negative safe integer`);
  }

  let compressed: false | number = false;
  if (version === 2 && has(raw, 'compressed')) {
    const c = raw['compressed'];
    if (c === false) compressed = false;
    else if (c === true) compressed = 1; // tolerated; Python's int(True)
    else if (typeof c === 'number' && Number.isSafeInteger(c)) compressed = c;
    else throw bad('"compressed" must be false or an integer');
  }
  const method = raw['compressionMethod'];
  if (compressed !== false && method !== 'lz4') {
    throw bad(`unsupported compression method ${JSON.stringify(method)} (only "lz4")`);
  }

  if (typeof raw['incremental'] !== 'boolean') throw bad('"incremental" must be a boolean');
  if (typeof raw['checkpointName'] !== 'string') throw bad('"checkpointName" must be a string');
  const parent = raw['parentCheckpoint'];
  if (typeof parent !== 'string' && parent !== false) throw bad('"parentCheckpoint" must be a string');

  const str = (k: string): string => {
    const v = raw[k];
    if (v === undefined) return '';
    if (typeof v !== 'string') throw bad(`"${k}" must be a string`);
    return v;
  };

  const metadata: Metadata = {
    virtualSize: raw['virtualSize'] as number,
    dataSize: raw['dataSize'] as number,
    date: str('date'),
    diskName: str('diskName'),
    diskFormat: str('diskFormat'),
    checkpointName: raw['checkpointName'] as string,
    compressed,
    compressionMethod: typeof method === 'string' ? method : 'lz4',
    parentCheckpoint: parent === false ? '' : (parent as string),
    incremental: raw['incremental'] as boolean,
    streamVersion: version,
  };
  return { metadata, raw, compressed: compressed !== false };
}
