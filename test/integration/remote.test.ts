/**
 * Remote mode (BEHAVIOUR.md §8, §11.9) with real components: an sshd started by the test on
 * 127.0.0.1 (own host key, a client key it generates), libvirt reached as
 * `qemu+ssh://root@127.0.0.1:<port>/system` (libvirt's ssh + virt-ssh-helper), one persistent TCG
 * test domain. runBackup/runRestore run in this process (no dist/ build needed).
 *
 * - remote full + inc of the running domain: libvirt's NBD server on TCP, every point's SHA-256
 *   equals the shadow copy; qcow.json comes from `qemu-img info` via ssh;
 * - remote restore into an absolute directory (qemu-img create + qemu-nbd through ssh, data over
 *   TCP, config uploaded, -D through the remote libvirt): the image equals the shadow;
 * - a relative --output is refused; an ssh failure (closed --ssh-port) ends with exit 1 and the
 *   §8 messages;
 * - the shut-off domain: a remote copy through a qemu-nbd started via ssh equals the shadow, and
 *   no qemu-nbd is left running; the same with --tls (x509 object from --tls-cert, nbds://); an
 *   abort (the signal path, D6) right after the server started stops it and keeps nothing.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, createReadStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { execa } from 'execa';
import { TestVm } from '../helpers/test-vm.js';
import { chainSha } from '../helpers/map-sha.js';
import { recordingLogger, type RecordingLogger } from '../unit/backup/recording-logger.js';
import { prepareTarget, runBackup, type BackupOptions } from '../../src/backup/run.js';
import { runRestore, type RestoreOptions } from '../../src/restore/run.js';
import type { RemoteOptions } from '../../src/remote/host.js';
import { VirtConnection, DOMAIN_UNDEFINE } from '../../src/virt/client.js';
import { freePort } from '../helpers/procs.js';
import { plainBackupOptions } from '../helpers/backup-options.js';
import { startTestSshd, type TestSshd } from '../helpers/ssh-server.js';

jest.setTimeout(900_000);

const MiB = 1024 * 1024;

let vm: TestVm;
let sshd: TestSshd | undefined;
let tmp: string;
let sshPort: number;
let key: string;
let uri: string;
let nbdPort: number;
let knownHosts: string;

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'virtnbd-remote-'));
  sshd = await startTestSshd(tmp);
  sshPort = sshd.port;
  key = sshd.key;
  knownHosts = sshd.knownHosts;
  const wrapper = sshd.sshWrapper;
  uri = `qemu+ssh://root@127.0.0.1:${sshPort}/system?keyfile=${key}&no_verify=1&command=${wrapper}`;
  nbdPort = await freePort();
  vm = await TestVm.create({ persistent: true, disks: [{ dev: 'vda', bus: 'virtio', format: 'qcow2', size: 32 * MiB }] });
});

afterAll(async () => {
  await vm?.cleanup();
  await sshd?.stop();
  if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
});

function remote(over: Partial<RemoteOptions> = {}): RemoteOptions {
  return { sshUser: 'root', sshPort, sshPrivateKey: key, nbdPort, nbdIp: '', tls: false, tlsCert: '/etc/pki/qemu/', ...over };
}

const sshEnv = (): { extraArgs: string[] } => ({ extraArgs: ['-o', `UserKnownHostsFile=${knownHosts}`] });

function backupOptions(output: string, level: BackupOptions['level'], over: Partial<BackupOptions> = {}): BackupOptions {
  return plainBackupOptions({ domain: vm.name, level, output, dir: vm.dir, uri }, { remote: remote(), ...over });
}

function dump(log: RecordingLogger): string {
  const text = log.records.map((r) => `${r.level} ${r.message}`).join('\n');
  if (process.env.VIRTNBD_TEST_LOG === '1') process.stderr.write(`${text}\n`);
  return text;
}

async function backup(output: string, level: BackupOptions['level'], over: Partial<BackupOptions> = {}): Promise<{ code: number; log: RecordingLogger }> {
  await prepareTarget(output);
  const log = recordingLogger();
  const s = await runBackup(backupOptions(output, level, over), { log, signal: new AbortController().signal, ssh: sshEnv() });
  return { code: s.exitCode, log };
}

async function backupOk(output: string, level: BackupOptions['level']): Promise<RecordingLogger> {
  const r = await backup(output, level);
  if (r.code !== 0) throw new Error(`remote backup ${level} exited ${r.code}:\n${dump(r.log)}`);
  return r.log;
}

function restoreOptions(input: string, output: string, over: Partial<RestoreOptions> = {}): RestoreOptions {
  return {
    action: 'restore',
    input,
    output,
    raw: false,
    adjustConfig: true,
    define: false,
    configFile: 'vmconfig.xml',
    bufferSize: 8192,
    preallocate: false,
    uri,
    json: false,
    remote: remote(),
    ...over,
  };
}

async function imageSha(path: string, format: string): Promise<string> {
  const out = `${path}.sha.raw`;
  try {
    await execa('qemu-img', ['convert', '-U', '-f', format, '-O', 'raw', path, out]);
    const h = createHash('sha256');
    for await (const c of createReadStream(out)) h.update(c as Buffer);
    return h.digest('hex');
  } finally {
    rmSync(out, { force: true });
  }
}

async function qemuNbdLeft(): Promise<string> {
  const r = await execa('pgrep', ['-af', `qemu-nbd.*${vm.dir}`], { reject: false });
  return r.stdout.trim();
}

const setDir = (): string => join(vm.dir, 'remote-set');
const shas: Record<string, string> = {};

test('ssh failure (closed --ssh-port): exit 1 with the §8 messages, nothing written', async () => {
  const closed = await freePort();
  const out = join(vm.dir, 'ssh-fail');
  const r = await backup(out, 'copy', { remote: remote({ sshPort: closed }) });
  expect(r.code).toBe(1);
  expect(r.log.at('WARNING').join('\n')).toMatch(/^Failed to setup SSH connection: \[Unable to connect: .*Connection refused.*\]$/m);
  expect(r.log.at('ERROR')).toContain('Remote backup detected but ssh session setup failed');
  expect(readdirSync(out).filter((n) => n.endsWith('.data'))).toEqual([]);
});

test('remote full + inc of a running domain: libvirt NBD over TCP, every point equals the shadow', async () => {
  const dir = setDir();
  const full = await backupOk(dir, 'full');
  shas['virtnbdbackup.0'] = vm.shadowSha('vda');
  const text = dump(full);
  expect(text).toMatch(/Remote host: \[|does not resolve here, using \[127\.0\.0\.1\]/);
  expect(text).toMatch(/Connected to \[root@.*\] port \[\d+\] via ssh\./);
  // libvirt's NBD server on TCP (§5.1 remote variant), not a unix socket
  expect(text).toMatch(new RegExp(`<server transport="tcp" tls="no" name="[^"]+" port="${nbdPort}"/>`));
  expect(text).not.toMatch(/transport="unix"/);
  expect(readdirSync(dir)).toEqual(expect.arrayContaining(['vda.full.data', 'vda.virtnbdbackup.0.qcow.json', 'vmconfig.virtnbdbackup.0.xml']));
  // qemu-img info via ssh: the image's real info
  const info = JSON.parse(readFileSync(join(dir, 'vda.virtnbdbackup.0.qcow.json'), 'utf8')) as { filename: string; format: string; 'virtual-size': number };
  expect(info).toMatchObject({ filename: vm.imagePath('vda'), format: 'qcow2', 'virtual-size': 32 * MiB });

  await vm.write('vda', 3 * MiB, 1 * MiB + 512, 0x5c);
  await vm.zero('vda', 1 * MiB, 256 * 1024);
  await backupOk(dir, 'inc');
  shas['virtnbdbackup.1'] = vm.shadowSha('vda');
  expect(shas['virtnbdbackup.1']).not.toBe(shas['virtnbdbackup.0']);

  expect((await chainSha(dir, 'vda', 'virtnbdbackup.0')).sha).toBe(shas['virtnbdbackup.0']);
  expect((await chainSha(dir, 'vda', 'virtnbdbackup.1')).sha).toBe(shas['virtnbdbackup.1']);
  expect(readFileSync(join(dir, `${vm.name}.cpt`), 'utf8')).toMatch(/virtnbdbackup\.1/);
});

test('remote restore into an absolute directory: image equals the shadow, config uploaded, -D defines remotely', async () => {
  const out = join(vm.dir, 'restored dir'); // a space: the path must survive the remote shell (D27)
  const name = `${vm.name}-restored`;
  const log = recordingLogger();
  const printed: string[] = [];
  try {
    const s = await runRestore(restoreOptions(setDir(), out, { define: true, name }), { log, out: (t) => void printed.push(t), signal: new AbortController().signal, ssh: sshEnv() });
    if (s.exitCode !== 0) throw new Error(`remote restore exited ${s.exitCode}:\n${dump(log)}`);
    const image = join(out, 'vda.qcow2');
    const text = dump(log);
    expect(text).toMatch(new RegExp(`Started remote qemu-nbd for \\[${image.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.partial\\] on port \\[${nbdPort}\\]`));
    expect(text).toMatch(/Defined domain/);
    expect(readdirSync(out).sort()).toEqual(['vda.qcow2', 'vmconfig.xml']);
    expect(await imageSha(image, 'qcow2')).toBe(shas['virtnbdbackup.1']);
    const xml = readFileSync(join(out, 'vmconfig.xml'), 'utf8');
    expect(xml).toContain(`<name>${name}</name>`);
    expect(xml).toContain(image);
    expect(printed.length).toBe(2); // metadata of full and inc
    const conn = await VirtConnection.open('qemu:///system');
    try {
      const dom = await conn.lookupByName(name);
      expect(await dom.isActive()).toBe(false);
      await dom.undefine(DOMAIN_UNDEFINE.CHECKPOINTS_METADATA | DOMAIN_UNDEFINE.NVRAM);
    } finally {
      await conn.close();
    }
    expect(await qemuNbdLeft()).toBe('');
  } finally {
    await execa('virsh', ['-c', 'qemu:///system', 'undefine', name], { reject: false });
  }

  // --until the full: a second restore next to it
  const out0 = join(vm.dir, 'restored0');
  const log0 = recordingLogger();
  const s0 = await runRestore(restoreOptions(setDir(), out0, { until: 'virtnbdbackup.0', adjustConfig: false }), { log: log0, out: () => undefined, signal: new AbortController().signal, ssh: sshEnv() });
  if (s0.exitCode !== 0) throw new Error(`remote restore --until exited ${s0.exitCode}:\n${dump(log0)}`);
  expect(await imageSha(join(out0, 'vda.qcow2'), 'qcow2')).toBe(shas['virtnbdbackup.0']);

  // the target exists now: refused, nothing replaced
  const before = await imageSha(join(out0, 'vda.qcow2'), 'qcow2');
  const log1 = recordingLogger();
  const s1 = await runRestore(restoreOptions(setDir(), out0, { adjustConfig: false }), { log: log1, out: () => undefined, signal: new AbortController().signal, ssh: sshEnv() });
  expect(s1.exitCode).toBe(1);
  expect(dump(log1)).toContain(`Target file already exists: [${join(out0, 'vda.qcow2')}], won't overwrite.`);
  expect(await imageSha(join(out0, 'vda.qcow2'), 'qcow2')).toBe(before);
  expect(existsSync(join(out0, 'vda.qcow2.partial'))).toBe(false);
});

test('remote restore: a relative --output is refused', async () => {
  const log = recordingLogger();
  const s = await runRestore(restoreOptions(setDir(), 'relative/target'), { log, out: () => undefined, signal: new AbortController().signal, ssh: sshEnv() });
  expect(s.exitCode).toBe(1);
  expect(log.at('ERROR')).toContain('Absolute target path required for restore to remote system');
  expect(existsSync('relative')).toBe(false);
});

test('remote offline copy of the shut-off domain: qemu-nbd via ssh on --nbd-port, equals the shadow, stopped afterwards', async () => {
  await vm.destroy();
  expect((await vm.dom.state()).name).toBe('shutoff');
  const dir = join(vm.dir, 'remote-offline');
  const log = await backupOk(dir, 'copy');
  const text = dump(log);
  expect(text).toMatch(new RegExp(`Remote NBD ports used for the offline backup: \\[${nbdPort}-${nbdPort}\\]`));
  expect(text).toMatch(new RegExp(`Started remote qemu-nbd for \\[${vm.imagePath('vda').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\] on port \\[${nbdPort}\\]`));
  expect(readdirSync(dir).filter((n) => n.endsWith('.data'))).toEqual(['vda.copy.data']);
  expect((await chainSha(dir, 'vda')).sha).toBe(vm.shadowSha('vda'));
  expect(await qemuNbdLeft()).toBe('');
  // remote temp files (pid files) were removed on the remote side (D27)
  const left = readdirSync(tmpdir()).filter((n) => n.startsWith('virtnbd-nbd.'));
  expect(left).toEqual([]);
});

/** A CA and a server certificate for the host names the client may use (`vm` is what libvirt reports here). */
async function makeTlsDir(host: string): Promise<string> {
  const dir = mkdtempSync(join(tmp, 'tls-'));
  const ssl = (...args: string[]): Promise<unknown> => execa('openssl', args, { cwd: dir, stdin: 'ignore' });
  await ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca-key.pem', '-out', 'ca-cert.pem', '-days', '2', '-subj', '/CN=virtnbd test CA');
  await ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server-key.pem', '-out', 'server.csr', '-subj', `/CN=${host}`);
  writeFileSync(join(dir, 'ext.cnf'), `subjectAltName=DNS:${host},DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n`);
  await ssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca-cert.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-out', 'server-cert.pem', '-days', '2', '-extfile', 'ext.cnf');
  return dir;
}

