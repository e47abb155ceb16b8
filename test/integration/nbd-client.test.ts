/**
 * src/nbd/client.ts over the native libnbd binding, against real servers on unix sockets:
 * qemu-nbd (qcow2 with known content and holes) and nbdkit (memory, delay, error filters).
 * Builds nothing: `npm run build:native` must have produced build/Release/virtnbd_native.node.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NbdClient, NbdError, CMD_FLAG, STATE_HOLE, STATE_ZERO, type Extent } from '../../src/nbd/client.js';
import { prng, randInt } from '../../src/devtools/prng.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ADDON = join(ROOT, 'build', 'Release', 'virtnbd_native.node');

const MiB = 1024 * 1024;
const CLUSTER = 64 * 1024; // qcow2 default cluster size: allocation is reported per cluster
const SIZE = 64 * MiB;

let dir = '';
let raw: Buffer; // the image's content
let expected: Extent[] = []; // base:allocation as qemu-nbd must report it
const servers: ChildProcess[] = [];

const uriOf = (sock: string): string => `nbd+unix:///?socket=${sock}`;

/** Starts a server in the foreground and waits for its socket; its stderr only shows if it fails to start. */
async function serve(cmd: string, args: string[], sock: string): Promise<ChildProcess> {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  servers.push(proc);
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => {
    if (stderr.length < 4096) stderr += d.toString();
  });
  for (let i = 0; i < 200; i++) {
    if (existsSync(sock)) return proc;
    if (proc.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`${cmd} ${args.join(' ')} did not serve ${sock} (exit ${proc.exitCode}): ${stderr}`);
}

function qemuNbd(image: string, name: string): Promise<ChildProcess> {
  const sock = join(dir, `${name}.sock`);
  return serve('qemu-nbd', ['-f', 'qcow2', '-k', sock, '-t', '--shared=16', '-x', '', image], sock);
}

function nbdkit(name: string, args: string[]): Promise<ChildProcess> {
  const sock = join(dir, `${name}.sock`);
  return serve('nbdkit', ['-f', '-U', sock, ...args], sock);
}

const sockOf = (name: string): string => join(dir, `${name}.sock`);

beforeAll(async () => {
  if (!existsSync(ADDON)) throw new Error(`native addon not built: ${ADDON} is missing — run \`npm run build:native\` first`);
  dir = mkdtempSync(join(tmpdir(), 'virtnbd-nbd-'));

  // Seeded pseudo-random content; about a third of the clusters are holes, plus a long hole
  // at the end so that block status has something to merge.
  const r = prng(0x5eed);
  raw = Buffer.alloc(SIZE);
  const words = new Uint32Array(raw.buffer, raw.byteOffset, SIZE / 4);
  const clusters = SIZE / CLUSTER;
  for (let c = 0; c < clusters; c++) {
    const hole = c >= clusters - 128 || r() < 0.33;
    const flags = hole ? STATE_HOLE | STATE_ZERO : 0;
    const last = expected[expected.length - 1];
    if (last !== undefined && last.flags === flags) last.length += CLUSTER;
    else expected.push({ offset: c * CLUSTER, length: CLUSTER, flags });
    if (hole) continue;
    for (let w = (c * CLUSTER) / 4, end = w + CLUSTER / 4; w < end; w++) words[w] = (r() * 0x100000000) >>> 0;
  }
  const rawPath = join(dir, 'disk.raw');
  writeFileSync(rawPath, raw);
  // convert leaves all-zero clusters unallocated, so the qcow2 allocation is exactly `expected`
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', rawPath, join(dir, 'disk.qcow2')]);
  execFileSync('qemu-img', ['create', '-f', 'qcow2', join(dir, 'scratch.qcow2'), String(SIZE)], { stdio: 'ignore' });

  await Promise.all([
    qemuNbd(join(dir, 'disk.qcow2'), 'disk'),
    qemuNbd(join(dir, 'scratch.qcow2'), 'scratch'),
    nbdkit('slow', ['--filter=delay', 'memory', '64M', 'delay-read=50ms']),
    nbdkit('eio', ['--filter=error', 'memory', '1M', 'error-pread=EIO', 'error-pread-rate=100%']),
  ]);
}, 30000);

