/**
 * virtnbdrestore front end: argv (argparse-compatible, CLI.md §3) → RestoreOptions → runRestore
 * (src/restore/run.ts). Log to `-L` (default ~/virtnbdrestore.log) and stderr; metadata of the
 * applied files, dump output and --json results on stdout; exit 0 / 1 / 2 as CLI.md §3.3.
 */
import { virtnbdrestoreSpec } from './specs.js';
import { parseOrExit, commandLogger, redactedArgs, secureStartOrExit } from './run.js';
import { packageVersion } from './version.js';
import { runRestore, type RestoreOptions } from '../restore/run.js';
import { createProgress } from '../util/progress.js';
import { remoteOptionsOf } from '../remote/cli-options.js';

const { values: v } = parseOrExit(virtnbdrestoreSpec(), process.argv.slice(2));
// Safe defaults (src/util/safe-defaults.ts): private files, the password out of argv.
const { password, warning: passwordWarning } = secureStartOrExit('virtnbdrestore', v);

const output = v.output as string;
const action: RestoreOptions['action'] = output === 'dump' || output === 'verify' ? output : (v.action as RestoreOptions['action']);
const progressOn = v.noprogress !== true && process.stderr.isTTY === true && action === 'restore';
const progress = createProgress({ enabled: progressOn, stream: process.stderr });
let log;
try {
  log = commandLogger('virtnbdrestore', v, v.logfile as string, (text) => progress.log(() => void process.stderr.write(text)));
} catch (e) {
  process.stderr.write(`Unable to open log file [${String(v.logfile)}]: ${(e as Error).message}\n`);
  process.exit(1);
}
log.info(`Version: ${packageVersion()} Arguments: ${redactedArgs(process.argv.slice(1))}`);
if (passwordWarning !== undefined) log.warn(passwordWarning);

const ac = new AbortController();
const onSignal = (sig: NodeJS.Signals): void => {
  if (ac.signal.aborted) return;
  log.error(`Signal caught: ${sig}`);
  ac.abort(new Error(`interrupted by ${sig}`));
};
for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, onSignal);

const opts: RestoreOptions = {
  action,
  input: v.input as string,
  output,
  until: v.until as string | undefined,
  sequence: typeof v.sequence === 'string' ? v.sequence.split(',').filter((s) => s !== '') : undefined,
  disk: v.disk as string | undefined,
  socketFile: v.socketfile as string | undefined,
  raw: v.raw === true,
  adjustConfig: v.adjustConfig === true,
  define: v.define === true,
  configFile: v.configFile as string,
  name: v.name as string | undefined,
  bufferSize: v.buffsize as number,
  preallocate: v.preallocate === true,
  compress: v.compress === true,
  uri: v.uri as string,
  user: v.user as string | undefined,
  password,
  json: v.json === true,
  remote: remoteOptionsOf(v),
};

const summary = await runRestore(opts, {
  log,
  out: (s) => void process.stdout.write(s),
  signal: ac.signal,
  progress: progressOn ? (label, total) => progress.bar(label, total) : undefined,
});
await log.close();
process.exit(summary.exitCode);
