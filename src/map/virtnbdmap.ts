/**
 * virtnbdmap: serve a backup chain as an NBD export (BEHAVIOUR.md §12.2). The chain is resolved
 * into an extent map up front (nothing is replayed), served by nbdkit with our plugin shim behind
 * the cow filter (or read-only), connected to /dev/nbdN where the kernel has NBD devices, and torn
 * down cleanly on SIGINT/SIGTERM.
 */
import { performance } from 'node:perf_hooks';
import { chainFromSet, chainFromFiles, resolveSelected, discoverBackupDir } from '../chain/index.js';
import { dataBytes } from '../chain/extent-map.js';
import { startServer, tail, type Server } from '../daemon/nbdkit.js';
import { nbdDevicesPresent, deviceExists, connectDevice, disconnectDevice } from './device.js';
import { which } from '../util/which.js';
import { humanSize } from '../util/humanize.js';

export interface MapLog {
  debug(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

export interface MapOptions {
  files?: string[];
  input?: string;
  disk?: string;
  until?: string;
  blocksize?: number;
  device: string;
  exportName: string;
  /** nbdkit threads; undefined = nbdkit's default. */
  threads?: number;
  listenAddress: string;
  listenPort: number;
  socket?: string;
  readonly: boolean;
  hexdump: boolean;
  verbose: boolean;
  json: boolean;
  workers: number;
  noDevice: boolean;
}

export class MapError extends Error {}

/** What a running mapping looks like (printed with --json). */
export interface MapInfo {
  uri: string;
  pid: number;
  exportName: string;
  socket: string | null;
  address: string | null;
  port: number | null;
  size: number;
  dataBytes: number;
  extents: number;
  device: string | null;
  readonly: boolean;
  files: string[];
  checkpoint: string | null;
  nbdkitLog: string;
}

export interface Mapping {
  info: MapInfo;
  server: Server;
  /** Disconnect the device, stop nbdkit, remove temporary files. Idempotent. */
  close(): Promise<void>;
}

/** Resolve the chain, start the export, connect the device; returns once serving. */
export async function startMapping(opts: MapOptions, log: MapLog): Promise<Mapping> {
  if (!which('nbdkit')) throw new MapError('Please install required [nbdkit] utility.');
  const wantDevice = !opts.noDevice && nbdDevicesPresent();
  if (!opts.noDevice && !opts.device.startsWith('/dev/nbd'))
    throw new MapError(`Target device [${opts.device}] seems not to be an NBD device?`);
  if (wantDevice) {
    if (!which('qemu-nbd')) throw new MapError('Please install required [qemu-nbd] utility.');
    if (!deviceExists(opts.device))
      throw new MapError(`Target device [${opts.device}] does not exist, please load nbd module: [modprobe nbd]`);
  }

  const t0 = performance.now();
  let chain;
  if (opts.input) {
    const set = discoverBackupDir(opts.input);
    if (set.partials.length) log.warn(`Incomplete backup files in [${opts.input}] ignored: ${set.partials.join(', ')}`);
    chain = chainFromSet(set, { disk: opts.disk, until: opts.until });
  } else chain = chainFromFiles(opts.files ?? [], opts.until);
  const resolved = resolveSelected(chain);
  const { map } = resolved;
  const ms = (performance.now() - t0).toFixed(1);
  log.info(`Disk [${chain.dev}]: ${chain.files.length} file(s): ${chain.files.map((f) => f.name).join(' → ')}`);
  log.info(
    `Resolved ${map.extents.length} extents in ${ms} ms: virtual size ${map.size} bytes [${humanSize(map.size)}], ` +
      `data ${dataBytes(map)} bytes [${humanSize(dataBytes(map))}]` +
      (resolved.indexes.some((i) => i.compressed) ? ', compressed' : ''),
  );
  if (opts.readonly) {
    log.warn('Device will be mapped readonly without cow.');
    log.warn("Mounting will only work with '-o norecovery,ro'");
  }

  const server = await startServer({
    files: chain.files.map((f) => f.path),
    socket: opts.socket,
    tcp: opts.socket ? undefined : { address: opts.listenAddress, port: opts.listenPort },
    exportName: opts.exportName,
    readonly: opts.readonly,
    threads: opts.threads,
    workers: opts.workers,
    blocksize: opts.blocksize,
    hexdump: opts.hexdump,
    verbose: opts.verbose || opts.hexdump,
  });
  log.info(`nbdkit serving [${server.uri}], pid ${server.pid}, log [${server.logFile}]`);

  let device: string | null = null;
  if (wantDevice) {
    try {
      await connectDevice(opts.device, server.uri, opts.readonly);
      device = opts.device;
      log.info(`Done mapping backup image to [${device}]`);
    } catch (e) {
      await server.stop();
      throw new MapError((e as Error).message);
    }
  } else if (!opts.noDevice) {
    log.info(
      'This machine has no kernel NBD devices (/dev/nbd*; nbd module not available): not connecting a device. ' +
        `Use the export directly: ${server.uri}`,
    );
  }

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      if (device) {
        try {
          await disconnectDevice(device);
          log.info(`Disconnected [${device}]`);
        } catch (e) {
          log.error((e as Error).message);
        }
      }
      await server.stop();
    })());

  const info: MapInfo = {
    uri: server.uri,
    pid: server.pid,
    exportName: opts.exportName,
    socket: opts.socket ?? null,
    address: opts.socket ? null : opts.listenAddress,
    port: opts.socket ? null : opts.listenPort,
    size: map.size,
    dataBytes: dataBytes(map),
    extents: map.extents.length,
    device,
    readonly: opts.readonly,
    files: chain.files.map((f) => f.path),
    checkpoint: chain.checkpoint ?? null,
    nbdkitLog: server.logFile,
  };
  return { info, server, close };
}

/**
 * Run virtnbdmap in the foreground until SIGINT/SIGTERM (exit 0) or until nbdkit dies (exit 1).
 * Returns the exit code.
 */
export async function runMap(opts: MapOptions, log: MapLog, out: (s: string) => void): Promise<number> {
  let mapping: Mapping;
  try {
    mapping = await startMapping(opts, log);
  } catch (e) {
    log.error((e as Error).message);
    return 1;
  }
  if (opts.json) out(JSON.stringify(mapping.info) + '\n');
  log.info('Press Ctrl-C (or send SIGTERM) to stop serving and clean up.');
  const signal = new Promise<string>((resolve) => {
    for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(s, () => resolve(s));
  });
  const winner = await Promise.race([signal, mapping.server.exited.then((r) => r)]);
  if (typeof winner === 'string') {
    log.info(`Signal ${winner} received, cleaning up`);
    await mapping.close();
    return 0;
  }
  log.error(`nbdkit exited unexpectedly (${winner.code ?? winner.signal}); its last messages:\n${tail(mapping.info.nbdkitLog)}`);
  await mapping.close();
  return 1;
}
