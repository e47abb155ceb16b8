/**
 * Remote ONLINE backup with --tls (BEHAVIOUR.md §8): libvirt's NBD server with TLS, reached as
 * `qemu+ssh://root@127.0.0.1:<port>/session?…` through an sshd started by the test.
 *
 * libvirt's qemu takes the server certificates from qemu.conf (`backup_tls_x509_cert_dir`), which
 * must not be changed on the system daemon: the test runs a private unprivileged libvirtd
 * (test/helpers/session-libvirtd.ts: user nobody, own XDG dirs, own qemu.conf with a temp CA,
 * server certificate and `backup_tls_x509_verify = 1`). libvirt's ssh transport reaches its socket
 * with `socket=…&proxy=netcat&netcat=<script>` (the script: a tiny unix-socket relay in node, as
 * there is no nc here). The TCG domain runs on that daemon; guest writes go through HMP qemu-io,
 * the same bytes into a shadow file.
 *
 * - full + inc with --tls and --tls-cert <dir with ca-cert.pem, client-cert.pem, client-key.pem>:
 *   the job XML asks for tls="yes", libvirt's running job reports tls='yes', a plain NBD client is
 *   refused by the server during the job, and every point equals the shadow;
 * - a --tls backup whose --tls-cert has only the CA (no client certificate) fails: the server
 *   verifies clients.
 */