test('remote offline copy with --tls: qemu-nbd gets the x509 object of --tls-cert, we read nbds://', async () => {
  expect((await vm.dom.state()).name).toBe('shutoff');
  const conn = await VirtConnection.open(uri);
  const host = await conn.hostname().finally(() => conn.close());
  const certs = await makeTlsDir(host);
  const dir = join(vm.dir, 'remote-offline-tls');
  await prepareTarget(dir);
  const log = recordingLogger();
  const s = await runBackup(backupOptions(dir, 'copy', { remote: remote({ tls: true, tlsCert: certs }) }), { log, signal: new AbortController().signal, ssh: sshEnv() });
  const text = dump(log);
  if (s.exitCode !== 0) throw new Error(`remote TLS backup exited ${s.exitCode}:\n${text}`);
  expect(text).toMatch(new RegExp(`export \\[nbds://[^:]+:${nbdPort}/vda\\]`));
  expect(text).toMatch(/tls-creds-x509,id=tls0,endpoint=server,dir=/);
  expect((await chainSha(dir, 'vda')).sha).toBe(vm.shadowSha('vda'));
  expect(await qemuNbdLeft()).toBe('');
});

test('abort right after the remote qemu-nbd started (signal path, D6): exit 1, server stopped, pid file removed, nothing kept', async () => {
  expect((await vm.dom.state()).name).toBe('shutoff');
  const dir = join(vm.dir, 'remote-offline-abort');
  await prepareTarget(dir);
  const ac = new AbortController();
  const base = recordingLogger();
  // abort at the moment the server is announced, before any data is read
  const log: RecordingLogger = {
    ...base,
    child: (c: string) => {
      const ch = base.child(c);
      return {
        ...ch,
        info: (m: string) => {
          ch.info(m);
          if (m.startsWith('Started remote qemu-nbd')) ac.abort();
        },
      };
    },
  };
  const s = await runBackup(backupOptions(dir, 'copy'), { log, signal: ac.signal, ssh: sshEnv() });
  const text = dump(base);
  expect(ac.signal.aborted).toBe(true);
  expect(s.exitCode).toBe(1);
  expect(text).toMatch(/Started remote qemu-nbd/);
  expect(readdirSync(dir).filter((n) => n.endsWith('.data') || n.endsWith('.partial'))).toEqual([]);
  expect(await qemuNbdLeft()).toBe('');
  expect(readdirSync(tmpdir()).filter((n) => n.startsWith('virtnbd-nbd.'))).toEqual([]);
});