afterAll(() => {
  for (const p of servers) if (p.exitCode === null) p.kill('SIGKILL');
  if (dir !== '') rmSync(dir, { recursive: true, force: true });
});

describe('NbdClient against qemu-nbd', () => {
  let c: NbdClient;
  beforeAll(async () => {
    c = await NbdClient.connect(uriOf(sockOf('disk')), { metaContexts: ['base:allocation'] });
  });
  afterAll(async () => {
    await c?.close();
  });

  test('export information', () => {
    expect(c.size()).toBe(SIZE);
    expect(c.canMetaContext('base:allocation')).toBe(true);
    expect(c.canMetaContext('qemu:dirty-bitmap:nope')).toBe(false);
    expect(typeof c.canMultiConn()).toBe('boolean');
    const bs = c.blockSize();
    expect(bs).not.toBeNull();
    expect(bs!.minimum).toBeGreaterThanOrEqual(1);
    expect(bs!.maximum).toBeGreaterThanOrEqual(bs!.preferred);
    expect(c.maxRequest()).toBe(Math.min(bs!.maximum, 64 * MiB));
    expect(c.info.structuredReplies).toBe(true);
  });

  test('random preads match the image byte for byte', async () => {
    const r = prng(42);
    const ranges = Array.from({ length: 400 }, () => {
      const length = randInt(r, 1, 256 * 1024);
      return { offset: randInt(r, 0, SIZE - length), length };
    });
    // half one at a time, half all at once
    for (const { offset, length } of ranges.slice(0, 200)) {
      const got = await c.pread(length, offset);
      expect(got.equals(raw.subarray(offset, offset + length))).toBe(true);
    }
    const got = await Promise.all(ranges.slice(200).map(({ offset, length }) => c.pread(length, offset)));
    ranges.slice(200).forEach(({ offset, length }, i) => {
      expect(got[i]!.equals(raw.subarray(offset, offset + length))).toBe(true);
    });
  });

  test('a read larger than the maximum request is split and correct', async () => {
    const whole = await c.pread(SIZE, 0);
    expect(whole.equals(raw)).toBe(true);
    const into = new Uint8Array(3 * MiB + 5);
    const res = await c.preadInto(into, 7);
    expect(res).toBe(into);
    expect(Buffer.from(into.buffer).equals(raw.subarray(7, 7 + into.length))).toBe(true);
  });

  test('block status base:allocation matches the holes', async () => {
    expect(await c.blockStatusAll('base:allocation', 0, SIZE)).toEqual(expected);
    // an unaligned sub-range is clipped at both ends
    const off = 3 * CLUSTER + 123;
    const len = 40 * CLUSTER;
    const sub = await c.blockStatusAll('base:allocation', off, len);
    expect(sub[0]!.offset).toBe(off);
    const last = sub[sub.length - 1]!;
    expect(last.offset + last.length).toBe(off + len);
    for (const e of sub) {
      const ref = expected.find((x) => x.offset <= e.offset && e.offset < x.offset + x.length)!;
      expect(e.flags).toBe(ref.flags);
    }
    // raw replies: one request, per context, starting at the offset asked
    const one = await c.blockStatus(SIZE, 0, ['base:allocation'], CMD_FLAG.REQ_ONE);
    expect(one.offset).toBe(0);
    expect(one.contexts['base:allocation']).toEqual([[expected[0]!.length, expected[0]!.flags]]);
  });

  test('reading beyond the end rejects with an errno', async () => {
    const err = (await c.pread(4096, SIZE - 1024).catch((e: unknown) => e)) as NbdError;
    expect(err).toBeInstanceOf(NbdError);
    expect(err.errno).toBe(22);
    expect(err.code).toBe('EINVAL');
    expect(err.message).toMatch(/out of bounds/);
    // the connection is still usable
    expect((await c.pread(16, 0)).equals(raw.subarray(0, 16))).toBe(true);
  });

  test('10 000 preads keep the RSS flat', async () => {
    const round = async (): Promise<void> => {
      for (let i = 0; i < 5000; i += 50) {
        await Promise.all(Array.from({ length: 50 }, (_, j) => c.pread(4096, ((i + j) * 4096) % SIZE)));
      }
    };
    await round();
    const before = process.memoryUsage.rss();
    await round();
    await round();
    const growth = process.memoryUsage.rss() - before;
    expect(growth).toBeLessThan(32 * MiB);
    expect(c.stats().inFlight).toBe(0);
  });
});

