/**
 * The remote option group (CLI.md §2.1: `--ssh-user`, `--ssh-port`, `--ssh-private-key`, `-P`,
 * `-I`, `--tls`, `--tls-cert`) from the parsed command line of virtnbdbackup or virtnbdrestore.
 */
import type { RemoteOptions } from './host.js';

const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);
const int = (v: unknown, dflt: number): number => (typeof v === 'number' && Number.isSafeInteger(v) ? v : dflt);

export function remoteOptionsOf(v: Record<string, unknown>): RemoteOptions {
  return {
    sshUser: str(v.sshUser),
    sshPort: int(v.sshPort, 22),
    sshPrivateKey: str(v.sshPrivateKey),
    nbdPort: int(v.nbdPort, 10809),
    nbdIp: str(v.nbdIp) ?? '',
    tls: v.tls === true,
    tlsCert: str(v.tlsCert) ?? '/etc/pki/qemu/',
  };
}
