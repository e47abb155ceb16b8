/** virtnbdprune front end: argv → PruneOptions → runPrune (src/prune/run.ts); exit 0 / 1 / 2. */
import { virtnbdpruneSpec } from './specs.js';
import { parseOrExit, commandLogger, redactedArgs } from './run.js';
import { packageVersion } from './version.js';
import { runPrune } from '../prune/run.js';
import { parseDuration } from '../prune/points.js';

const { values: v } = parseOrExit(virtnbdpruneSpec(), process.argv.slice(2));
let log;
try {
  log = commandLogger('virtnbdprune', v, v.logfile as string);
} catch (e) {
  process.stderr.write(`Unable to open log file [${String(v.logfile)}]: ${(e as Error).message}\n`);
  process.exit(1);
}
log.info(`Version: ${packageVersion()} Arguments: ${redactedArgs(process.argv.slice(1))}`);

const code = await runPrune(
  {
    input: v.input as string,
    keepLast: v.keepLast as number | undefined,
    keepWithinMs: typeof v.keepWithin === 'string' ? parseDuration(v.keepWithin) : undefined,
    dryRun: v.dryRun === true,
    json: v.json === true,
  },
  log,
  (s) => void process.stdout.write(s),
);
await log.close();
process.exit(code);
