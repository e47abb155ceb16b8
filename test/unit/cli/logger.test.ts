import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, formatRecord, formatTimestamp } from '../../../src/log/logger.js';

const at = new Date(2026, 0, 2, 3, 4, 5); // local time 2026-01-02 03:04:05
const LINE = /^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] (DEBUG|INFO|WARNING|ERROR|CRITICAL) /;

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'virtnbd-log-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function make(extra: Partial<Parameters<typeof createLogger>[0]> = {}) {
  let err = '';
  const log = createLogger({
    component: 'virtnbdbackup', stderr: true, color: false, verbose: false, now: () => at,
    writeStderr: (s) => void (err += s), ...extra,
  });
  return { log, err: () => err };
}

describe('logger', () => {
  test('line format: [YYYY-MM-DD HH:MM:SS] LEVEL component: message (local time)', () => {
    expect(formatTimestamp(at)).toBe('2026-01-02 03:04:05');
    expect(formatRecord(at, 'INFO', 'virtnbdbackup', 'hello')).toBe('[2026-01-02 03:04:05] INFO virtnbdbackup: hello');
    expect(formatRecord(at, 'WARNING', undefined, 'x')).toBe('[2026-01-02 03:04:05] WARNING x');
    const { log, err } = make({ verbose: true });
    log.debug('d');
    log.info('i');
    log.warn('w');
    log.error('e');
    log.critical('c');
    expect(err()).toBe(
      ['DEBUG d', 'INFO i', 'WARNING w', 'ERROR e', 'CRITICAL c']
        .map((s) => { const [lvl, m] = s.split(' '); return `[2026-01-02 03:04:05] ${lvl} virtnbdbackup: ${m}\n`; })
        .join(''),
    );
  });

  test('real clock produces a well-formed line', () => {
    let err = '';
    const log = createLogger({ stderr: true, color: false, verbose: false, writeStderr: (s) => void (err += s) });
    log.info('now');
    expect(err).toMatch(LINE);
    expect(err).toMatch(/\] INFO now\n$/);
  });

  test('DEBUG only with verbose; stderr off writes nothing to stderr', () => {
    const a = make();
    a.log.debug('hidden');
    expect(a.err()).toBe('');
    const b = make({ stderr: false, verbose: true });
    b.log.error('quiet');
    expect(b.err()).toBe('');
    expect(b.log.counts.errors).toBe(1); // still counted
  });

  test('stderr coloured by level when color is on; the file never', () => {
    const file = join(dir, 'backup.log');
    const { log, err } = make({ color: true, logFile: file });
    log.warn('careful');
    log.error('broken');
    log.info('plain');
    expect(err()).toContain('\x1b[33m[2026-01-02 03:04:05] WARNING virtnbdbackup: careful\x1b[0m\n');
    expect(err()).toContain('\x1b[31m[2026-01-02 03:04:05] ERROR virtnbdbackup: broken\x1b[0m\n');
    expect(readFileSync(file, 'utf8')).toBe(
      '[2026-01-02 03:04:05] WARNING virtnbdbackup: careful\n' +
      '[2026-01-02 03:04:05] ERROR virtnbdbackup: broken\n' +
      '[2026-01-02 03:04:05] INFO virtnbdbackup: plain\n',
    );
    expect(readFileSync(file, 'utf8')).not.toContain('\x1b');
  });

  test('file is appended to and written record by record (readable before close)', async () => {
    const file = join(dir, 'virtnbdmap.log');
    writeFileSync(file, 'previous run\n');
    const { log } = make({ logFile: file, stderr: false });
    log.info('one');
    expect(readFileSync(file, 'utf8')).toBe('previous run\n[2026-01-02 03:04:05] INFO virtnbdbackup: one\n');
    log.child('sda').info('two');
    expect(readFileSync(file, 'utf8')).toMatch(/INFO sda: two\n$/);
    await log.close();
    await log.close(); // idempotent
    log.info('after close'); // stderr only, no throw
    expect(readFileSync(file, 'utf8')).not.toContain('after close');
    expect(log.logFile).toBe(file);
  });

  test('explicit accounting: warnings and errors (CRITICAL counts as error), shared with children', () => {
    const { log } = make();
    const disk = log.child('sda');
    log.info('x');
    log.debug('x');
    log.warn('w1');
    disk.warn('w2');
    disk.error('e1');
    log.critical('c1');
    expect(log.counts).toEqual({ warnings: 2, errors: 2 });
    expect(disk.counts).toBe(log.counts);
  });

  test('a log file that cannot be opened throws', () => {
    expect(() => make({ logFile: join(dir, 'missing', 'x.log') })).toThrow();
  });

  test('syslog: accepted; one uncounted notice that it is not available', () => {
    const { log, err } = make({ syslog: true });
    log.child('sda').info('x');
    expect(err().match(/syslog/gi)?.length).toBe(1);
    expect(err()).toMatch(/WARNING virtnbdbackup: Syslog output is not available/);
    expect(log.counts).toEqual({ warnings: 0, errors: 0 });
  });
});
