/** The boot domain XML derived from a backed-up vmconfig (src/boot/boot-config.ts). */
import { bootDomainXml, type BootDiskSource } from '../../../src/boot/boot-config.js';
import { parseDomainXml } from '../../../src/xml/domain-xml.js';

const VMCONFIG = `<domain type='kvm' id='4'>
  <name>web1</name>
  <uuid>0f5a2b6c-1111-2222-3333-444455556666</uuid>
  <memory unit='KiB'>1048576</memory>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
    <nvram>/var/lib/libvirt/qemu/nvram/web1_VARS.fd</nvram>
    <kernel>/boot/vmlinuz</kernel>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none' io='native' discard='unmap'/>
      <source file='/var/lib/libvirt/images/web1.qcow2' index='2'/>
      <backingStore type='file' index='3'><format type='qcow2'/><source file='/var/lib/libvirt/images/base.qcow2'/></backingStore>
      <target dev='vda' bus='virtio'/>
      <boot order='1'/>
      <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw'/>
      <source dev='/dev/vg0/web1-data'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/iso/debian.iso'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x03' slot='0x00' function='0x0'/></source></hostdev>
    <serial type='file'>
      <source path='/var/log/web1-serial.log'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='/var/log/web1-serial.log'/>
      <target type='serial' port='0'/>
    </console>
    <channel type='unix'>
      <source mode='bind' path='/var/lib/libvirt/qemu/channel/target/web1.org.qemu.guest_agent.0'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <graphics type='vnc' port='5901' autoport='no' listen='127.0.0.1'/>
  </devices>
</domain>
`;

const log = { info: (): void => undefined, debug: (): void => undefined };

function build(disks: Map<string, BootDiskSource>) {
  return bootDomainXml(
    VMCONFIG,
    {
      name: 'restore_web1',
      disks,
      bootFiles: new Map([
        ['/var/lib/libvirt/qemu/nvram/web1_VARS.fd', '/run/b/nvram-web1_VARS.fd.virtnbdbackup.3'],
        ['/boot/vmlinuz', '/run/b/kernel-vmlinuz.virtnbdbackup.3'],
      ]),
      runDir: '/run/b',
    },
    log,
  );
}

test('backed-up disks become NBD exports; everything of the original is gone', () => {
  const { xml, consoleLogs } = build(new Map([['vda', { kind: 'nbd', socket: '/run/b/vda.sock', exportName: 'vda' }]]));
  const cfg = parseDomainXml(xml);
  expect(cfg.name).toBe('restore_web1');
  expect(xml).not.toContain('<uuid>');
  // vda: network disk on the socket, raw, no backing chain, address and boot order kept
  expect(xml).toMatch(/<disk type="network" device="disk">\s*<driver name="qemu" type="raw" discard="unmap"\/>\s*<source protocol="nbd" name="vda"><host transport="unix" socket="\/run\/b\/vda.sock"\/><\/source>/);
  expect(xml).not.toContain('backingStore');
  expect(xml).not.toContain('web1.qcow2');
  expect(xml).toContain("<boot order='1'/>".replace(/'/g, '"'));
  // vdb is not in the backup: removed (it would be the original's live volume)
  expect(xml).not.toContain('vdb');
  expect(xml).not.toContain('/dev/vg0');
  // the cdrom stays without media; passthrough removed
  expect(xml).toContain('device="cdrom"');
  expect(xml).not.toContain('debian.iso');
  expect(xml).not.toContain('<hostdev');
  // serial + console share one new file in the run dir
  expect(consoleLogs).toEqual(['/run/b/serial1-web1-serial.log']);
  expect(xml.match(/\/run\/b\/serial1-web1-serial.log/g)).toHaveLength(2);
  expect(xml).not.toContain('/var/log/web1-serial.log');
  // the agent channel gets a new socket from libvirt; vnc an automatic port
  expect(xml).not.toContain('channel/target/web1');
  expect(xml).toContain('name="org.qemu.guest_agent.0"');
  expect(xml).toMatch(/<graphics type="vnc" autoport="yes" listen="127.0.0.1"\/>/);
  // boot files: the copies; the host's firmware stays
  expect(cfg.bootFiles).toEqual({
    loader: '/usr/share/OVMF/OVMF_CODE_4M.fd',
    nvram: '/run/b/nvram-web1_VARS.fd.virtnbdbackup.3',
    kernel: '/run/b/kernel-vmlinuz.virtnbdbackup.3',
  });
});

test('kept overlays: the disk is a qcow2 file', () => {
  const { xml } = build(
    new Map<string, BootDiskSource>([
      ['vda', { kind: 'file', path: '/ov/vda.overlay.qcow2', format: 'qcow2' }],
      ['vdb', { kind: 'nbd', socket: '/run/b/vdb.sock', exportName: 'vdb' }],
    ]),
  );
  expect(xml).toMatch(/<disk type="file" device="disk">\s*<driver name="qemu" type="qcow2" discard="unmap"\/>\s*<source file="\/ov\/vda.overlay.qcow2"\/>/);
  // a block disk served from the backup becomes a network disk too
  expect(xml).toMatch(/<disk type="network" device="disk">\s*<driver name="qemu" type="raw"\/>\s*<source protocol="nbd" name="vdb">/);
});

test('invalid XML is refused', () => {
  expect(() => bootDomainXml('<domain><name>x</domain>', { name: 'y', disks: new Map(), bootFiles: new Map(), runDir: '/r' }, log)).toThrow(/Invalid domain XML/);
});
