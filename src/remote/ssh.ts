/**
 * The ssh session to the remote host of a `qemu+ssh` run (BEHAVIOUR.md §8): the system OpenSSH
 * client (through execa) with one multiplexed TCP connection (ControlMaster socket in a private
 * local temp directory), `--ssh-user`, `--ssh-port`, `--ssh-private-key`, the system known hosts
 * with unknown host keys accepted and added, never an interactive prompt (BatchMode).
 *
 * Remote commands are argument vectors; every argument is shell-quoted (D27). Result rules (§8):
 * exit 127 → error with the remote stderr; any other non-zero exit → error with the return code,
 * stderr and stdout. Files are read with `cat` and written through a temporary file in the
 * destination directory (SFTP semantics: whole files, never half a file under the final name).
 * Remote temporary files are created on the remote side (`mktemp`) and removed on close (D27).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { execa } from 'execa';
import { shellCommand, shellQuote } from './quote.js';

export interface SshOptions {
  /** Remote host (name or address; an IPv6 literal without brackets). */
  host: string;
  /** Login name (`--ssh-user`); undefined = ssh's default (the current user). */
  user?: string;
  /** `--ssh-port` */
  port: number;
  /** `--ssh-private-key` */
  privateKey?: string;
  /** More ssh client arguments, e.g. `['-o', 'UserKnownHostsFile=…']` (tests). */
  extraArgs?: string[];
  /** Seconds for the TCP connection (default 15). */
  connectTimeout?: number;
  /** Seconds an idle master connection stays (default 300; `-O exit` on close ends it at once). */
  persist?: number;
}

export interface SshRunResult {
  exitCode: number;
  stdout: Buffer;
  stderr: string;
}

export interface SshInput {
  /** Bytes for the remote command's stdin. */
  input?: Buffer | string;
  /** A local file streamed to the remote command's stdin. */
  inputFile?: string;
}

/** Runs the ssh client with `args`; resolves for any exit status (255 = ssh itself failed). */
export type SshRunner = (args: string[], input?: SshInput) => Promise<SshRunResult>;

/** The real runner: `ssh` through execa. */
export const execaSshRunner: SshRunner = async (args, input) => {
  const r = await execa('ssh', args, {
    reject: false,
    encoding: 'buffer',
    stripFinalNewline: false,
    ...(input?.inputFile !== undefined ? { inputFile: input.inputFile } : input?.input !== undefined ? { input: input.input } : { stdin: 'ignore' as const }),
  });
  const code = typeof r.exitCode === 'number' ? r.exitCode : 255;
  return { exitCode: code, stdout: Buffer.from(r.stdout ?? new Uint8Array()), stderr: Buffer.from(r.stderr ?? new Uint8Array()).toString('utf8') };
};

/** The ssh connection could not be set up (§8: `SSH key authentication failed: …`, `Unable to connect: …`). */
export class SshSetupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SshSetupError';
  }
}

/** A remote command failed (§8 error rules). */
export class RemoteCommandError extends Error {
  constructor(
    message: string,
    readonly command: string,
    readonly exitCode: number,
    readonly stderr: string,
    readonly stdout: string,
  ) {
    super(message);
    this.name = 'RemoteCommandError';
  }
}

const trimText = (b: Buffer | string, max = 2000): string => {
  const s = (typeof b === 'string' ? b : b.toString('utf8')).trim();
  return s.length > max ? `${s.slice(0, max)}…` : s;
};

/** The §8 rules as a pure function: undefined for exit 0, else the error to throw. */
export function commandError(command: string, r: SshRunResult): RemoteCommandError | undefined {
  if (r.exitCode === 0) return undefined;
  const stderr = trimText(r.stderr);
  const stdout = trimText(r.stdout);
  if (r.exitCode === 127) return new RemoteCommandError(`Remote command not found: [${stderr}]`, command, 127, stderr, stdout);
  if (r.exitCode === 255 && /^(ssh|mux_client|Control socket|kex_exchange|Connection (closed|reset)|.*Permission denied \()/m.test(stderr)) {
    return new RemoteCommandError(`ssh connection failed while running [${command}]: [${stderr}]`, command, 255, stderr, stdout);
  }
  return new RemoteCommandError(
    `Remote command [${command}] failed with return code [${r.exitCode}]: stderr: [${stderr}], stdout: [${stdout}]`,
    command,
    r.exitCode,
    stderr,
    stdout,
  );
}

/** The message for a failed connection set-up (authentication or network). */
export function setupErrorMessage(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !/^Warning: Permanently added/.test(l));
  const text = lines.join(' ') || 'ssh exited without a message';
  if (/Permission denied|Authentication failed|Too many authentication failures|no such identity|Load key/i.test(text)) return `SSH key authentication failed: ${text}`;
  return `Unable to connect: ${text}`;
}

