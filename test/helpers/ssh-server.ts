/**
 * A private sshd on 127.0.0.1 for the remote-mode tests: its own host key, a client key the test
 * generates (root login by key only), a private known-hosts file, and a wrapper for libvirt's
 * ssh transport (URI parameter `command`) so that nothing lands in root's ~/.ssh.
 */
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { freePort } from './procs.js';

export interface TestSshd {
  port: number;
  /** Client private key (its .pub is authorised). */
  key: string;
  knownHosts: string;
  /** `ssh -o UserKnownHostsFile=<knownHosts> "$@"`, for libvirt's `command=` URI parameter. */
  sshWrapper: string;
  stop(): Promise<void>;
}

async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const r = await execa('ssh-keyscan', ['-p', String(port), '127.0.0.1'], { reject: false, stdin: 'ignore' });
    if (r.exitCode === 0 && r.stdout.trim() !== '') return;
    await new Promise((r2) => setTimeout(r2, 100));
  }
  throw new Error(`sshd on port ${port} did not come up`);
}

/** Start sshd with its files in `dir` (which the caller removes). */
export async function startTestSshd(dir: string): Promise<TestSshd> {
  await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'host_key')]);
  const key = join(dir, 'client_key');
  await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(`${key}.pub`));
  chmodSync(join(dir, 'authorized_keys'), 0o600);
  const knownHosts = join(dir, 'known_hosts');
  const port = await freePort();
  writeFileSync(
    join(dir, 'sshd_config'),
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${join(dir, 'host_key')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      'PermitRootLogin prohibit-password',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'StrictModes no',
      `PidFile ${join(dir, 'sshd.pid')}`,
      'MaxSessions 50',
      'MaxStartups 50',
      '',
    ].join('\n'),
  );
  mkdirSync('/run/sshd', { recursive: true }); // privilege separation directory
  const sshd: ResultPromise = execa('/usr/sbin/sshd', ['-D', '-e', '-f', join(dir, 'sshd_config')], {
    reject: false,
    stdin: 'ignore',
    stdout: 'ignore',
    stderr: 'pipe',
  });
  await waitForPort(port);
  const sshWrapper = join(dir, 'ssh-wrapper');
  writeFileSync(sshWrapper, `#!/bin/sh\nexec ssh -o UserKnownHostsFile=${knownHosts} "$@"\n`, { mode: 0o755 });
  return {
    port,
    key,
    knownHosts,
    sshWrapper,
    stop: async () => {
      sshd.kill('SIGTERM');
      await sshd;
    },
  };
}
