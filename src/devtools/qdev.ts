/**
 * Which qdev id HMP `qemu-io -d <qdev>` takes for a disk of a running domain, for tests,
 * benchmarks and the demo that write "as the guest" through qemu's block layer (ENVIRONMENT.md).
 */
import { parseDomainXml } from '../xml/domain-xml.js';

/** target dev → alias name, from a live domain XML. */
export function diskAliases(liveXml: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const d of parseDomainXml(liveXml).disks) if (d.alias !== undefined) out.set(d.dev, d.alias);
  return out;
}

/** The qdev id for a disk on `bus` with this alias (virtio: the virtio-backend of the device). */
export function qdevFor(bus: string, alias: string): string {
  return bus === 'virtio' ? `/machine/peripheral/${alias}/virtio-backend` : alias;
}
