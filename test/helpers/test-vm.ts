/**
 * A real running test VM for integration tests (issue 3): a tiny TCG domain without an OS on the
 * local libvirtd (qemu:///system) whose disks are qcow2 or raw files in a fresh directory under
 * /var/tmp (mode 0777: qemu runs as libvirt-qemu, so sockets and scratch files can go there too).
 *
 * Every disk has a "shadow": a plain raw file holding what the guest should see. Guest writes are
 * simulated in the running qemu's block layer with HMP `qemu-io` (ENVIRONMENT.md), so dirty bitmaps
 * see them, and the same bytes go to the shadow; shadowSha() is the expected SHA-256 of a restore.
 *
 * HMP `qemu-io` answers nothing on success or I/O failure: its report goes to qemu's stdout, i.e.
 * the domain log /var/log/libvirt/qemu/<name>.log. Every operation therefore reads the log lines
 * it caused ("wrote L/L bytes at offset O", "... failed: ...", "Pattern verification failed") and
 * reads the range back with `read -P` to prove the guest sees the new content before the shadow
 * is updated. Operations on one VM are serialised so that their log lines do not interleave.
 * Each operation ends with a qemu-io `flush`, so that `qemu-img convert -U` of the image file
 * (imageSha) sees qcow2 metadata that is on disk, not only in qemu's caches.
 *
 * Disks use `<driver discard='unmap'/>`: without it qemu ignores discards (the data stays).
 * Domains are started with AUTODESTROY, so they also go away if the test process dies.
 */
