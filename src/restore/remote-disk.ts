/**
 * Restore of one disk to a remote host (BEHAVIOUR.md §11.9): the chain is resolved locally as for
 * a local restore (restore-disk.ts), then, through ssh, `<output>/<name>.partial` is created
 * exclusively and `qemu-img create`d (every argument quoted, D27), a qemu-nbd serves it on
 * `--nbd-port` (+ the disk's index) and we write the resolved data over TCP
 * (`nbd[s]://<nbd-ip or remote host>:<port>/<dev>`). When complete it is linked to its final name
 * without replacing anything (D10); on any failure the partial image (and an external data file
 * made for it) is removed. `--raw`: a raw disk's raw image is uploaded as it is (not sparse).
 * Per disk this takes four ssh round trips: create, start qemu-nbd, stop it, publish (P7).
 */
import { posix } from 'node:path';
import { performance } from 'node:perf_hooks';
import { chainFromDir, type Chain, type ChainFile } from '../chain/index.js';
import { isRawImageFile } from '../chain/data-file.js';
import { dataBytes } from '../chain/extent-map.js';
import { connectWithRetry } from '../backup/disk-backup.js';
import { copyChainToClient } from './copy-chain.js';
import { pointIdent, sequenceOf } from '../chain/point.js';
import { planImage, RestoreError, type RestoreDiskOptions, type RestoreDiskResult, type RestoreStage } from './restore-disk.js';
import { isPlainName, qemuImgCreateArgs, targetExistsMessage } from './target-image.js';
import type { NbdClient } from '../nbd/client.js';
import { clientTlsDir } from '../remote/host.js';
import { startRemoteQemuNbd, type RemoteNbdServer } from '../remote/nbd-server.js';
import { shellCommand, shellQuote } from '../remote/quote.js';
import { commandError, RemoteFileExistsError, type SshSession } from '../remote/ssh.js';
import { errorMessage } from '../util/error-message.js';
import { checkAborted } from '../util/abort.js';

export interface RemoteRestoreDiskOptions extends Omit<RestoreDiskOptions, 'socket' | 'method'> {
  /** Absolute output directory on the remote host (must exist there). */
  output: string;
  ssh: SshSession;
  /** TCP port of this disk's qemu-nbd. */
  port: number;
  /** The host we connect to (`--nbd-ip` or the remote host). */
  connectHost: string;
  /** `-b` of qemu-nbd (`--nbd-ip`, '' = none). */
  bindIp: string;
  tls: boolean;
  tlsCert: string;
}

/** Exit codes of the create script. */
const EXISTS = 17;
const PARTIAL_EXISTS = 18;
const DATA_FILE_EXISTS = 19;

/**
 * One round trip (P7): refuse an existing target, reserve `<target>.partial` (and the external
 * data file) exclusively (noclobber), run qemu-img create; on failure remove what it reserved.
 */
function createScript(path: string, partial: string, dataFile: string | undefined, qemuImgArgs: string[]): string {
  const q = shellQuote;
  const victims = [partial, ...(dataFile !== undefined ? [dataFile] : [])].map(q).join(' ');
  return [
    `if test -e ${q(path)} || test -L ${q(path)}; then exit ${EXISTS}; fi`,
    'set -C; umask 077',
    `: > ${q(partial)} || exit ${PARTIAL_EXISTS}`,
    ...(dataFile !== undefined ? [`: > ${q(dataFile)} || { rm -f -- ${q(partial)}; exit ${DATA_FILE_EXISTS}; }`] : []),
    `${shellCommand(['qemu-img', ...qemuImgArgs])} || { rc=$?; rm -f -- ${victims}; exit $rc; }`,
  ].join('\n');
}

/**
 * Links the complete partial image to its final name (never replacing), removes the partial name,
 * and prints the blocks the image (and data file) occupy — one round trip.
 */