describe('writes (qemu-nbd scratch image)', () => {
  test('pwrite, zero, trim, flush, read back', async () => {
    const c = await NbdClient.connect(uriOf(sockOf('scratch')), { metaContexts: ['base:allocation'] });
    try {
      const data = raw.subarray(0, 4 * MiB);
      await c.pwrite(data, MiB);
      await c.pwrite(Buffer.alloc(CLUSTER, 0xee), 10 * MiB, CMD_FLAG.FUA);
      expect((await c.pread(4 * MiB, MiB)).equals(data)).toBe(true);
      await c.zero(MiB, 2 * MiB);
      await c.zero(CLUSTER, 10 * MiB, CMD_FLAG.NO_HOLE);
      await c.trim(MiB, 4 * MiB);
      await c.flush();
      const back = await c.pread(4 * MiB, MiB);
      expect(back.subarray(0, MiB).equals(data.subarray(0, MiB))).toBe(true);
      expect(back.subarray(MiB, 2 * MiB).equals(Buffer.alloc(MiB))).toBe(true);
      expect(back.subarray(2 * MiB, 3 * MiB).equals(data.subarray(2 * MiB, 3 * MiB))).toBe(true);
      expect((await c.pread(CLUSTER, 10 * MiB)).equals(Buffer.alloc(CLUSTER))).toBe(true);
      // the zeroed range is reported as zero
      const ext = await c.blockStatusAll('base:allocation', 2 * MiB, MiB);
      expect(ext.every((e) => (e.flags & STATE_ZERO) !== 0)).toBe(true);
    } finally {
      await c.close();
    }
  });
});

describe('concurrency on one connection', () => {
  test('32 preads are in flight together (nbdkit delay-read=50ms)', async () => {
    const c = await NbdClient.connect(uriOf(sockOf('slow')));
    try {
      let t = performance.now();
      for (let i = 0; i < 4; i++) await c.pread(4096, i * 4096);
      const sequentialEach = (performance.now() - t) / 4;
      expect(sequentialEach).toBeGreaterThanOrEqual(45);

      c.stats(true);
      t = performance.now();
      const bufs = await Promise.all(Array.from({ length: 32 }, (_, i) => c.pread(65536, i * 65536)));
      const concurrent = performance.now() - t;
      expect(bufs.every((b) => b.length === 65536 && b.every((x) => x === 0))).toBe(true);
      expect(c.stats().maxInFlight).toBe(32);
      // 32 sequential reads would take ~1.6 s; nbdkit serves 16 at a time by default
      expect(concurrent).toBeLessThan(32 * sequentialEach * 0.25);
    } finally {
      await c.close();
    }
  });

  test('a server that dies with requests in flight rejects them', async () => {
    const sock = join(dir, 'dying.sock');
    const proc = await serve('nbdkit', ['-f', '-U', sock, '--filter=delay', 'memory', '1M', 'delay-read=200ms'], sock);
    const c = await NbdClient.connect(uriOf(sock));
    const reads = Array.from({ length: 8 }, (_, i) => c.pread(512, i * 512).catch((e: unknown) => e as NbdError));
    await new Promise((r) => setTimeout(r, 50));
    proc.kill('SIGKILL');
    const results = await Promise.all(reads);
    for (const e of results) {
      expect(e).toBeInstanceOf(NbdError);
      expect(typeof (e as NbdError).errno).toBe('number');
    }
    expect(c.isConnected()).toBe(false);
    const after = (await c.pread(512, 0).catch((e: unknown) => e)) as NbdError;
    expect(after).toBeInstanceOf(NbdError);
    await c.close();
  });
});

