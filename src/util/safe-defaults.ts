/**
 * Safe defaults of virtnbdbackup and virtnbdrestore (issue 10): what they create is private to
 * the user, and the libvirt password need not be on the command line.
 *
 * Modes: the commands add 077 to the umask at start, so every file they create (data files,
 * checkpoint XML, vmconfig, logs, restored images, side files) is 0600 and every directory 0700,
 * or stricter when the user's umask is stricter. Existing directories keep their mode (mkdir of
 * an existing directory changes nothing). Files that qemu (user libvirt-qemu) must reach are
 * given their modes explicitly with chmod, which the umask does not affect.
 *
 * Password: `--password SECRET` (visible in `ps` to every user while the command runs),
 * `--password-file FILE` (first line of FILE), or the environment variable VIRTNBD_PASSWORD.
 * The variable is removed from the environment once read, so child processes (ssh, qemu-img,
 * nbdkit) do not inherit it. The secret is handed to libvirt's auth callback only (never to a
 * child's argv) and never logged: the logged command line has it replaced by `***`.
 */
import { closeSync, fstatSync, openSync, readSync, constants } from 'node:fs';

/** The environment variable that may hold the libvirt password. */
export const PASSWORD_ENV = 'VIRTNBD_PASSWORD';
/** A password file larger than this is refused (it is not a password file). */
export const MAX_PASSWORD_FILE = 64 * 1024;

/** Add 077 to the process umask (never loosens it); returns the previous umask. */
export function restrictUmask(): number {
  const old = process.umask();
  process.umask(old | 0o077);
  return old;
}

export class PasswordSourceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PasswordSourceError';
  }
}

/** The first line of `file` without its line end; the file must be a regular file of at most 64 KiB. */
export function readPasswordFile(file: string): { password: string; warning?: string } {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOCTTY);
  } catch (e) {
    throw new PasswordSourceError(`Unable to read password file [${file}]: ${(e as Error).message}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new PasswordSourceError(`Password file [${file}] is not a regular file`);
    if (st.size > MAX_PASSWORD_FILE) throw new PasswordSourceError(`Password file [${file}] is larger than ${MAX_PASSWORD_FILE} bytes`);
    const buf = Buffer.alloc(Math.max(1, st.size));
    let got = 0;
    for (;;) {
      const n = readSync(fd, buf, got, buf.length - got, got);
      if (n === 0) break;
      got += n;
      if (got === buf.length) break;
    }
    const text = buf.toString('utf8', 0, got);
    const password = text.split(/\r?\n/, 1)[0] ?? '';
    if (password === '') throw new PasswordSourceError(`Password file [${file}] is empty`);
    const warning = (st.mode & 0o077) !== 0 ? `Password file [${file}] can be read by other users (mode ${(st.mode & 0o777).toString(8)}): chmod 600 it.` : undefined;
    return warning !== undefined ? { password, warning } : { password };
  } finally {
    closeSync(fd);
  }
}

/**
 * The password from `--password`, `--password-file` or VIRTNBD_PASSWORD (in this order of
 * precedence; giving both options is an error). Removes VIRTNBD_PASSWORD from `env` in any case.
 */
export function resolvePassword(
  opts: { password?: string; passwordFile?: string },
  env: NodeJS.ProcessEnv = process.env,
): { password?: string; source?: 'option' | 'file' | 'environment'; warning?: string } {
  const fromEnv = env[PASSWORD_ENV];
  delete env[PASSWORD_ENV];
  if (opts.password !== undefined && opts.passwordFile !== undefined) {
    throw new PasswordSourceError('--password and --password-file cannot be used together');
  }
  if (opts.password !== undefined) return { password: opts.password, source: 'option' };
  if (opts.passwordFile !== undefined) {
    const { password, warning } = readPasswordFile(opts.passwordFile);
    return warning !== undefined ? { password, source: 'file', warning } : { password, source: 'file' };
  }
  if (fromEnv !== undefined && fromEnv !== '') return { password: fromEnv, source: 'environment' };
  return {};
}
