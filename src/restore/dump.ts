/**
 * `virtnbdrestore -a dump` (BEHAVIOUR.md §11.10, CLI.md §3): the metadata of every data file of
 * a set, as the JSON list the original prints.
 *
 * Files are found as described in dump-files.ts (`--disk` exact, `--sequence` in its order).
 * Without `--sequence` they are listed per disk (disks in name order), each disk's files in chain
 * order (dump-order.ts); files that cannot be placed in a chain follow in name order, with a
 * warning. A file whose metadata cannot be read is reported (ERROR) and skipped; a raw image has
 * no metadata and is only noted; compressed streams are noted. The exit status of dump is 0 in
 * all these cases (CLI.md §3.3): the caller prints formatDump(entries) and a newline to stdout.
 */
import type { ChainFile } from '../chain/discover.js';
import type { Logger } from '../log/logger.js';
import { pyJsonDumps } from '../saveset/pyjson.js';
import { readSavesetMetadata } from '../saveset/reader.js';
import type { Metadata } from '../saveset/types.js';
import { probeDataFile, selectDataFiles, type SelectedFile } from './dump-files.js';
import { orderDiskFiles } from './dump-order.js';

export interface DumpOptions {
  /** Only this disk (exact `<dev>` match). */
  disk?: string;
  /** Data file names relative to `input`, dumped in this order. */
  sequence?: string[];
}

export interface DumpResult {
  /** The metadata objects, exactly as parsed from each file, in output order. */
  entries: Record<string, unknown>[];
  /** Files whose metadata could not be read (reported and skipped). */
  errors: number;
}

interface ReadFile {
  file: SelectedFile;
  metadata: Metadata;
  raw: Record<string, unknown>;
  compressed: boolean;
}

/**
 * Read the metadata of the selected data files of `input`. Throws RestoreInputError (see
 * dump-files.ts) when `input` is missing or holds no matching data file.
 */
export async function dumpSet(input: string, opts: DumpOptions, log: Logger): Promise<DumpResult> {
  log.info('Dumping saveset meta information');
  const files = selectDataFiles(input, opts, log);
  let errors = 0;

  const read = async (file: SelectedFile): Promise<ReadFile | undefined> => {
    try {
      if ((await probeDataFile(file)).kind === 'raw') {
        log.info(`[${file.path}] is a raw image: it has no metadata to dump.`);
        return undefined;
      }
      const { metadata, raw, compressed } = readSavesetMetadata(file.path);
      return { file, metadata, raw, compressed };
    } catch (e) {
      errors++;
      log.error(`Unable to read the metadata of [${file.path}]: ${(e as Error).message}`);
      return undefined;
    }
  };

  const readable: ReadFile[] = [];
  for (const f of files) {
    const r = await read(f);
    if (r) readable.push(r);
  }

  let ordered: ReadFile[];
  if (opts.sequence !== undefined) {
    ordered = readable;
  } else {
    ordered = [];
    const byDev = new Map<string, ReadFile[]>();
    for (const r of readable) {
      const dev = r.file.parsed!.dev; // listed files always have a parsed name
      byDev.set(dev, [...(byDev.get(dev) ?? []), r]);
    }
    for (const dev of [...byDev.keys()].sort()) {
      const list = byDev.get(dev)!;
      const chainFiles: ChainFile[] = [];
      const owner = new Map<ChainFile, ReadFile>();
      const misnamed: ReadFile[] = [];
      for (const r of list) {
        if (r.metadata.diskName !== dev) {
          log.warn(`[${r.file.path}]: its metadata names disk [${r.metadata.diskName}] but the file name says [${dev}].`);
          misnamed.push(r);
          continue;
        }
        const cf: ChainFile = { ...r.file.parsed!, name: r.file.name, path: r.file.path, metadata: r.metadata };
        chainFiles.push(cf);
        owner.set(cf, r);
      }
      const order = orderDiskFiles(dev, chainFiles);
      const rest = [...order.unordered.map((cf) => owner.get(cf)!), ...misnamed].sort((a, b) =>
        a.file.name < b.file.name ? -1 : a.file.name > b.file.name ? 1 : 0,
      );
      if (rest.length > 0) {
        const why = order.unordered.length > 0 ? order.reason ?? 'unknown reason' : 'disk name mismatch';
        log.warn(
          `Unable to place ${rest.length} data file(s) of disk [${dev}] in chain order (${why}); ` +
            `listing them in name order: ${rest.map((r) => r.file.name).join(', ')}`,
        );
      }
      ordered.push(...order.ordered.map((cf) => owner.get(cf)!), ...rest);
    }
  }

  const entries: Record<string, unknown>[] = [];
  for (const r of ordered) {
    log.info(r.file.path);
    if (r.compressed) log.info(`Compressed stream found: [${r.metadata.compressionMethod}], level ${r.metadata.compressed}.`);
    entries.push(r.raw);
  }
  return { entries, errors };
}

/**
 * Python's repr() of a float that is not a safe integer (JSON numbers with a fraction or
 * exponent in unknown metadata keys): shortest round-trip digits, scientific notation below 1e-4
 * and from 1e16 on, a ".0" on integral values.
 */
function pyFloat(x: number): string {
  if (!Number.isFinite(x)) throw new TypeError(`formatDump: ${x} is not representable in JSON`);
  const m = /^(-?)(\d)(?:\.(\d+))?e([+-]\d+)$/.exec(x.toExponential());
  if (!m) throw new TypeError(`formatDump: cannot format ${x}`);
  const [, sign, first, rest = '', expText] = m;
  const digits = first! + rest;
  const exp = Number(expText);
  if (exp < -4 || exp >= 16) {
    const mant = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    const e = Math.abs(exp);
    return `${sign}${mant}e${exp < 0 ? '-' : '+'}${e < 10 ? `0${e}` : e}`;
  }
  if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
  const intPart = digits.slice(0, exp + 1).padEnd(exp + 1, '0');
  const frac = digits.slice(exp + 1);
  return `${sign}${intPart}.${frac || '0'}`;
}

/** A number as Python's json module writes the int or float it was. */
function dumpNumber(value: number): string {
  if (Number.isSafeInteger(value)) return Object.is(value, -0) ? '0' : String(value);
  return pyFloat(value);
}

/**
 * The dump output: Python's `json.dumps(entries, indent=4)` (as src/saveset/pyjson.ts
 * pyJsonDumps(entries, 4), plus Python's float notation for non-integer numbers), without a
 * trailing newline.
 */
export function formatDump(entries: readonly Record<string, unknown>[]): string {
  return pyJsonDumps(entries, 4, { number: dumpNumber });
}