import { randomUUID } from 'node:crypto';
import { randomBytes, createHash } from 'node:crypto';
import { chmodSync, closeSync, existsSync, fstatSync, ftruncateSync, mkdtempSync, openSync, readSync, rmSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { xmlEscape } from '../../src/xml/escape.js';
import { diskAliases, qdevFor } from '../../src/devtools/qdev.js';
import { DOMAIN_START, DOMAIN_UNDEFINE, VIR_ERR, VirtConnection, VirtDomain, VirtError } from '../../src/virt/client.js';

export const TEST_VM_URI = 'qemu:///system';
const KiB = 1024;
const MiB = 1024 * KiB;
/** qcow2's default cluster size: qemu drops discards of partial clusters, so discards must be aligned to it. */
export const DISCARD_ALIGNMENT = 64 * KiB;
const LOG_DIR = '/var/log/libvirt/qemu';
const LOG_WAIT_MS = 15_000;

export interface VmDiskSpec {
  /** target dev, e.g. "vda" (bus virtio) or "sda" (bus sata) */
  dev: string;
  bus: 'virtio' | 'sata';
  format: 'qcow2' | 'raw';
  /** bytes; a multiple of 1 MiB, at least 4 MiB */
  size: number;
}

export interface TestVmOptions {
  disks: VmDiskSpec[];
  /** default `virtnbd-test-<pid>-<random>` */
  name?: string;
  /** true: defineXML + create (checkpoint metadata survives restarts); default: transient (createXML) */
  persistent?: boolean;
  /** add a guest agent channel (nobody answers on it: fsfreeze fails with "agent not connected") */
  agentChannel?: boolean;
}

/** One operation of the initial content, applied offline to image and shadow alike. */
interface InitOp {
  kind: 'write' | 'zero';
  offset: number;
  length: number;
  pattern: number;
}

/**
 * Deterministic initial content of a disk of `size` bytes (index = position in the disk list):
 * data at 1 MiB, an unaligned small data range in the middle, a zeroed 1 MiB range (written as
 * zeroes, so allocated-as-zero in qcow2), data in the last 64 KiB; everything else is a hole.
 */
export function initialLayout(size: number, index: number): InitOp[] {
  const p = (0x21 + 0x32 * index) & 0xff || 0x5a;
  const half = size / 2;
  return [
    { kind: 'write', offset: MiB, length: size / 8, pattern: p },
    { kind: 'write', offset: half + 4 * KiB, length: 12 * KiB, pattern: p ^ 0xff },
    { kind: 'zero', offset: half + MiB, length: MiB, pattern: 0 },
    { kind: 'write', offset: size - 64 * KiB, length: 64 * KiB, pattern: (p + 1) & 0xff || 1 },
  ];
}

export { diskAliases, qdevFor } from '../../src/devtools/qdev.js';

function checkSpecs(disks: VmDiskSpec[]): void {
  if (disks.length === 0) throw new Error('TestVm: at least one disk is needed');
  const seen = new Set<string>();
  for (const d of disks) {
    const prefix = d.bus === 'virtio' ? 'vd' : 'sd';
    if (!new RegExp(`^${prefix}[a-z]+$`).test(d.dev)) throw new Error(`TestVm: disk "${d.dev}" on bus ${d.bus} must be named ${prefix}<letters>`);
    if (seen.has(d.dev)) throw new Error(`TestVm: disk "${d.dev}" given twice`);
    seen.add(d.dev);
    if (d.format !== 'qcow2' && d.format !== 'raw') throw new Error(`TestVm: disk ${d.dev}: unknown format ${String(d.format)}`);
    if (!Number.isSafeInteger(d.size) || d.size < 4 * MiB || d.size % MiB !== 0) {
      throw new Error(`TestVm: disk ${d.dev}: size ${d.size} is not a multiple of 1 MiB of at least 4 MiB`);
    }
  }
}

/** Writes `length` bytes of `pattern` at `offset` of an open file, in chunks. */
function fillFile(fd: number, offset: number, length: number, pattern: number): void {
  const chunk = Buffer.alloc(Math.min(length, 4 * MiB), pattern);
  let done = 0;
  while (done < length) {
    const n = Math.min(chunk.length, length - done);
    let w = 0;
    while (w < n) w += writeSync(fd, chunk, w, n - w, offset + done + w);
    done += n;
  }
}

function sha256File(path: string): string {
  const h = createHash('sha256');
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(4 * MiB);
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}

async function virsh(...args: string[]): Promise<{ ok: boolean; out: string }> {
  const r = await execa('virsh', ['-c', TEST_VM_URI, ...args], { reject: false, stdin: 'ignore' });
  return { ok: r.exitCode === 0, out: `${r.stdout}${r.stderr}` };
}

export class TestVm {
  readonly name: string;
  readonly dir: string;
  readonly conn: VirtConnection;
  dom: VirtDomain;
  readonly persistent: boolean;
  readonly disks: readonly VmDiskSpec[];
  /** The domain XML it was created from (recreate() uses it again). */
  readonly xml: string;
  private qdevs = new Map<string, string>();
  private queue: Promise<unknown> = Promise.resolve();
  private cleaning: Promise<void> | undefined;
  private tmpNo = 0;

  private constructor(a: { name: string; dir: string; conn: VirtConnection; dom: VirtDomain; persistent: boolean; disks: VmDiskSpec[]; xml: string }) {
    this.name = a.name;
    this.dir = a.dir;
    this.conn = a.conn;
    this.dom = a.dom;
    this.persistent = a.persistent;
    this.disks = a.disks;
    this.xml = a.xml;
  }

  /** Creates the images with their initial content and starts the domain (~35-60 s on these machines). */
  static async create(opts: TestVmOptions): Promise<TestVm> {
    const disks = opts.disks.map((d) => ({ ...d }));
    checkSpecs(disks);
    const name = opts.name ?? `virtnbd-test-${process.pid}-${randomBytes(4).toString('hex')}`;
    const persistent = opts.persistent ?? false;
    const dir = mkdtempSync('/var/tmp/virtnbd-vm-');
    chmodSync(dir, 0o777);
    let conn: VirtConnection | undefined;
    let dom: VirtDomain | undefined;
    try {
      for (const [i, d] of disks.entries()) {
        const image = join(dir, `${d.dev}.${d.format}`);
        const shadow = join(dir, `${d.dev}.shadow.raw`);
        await execa('qemu-img', ['create', '-q', '-f', d.format, image, String(d.size)]);
        const ops = initialLayout(d.size, i);
        const cmds = ops.flatMap((o) => ['-c', o.kind === 'zero' ? `write -z ${o.offset} ${o.length}` : `write -P 0x${o.pattern.toString(16)} ${o.offset} ${o.length}`]);
        await execa('qemu-io', ['-f', d.format, ...cmds, image]);
        const fd = openSync(shadow, 'w');
        try {
          ftruncateSync(fd, d.size);
          for (const o of ops) fillFile(fd, o.offset, o.length, o.kind === 'zero' ? 0 : o.pattern);
        } finally {
          closeSync(fd);
        }
        chmodSync(image, 0o666);
      }
      const xml = domainXml(name, dir, disks, opts.agentChannel ?? false);
      conn = await VirtConnection.open(TEST_VM_URI);
      if (persistent) {
        dom = await conn.defineXML(xml);
        await dom.create(DOMAIN_START.AUTODESTROY);
      } else {
        dom = await conn.createXML(xml, DOMAIN_START.AUTODESTROY);
      }
      const vm = new TestVm({ name, dir, conn, dom, persistent, disks, xml });
      await vm.readQdevs();
      return vm;
    } catch (e) {
      if (dom !== undefined) {
        await dom.destroy().catch(() => undefined);
        if (persistent) await dom.undefine(DOMAIN_UNDEFINE.CHECKPOINTS_METADATA).catch(() => undefined);
      }
      await conn?.close().catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
  }

  /** The disk image the domain uses. */
  imagePath(dev: string): string {
    return join(this.dir, `${dev}.${this.spec(dev).format}`);
  }

  /** The raw file holding what the guest should see on `dev`. */
  shadowPath(dev: string): string {
    this.spec(dev);
    return join(this.dir, `${dev}.shadow.raw`);
  }

  spec(dev: string): VmDiskSpec {
    const s = this.disks.find((d) => d.dev === dev);
    if (s === undefined) throw new Error(`TestVm ${this.name}: no disk "${dev}" (has ${this.disks.map((d) => d.dev).join(', ')})`);
    return s;
  }

  /** The qdev id HMP qemu-io takes for `dev` in the running domain (from the live XML's alias). */
  qdev(dev: string): string {
    this.spec(dev);
    const q = this.qdevs.get(dev);
    if (q === undefined) throw new Error(`TestVm ${this.name}: no alias for disk ${dev} (domain not running?)`);
    return q;
  }

  /** Writes `length` bytes of `pattern` at `offset` through the guest's block layer, and into the shadow. */
  async write(dev: string, offset: number, length: number, pattern: number): Promise<void> {
    if (!Number.isInteger(pattern) || pattern < 0 || pattern > 255) throw new Error(`TestVm.write: pattern ${pattern} is not a byte`);
    return this.modify(dev, offset, length, `write -P 0x${pattern.toString(16)} ${offset} ${length}`, /^wrote (\d+)\/(\d+) bytes at offset (\d+)$/m, pattern);
  }

  /** Writes zeroes (qemu-io `write -z`) in the guest, zeroes into the shadow. */
  async zero(dev: string, offset: number, length: number): Promise<void> {
    return this.modify(dev, offset, length, `write -z ${offset} ${length}`, /^wrote (\d+)\/(\d+) bytes at offset (\d+)$/m, 0);
  }

  /**
   * Discards (trims) the range in the guest; offset and length must be multiples of 64 KiB (or end
   * at the end of the disk) so that qemu really drops it and the guest reads zeroes, which is
   * checked with a `read -P 0` before the shadow gets zeroes.
   */
  async discard(dev: string, offset: number, length: number): Promise<void> {
    const size = this.spec(dev).size;
    if (offset % DISCARD_ALIGNMENT !== 0 || (length % DISCARD_ALIGNMENT !== 0 && offset + length !== size)) {
      throw new Error(`TestVm.discard ${dev}: offset ${offset} / length ${length} not aligned to ${DISCARD_ALIGNMENT}`);
    }
    return this.modify(dev, offset, length, `discard ${offset} ${length}`, /^discard (\d+)\/(\d+) bytes at offset (\d+)$/m, 0);
  }

  /**
   * Whether the guest currently reads `pattern` in every byte of the range (qemu-io `read -P`
   * through HMP, its verdict taken from the domain log).
   */
  async guestMatches(dev: string, offset: number, length: number, pattern: number): Promise<boolean> {
    if (!Number.isInteger(pattern) || pattern < 0 || pattern > 255) throw new Error(`TestVm.guestMatches: pattern ${pattern} is not a byte`);
    this.checkRange(dev, offset, length);
    return this.serial(() => this.guestMatchesNow(dev, offset, length, pattern));
  }

  /** SHA-256 of the whole shadow file (what a restore of the disk must hash to). */
  /**
   * Removes the persistent dirty bitmap `name` from the disk's qcow2 node in the running qemu
   * (QMP block-dirty-bitmap-remove), leaving libvirt's checkpoint metadata alone: the "lost
   * bitmap" situation of BEHAVIOUR.md §3.8.
   */
  removeBitmap(dev: string, name: string): Promise<void> {
    return this.serial(async () => {
      const image = this.imagePath(dev);
      const out = await this.dom.qemuMonitorCommand(JSON.stringify({ execute: 'query-named-block-nodes', arguments: { flat: true } }), { hmp: false });
      const nodes = (JSON.parse(out) as { return: Array<{ 'node-name': string; drv: string; file: string }> }).return;
      const node = nodes.find((n) => n.drv === 'qcow2' && n.file === image);
      if (node === undefined) throw new Error(`no qcow2 block node for ${image}`);
      const r = await this.dom.qemuMonitorCommand(
        JSON.stringify({ execute: 'block-dirty-bitmap-remove', arguments: { node: node['node-name'], name } }),
        { hmp: false },
      );
      if (r.includes('"error"')) throw new Error(`block-dirty-bitmap-remove ${name} on ${node['node-name']}: ${r}`);
    });
  }

  shadowSha(dev: string): string {
    return sha256File(this.shadowPath(dev));
  }

  /** SHA-256 of the guest-visible content of the image now (`qemu-img convert -U` to a temp raw file). */
  async imageSha(dev: string): Promise<string> {
    const spec = this.spec(dev);
    return this.serial(async () => {
      const out = join(this.dir, `imagesha-${dev}-${++this.tmpNo}.raw`);
      try {
        await execa('qemu-img', ['convert', '-U', '-f', spec.format, '-O', 'raw', this.imagePath(dev), out]);
        const st = statSync(out);
        if (st.size !== spec.size) throw new Error(`TestVm.imageSha ${dev}: converted image has ${st.size} bytes, expected ${spec.size}`);
        return sha256File(out);
      } finally {
        rmSync(out, { force: true });
      }
    });
  }

  /**
   * Destroys the domain and starts it again from the same XML (a persistent one from its
   * definition). A transient domain loses its libvirt checkpoint metadata this way; the bitmaps
   * stay in the qcow2 images.
   */
  recreate(): Promise<void> {
    return this.serial(async () => {
      await this.destroyNow();
      if (this.persistent) {
        await this.dom.create(DOMAIN_START.AUTODESTROY);
      } else {
        this.dom = await this.conn.createXML(this.xml, DOMAIN_START.AUTODESTROY);
      }
      await this.readQdevs();
    });
  }

  /** Stops the domain (a transient one is gone afterwards). No-op when it is not running. */
  destroy(): Promise<void> {
    return this.serial(() => this.destroyNow());
  }

  /**
   * Destroys the domain, undefines it (with its checkpoint metadata) if persistent, closes the
   * connection, falls back to virsh for whatever is left, removes the directory (libvirt's domain
   * log stays, for debugging). Idempotent; never throws.
   */
  cleanup(): Promise<void> {
    this.cleaning ??= (async () => {
      await this.queue.catch(() => undefined);
      await this.dom.destroy().catch(() => undefined);
      if (this.persistent) await this.dom.undefine(DOMAIN_UNDEFINE.CHECKPOINTS_METADATA).catch(() => undefined);
      await this.conn.close().catch(() => undefined);
      if ((await virsh('domstate', this.name)).ok) {
        await virsh('destroy', this.name);
        await virsh('undefine', this.name, '--checkpoints-metadata');
      }
      rmSync(this.dir, { recursive: true, force: true });
    })();
    return this.cleaning;
  }

  // -------------------------------------------------------------------------------------------

  private logPath(): string {
    return join(LOG_DIR, `${this.name}.log`);
  }

  /** Runs `fn` after every operation queued before it. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.queue.then(fn, fn);
    this.queue = p.catch(() => undefined);
    return p;
  }

  private async readQdevs(): Promise<void> {
    const aliases = diskAliases(await this.dom.xmlDesc());
    const m = new Map<string, string>();
    for (const d of this.disks) {
      const alias = aliases.get(d.dev);
      if (alias === undefined) throw new Error(`TestVm ${this.name}: the live XML has no alias for disk ${d.dev}`);
      m.set(d.dev, qdevFor(d.bus, alias));
    }
    this.qdevs = m;
  }

  private async destroyNow(): Promise<void> {
    try {
      if (!(await this.dom.isActive())) return;
      await this.dom.destroy();
    } catch (e) {
      if (e instanceof VirtError && e.code === VIR_ERR.NO_DOMAIN) return; // transient and gone
      throw e;
    }
  }

  private checkRange(dev: string, offset: number, length: number): void {
    const size = this.spec(dev).size;
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0 || offset + length > size) {
      throw new Error(`TestVm ${dev}: range ${offset}+${length} is not inside the disk (${size} bytes)`);
    }
  }

  /** Guest command, its log line checked, flush, read-back check, then the shadow. */
  private async modify(dev: string, offset: number, length: number, cmd: string, done: RegExp, fill: number): Promise<void> {
    this.checkRange(dev, offset, length);
    return this.serial(async () => {
      const log = await this.qemuIo(dev, cmd, done);
      const m = done.exec(log);
      if (m === null || Number(m[1]) !== length || Number(m[2]) !== length || Number(m[3]) !== offset) {
        throw new Error(`TestVm ${dev}: "${cmd}" reported ${m?.[0] ?? 'nothing'}`);
      }
      await this.qemuIo(dev, 'flush', null);
      if (!(await this.guestMatchesNow(dev, offset, length, fill))) {
        throw new Error(`TestVm ${dev}: after "${cmd}" the guest does not read 0x${fill.toString(16)} in ${offset}+${length}`);
      }
      const fd = openSync(this.shadowPath(dev), 'r+');
      try {
        fillFile(fd, offset, length, fill);
      } finally {
        closeSync(fd);
      }
    });
  }

  private async guestMatchesNow(dev: string, offset: number, length: number, pattern: number): Promise<boolean> {
    const log = await this.qemuIo(dev, `read -P 0x${pattern.toString(16)} ${offset} ${length}`, /^read (\d+)\/(\d+) bytes at offset (\d+)$/m);
    return !/Pattern verification failed/.test(log);
  }

  /**
   * Runs one HMP qemu-io command on `dev`. With `done`, waits until the domain log shows the line
   * matching it (or a failure line) and returns the log text the command produced.
   */
  private async qemuIo(dev: string, cmd: string, done: RegExp | null): Promise<string> {
    const qdev = this.qdev(dev);
    const logFile = this.logPath();
    const start = done !== null ? logSize(logFile) : 0;
    const reply = await this.dom.qemuMonitorCommand(`qemu-io -d ${qdev} "${cmd}"`);
    if (reply.trim() !== '') throw new Error(`TestVm ${dev}: HMP qemu-io "${cmd}" answered: ${reply.trim()}`);
    if (done === null) return '';
    const deadline = Date.now() + LOG_WAIT_MS;
    for (;;) {
      const text = readLogFrom(logFile, start);
      const failed = /^\w+ failed: .*$/m.exec(text);
      if (failed !== null) throw new Error(`TestVm ${dev}: qemu-io "${cmd}": ${failed[0]}`);
      if (done.test(text)) return text;
      if (Date.now() > deadline) throw new Error(`TestVm ${dev}: qemu-io "${cmd}": no report in ${logFile} after ${LOG_WAIT_MS} ms (got: ${JSON.stringify(text)})`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

function logSize(path: string): number {
  if (!existsSync(path)) throw new Error(`TestVm: domain log ${path} is missing (qemu-io reports are read from it; run as root against qemu:///system)`);
  return statSync(path).size;
}

/** The log text from byte `start` on (from 0 if virtlogd rotated the file meanwhile). */
function readLogFrom(path: string, start: number): string {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const from = size < start ? 0 : start;
    const buf = Buffer.alloc(size - from);
    let got = 0;
    while (got < buf.length) {
      const n = readSync(fd, buf, got, buf.length - got, from + got);
      if (n === 0) break;
      got += n;
    }
    return buf.subarray(0, got).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

function domainXml(name: string, dir: string, disks: VmDiskSpec[], agent: boolean): string {
  const diskXml = disks
    .map(
      (d) => `    <disk type='file' device='disk'>
      <driver name='qemu' type='${d.format}' discard='unmap'/>
      <source file='${xmlEscape(join(dir, `${d.dev}.${d.format}`))}'/>
      <target dev='${d.dev}' bus='${d.bus}'/>
    </disk>`,
    )
    .join('\n');
  const channel = agent ? `\n    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>` : '';
  // A fixed uuid: recreate() brings back the same domain (as a host restart of a transient domain
  // does), whose checkpoints can then be redefined from their saved XML.
  return `<domain type='qemu'>
  <name>${xmlEscape(name)}</name>
  <uuid>${randomUUID()}</uuid>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
${diskXml}${channel}
    <memballoon model='none'/>
  </devices>
</domain>`;
}
