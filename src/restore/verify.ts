/**
 * `virtnbdrestore -a verify` (BEHAVIOUR.md §11.11, CLI.md §3): for every selected data file, the
 * Adler-32 of the whole file is compared with its `.chksum` (FORMAT.md §5), and — ours — the
 * structure of every stream file is verified in the same sequential read (verify-stream.ts):
 * headers, lengths, ordering, trailer, every LZ4 frame with its checksums, `dataSize`.
 *
 * Every file is checked before returning and every problem is reported with its file and byte
 * offset (ERROR). A missing `.chksum` is an INFO (the comparison is skipped), a `.chksum` without
 * a usable value (the original's zip mode leaves `None`) a warning, a raw image "not verifiable"
 * (INFO). The caller exits 1 when `failed > 0`.
 */
import { open } from 'node:fs/promises';
import type { Logger } from '../log/logger.js';
import { parseChecksumFile } from '../saveset/adler32.js';
import { probeDataFile, selectDataFiles, type SelectedFile } from './dump-files.js';
import { verifyStreamFile, VERIFY_READ_SIZE } from './verify-stream.js';

export interface VerifyOptions {
  /** Only this disk (exact `<dev>` match). */
  disk?: string;
  /** Data file names relative to `input`, verified in this order. */
  sequence?: string[];
  /** `--buffsize`: accepted; reads are never smaller than 4 MiB, nor larger than 16 MiB. */
  bufferSize?: number;
}

export interface VerifyProblem {
  file: string;
  offset?: number;
  message: string;
}

export interface VerifyResult {
  /** Files without any problem whose checksum matched. */
  ok: number;
  /** Files with at least one problem (checksum mismatch, structural damage, read error). */
  failed: number;
  /** Files without a problem whose checksum could not be compared (no or no usable `.chksum`, raw image). */
  skipped: number;
  /** Every problem found, per file in file order. */
  problems: VerifyProblem[];
}

const MAX_READ_SIZE = 16 << 20;
/** A `.chksum` is a decimal number: anything longer than this is not one. */
const MAX_CHKSUM_LEN = 64;

type StoredChecksum = { state: 'missing' } | { state: 'unusable'; text: string } | { state: 'present'; value: number };

async function readStoredChecksum(dataPath: string): Promise<StoredChecksum> {
  let fh;
  try {
    fh = await open(`${dataPath}.chksum`, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { state: 'missing' };
    throw e;
  }
  try {
    const buf = Buffer.alloc(MAX_CHKSUM_LEN + 1);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    const text = buf.toString('latin1', 0, bytesRead);
    const value = bytesRead > MAX_CHKSUM_LEN ? undefined : parseChecksumFile(text);
    return value === undefined ? { state: 'unusable', text } : { state: 'present', value };
  } finally {
    await fh.close();
  }
}

/** Shorten a `.chksum` content for a log line. */
const shown = (text: string): string => JSON.stringify(text.length > 20 ? `${text.slice(0, 20)}…` : text);

/**
 * Verify the selected data files of `input` (all, `--disk` exact, or `--sequence` in its order).
 * Throws RestoreInputError (dump-files.ts) when `input` is missing or holds no matching data file.
 */
export async function verifySet(input: string, opts: VerifyOptions, log: Logger): Promise<VerifyResult> {
  const files = selectDataFiles(input, opts, log);
  const asked = opts.bufferSize !== undefined && Number.isSafeInteger(opts.bufferSize) && opts.bufferSize > 0 ? opts.bufferSize : 0;
  const readSize = Math.min(Math.max(asked, VERIFY_READ_SIZE), MAX_READ_SIZE);
  const result: VerifyResult = { ok: 0, failed: 0, skipped: 0, problems: [] };

  for (const file of files) {
    const outcome = await verifyOne(file, readSize, log, result.problems);
    result[outcome]++;
  }
  log.info(
    `Verified ${files.length} data file(s): ${result.ok} OK, ${result.failed} with problems, ` +
      `${result.skipped} without a checksum to compare.`,
  );
  return result;
}

async function verifyOne(file: SelectedFile, readSize: number, log: Logger, problems: VerifyProblem[]): Promise<'ok' | 'failed' | 'skipped'> {
  const { path } = file;
  let failed = false;
  const report = (message: string, offset?: number): void => {
    failed = true;
    problems.push(offset === undefined ? { file: path, message } : { file: path, offset, message });
    log.error(offset === undefined ? `${path}: ${message}` : `${path}: at byte offset ${offset}: ${message}`);
  };

  log.info(`Computing checksum for: ${path}`);
  let stored: StoredChecksum;
  try {
    if ((await probeDataFile(file)).kind === 'raw') {
      log.info(`[${path}] is a raw image: not verifiable (raw images have no checksum and no structure to check).`);
      return 'skipped';
    }
    stored = await readStoredChecksum(path);
  } catch (e) {
    report(`cannot read the file: ${(e as Error).message}`);
    return 'failed';
  }

  let res;
  try {
    res = await verifyStreamFile(path, { readSize, expectDev: file.parsed?.dev, log });
  } catch (e) {
    report(`cannot read the file: ${(e as Error).message}`);
    return 'failed';
  }
  for (const p of res.problems) report(p.message, p.offset);
  if (res.compressed) log.debug(`[${path}]: compressed stream, every LZ4 frame decoded and checked.`);
  if (res.checksum === undefined) return 'failed';
  log.info(`Checksum result: ${res.checksum}`);

  switch (stored.state) {
    case 'missing':
      log.info(`No checksum found for file: [${path}], checksum comparison skipped.`);
      return failed ? 'failed' : 'skipped';
    case 'unusable':
      log.warn(`Checksum file [${path}.chksum] holds no usable checksum (${shown(stored.text)}), checksum comparison skipped.`);
      return failed ? 'failed' : 'skipped';
    case 'present':
      if (stored.value !== res.checksum) {
        failed = true;
        const message = `Stored sums do not match: [${stored.value}]!=[${res.checksum}]`;
        problems.push({ file: path, message });
        log.error(message);
        return 'failed';
      }
      if (!failed) log.info(`OK: [${path}]`);
      return failed ? 'failed' : 'ok';
  }
}