import { createHash } from 'node:crypto';
import { chmodSync, closeSync, copyFileSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { execa, execaSync } from 'execa';
import { chainSha } from '../helpers/map-sha.js';
import { freePort } from '../helpers/procs.js';
import { plainBackupOptions } from '../helpers/backup-options.js';
import { startTestSshd, type TestSshd } from '../helpers/ssh-server.js';
import { chownTree, startSessionLibvirtd, type SessionLibvirtd } from '../helpers/session-libvirtd.js';
import { diskAliases, initialLayout, qdevFor } from '../helpers/test-vm.js';
import { recordingLogger, type RecordingLogger } from '../unit/backup/recording-logger.js';
import { prepareTarget, runBackup, type BackupOptions } from '../../src/backup/run.js';
import type { RemoteOptions } from '../../src/remote/host.js';
import { DOMAIN_START, VirtConnection, type VirtDomain } from '../../src/virt/client.js';
import type { Logger } from '../../src/log/logger.js';

jest.setTimeout(300_000);

const MiB = 1024 * 1024;
const SIZE = 32 * MiB;

let tmp: string;
let vmDir: string;
let sshd: TestSshd | undefined;
let sshPort: number;
let key: string;
let knownHosts: string;
let uri: string;
let nbdPort: number;
let daemon: SessionLibvirtd | undefined;
let conn: VirtConnection | undefined;
let dom: VirtDomain;
let qdev: string;
let clientCerts: string;
let caOnly: string;
const name = `virtnbd-tls-${process.pid}`;

/** CA, server certificate (for `host`, localhost, 127.0.0.1) for libvirt, client certificate for us. */
async function makeCerts(host: string): Promise<{ server: string; client: string; caOnly: string }> {
  const ca = join(tmp, 'ca');
  const server = join(tmp, 'server-pki');
  const client = join(tmp, 'client-pki');
  const only = join(tmp, 'ca-only');
  for (const d of [ca, server, client, only]) mkdirSync(d);
  const ssl = (...args: string[]): Promise<unknown> => execa('openssl', args, { cwd: ca, stdin: 'ignore' });
  await ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca-key.pem', '-out', 'ca-cert.pem', '-days', '2', '-subj', '/CN=virtnbd test CA');
  const issue = async (who: string, cn: string, ext: string): Promise<void> => {
    await ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${who}-key.pem`, '-out', `${who}.csr`, '-subj', `/CN=${cn}`);
    writeFileSync(join(ca, `${who}.cnf`), ext);
    await ssl('x509', '-req', '-in', `${who}.csr`, '-CA', 'ca-cert.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-out', `${who}-cert.pem`, '-days', '2', '-extfile', `${who}.cnf`);
  };
  await issue('server', host, `subjectAltName=DNS:${host},DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n`);
  await issue('client', 'virtnbd test client', 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n');
  for (const f of ['ca-cert.pem', 'server-cert.pem', 'server-key.pem']) copyFileSync(join(ca, f), join(server, f));
  for (const f of ['ca-cert.pem', 'client-cert.pem', 'client-key.pem']) copyFileSync(join(ca, f), join(client, f));
  copyFileSync(join(ca, 'ca-cert.pem'), join(only, 'ca-cert.pem'));
  chownTree(server); // read by the daemon's qemu (user nobody)
  return { server, client, caOnly: only };
}

function fill(path: string, offset: number, length: number, pattern: number): void {
  const fd = openSync(path, 'r+');
  try {
    const buf = Buffer.alloc(length, pattern);
    let w = 0;
    while (w < length) w += writeSync(fd, buf, w, length - w, offset + w);
  } finally {
    closeSync(fd);
  }
}

const shadow = (): string => join(vmDir, 'vda.shadow.raw');
const image = (): string => join(vmDir, 'vda.qcow2');

function shadowSha(): string {
  return createHash('sha256').update(readFileSync(shadow())).digest('hex');
}

/** One HMP qemu-io command in the running guest; waits for its report in the domain log. */
async function qemuIo(cmd: string, done: RegExp | null): Promise<void> {
  const log = join(daemon!.logDir, `${name}.log`);
  const start = statSync(log).size;
  const reply = await dom.qemuMonitorCommand(`qemu-io -d ${qdev} "${cmd}"`);
  if (reply.trim() !== '') throw new Error(`qemu-io "${cmd}" answered: ${reply}`);
  if (done === null) return;
  for (let i = 0; i < 500; i++) {
    const text = readFileSync(log).subarray(start).toString('utf8');
    if (/failed/.test(text)) throw new Error(`qemu-io "${cmd}": ${text}`);
    if (done.test(text)) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`qemu-io "${cmd}": no report in ${log}`);
}

async function guestWrite(offset: number, length: number, pattern: number): Promise<void> {
  const cmd = pattern === 0 ? `write -z ${offset} ${length}` : `write -P 0x${pattern.toString(16)} ${offset} ${length}`;
  await qemuIo(cmd, new RegExp(`^wrote ${length}/${length} bytes at offset ${offset}$`, 'm'));
  await qemuIo('flush', null);
  fill(shadow(), offset, length, pattern);
}

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'virtnbd-remote-tls-'));
  chmodSync(tmp, 0o755);
  sshd = await startTestSshd(tmp);
  sshPort = sshd.port;
  key = sshd.key;
  knownHosts = sshd.knownHosts;
  const host = (await execa('hostname')).stdout.trim();
  const certs = await makeCerts(host);
  clientCerts = certs.client;
  caOnly = certs.caOnly;
  daemon = await startSessionLibvirtd(`backup_tls_x509_cert_dir = "${certs.server}"\nbackup_tls_x509_verify = 1\n`);

  // the disk: initial content in image and shadow alike
  vmDir = mkdtempSync('/var/tmp/virtnbd-vm-');
  chmodSync(vmDir, 0o777);
  await execa('qemu-img', ['create', '-q', '-f', 'qcow2', image(), String(SIZE)]);
  const ops = initialLayout(SIZE, 0);
  await execa('qemu-io', ['-f', 'qcow2', ...ops.flatMap((o) => ['-c', o.kind === 'zero' ? `write -z ${o.offset} ${o.length}` : `write -P 0x${o.pattern.toString(16)} ${o.offset} ${o.length}`]), image()]);
  const fd = openSync(shadow(), 'w');
  ftruncateSync(fd, SIZE);
  closeSync(fd);
  for (const o of ops) fill(shadow(), o.offset, o.length, o.kind === 'zero' ? 0 : o.pattern);
  chmodSync(image(), 0o666);

  conn = await VirtConnection.open(daemon.uri);
  dom = await conn.createXML(
    `<domain type='qemu'><name>${name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os><on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2' discard='unmap'/><source file='${image()}'/><target dev='vda' bus='virtio'/></disk>
    <memballoon model='none'/>
  </devices></domain>`,
    DOMAIN_START.AUTODESTROY,
  );
  const alias = diskAliases(await dom.xmlDesc()).get('vda');
  if (alias === undefined) throw new Error('no alias for vda');
  qdev = qdevFor('virtio', alias);

  // libvirt's ssh transport: our known-hosts file, and a relay to the private daemon's socket
  const wrapper = sshd.sshWrapper;
  const relay = join(tmp, 'relay.cjs');
  writeFileSync(
    relay,
    [
      "const s = require('node:net').connect(process.argv[process.argv.length - 1]);",
      'process.stdin.pipe(s);',
      's.pipe(process.stdout);',
      "s.on('error', (e) => { process.stderr.write(String(e) + '\\n'); process.exit(1); });",
      "s.on('close', () => process.exit(0));",
      '',
    ].join('\n'),
  );
  const netcat = join(tmp, 'nc-relay');
  writeFileSync(netcat, `#!/bin/sh\nexec ${process.execPath} ${relay} "$@"\n`, { mode: 0o755 });
  uri = `qemu+ssh://root@127.0.0.1:${sshPort}/session?keyfile=${key}&no_verify=1&command=${wrapper}&proxy=netcat&netcat=${netcat}&socket=${daemon.socket}`;
  nbdPort = await freePort();
}, 120_000);

afterAll(async () => {
  await conn?.close().catch(() => undefined); // AUTODESTROY: the domain goes with it
  await daemon?.stop();
  await sshd?.stop();
  if (vmDir !== undefined) rmSync(vmDir, { recursive: true, force: true });
  if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
});

function remote(over: Partial<RemoteOptions> = {}): RemoteOptions {
  return { sshUser: 'root', sshPort, sshPrivateKey: key, nbdPort, nbdIp: '', tls: true, tlsCert: clientCerts, ...over };
}

function backupOptions(output: string, level: BackupOptions['level'], over: Partial<BackupOptions> = {}): BackupOptions {
  return plainBackupOptions({ domain: name, level, output, dir: vmDir, uri }, { remote: remote(), ...over });
}

/** A logger that also calls `hook` with every info message (of itself and its children). */
function hooked(base: RecordingLogger, hook: (m: string) => void): Logger {
  const wrap = (l: Logger): Logger => ({
    ...l,
    info: (m: string) => {
      l.info(m);
      hook(m);
    },
    child: (c: string) => wrap(l.child(c)),
  });
  return wrap(base);
}

function dump(log: RecordingLogger): string {
  const text = log.records.map((r) => `${r.level} ${r.message}`).join('\n');
  if (process.env.VIRTNBD_TEST_LOG === '1') process.stderr.write(`${text}\n`);
  return text;
}

interface JobView {
  dumpxml: string;
  /** nbdinfo nbd://… (no TLS) */
  plain: string;
  /** nbdinfo --size nbds://…?tls-certificates=<client certificates> */
  tls: string;
}

/**
 * Runs a backup; while its job runs, records `virsh backup-dumpxml` and what a plain NBD client and
 * a TLS one get from the server.
 */
async function backup(output: string, level: BackupOptions['level'], over: Partial<RemoteOptions> = {}): Promise<{ code: number; text: string; job: JobView | undefined }> {
  await prepareTarget(output);
  const log = recordingLogger();
  let job: JobView | undefined;
  const hook = (m: string): void => {
    if (m !== 'Started backup job.') return;
    // synchronous on purpose: nothing is read before both answers are in
    const x = execaSync('virsh', ['-c', daemon!.uri, 'backup-dumpxml', name], { reject: false, stdin: 'ignore' });
    const p = execaSync('nbdinfo', [`nbd://127.0.0.1:${nbdPort}/vda`], { reject: false, stdin: 'ignore' });
    const t = execaSync('nbdinfo', ['--size', `nbds://127.0.0.1:${nbdPort}/vda?tls-certificates=${clientCerts}`], { reject: false, stdin: 'ignore' });
    job = { dumpxml: `${x.stdout}${x.stderr}`, plain: `exit ${p.exitCode}: ${p.stdout}${p.stderr}`, tls: `exit ${t.exitCode}: ${t.stdout}${t.stderr}` };
  };
  const s = await runBackup(backupOptions(output, level, { remote: remote(over) }), { log: hooked(log, hook), signal: new AbortController().signal, ssh: { extraArgs: ['-o', `UserKnownHostsFile=${knownHosts}`] } });
  return { code: s.exitCode, text: dump(log), job };
}

function checkTlsJob(r: { text: string; job: JobView | undefined }): void {
  // our job XML asks for TLS, libvirt's running job has it, a plain client is turned away
  expect(r.text).toMatch(new RegExp(`<server transport="tcp" tls="yes" name="[^"]+" port="${nbdPort}"/>`));
  expect(r.job).toBeDefined();
  expect(r.job!.dumpxml).toMatch(new RegExp(`<server transport='tcp' tls='yes' name='[^']+' port='${nbdPort}'/>`));
  expect(r.job!.plain).toMatch(/^exit [1-9]/);
  // qemu answers NBD_REP_ERR_TLS_REQD, which libnbd reports as "not supported"
  expect(r.job!.plain).toMatch(/without TLS[\s\S]*(requires TLS|Operation not supported)/);
  expect(r.job!.tls).toBe(`exit 0: ${SIZE}`);
}

test('remote online full + inc with --tls: libvirt NBD server with TLS (own qemu.conf certificates), every point equals the shadow', async () => {
  const dir = join(vmDir, 'tls-set');
  const shas: Record<string, string> = {};

  const full = await backup(dir, 'full');
  if (full.code !== 0) throw new Error(`remote TLS full exited ${full.code}:\n${full.text}`);
  shas['virtnbdbackup.0'] = shadowSha();
  checkTlsJob(full);
  expect(full.text).toMatch(/Connected to \[root@.*\] port \[\d+\] via ssh\./);

  await guestWrite(3 * MiB, MiB + 512, 0x5c);
  await guestWrite(1 * MiB, 256 * 1024, 0);
  const inc = await backup(dir, 'inc');
  if (inc.code !== 0) throw new Error(`remote TLS inc exited ${inc.code}:\n${inc.text}`);
  shas['virtnbdbackup.1'] = shadowSha();
  expect(shas['virtnbdbackup.1']).not.toBe(shas['virtnbdbackup.0']);
  checkTlsJob(inc);

  expect(readdirSync(dir)).toEqual(expect.arrayContaining(['vda.full.data', 'vda.inc.virtnbdbackup.1.data', `${name}.cpt`]));
  expect((await chainSha(dir, 'vda', 'virtnbdbackup.0')).sha).toBe(shas['virtnbdbackup.0']);
  expect((await chainSha(dir, 'vda', 'virtnbdbackup.1')).sha).toBe(shas['virtnbdbackup.1']);
});

test('--tls without a client certificate: the server (backup_tls_x509_verify = 1) refuses us, the backup fails', async () => {
  const dir = join(vmDir, 'tls-no-client-cert');
  const r = await backup(dir, 'copy', { tlsCert: caOnly });
  expect(r.code).not.toBe(0);
  expect(r.text).toMatch(/tls="yes"/);
  expect(r.text).toMatch(/Backup of disk \[vda\] failed: NBD endpoint: \[nbds:\/\/[^\]]+\/vda\]: connection failed: .*(gnutls|TLS)/);
  expect(readdirSync(dir).filter((n) => n.endsWith('.data'))).toEqual([]);
  // the job is gone again: a later backup works
  const ok = await backup(join(vmDir, 'tls-copy'), 'copy');
  if (ok.code !== 0) throw new Error(`remote TLS copy exited ${ok.code}:\n${ok.text}`);
  expect((await chainSha(join(vmDir, 'tls-copy'), 'vda')).sha).toBe(shadowSha());
});
