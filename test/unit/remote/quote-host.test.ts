/** Shell quoting (D27), remote host selection (§8), NBD URIs and argument vectors of remote mode. */
import { execa } from 'execa';
import { shellCommand, shellQuote } from '../../../src/remote/quote.js';
import { checkPortRange, clientTlsDir, isRemoteUri, remoteHostName, tcpNbdUri, uriHost } from '../../../src/remote/host.js';
import { remoteQemuNbdArgs } from '../../../src/remote/nbd-server.js';
import { remoteOptionsOf } from '../../../src/remote/cli-options.js';
import { backupXml } from '../../../src/backup/job.js';
import { recordingLogger } from '../backup/recording-logger.js';

const nasty = ["plain", "with space", "it's", "a'b'c", '$HOME', '`id`', '$(id)', 'semi;colon', 'amp&&', 'new\nline', '"dq"', '\\back', '*', '', '-n', 'ünï'];

test('shellQuote: every argument reaches a real shell unchanged, nothing is expanded', async () => {
  // printf prints each argument followed by a NUL; what the shell passed is what we quoted.
  const r = await execa('sh', ['-c', `printf '%s\\0' ${shellCommand(nasty)}`], { encoding: 'buffer' });
  const got = Buffer.from(r.stdout).toString('utf8').split('\0').slice(0, -1);
  expect(got).toEqual(nasty);
});

test('shellQuote: single quotes, embedded quote as \'\\\'\'; NUL refused; empty argv refused', () => {
  expect(shellQuote('a b')).toBe("'a b'");
  expect(shellQuote("it's")).toBe("'it'\\''s'");
  expect(() => shellQuote('a\0b')).toThrow(/NUL/);
  expect(() => shellCommand([])).toThrow(/Empty/);
  expect(shellCommand(['qemu-img', 'info', '/var/lib/a b.qcow2'])).toBe("'qemu-img' 'info' '/var/lib/a b.qcow2'");
});

test('isRemoteUri / uriHost / tcpNbdUri', () => {
  expect(isRemoteUri('qemu+ssh://root@hv1/system')).toBe(true);
  expect(isRemoteUri('qemu:///system')).toBe(false);
  expect(uriHost('qemu+ssh://root@hv1:2222/system?keyfile=/k')).toBe('hv1');
  expect(uriHost('qemu+ssh://root@[fe80::1]/system')).toBe('fe80::1');
  expect(uriHost('qemu:///system')).toBe('');
  expect(tcpNbdUri('hv1', 10809, 'vda', false)).toBe('nbd://hv1:10809/vda');
  expect(tcpNbdUri('fe80::1', 10810, 'sda', true)).toBe('nbds://[fe80::1]:10810/sda');
});

test('remoteHostName: libvirt\'s name when it resolves, else the URI host, logged', async () => {
  const log = recordingLogger();
  expect(await remoteHostName('hv1.example', 'qemu+ssh://root@10.0.0.5/system', log, async (n) => n === 'hv1.example')).toBe('hv1.example');
  expect(await remoteHostName('hv1.internal', 'qemu+ssh://root@10.0.0.5/system', log, async () => false)).toBe('10.0.0.5');
  expect(log.at('INFO').join('\n')).toMatch(/does not resolve here, using \[10\.0\.0\.5\]/);
});

test('remote qemu-nbd argv: read-only, TCP port, pid file, bind address, bitmap, TLS object', () => {
  const a = remoteQemuNbdArgs(
    { image: '/vm/a b.qcow2', format: 'qcow2', exportName: 'vda', port: 10810, bindIp: '192.0.2.1', readOnly: true, bitmap: 'virtnbdbackup.3', tls: true, tlsCert: '/etc/pki/a,b', extraArgs: ['-e', '2'] },
    '/tmp/virtnbd-nbd.X',
  );
  expect(a).toEqual([
    'qemu-nbd', '-r', '--format=qcow2', '-x', 'vda', '/vm/a b.qcow2', '-p', '10810', '--pid-file', '/tmp/virtnbd-nbd.X', '--fork',
    '-b', '192.0.2.1', '--bitmap=virtnbdbackup.3',
    '--object', 'tls-creds-x509,id=tls0,endpoint=server,dir=/etc/pki/a,,b,verify-peer=false', '--tls-creds', 'tls0', '-e', '2',
  ]);
  const b = remoteQemuNbdArgs({ image: '/i', format: 'raw', exportName: 'sda', port: 1, bindIp: '', readOnly: false, tls: false, tlsCert: '' }, '/p');
  expect(b).toEqual(['qemu-nbd', '--format=raw', '-x', 'sda', '/i', '-p', '1', '--pid-file', '/p', '--fork']);
});