export interface FileWriteOptions {
  /** Replace an existing file (default false: an existing destination is an error, never touched). */
  replace?: boolean;
  /** Create missing parent directories. */
  mkdirs?: boolean;
  /** Octal mode of the new file (default 0644). */
  mode?: number;
}

/** The error of a no-replace write whose destination exists. */
export class RemoteFileExistsError extends Error {
  constructor(readonly path: string) {
    super(`File already exists: [${path}]`);
    this.name = 'RemoteFileExistsError';
  }
}

export class SshSession {
  private readonly temps = new Set<string>();
  private closed = false;

  private constructor(
    readonly options: SshOptions,
    private readonly runner: SshRunner,
    private readonly controlDir: string,
    private readonly baseArgs: string[],
    /** `user@host` (or `host`) as passed to ssh. */
    readonly target: string,
  ) {}

  /**
   * Connects (authentication included) and keeps the connection as the master for every later
   * command. Rejects with {@link SshSetupError}.
   */
  static async open(o: SshOptions, runner: SshRunner = execaSshRunner): Promise<SshSession> {
    if (o.host === '') throw new SshSetupError('Unable to connect: no remote host name');
    const controlDir = await mkdtemp(join(tmpdir(), 'virtnbd-ssh-'));
    const base = [
      '-p',
      String(o.port),
      ...(o.privateKey !== undefined && o.privateKey !== '' ? ['-i', o.privateKey, '-o', 'IdentitiesOnly=yes'] : []),
      '-o',
      'BatchMode=yes',
      '-o',
      'StrictHostKeyChecking=accept-new',
      '-o',
      `ConnectTimeout=${o.connectTimeout ?? 15}`,
      '-o',
      'ServerAliveInterval=30',
      '-o',
      'ControlMaster=auto',
      '-o',
      `ControlPath=${join(controlDir, 'cm')}`,
      '-o',
      `ControlPersist=${o.persist ?? 300}`,
      ...(o.extraArgs ?? []),
    ];
    // An IPv6 literal is a host name to ssh (no brackets); the user part only when given.
    const target = o.user !== undefined && o.user !== '' ? `${o.user}@${o.host}` : o.host;
    const s = new SshSession(o, runner, controlDir, base, target);
    let r: SshRunResult;
    try {
      r = await runner([...base, '-f', '-N', target]);
    } catch (e) {
      await rm(controlDir, { recursive: true, force: true });
      throw new SshSetupError(`Unable to connect: ${(e as Error).message}`);
    }
    if (r.exitCode !== 0) {
      await rm(controlDir, { recursive: true, force: true });
      throw new SshSetupError(setupErrorMessage(r.stderr));
    }
    return s;
  }

  /** Runs a shell command line (built with shellQuote/shellCommand) remotely; any exit status resolves. */
  async runScript(script: string, input?: SshInput): Promise<SshRunResult> {
    if (this.closed) throw new Error('ssh session is closed');
    return this.runner([...this.baseArgs, this.target, '--', script], input);
  }

  /** Runs `argv` remotely (every argument quoted); any exit status resolves. */
  run(argv: readonly string[], input?: SshInput): Promise<SshRunResult> {
    return this.runScript(shellCommand(argv), input);
  }

  /** Runs `argv` remotely and returns its stdout; a non-zero exit rejects (§8 rules). */
  async exec(argv: readonly string[], input?: SshInput): Promise<Buffer> {
    const cmd = shellCommand(argv);
    const r = await this.runScript(cmd, input);
    const err = commandError(argv.join(' '), r);
    if (err) throw err;
    return r.stdout;
  }

