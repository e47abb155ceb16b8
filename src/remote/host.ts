/**
 * Remote mode basics (BEHAVIOUR.md §8, CLI.md §2.1): is a URI remote, which host name do ssh and
 * the NBD client use, the NBD URI of a remote export, and opening the ssh session with the
 * user-facing errors.
 */
import { existsSync } from 'node:fs';
import { lookup } from 'node:dns/promises';
import type { Logger } from '../log/logger.js';
import { SshSession, SshSetupError, type SshOptions, type SshRunner } from './ssh.js';

/** A URI containing `qemu+ssh` selects remote mode. */
export function isRemoteUri(uri: string): boolean {
  return uri.includes('qemu+ssh');
}

/** The host part of a libvirt URI (`qemu+ssh://root@hv1:22/system` → `hv1`), IPv6 without brackets; '' when none. */
export function uriHost(uri: string): string {
  try {
    const h = new URL(uri).hostname;
    return h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h;
  } catch {
    return '';
  }
}

/** True when `name` resolves locally (an address literal always does). */
export async function resolvesLocally(name: string): Promise<boolean> {
  if (name === '') return false;
  try {
    await lookup(name);
    return true;
  } catch {
    return false;
  }
}

/**
 * §8: the host name the remote libvirtd reports; when that does not resolve here, the URI's host
 * (logged either way).
 */
export async function remoteHostName(reported: string, uri: string, log: Logger, resolves: (n: string) => Promise<boolean> = resolvesLocally): Promise<string> {
  const fromUri = uriHost(uri);
  if (reported !== '' && (await resolves(reported))) {
    log.info(`Remote host: [${reported}] (as reported by libvirt)`);
    return reported;
  }
  if (fromUri !== '') {
    log.info(`Remote host name [${reported}] reported by libvirt does not resolve here, using [${fromUri}] of the URI.`);
    return fromUri;
  }
  log.info(`Remote host: [${reported}] (as reported by libvirt; it does not resolve here)`);
  return reported;
}

/** `nbd://host:port/export` (`nbds://` with TLS), IPv6 literals in brackets, the export percent-encoded. */
export function tcpNbdUri(host: string, port: number, exportName: string, tls: boolean): string {
  const h = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  return `${tls ? 'nbds' : 'nbd'}://${h}:${port}/${encodeURIComponent(exportName)}`;
}

/** The remote option group as the commands pass it on. */
export interface RemoteOptions {
  sshUser?: string;
  sshPort: number;
  sshPrivateKey?: string;
  /** `-P` */
  nbdPort: number;
  /** `-I`: '' = the remote host name. */
  nbdIp: string;
  tls: boolean;
  /** `--tls-cert` */
  tlsCert: string;
}

/** Opens the ssh session; a failure is logged as the warning of §8 and rethrown as SshSetupError. */
export async function openRemoteSession(host: string, r: RemoteOptions, log: Logger, extra?: { extraArgs?: string[]; runner?: SshRunner }): Promise<SshSession> {
  const o: SshOptions = { host, user: r.sshUser, port: r.sshPort, privateKey: r.sshPrivateKey, extraArgs: extra?.extraArgs };
  try {
    const s = await SshSession.open(o, extra?.runner);
    log.info(`Connected to [${s.target}] port [${r.sshPort}] via ssh.`);
    return s;
  } catch (e) {
    const reason = e instanceof SshSetupError ? e.message : `Unable to connect: ${(e as Error).message}`;
    log.error(reason);
    log.warn(`Failed to setup SSH connection: [${reason}]`);
    throw e instanceof SshSetupError ? e : new SshSetupError(reason);
  }
}

/**
 * The x509 directory our TLS client uses: `--tls-cert` when it exists here too (its `ca-cert.pem`
 * verifies the server), else undefined (libnbd's defaults: the system trust store).
 */
export function clientTlsDir(tlsCert: string): string | undefined {
  return tlsCert !== '' && existsSync(tlsCert) ? tlsCert : undefined;
}

/** Checks that the ports N … N+count-1 are valid TCP ports. */
export function checkPortRange(first: number, count: number): void {
  if (!Number.isSafeInteger(first) || first < 1 || first + Math.max(count, 1) - 1 > 65535) {
    throw new Error(`Invalid NBD port range [${first}-${first + Math.max(count, 1) - 1}]: ports must be within 1-65535`);
  }
}