test('backup XML of remote mode: a TCP server with name, port and tls', () => {
  const xml = backupXml({ tcp: { name: 'hv1', port: 10809, tls: true }, scratchDir: '/var/tmp', devs: ['vda'], incremental: 'virtnbdbackup.0' });
  expect(xml).toMatch(/<server transport="tcp" tls="yes" name="hv1" port="10809"\/>/);
  expect(xml).not.toMatch(/unix/);
  expect(xml).toMatch(/<incremental>virtnbdbackup\.0<\/incremental>/);
  expect(backupXml({ tcp: { name: 'h', port: 1, tls: false }, scratchDir: '/s', devs: ['vda'] })).toMatch(/tls="no"/);
  expect(() => backupXml({ scratchDir: '/s', devs: ['vda'] })).toThrow();
});

test('remoteOptionsOf: parsed values and defaults', () => {
  expect(remoteOptionsOf({ sshUser: 'root', sshPort: 2222, nbdPort: 11000, nbdIp: '', tls: true, tlsCert: '/c' })).toEqual({
    sshUser: 'root', sshPort: 2222, sshPrivateKey: undefined, nbdPort: 11000, nbdIp: '', tls: true, tlsCert: '/c',
  });
  expect(remoteOptionsOf({})).toMatchObject({ sshPort: 22, nbdPort: 10809, nbdIp: '', tls: false, tlsCert: '/etc/pki/qemu/' });
});

test('remoteOptionsOf reads the remote group as both commands parse it (CLI.md §2.1)', async () => {
  const { tryParseCommandLine } = await import('../../../src/cli/argv.js');
  const { currentSpecEnv, virtnbdbackupSpec, virtnbdrestoreSpec } = await import('../../../src/cli/specs.js');
  const env = { ...currentSpecEnv(), euid: 0, pid: 42, user: 'alice' };
  const remoteArgs = ['-U', 'qemu+ssh://root@hv1/system', '--ssh-user', 'bob', '--ssh-port', '2222', '--ssh-private-key', '/k/id', '-P', '11000', '-I', '10.0.0.1', '--tls', '--tls-cert', '/c'];
  const expected = { sshUser: 'bob', sshPort: 2222, sshPrivateKey: '/k/id', nbdPort: 11000, nbdIp: '10.0.0.1', tls: true, tlsCert: '/c' };
  const b = tryParseCommandLine(virtnbdbackupSpec(env), ['-d', 'vm1', '-l', 'full', '-o', '/o', ...remoteArgs]);
  const r = tryParseCommandLine(virtnbdrestoreSpec(env), ['-i', '/in', '-o', '/out', ...remoteArgs]);
  expect(b.kind).toBe('ok');
  expect(r.kind).toBe('ok');
  if (b.kind !== 'ok' || r.kind !== 'ok') return;
  expect(remoteOptionsOf(b.values)).toEqual(expected);
  expect(remoteOptionsOf(r.values)).toEqual(expected);
  // defaults: the current user, port 22, 10809, no nbd-ip, no TLS, /etc/pki/qemu/
  const d = tryParseCommandLine(virtnbdbackupSpec(env), ['-d', 'vm1', '-o', '/o']);
  if (d.kind !== 'ok') throw new Error('parse failed');
  expect(remoteOptionsOf(d.values)).toEqual({ sshUser: 'alice', sshPort: 22, sshPrivateKey: undefined, nbdPort: 10809, nbdIp: '', tls: false, tlsCert: '/etc/pki/qemu/' });
});

test('checkPortRange: N … N+count-1 within 1-65535; clientTlsDir only when the directory exists here', () => {
  expect(() => checkPortRange(10809, 3)).not.toThrow();
  expect(() => checkPortRange(65535, 1)).not.toThrow();
  expect(() => checkPortRange(65534, 3)).toThrow(/\[65534-65536\]/);
  expect(() => checkPortRange(0, 1)).toThrow();
  expect(clientTlsDir('/')).toBe('/');
  expect(clientTlsDir('/nonexistent/pki/qemu/')).toBeUndefined();
});