test('boot files over ssh: fetched by a remote backup, uploaded by a remote restore (never replacing)', async () => {
  expect((await vm.dom.state()).name).toBe('shutoff');
  // the shut-off domain gets a (dummy) kernel and initrd: only their files matter here
  const bootDir = join(vm.dir, 'boot files');
  mkdirSync(bootDir);
  const kernel = join(bootDir, 'vmlinuz-test');
  const initrd = join(bootDir, "initrd 'quoted'.img");
  writeFileSync(kernel, Buffer.alloc(70_000, 0x4b));
  writeFileSync(initrd, Buffer.from('initrd bytes\n'));
  const esc = (p: string): string => p.replace(/&/g, '&amp;').replace(/'/g, '&apos;');
  const xml = (await vm.dom.xmlDesc(0)).replace(/<os>/, `<os><kernel>${esc(kernel)}</kernel><initrd>${esc(initrd)}</initrd>`);
  await vm.conn.defineXML(xml);

  const dir = join(vm.dir, 'remote-boot');
  await backupOk(dir, 'copy');
  expect(readFileSync(join(dir, 'vmlinuz-test')).equals(readFileSync(kernel))).toBe(true);
  expect(readFileSync(join(dir, "initrd 'quoted'.img")).equals(readFileSync(initrd))).toBe(true);

  // restore: the boot files go back to their original paths on the remote host; existing ones stay
  rmSync(kernel);
  writeFileSync(initrd, 'changed since the backup');
  const out = join(vm.dir, 'restored-boot');
  const log = recordingLogger();
  const s = await runRestore(restoreOptions(dir, out), { log, out: () => undefined, signal: new AbortController().signal, ssh: sshEnv() });
  const text = dump(log);
  if (s.exitCode !== 0) throw new Error(`remote restore exited ${s.exitCode}:\n${text}`);
  expect(readFileSync(kernel).equals(Buffer.alloc(70_000, 0x4b))).toBe(true);
  expect(readFileSync(initrd, 'utf8')).toBe('changed since the backup');
  expect(text).toContain(`File [${initrd}] already exists on the remote host, skipping.`);
  expect(text).toContain(`Restored boot file [${join(dir, 'vmlinuz-test')}] to [${kernel}] on the remote host`);
  expect(readdirSync(bootDir).sort()).toEqual(["initrd 'quoted'.img", 'vmlinuz-test']); // no temporary files left
  expect(await imageSha(join(out, 'vda.qcow2'), 'qcow2')).toBe(vm.shadowSha('vda'));
});