async function publishRemote(ssh: SshSession, partial: string, path: string, dataFile: string | undefined): Promise<number> {
  const q = shellQuote;
  const files = [path, ...(dataFile !== undefined ? [dataFile] : [])];
  const script = [
    `sync -- ${[partial, ...(dataFile !== undefined ? [dataFile] : [])].map(q).join(' ')} 2>/dev/null`,
    `ln -- ${q(partial)} ${q(path)} || exit ${EXISTS}`,
    `rm -f -- ${q(partial)}`,
    `sync -- ${q(posix.dirname(path))} 2>/dev/null`,
    `stat -c '%b %B' -- ${files.map(q).join(' ')} 2>/dev/null; true`,
  ].join('\n');
  const r = await ssh.runScript(script);
  if (r.exitCode === EXISTS) {
    if (await ssh.exists(path)) throw new RemoteFileExistsError(path);
    throw new Error(`Cannot rename [${partial}] to [${path}] on the remote host: ${r.stderr.trim()}`);
  }
  if (r.exitCode !== 0) throw new Error(`Cannot publish [${path}] on the remote host: ${r.stderr.trim()}`);
  let n = 0;
  for (const line of r.stdout.toString('utf8').split('\n')) {
    const [blocks, size] = line.trim().split(/\s+/).map(Number);
    if (Number.isSafeInteger(blocks) && Number.isSafeInteger(size)) n += blocks! * size!;
  }
  return n;
}

