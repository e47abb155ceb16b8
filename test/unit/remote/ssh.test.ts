/** SshSession with a fake ssh runner: the arguments it passes, quoting, the §8 error rules, temp files. */
import { existsSync } from 'node:fs';
import { commandError, RemoteFileExistsError, SshSession, SshSetupError, setupErrorMessage, type SshInput, type SshRunResult, type SshRunner } from '../../../src/remote/ssh.js';

interface Call {
  args: string[];
  input?: SshInput;
}

const ok = (stdout = ''): SshRunResult => ({ exitCode: 0, stdout: Buffer.from(stdout), stderr: '' });

/** A runner answering from `answer` (by the remote command after `--`), recording every call. */
function fake(answer: (script: string | undefined, args: string[]) => SshRunResult): { runner: SshRunner; calls: Call[] } {
  const calls: Call[] = [];
  return {
    calls,
    runner: async (args, input) => {
      calls.push({ args, input });
      const i = args.indexOf('--');
      return answer(i >= 0 ? args[i + 1] : undefined, args);
    },
  };
}

const opts = { host: 'hv1', user: 'root', port: 2222, privateKey: '/keys/id' };

test('open: one master connection with port, key, BatchMode, accept-new, ControlMaster socket; close ends it', async () => {
  const f = fake(() => ok());
  const s = await SshSession.open(opts, f.runner);
  const first = f.calls[0]!.args;
  expect(first.slice(-3)).toEqual(['-f', '-N', 'root@hv1']);
  const joined = first.join(' ');
  expect(joined).toMatch(/-p 2222/);
  expect(joined).toMatch(/-i \/keys\/id/);
  expect(joined).toMatch(/BatchMode=yes/);
  expect(joined).toMatch(/StrictHostKeyChecking=accept-new/);
  expect(joined).toMatch(/ControlMaster=auto/);
  const cp = /ControlPath=(\S+)/.exec(joined)![1]!;
  expect(existsSync(cp.replace(/\/cm$/, ''))).toBe(true);
  await s.close();
  const last = f.calls[f.calls.length - 1]!.args;
  expect(last.slice(-3)).toEqual(['-O', 'exit', 'root@hv1']);
  expect(existsSync(cp.replace(/\/cm$/, ''))).toBe(false);
  await expect(s.exec(['true'])).rejects.toThrow(/closed/);
});

test('open failures: authentication vs connection messages (§8)', async () => {
  const auth = fake(() => ({ exitCode: 255, stdout: Buffer.alloc(0), stderr: 'root@hv1: Permission denied (publickey).\n' }));
  await expect(SshSession.open(opts, auth.runner)).rejects.toThrow(new SshSetupError('SSH key authentication failed: root@hv1: Permission denied (publickey).'));
  const refused = fake(() => ({ exitCode: 255, stdout: Buffer.alloc(0), stderr: 'ssh: connect to host hv1 port 2222: Connection refused\n' }));
  await expect(SshSession.open(opts, refused.runner)).rejects.toThrow(/^Unable to connect: ssh: connect to host hv1 port 2222: Connection refused$/);
  expect(setupErrorMessage("Warning: Permanently added 'x'\nssh: Could not resolve hostname nohost")).toBe('Unable to connect: ssh: Could not resolve hostname nohost');
});

test('exec quotes every argument; exit 127 and other exits follow the §8 rules', async () => {
  const f = fake((script) => {
    if (script === undefined) return ok();
    if (script.startsWith("'qemu-img'")) return { exitCode: 1, stdout: Buffer.from('partial out'), stderr: "qemu-img: Could not open '/v/a b'" };
    if (script.startsWith("'nosuch'")) return { exitCode: 127, stdout: Buffer.alloc(0), stderr: 'bash: nosuch: command not found' };
    return ok('fine\n');
  });
  const s = await SshSession.open(opts, f.runner);
  expect((await s.exec(['echo', "it's $HOME"])).toString()).toBe('fine\n');
  expect(f.calls[1]!.args.slice(-3)).toEqual(['root@hv1', '--', "'echo' 'it'\\''s $HOME'"]);
  await expect(s.exec(['nosuch', 'x'])).rejects.toThrow('Remote command not found: [bash: nosuch: command not found]');
  const err = await s.qemuImgInfo('/v/a b').catch((e: unknown) => e as Error);
  expect(err).toBeInstanceOf(Error);
  expect((err as Error).message).toBe(
    "Remote command [qemu-img info /v/a b --output json --force-share] failed with return code [1]: stderr: [qemu-img: Could not open '/v/a b'], stdout: [partial out]",
  );
  expect(f.calls.some((c) => c.args.includes("'qemu-img' 'info' '/v/a b' '--output' 'json' '--force-share'"))).toBe(true);
  await s.close();
});

test('commandError: 0 is fine, 255 with an ssh message is a connection failure', () => {
  expect(commandError('x', ok())).toBeUndefined();
  expect(commandError('x', { exitCode: 255, stdout: Buffer.alloc(0), stderr: 'Connection closed by 1.2.3.4 port 22' })?.message).toMatch(/^ssh connection failed while running \[x\]/);
  expect(commandError('x', { exitCode: 2, stdout: Buffer.from('o'), stderr: 'e' })?.exitCode).toBe(2);
});

test('mktemp is made remotely and removed on close (D27)', async () => {
  const f = fake((script) => (script?.startsWith("'mktemp'") ? ok('/tmp/virtnbd.AbCd1234\n') : ok()));
  const s = await SshSession.open(opts, f.runner);
  expect(await s.mktemp()).toBe('/tmp/virtnbd.AbCd1234');
  await s.close();
  const scripts = f.calls.map((c) => c.args[c.args.indexOf('--') + 1]);
  expect(scripts).toContain("'rm' '-f' '--' '/tmp/virtnbd.AbCd1234'");
  // removal happens before the master connection is closed
  const rmAt = scripts.indexOf("'rm' '-f' '--' '/tmp/virtnbd.AbCd1234'");
  const exitAt = f.calls.findIndex((c) => c.args.includes('-O'));
  expect(rmAt).toBeLessThan(exitAt);
});

test('writeFile: data on stdin, destination quoted, no replace by default; exists → RemoteFileExistsError', async () => {
  let exists = false;
  const f = fake((script) => (script !== undefined && script.includes('cat >') && exists ? { exitCode: 17, stdout: Buffer.alloc(0), stderr: 'exists' } : ok()));
  const s = await SshSession.open(opts, f.runner);
  await s.writeFile("/etc/it's/vm.xml", '<domain/>');
  const call = f.calls[1]!;
  expect(call.input?.input).toBe('<domain/>');
  const script = call.args[call.args.indexOf('--') + 1]!;
  expect(script).toContain("ln -- \"$t\" '/etc/it'\\''s/vm.xml'");
  expect(script).not.toContain('mv -f');
  exists = true;
  await expect(s.writeFile('/x/y', Buffer.from('a'))).rejects.toBeInstanceOf(RemoteFileExistsError);
  await expect(s.writeFile('relative/y', 'a')).rejects.toThrow(/absolute/);
  await s.close();
});
