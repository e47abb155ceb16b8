/**
 * virtnbdrestore front end. This release parses the complete command line of the original (--help, -V,
 * every option, usage errors with exit 2); the restore itself is not implemented yet.
 */
import { virtnbdrestoreSpec } from './specs.js';
import { parseOrExit } from './run.js';

parseOrExit(virtnbdrestoreSpec(), process.argv.slice(2));
process.stderr.write('virtnbdrestore: restore is not implemented in this version of virtnbd yet; nothing was done.\n');
process.exit(1);
