/**
 * virtnbdbackup front end. This release parses the complete command line of the original (--help, -V,
 * every option, usage errors with exit 2); the backup itself is not implemented yet.
 */
import { virtnbdbackupSpec } from './specs.js';
import { parseOrExit } from './run.js';

parseOrExit(virtnbdbackupSpec(), process.argv.slice(2));
process.stderr.write('virtnbdbackup: backup is not implemented in this version of virtnbd yet; nothing was done.\n');
process.exit(1);