  /** Like exec for a prepared command line. */
  async execScript(script: string, input?: SshInput, label = script): Promise<Buffer> {
    const r = await this.runScript(script, input);
    const err = commandError(label, r);
    if (err) throw err;
    return r.stdout;
  }

  /** True when `path` exists on the remote host (any file type). */
  async exists(path: string): Promise<boolean> {
    const r = await this.runScript(`test -e ${shellQuote(path)} || test -L ${shellQuote(path)}`);
    if (r.exitCode === 0) return true;
    if (r.exitCode === 1) return false;
    throw commandError(`test -e ${path}`, r)!;
  }

  /** The whole remote file. */
  readFile(path: string): Promise<Buffer> {
    return this.exec(['cat', '--', path]);
  }

  /**
   * Writes `data` (bytes, or `{ file }`: a local file) to the remote `path`: a temporary file in
   * the same directory, synced, then linked to `path` (no replace: fails with
   * {@link RemoteFileExistsError} when `path` exists) or renamed over it (`replace`).
   */
  async writeFile(path: string, data: Buffer | string | { file: string }, o: FileWriteOptions = {}): Promise<void> {
    if (!path.startsWith('/')) throw new Error(`Remote path must be absolute: [${path}]`);
    const dir = posix.dirname(path);
    const q = shellQuote;
    const mode = (o.mode ?? 0o644).toString(8);
    const publish = o.replace === true ? `mv -f -- "$t" ${q(path)}` : `ln -- "$t" ${q(path)}`;
    const script = [
      o.mkdirs === true ? `mkdir -p -- ${q(dir)} || exit 1` : ':',
      `t=$(mktemp ${q(`${dir}/.${posix.basename(path)}.XXXXXXXX`)}) || exit 1`,
      `trap 'rm -f -- "$t"' EXIT`,
      `cat > "$t" || exit 1`,
      `chmod ${mode} "$t" || exit 1`,
      `sync -- "$t" 2>/dev/null`,
      o.replace === true ? ':' : `if test -e ${q(path)} || test -L ${q(path)}; then echo "exists" >&2; exit 17; fi`,
      `${publish} || exit 1`,
    ].join('\n');
    const input: SshInput = typeof data === 'object' && !Buffer.isBuffer(data) ? { inputFile: data.file } : { input: data };
    const r = await this.runScript(script, input);
    if (r.exitCode === 17 || (o.replace !== true && r.exitCode !== 0 && /File exists/.test(r.stderr))) throw new RemoteFileExistsError(path);
    const err = commandError(`write ${path}`, r);
    if (err) throw err;
  }

  /** `mkdir -p` on the remote host. */
  async mkdirp(path: string): Promise<void> {
    await this.exec(['mkdir', '-p', '--', path]);
  }

  /** Removes remote files (missing ones are fine). */
  async remove(...paths: string[]): Promise<void> {
    if (paths.length === 0) return;
    await this.exec(['rm', '-f', '--', ...paths]);
    for (const p of paths) this.temps.delete(p);
  }

  /** A new empty temporary file created on the remote side; removed again by close() at the latest. */
  async mktemp(template = 'virtnbd.XXXXXXXX'): Promise<string> {
    const path = (await this.exec(['mktemp', '-t', template])).toString('utf8').trim();
    if (!path.startsWith('/')) throw new Error(`remote mktemp returned no path: [${path}]`);
    this.temps.add(path);
    return path;
  }

  /** `qemu-img info <path> --output json --force-share` on the remote host (§7.3). */
  async qemuImgInfo(path: string): Promise<string> {
    return (await this.exec(['qemu-img', 'info', path, '--output', 'json', '--force-share'])).toString('utf8');
  }

  /** Removes the remaining remote temporary files, ends the master connection, removes the local control directory. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      if (this.temps.size > 0) await this.remove(...this.temps).catch(() => undefined);
    } finally {
      this.closed = true;
      await this.runner([...this.baseArgs, '-O', 'exit', this.target]).catch(() => undefined);
      await rm(this.controlDir, { recursive: true, force: true });
    }
  }
}
