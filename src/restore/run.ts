/**
 * One virtnbdrestore run (BEHAVIOUR.md §11): dump, verify, or restore — select the point, take its
 * vmconfig, restore every disk (resolved chain copied sparsely into a new image written under a
 * temporary name), then the configuration (`-c` adjusted or verbatim), boot files, pool refresh
 * and `-D` define. Any failed disk makes the run exit 1; no half image is left under a final name.
 *
 * Remote mode (`qemu+ssh` URI, §11.9): `--output` must be absolute and names a directory on the
 * remote host; the images are created and served there through ssh (src/restore/remote-disk.ts),
 * the configuration and boot files are uploaded, pools are refreshed and `-D` defines through the
 * remote libvirt.
 */
import { existsSync, readdirSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { basename, join, posix, resolve } from 'node:path';
import type { Logger } from '../log/logger.js';
import { humanSize } from '../util/humanize.js';
import { writeFileAtomic } from '../util/atomic-file.js';
import { VirtConnection } from '../virt/client.js';
import { ChainError } from '../chain/index.js';
import { dumpSet, formatDump } from './dump.js';
import { verifySet } from './verify.js';
import { RestoreInputError } from './dump-files.js';
import { selectPointFiles, requireVmconfig, NoVmconfigError, type SelectedPoint } from '../chain/point.js';
import { restoreDisk, type RestoreDiskResult } from './restore-disk.js';
import { adjustConfig, restoredDiskList } from './adjust-config.js';
import { restoreBootFiles, type BootFileTarget } from './boot-files.js';
import { FileExistsError } from '../util/atomic-file.js';
import { checkPortRange, isRemoteUri, openRemoteSession, remoteHostName, uriHost, type RemoteOptions } from '../remote/host.js';
import { restoreDiskRemote } from './remote-disk.js';
import { RemoteFileExistsError, type SshRunner, type SshSession } from '../remote/ssh.js';
import { defineRestored, refreshPoolFor } from './define.js';
import { isPlainName } from './target-image.js';
import type { ProgressBar } from '../util/progress.js';
import { MAX_XML_FILE, readTextCapped } from '../util/read-capped.js';
import { errorMessage } from '../util/error-message.js';

export interface RestoreOptions {
  action: 'dump' | 'verify' | 'restore';
  input: string;
  output: string;
  until?: string;
  sequence?: string[];
  disk?: string;
  socketFile?: string;
  raw: boolean;
  adjustConfig: boolean;
  define: boolean;
  configFile: string;
  name?: string;
  bufferSize: number;
  preallocate: boolean;
  /** `--compress`: write compressed qcow2 clusters (qemu's compress driver). */
  compress?: boolean;
  uri: string;
  user?: string;
  password?: string;
  json: boolean;
  /** The remote option group (used when `uri` contains `qemu+ssh`, §11.9). */
  remote?: RemoteOptions;
}

const REMOTE_DEFAULTS: RemoteOptions = { sshPort: 22, nbdPort: 10809, nbdIp: '', tls: false, tlsCert: '/etc/pki/qemu/' };

export interface RestoreEnv {
  log: Logger;
  /** stdout (metadata per applied file, dump JSON, --json results). */
  out: (text: string) => void;
  progress?: (label: string, total: number) => ProgressBar;
  signal: AbortSignal;
  /** Remote mode: more ssh client arguments (tests: a private known-hosts file), or another runner. */
  ssh?: { extraArgs?: string[]; runner?: SshRunner };
}

export interface RestoreSummary {
  exitCode: number;
  disks: RestoreDiskResult[];
  seconds: number;
}


export async function runRestore(o: RestoreOptions, env: RestoreEnv): Promise<RestoreSummary> {
  const started = Date.now();
  const log = env.log;
  const summary: RestoreSummary = { exitCode: 1, disks: [], seconds: 0 };
  const input = resolve(o.input);
  try {
    if (!existsSync(input)) throw new RestoreInputError(`Backup source [${o.input}] does not exist.`);
    if (o.action === 'dump') {
      const r = await dumpSet(input, { disk: o.disk, sequence: o.sequence }, log);
      env.out(`${formatDump(r.entries)}\n`);
      summary.exitCode = 0;
    } else if (o.action === 'verify') {
      const r = await verifySet(input, { disk: o.disk, sequence: o.sequence, bufferSize: o.bufferSize }, log);
      log.info(`Verified: ${r.ok} ok, ${r.failed} failed, ${r.skipped} without a checksum to compare.`);
      if (o.json) env.out(`${JSON.stringify(r)}\n`);
      summary.exitCode = r.failed > 0 ? 1 : 0;
    } else {
      summary.exitCode = await restoreAll(o, env, input, summary);
    }
  } catch (e) {
    if (e instanceof RestoreInputError || e instanceof ChainError || e instanceof NoVmconfigError) log.error(e.message);
    else {
      log.error(`Error during restore: ${errorMessage(e)}`);
      log.debug((e as Error).stack ?? '');
    }
    summary.exitCode = 1;
  }
  summary.seconds = (Date.now() - started) / 1000;
  return summary;
}

async function restoreAll(o: RestoreOptions, env: RestoreEnv, input: string, summary: RestoreSummary): Promise<number> {
  const remote = isRemoteUri(o.uri);
  if (remote && !o.output.startsWith('/')) throw new RestoreInputError('Absolute target path required for restore to remote system');
  const output = remote ? posix.normalize(o.output) : resolve(o.output);
  const session: { conn?: VirtConnection; ssh?: SshSession } = {};
  try {
    return await restoreSteps(o, env, input, summary, output, remote, session);
  } finally {
    await session.ssh?.close();
    await session.conn?.close().catch(() => undefined);
  }
}

/** Remote mode: libvirt (for the host name, pool refresh and -D) and the ssh session (§8, §11.9). */
async function openRemote(o: RestoreOptions, env: RestoreEnv, define: boolean, session: { conn?: VirtConnection; ssh?: SshSession }): Promise<SshSession> {
  const log = env.log;
  const ropt: RemoteOptions = { ...REMOTE_DEFAULTS, ...(o.remote ?? {}) };
  let reported = '';
  try {
    session.conn = await VirtConnection.open(o.uri, { user: o.user, password: o.password });
    reported = await session.conn.hostname();
  } catch (e) {
    if (define) throw new RestoreInputError(`Unable to connect libvirt: [${errorMessage(e)}]: cannot define VM`);
    log.warn(`Unable to connect libvirt: [${errorMessage(e)}]: using the host of the URI [${uriHost(o.uri)}], storage pools not refreshed.`);
  }
  const host = await remoteHostName(reported, o.uri, log);
  try {
    session.ssh = await openRemoteSession(host, ropt, log, env.ssh);
  } catch {
    throw new RestoreInputError('Remote restore detected but ssh session setup failed');
  }
  return session.ssh;
}

async function restoreSteps(
  o: RestoreOptions,
  env: RestoreEnv,
  input: string,
  summary: RestoreSummary,
  output: string,
  remote: boolean,
  session: { conn?: VirtConnection; ssh?: SshSession },
): Promise<number> {
  const log = env.log;
  const ropt: RemoteOptions = { ...REMOTE_DEFAULTS, ...(o.remote ?? {}) };
  let adjust = o.adjustConfig || o.define;
  let define = o.define;
  if (o.sequence !== undefined) {
    log.info('Using manual specified sequence of files.');
    if (adjust || define) log.info('Disabling redefine and config adjust options.');
    adjust = false;
    define = false;
  }
  if (readdirSync(input).every((n) => !/\.data$/.test(n))) throw new RestoreInputError(`No data files found in directory: [${o.input}]`);

  // The point (and its vmconfig) from the selected or first disk's chain.
  const point: SelectedPoint = selectPointFiles(input, o.disk, o.until, { sequence: o.sequence });
  let disks: Array<{ dev: string; target: string; format?: string }>;
  let vmconfigXml: string | undefined;
  if (o.sequence !== undefined) {
    disks = [{ dev: point.dev, target: point.dev }];
    if (point.vmconfig) vmconfigXml = await readTextCapped(point.vmconfig.path, MAX_XML_FILE);
  } else {
    const vm = requireVmconfig(point, input);
    if (!vm.exact) log.warn(`No vmconfig of point [${point.ident}]; using the one of the earlier point [${vm.ident}].`);
    vmconfigXml = await readTextCapped(vm.path, MAX_XML_FILE);
    const list = await restoredDiskList(vmconfigXml, { disk: o.disk, raw: o.raw, outputDir: output }, log);
    const have = new Set(readdirSync(input).filter((n) => n.endsWith('.data')).map((n) => n.split('.')[0]));
    disks = [];
    for (const d of list) {
      if (!have.has(d.dev)) {
        log.warn(`No backup file for disk [${d.dev}] found, assuming it has been excluded.`);
        continue;
      }
      const base = d.path !== '' ? basename(d.path) : d.dev;
      let target = base;
      if (!isPlainName(base)) {
        log.warn(`Image name [${base}] of disk [${d.dev}] is not a plain file name; restoring to [${d.dev}].`);
        target = d.dev;
      }
      disks.push({ dev: d.dev, target, format: d.format !== '' ? d.format : undefined });
    }
    if (disks.length === 0) throw new RestoreInputError('Unable to parse disks from config');
  }
  if (remote) {
    try {
      checkPortRange(ropt.nbdPort, disks.length);
    } catch (e) {
      throw new RestoreInputError(errorMessage(e));
    }
  }
  const ssh = remote ? await openRemote(o, env, define, session) : undefined;
  const nbdHost = ropt.nbdIp !== '' ? ropt.nbdIp : ssh !== undefined ? ssh.options.host : '';
  if (ssh !== undefined) {
    await ssh.mkdirp(output);
    log.info(`Restoring to [${output}] on the remote host [${ssh.options.host}], NBD ports [${ropt.nbdPort}-${ropt.nbdPort + disks.length - 1}]`);
  } else await mkdir(output, { recursive: true });

  // The disks, in parallel (P5); each is its own image.
  let failed = 0;
  const results = await Promise.all(
    disks.map(async (d, index) => {
      const dlog = log.child(d.dev);
      let idents: string[] = [];
      let qcowJson: string | undefined;
      try {
        const p = o.sequence !== undefined ? point : selectPointFiles(input, d.dev, o.until);
        idents = p.idents;
        qcowJson = p.qcowJson?.path;
        if (p.qcowJson === undefined && d.format !== 'raw') dlog.warn(`No QCOW image config found in [${o.input}], will use default options.`);
        const bar = env.progress?.(d.dev, 0);
        const common = {
          input,
          output,
          dev: d.dev,
          until: o.until,
          sequence: o.sequence,
          targetName: d.target,
          format: d.format,
          qcowJson,
          preallocate: o.preallocate,
          raw: o.raw,
          log: dlog,
          signal: env.signal,
          printMeta: (json: string) => env.out(`${json}\n`),
          progress: (done: number) => bar?.update(done),
        };
        if (ssh !== undefined && o.compress === true) dlog.warn('--compress is not supported for remote restores: the image is written uncompressed.');
        const r =
          ssh !== undefined
            ? await restoreDiskRemote({
                ...common,
                ssh,
                port: ropt.nbdPort + index,
                connectHost: nbdHost,
                bindIp: ropt.nbdIp,
                tls: ropt.tls,
                tlsCert: ropt.tlsCert,
              })
            : await restoreDisk({ ...common, compress: o.compress, socket: o.socketFile !== undefined ? `${o.socketFile}.${d.dev}` : undefined });
        bar?.done();
        dlog.info(
          `Restored disk [${d.dev}] to [${r.path}]: ${humanSize(r.dataBytes)} of data written, image occupies ${humanSize(r.allocatedBytes)} ` +
            `(virtual ${humanSize(r.virtualSize)}), ${r.seconds.toFixed(1)} s, ${humanSize(r.seconds > 0 ? r.dataBytes / r.seconds : 0)}/s`,
        );
        return { d, r, idents };
      } catch (e) {
        failed++;
        dlog.error(`Restore of disk [${d.dev}] failed: ${errorMessage(e)}`);
        return undefined;
      }
    }),
  );
  for (const x of results) if (x !== undefined) summary.disks.push(x.r);
  if (failed > 0) {
    log.error(`${failed} of ${disks.length} disk(s) failed; their images were removed.`);
    return 1;
  }

  // Configuration, boot files, pool, define (§11.7, §11.8).
  let errors = 0;
  if (vmconfigXml !== undefined && o.sequence === undefined) {
    const configPath = join(output, basename(o.configFile));
    let xml = vmconfigXml;
    if (adjust) {
      const restored = new Map<string, string>();
      for (const x of results) if (x !== undefined) restored.set(x.d.dev, x.r.path);
      xml = adjustConfig(vmconfigXml, { restored, keepRaw: o.raw, name: o.name, outputDir: output }, log);
    }
    if (ssh !== undefined) {
      try {
        await ssh.writeFile(configPath, xml, { replace: false });
      } catch (e) {
        throw e instanceof RemoteFileExistsError ? new Error(`Target file already exists: [${configPath}], won't overwrite.`) : e;
      }
    } else await writeFileAtomic(configPath, xml, { replace: false });
    log.info(`Saved ${adjust ? 'adjusted' : 'original'} domain config to [${configPath}]${adjust ? '' : ': adjust it manually before defining the domain'}.`);
    if (!define) log.info(`Use 'virsh -c ${o.uri} define ${configPath}' to define VM`);
    const idents = results.find((x) => x !== undefined)?.idents ?? [point.ident];
    const ident = idents[0] === 'copy' ? null : idents[0]!;
    await restoreBootFiles(input, vmconfigXml, ident, log, { earlierIdents: idents.slice(1), ...(ssh !== undefined ? { target: remoteBootTarget(ssh) } : {}) });

    let conn: VirtConnection | undefined = session.conn;
    if (ssh === undefined) {
      try {
        conn = await VirtConnection.open(o.uri, { user: o.user, password: o.password });
      } catch (e) {
        if (define) {
          log.error(`Unable to connect libvirt: [${errorMessage(e)}]: cannot define VM`);
          return 1;
        }
        log.warn(`Unable to connect libvirt: [${errorMessage(e)}]: storage pools not refreshed.`);
      }
    }
    if (conn !== undefined) {
      try {
        await refreshPoolFor(conn, output, log, { remote: ssh !== undefined });
        if (define) {
          const autostart = readdirSync(input).some((n) => n.startsWith('autostart.'));
          const dom = await defineRestored(conn, xml, { autostart }, log);
          log.info(`Defined domain [${dom.name}].`);
        }
      } catch (e) {
        log.error(errorMessage(e));
        errors++;
      } finally {
        if (conn !== session.conn) await conn.close().catch(() => undefined);
      }
    }
  }
  const total = summary.disks.reduce((a, r) => a + r.dataBytes, 0);
  const alloc = summary.disks.reduce((a, r) => a + r.allocatedBytes, 0);
  log.info(`Restore of ${summary.disks.length} disk(s) finished: ${humanSize(total)} of data written, images occupy ${humanSize(alloc)}.`);
  if (o.json) env.out(`${JSON.stringify({ disks: summary.disks })}\n`);
  return errors > 0 || log.counts.errors > 0 ? 1 : 0;
}

/** Boot files of a remote restore go to the remote host (§11.8: SFTP), never replacing. */
function remoteBootTarget(ssh: SshSession): BootFileTarget {
  return {
    where: ' on the remote host',
    exists: (p) => ssh.exists(p),
    copyNoReplace: async (src, dest) => {
      try {
        await ssh.writeFile(dest, { file: src }, { mkdirs: true, mode: 0o644 });
      } catch (e) {
        if (e instanceof RemoteFileExistsError) throw new FileExistsError(dest);
        throw e;
      }
    },
  };
}
