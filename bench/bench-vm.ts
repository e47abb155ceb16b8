/**
 * A throw-away VM for the backup benchmark (bench/backup.ts): a transient TCG domain without an
 * OS on the local libvirtd (qemu:///system), started through src/virt/client.ts with AUTODESTROY
 * (it goes away with this process' connection), whose disks are image files the caller prepared
 * in a directory it owns (mode 0777: qemu runs as libvirt-qemu and creates sockets and scratch
 * files there too).
 *
 * Guest writes are simulated in the running qemu's block layer with HMP `qemu-io` (ENVIRONMENT.md),
 * so that the dirty bitmaps see them. HMP qemu-io runs the command to completion before it
 * answers; it answers nothing on success (its report goes to the domain log), so a non-empty
 * reply is an error. Callers check the effect another way (the backup's data size).
 *
 * Self-contained on purpose: bench/ is compiled with src/ (tsconfig.json) and must not import
 * test/ (test/helpers/test-vm.ts is the integration tests' richer version of this).
 */
import { execa } from 'execa';
import { xmlEscape } from '../src/xml/escape.js';
import { diskAliases, qdevFor } from '../src/devtools/qdev.js';
import { DOMAIN_START, VIR_ERR, VirtConnection, VirtError, type VirtDomain } from '../src/virt/client.js';

export const BENCH_VM_URI = 'qemu:///system';

export interface BenchDisk {
  /** target dev on the virtio bus, e.g. "vda" */
  dev: string;
  /** qcow2 image file (created by the caller, readable and writable by qemu) */
  image: string;
}

function domainXml(name: string, disks: readonly BenchDisk[]): string {
  const diskXml = disks
    .map(
      (d) => `    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file='${xmlEscape(d.image)}'/>
      <target dev='${xmlEscape(d.dev)}' bus='virtio'/>
    </disk>`,
    )
    .join('\n');
  return `<domain type='qemu'>
  <name>${xmlEscape(name)}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
${diskXml}
    <memballoon model='none'/>
  </devices>
</domain>`;
}

export class BenchVm {
  private cleaning: Promise<void> | undefined;

  private constructor(
    readonly name: string,
    readonly conn: VirtConnection,
    readonly dom: VirtDomain,
    private readonly qdevs: Map<string, string>,
  ) {}

  /** Starts the transient domain (about a minute on the 2-core test machines). */
  static async start(name: string, disks: readonly BenchDisk[]): Promise<BenchVm> {
    const conn = await VirtConnection.open(BENCH_VM_URI);
    let dom: VirtDomain | undefined;
    try {
      dom = await conn.createXML(domainXml(name, disks), DOMAIN_START.AUTODESTROY);
      const qdevs = new Map([...diskAliases(await dom.xmlDesc())].map(([dev, alias]) => [dev, qdevFor('virtio', alias)]));
      for (const d of disks) if (!qdevs.has(d.dev)) throw new Error(`bench VM ${name}: the live XML has no alias for ${d.dev}`);
      return new BenchVm(name, conn, dom, qdevs);
    } catch (e) {
      await dom?.destroy().catch(() => undefined);
      await conn.close().catch(() => undefined);
      throw e;
    }
  }

  /** Runs one qemu-io command (e.g. `write -P 0x5a 0 65536`, `flush`) on `dev` in the running qemu. */
  async qemuIo(dev: string, cmd: string): Promise<void> {
    const qdev = this.qdevs.get(dev);
    if (qdev === undefined) throw new Error(`bench VM ${this.name}: no disk ${dev}`);
    const reply = await this.dom.qemuMonitorCommand(`qemu-io -d ${qdev} "${cmd}"`);
    if (reply.trim() !== '') throw new Error(`bench VM ${this.name}: HMP qemu-io ${dev} "${cmd}" answered: ${reply.trim()}`);
  }

  /**
   * Destroys the domain (transient: it is gone then) and closes the connection; falls back to
   * virsh if the handle fails. Idempotent, never throws.
   */
  destroy(): Promise<void> {
    this.cleaning ??= (async () => {
      try {
        await this.dom.destroy();
      } catch (e) {
        if (!(e instanceof VirtError && e.code === VIR_ERR.NO_DOMAIN)) {
          await execa('virsh', ['-c', BENCH_VM_URI, 'destroy', this.name], { reject: false, stdin: 'ignore' });
        }
      }
      await this.conn.close().catch(() => undefined);
    })();
    return this.cleaning;
  }
}
