/**
 * virtnbdbackup front end: argv (argparse-compatible, CLI.md §2) → BackupOptions → runBackup
 * (src/backup/run.ts). Prepares the target and the run's log file (BEHAVIOUR.md §1 steps 2–5),
 * installs the signal handlers, prints the summary; exit code 0 / 1 / 2 as CLI.md §2.5.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ZipStreamWriter } from '../zip/index.js';
import { virtnbdbackupSpec } from './specs.js';
import { parseOrExit, commandLogger, redactedArgs, secureStartOrExit } from './run.js';
import { packageVersion } from './version.js';
import { prepareTarget, runBackup, type BackupOptions } from '../backup/run.js';
import { BackupFatal } from '../backup/target-dir.js';
import { createProgress } from '../util/progress.js';
import { humanSize } from '../util/humanize.js';
import type { RequestedLevel } from '../backup/types.js';
import { remoteOptionsOf } from '../remote/cli-options.js';
import { setCheckpointChain } from '../backup/cpt-file.js';

const { values: v, given } = parseOrExit(virtnbdbackupSpec(), process.argv.slice(2));
// Safe defaults (src/util/safe-defaults.ts): private files, the password out of argv.
const { password, warning: passwordWarning } = secureStartOrExit('virtnbdbackup', v);

const pad = (n: number): string => String(n).padStart(2, '0');
function logStamp(d: Date): string {
  return `${pad(d.getMonth() + 1)}${pad(d.getDate())}${d.getFullYear()}${pad(d.getHours())}${pad(d.getMinutes())}${pad(d.getSeconds())}`;
}

const output = v.output as string;
const zipMode = output === '-';
const level = v.level as RequestedLevel;
const started = new Date();
let logDir: string;
if (zipMode) {
  if (process.stdout.isTTY === true) {
    process.stderr.write('virtnbdbackup: refusing to write a zip archive to a terminal: redirect standard output to a file or a pipe.\n');
    process.exit(1);
  }
  // The run's log goes into the archive at the end; nothing but the chain state is left in the cwd (D4).
  logDir = await mkdtemp(join(tmpdir(), 'virtnbdbackup-log-'));
} else {
  logDir = resolve(output);
  try {
    await prepareTarget(logDir);
  } catch (e) {
    process.stderr.write(`${e instanceof BackupFatal ? e.message : `Can't open output file: [${(e as Error).message}]`}\n`);
    process.exit(1);
  }
}
const logName = `backup.${level}.${logStamp(started)}.log`;
const logPath = join(logDir, logName);
// Progress bars on a terminal; log records are written above them.
const progressOn = v.noprogress !== true && v.quiet !== true && process.stderr.isTTY === true;
const progress = createProgress({ enabled: progressOn, stream: process.stderr });
let log;
try {
  log = commandLogger('virtnbdbackup', v, logPath, (text) => progress.log(() => void process.stderr.write(text)));
} catch (e) {
  process.stderr.write(`Unable to open log file [${logPath}]: ${(e as Error).message}\n`);
  process.exit(1);
}
log.info(`Version: ${packageVersion()} Arguments: ${redactedArgs(process.argv.slice(1))}`);
if (passwordWarning !== undefined) log.warn(passwordWarning);

const compress = given.has('compress') ? (v.compress as number) : false;
const opts: BackupOptions = {
  domain: v.domain as string,
  level,
  type: v.type as 'stream' | 'raw',
  raw: v.raw === true,
  output,
  checkpointDir: v.checkpointdir as string | undefined,
  scratchDir: v.scratchdir as string,
  startDomain: v.startDomain === true,
  pause: v.pause === true,
  include: v.include as string | undefined,
  exclude: typeof v.exclude === 'string' ? v.exclude.split(',').filter((s) => s !== '') : [],
  socketFile: v.socketfile as string,
  compress,
  worker: given.has('worker') ? (v.worker as number) : undefined,
  freezeMountpoints: typeof v.freezeMountpoint === 'string' ? v.freezeMountpoint.split(',').filter((s) => s !== '') : [],
  strict: v.strict === true,
  noSparseDetection: v.noSparseDetection === true,
  threshold: given.has('threshold') ? (v.threshold as number) : undefined,
  uri: v.uri as string,
  user: v.user as string | undefined,
  password,
  useNbdinfo: v.qemu === true,
  startOnly: v.startonly === true,
  killOnly: v.killonly === true,
  printOnly: v.printonly === true,
  remote: remoteOptionsOf(v),
  chain: v.chain as string | undefined,
};
setCheckpointChain(opts.chain); // before anything reads .cpt or checkpoint names (zip mode, -k)

const ac = new AbortController();
const onSignal = (sig: NodeJS.Signals): void => {
  if (ac.signal.aborted) return;
  log.error(`Signal caught: ${sig}`);
  ac.abort();
};
for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, onSignal);

const zip = zipMode ? new ZipStreamWriter(process.stdout, { endOutput: false }) : undefined;
const summary = await runBackup(opts, {
  log,
  signal: ac.signal,
  now: started,
  zip,
  progress: progressOn ? (label, total) => progress.bar(label, total) : undefined,
});

if (summary.exitCode !== 1 && summary.files.length > 0) {
  const rate = summary.seconds > 0 ? summary.dataSize / summary.seconds : 0;
  log.info(
    `Backup ${summary.level ?? ''} of ${summary.files.length} disk(s) done in ${summary.seconds.toFixed(1)} s: ` +
      `${humanSize(summary.dataSize)} of data read, ${humanSize(summary.bytes)} saved, ${humanSize(rate)}/s` +
      (summary.checkpoint !== null ? `, checkpoint [${summary.checkpoint}]` : ''),
  );
}
if (zip !== undefined) {
  // The log as it is now, then the central directory: always, also after an error (D4).
  try {
    await zip.addFile(logName, await readFile(logPath), new Date());
  } catch (e) {
    log.error(`Unable to add the log to the archive: ${(e as Error).message}`);
    summary.exitCode = 1;
  }
  try {
    await zip.finish();
  } catch (e) {
    log.error(`Unable to complete the zip archive on standard output: ${(e as Error).message}`);
    summary.exitCode = 1;
  }
  await rm(logDir, { recursive: true, force: true });
}
if (v.json === true) {
  (zipMode ? process.stderr : process.stdout).write(
    `${JSON.stringify({
      exitCode: summary.exitCode,
      level: summary.level,
      checkpoint: summary.checkpoint,
      seconds: summary.seconds,
      bytes: summary.bytes,
      dataSize: summary.dataSize,
      files: summary.files.map((f) => ({ disk: f.dev, path: f.path, bytes: f.bytes, dataSize: f.dataSize, virtualSize: f.virtualSize })),
    })}\n`,
  );
}
await log.close();
process.exit(summary.exitCode);