export async function restoreDiskRemote(o: RemoteRestoreDiskOptions): Promise<RestoreDiskResult> {
  const t0 = performance.now();
  const log = o.log;
  const ssh = o.ssh;
  if (!isPlainName(o.targetName)) throw new RestoreError(`Invalid target image name [${o.targetName}]`, 'create', o.dev);
  if (!o.output.startsWith('/')) throw new RestoreError('Absolute target path required for restore to remote system', 'create', o.dev);
  const path = posix.join(o.output, o.targetName);
  const partial = `${path}.partial`;

  let chain: Chain;
  try {
    checkAborted(o.signal, 'restore aborted');
    chain = o.sequence !== undefined ? sequenceOf(o.input, o.sequence, o.dev, o.until) : chainFromDir(o.input, { disk: o.dev, until: o.until });
  } catch (e) {
    throw new RestoreError(errorMessage(e), 'chain', o.dev, { cause: e });
  }
  const last = chain.files[chain.files.length - 1]!;

  // --raw: a raw disk's lone raw image is uploaded byte for byte.
  if (o.raw && (o.format === undefined || o.format === 'raw') && chain.files.length === 1 && isRawImageFile(last.path) && last.metadata.diskFormat === 'raw') {
    return uploadRaw(o, last, path, t0);
  }

  const { map, virtualSize, format, qcow } = await planImage(o, chain);
  log.info(`Create virtual disk [${path}] on the remote host, format: [${format}] size: [${virtualSize}] based on: [${pointIdent(last)}] preallocated: [${o.preallocate}]`);

  // The image: reserved exclusively, then created with qemu-img through ssh.
  let dataFile: string | undefined;
  const cleanup = async (): Promise<void> => {
    const victims = [partial, ...(dataFile !== undefined ? [dataFile] : [])];
    await ssh.remove(...victims).catch((e: unknown) => log.warn(`Failed to remove [${victims.join(', ')}] on the remote host: ${errorMessage(e)}`));
  };
  try {
    checkAborted(o.signal, 'restore aborted');
    if (format === 'qcow2' && qcow?.dataFile !== undefined) {
      const df = posix.join(o.output, qcow.dataFile);
      if (df === path || df === partial) throw new Error(`External data file [${df}] would be the image itself`);
      dataFile = df;
    }
    const args = qemuImgCreateArgs({ format, path: partial, size: virtualSize, preallocate: o.preallocate, qcow, dataFilePath: dataFile });
    log.debug(`Remote: qemu-img ${args.join(' ')}`);
    const r = await ssh.runScript(createScript(path, partial, dataFile, args));
    if (r.exitCode === EXISTS) throw new Error(targetExistsMessage(path));
    if (r.exitCode === PARTIAL_EXISTS) {
      throw new Error(`Partial image [${partial}] exists: another restore is writing it, or an earlier one was interrupted; remove it to restore again.`);
    }
    if (r.exitCode === DATA_FILE_EXISTS) throw new Error(`Data file already exists: [${dataFile}], won't overwrite.`);
    const err = commandError(`qemu-img ${args.join(' ')}`, r);
    if (err) throw new Error(`Creating target image failed: ${err.message}`);
  } catch (e) {
    // The script removed what it reserved; nothing of someone else's is touched here.
    throw new RestoreError(errorMessage(e), 'create', o.dev, { cause: e });
  }

  // The data, then publication.
  let stage: RestoreStage = 'copy';
  let server: RemoteNbdServer | undefined;
  let client: NbdClient | undefined;
  let allocatedBytes = 0;
  try {
    server = await startRemoteQemuNbd({
      ssh,
      image: partial,
      format,
      exportName: o.dev,
      port: o.port,
      bindIp: o.bindIp,
      connectHost: o.connectHost,
      readOnly: false,
      tls: o.tls,
      tlsCert: o.tlsCert,
      extraArgs: ['--discard=unmap'],
      log,
    });
    client = await connectWithRetry(server.uri, [], log, o.signal, o.tls, o.tls ? clientTlsDir(o.tlsCert) : undefined);
    await copyChainToClient({ map, target: { path: partial, format }, progress: o.progress, signal: o.signal, debug: (m) => log.debug(m) }, client);
    await client.shutdown();
    await client.close().catch(() => undefined);
    client = undefined;
    await server.stop(); // waits for qemu-nbd to close the image
    server = undefined;
    checkAborted(o.signal, 'restore aborted');
    stage = 'publish';
    allocatedBytes = await publishRemote(ssh, partial, path, dataFile);
  } catch (e) {
    if (client !== undefined) await client.abort().catch(() => undefined);
    if (server !== undefined) await server.stop();
    await cleanup();
    const text =
      e instanceof RemoteFileExistsError
        ? targetExistsMessage(path)
        : stage === 'copy'
          ? `Restoring data of disk [${o.dev}] into [${path}] on the remote host failed: ${errorMessage(e)}`
          : errorMessage(e);
    throw new RestoreError(text, stage, o.dev, { cause: e });
  }
  return {
    path,
    virtualSize,
    dataBytes: dataBytes(map),
    allocatedBytes,
    seconds: (performance.now() - t0) / 1000,
    files: chain.files.map((f) => f.path),
    rawCopy: false,
  };
}

/** `--raw`: upload the raw image file as it is (through a temporary name, never replacing). */
async function uploadRaw(o: RemoteRestoreDiskOptions, src: ChainFile, path: string, t0: number): Promise<RestoreDiskResult> {
  o.log.info(`Copy raw image [${src.path}] to [${path}] on the remote host (${src.metadata.virtualSize} bytes).`);
  try {
    checkAborted(o.signal, 'restore aborted');
    await o.ssh.writeFile(path, { file: src.path }, { mode: 0o600 });
  } catch (e) {
    const text = e instanceof RemoteFileExistsError ? targetExistsMessage(path) : `Copying raw image [${src.path}] to [${path}] failed: ${errorMessage(e)}`;
    throw new RestoreError(text, 'copy', o.dev, { cause: e });
  }
  o.progress?.(src.metadata.virtualSize, src.metadata.virtualSize);
  return {
    path,
    virtualSize: src.metadata.virtualSize,
    dataBytes: src.metadata.dataSize,
    allocatedBytes: src.metadata.virtualSize, // uploaded as a stream: not sparse
    seconds: (performance.now() - t0) / 1000,
    files: [src.path],
    rawCopy: true,
  };
}