describe('errors and lifecycle', () => {
  test('connecting to a missing socket rejects', async () => {
    const missing = join(dir, 'missing.sock');
    const err = (await NbdClient.connect(uriOf(missing)).catch((e: unknown) => e)) as NbdError;
    expect(err).toBeInstanceOf(NbdError);
    expect(err.code).toBe('ENOENT');
    expect(err.message).toContain(missing);
  });

  test('a server error reaches JS with its errno', async () => {
    const c = await NbdClient.connect(sockOf('eio')); // a plain socket path works too
    try {
      const err = (await c.pread(4096, 0).catch((e: unknown) => e)) as NbdError;
      expect(err).toBeInstanceOf(NbdError);
      expect(err.code).toBe('EIO');
      expect(err.errno).toBe(5);
      expect(err.message).toMatch(/pread.*offset 0, length 4096/);
    } finally {
      await c.close();
    }
  });

  test('close twice is safe; use after close rejects with ENOTCONN', async () => {
    const c = await NbdClient.connect(uriOf(sockOf('disk')));
    const pending = c.pread(4096, 0);
    await Promise.all([c.close(), c.close()]);
    expect((await pending).equals(raw.subarray(0, 4096))).toBe(true); // graceful close let it finish
    await c.close();
    await c.shutdown();
    const err = (await c.pread(4096, 0).catch((e: unknown) => e)) as NbdError;
    expect(err.code).toBe('ENOTCONN');
    expect(c.isConnected()).toBe(false);
  });

  test('abort rejects requests still in flight', async () => {
    const c = await NbdClient.connect(uriOf(sockOf('slow')));
    const pending = c.pread(4096, 0).catch((e: unknown) => e as NbdError);
    await c.abort();
    const err = await pending;
    expect(err).toBeInstanceOf(NbdError);
    expect((err as NbdError).code).toBe('ENOTCONN');
  });
});

test('TLS: nbds:// with X.509 certificates reads the export; a plain connection to a TLS-only server is refused', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'virtnbd-tls-'));
  const child: { p?: ChildProcess } = {};
  try {
    const ssl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
    ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca-key.pem', '-out', 'ca-cert.pem', '-days', '2', '-subj', '/CN=virtnbd test CA');
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server-key.pem', '-out', 'server.csr', '-subj', '/CN=localhost');
    writeFileSync(join(dir, 'ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n');
    ssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca-cert.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-out', 'server-cert.pem', '-days', '2', '-extfile', 'ext.cnf');
    const data = Buffer.alloc(1 << 20);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7 + 3) & 0xff;
    writeFileSync(join(dir, 'disk.img'), data);
    const port = 20000 + (process.pid % 20000);
    child.p = spawn('nbdkit', ['-f', '--exit-with-parent', '-i', '127.0.0.1', '-p', String(port), '--tls=require', `--tls-certificates=${dir}`, 'file', join(dir, 'disk.img')], { stdio: 'ignore' });
    let c: NbdClient | undefined;
    for (let i = 0; i < 100 && c === undefined; i++) {
      try {
        c = await NbdClient.connect(`nbds://localhost:${port}/`, { tls: 'require', tlsCertificates: dir });
      } catch (e) {
        if (i === 99) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    expect(c!.size()).toBe(data.length);
    expect((await c!.pread(data.length, 0)).equals(data)).toBe(true);
    await c!.close();
    await expect(NbdClient.connect(`nbd://localhost:${port}/`, { tls: 'disable' })).rejects.toThrow(/handshake|TLS/i);
  } finally {
    child.p?.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
});
