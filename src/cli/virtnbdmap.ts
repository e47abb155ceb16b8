/** virtnbdmap front end: argv → MapOptions → runMap (src/map/virtnbdmap.ts). */
import { virtnbdmapSpec } from './specs.js';
import { parseOrExit, commandLogger } from './run.js';
import { runMap, type MapOptions } from '../map/virtnbdmap.js';
import { packageVersion } from './version.js';
import { runMount } from '../mount/run-mount.js';
import { runBoot } from '../boot/run-boot.js';
import { runVerify } from '../boot/verify.js';

const { values: v, given } = parseOrExit(virtnbdmapSpec(), process.argv.slice(2));
const log = commandLogger('virtnbdmap', v, v.logfile as string);
log.info(`Version: ${packageVersion()} Arguments: ${process.argv.slice(1).join(' ')}`);

const opts: MapOptions = {
  files: typeof v.file === 'string' ? v.file.split(',').filter((s) => s !== '') : undefined,
  input: v.input as string | undefined,
  disk: v.disk as string | undefined,
  until: v.until as string | undefined,
  // P9: -b only splits requests when the user asks for it; nbdkit's cow filter works in 64 KiB blocks.
  blocksize: given.has('blocksize') ? (v.blocksize as number) : undefined,
  device: v.device as string,
  exportName: v.exportName as string,
  threads: given.has('threads') ? (v.threads as number) : undefined,
  listenAddress: v.listenAddress as string,
  listenPort: v.listenPort as number,
  socket: v.socket as string | undefined,
  readonly: v.readonly === true,
  hexdump: v.hexdump === true,
  verbose: v.verbose === true,
  json: v.json === true,
  workers: v.workers as number,
  noDevice: v.noDevice === true,
};

const out = (s: string): void => void process.stdout.write(s);
let code: number;
if (typeof v.mount === 'string') code = await runMount({ ...opts, mountpoint: v.mount }, log, out);
else if (v.boot === true && v.verify === true)
  code = await runVerify(
    {
      ...opts,
      input: v.input as string,
      name: v.name as string | undefined,
      uri: v.uri as string,
      keepOverlays: false,
      overlayDir: v.overlayDir as string | undefined,
      // a verified VM's writes are discarded: power it off at once unless asked otherwise
      shutdownTimeout: given.has('shutdownTimeout') ? (v.shutdownTimeout as number) : 0,
      allPoints: v.allPoints === true,
      timeout: v.timeout as number,
      expectConsole: typeof v.expectConsole === 'string' ? new RegExp(v.expectConsole, 'm') : undefined,
      expectAgent: v.expectAgent === true,
      screenshot: v.screenshot as string | undefined,
      reportDir: v.reportDir as string | undefined,
    },
    log,
    out,
  );
else if (v.boot === true)
  code = await runBoot(
    {
      ...opts,
      input: v.input as string,
      name: v.name as string | undefined,
      uri: v.uri as string,
      migrateTo: v.migrateTo as string | undefined,
      keepOverlays: v.keepOverlays === true,
      overlayDir: v.overlayDir as string | undefined,
      shutdownTimeout: v.shutdownTimeout as number,
    },
    log,
    out,
  );
else code = await runMap(opts, log, out);
await log.close();
process.exit(code);
