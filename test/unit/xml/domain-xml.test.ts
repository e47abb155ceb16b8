import { decodeXmlEntities, parseDomainXml } from '../../../src/xml/domain-xml.js';

/** A live domain XML as libvirt 9 prints it (virsh dumpxml of a running domain), trimmed. */
const LIVE = `<domain type='kvm' id='7' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>vm1</name>
  <uuid>4f1d0a2e-8a3c-4b55-9d1e-0c2f5a7b9e11</uuid>
  <memory unit='KiB'>1048576</memory>
  <os firmware='efi'>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <loader readonly='yes' secure='no' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
    <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/vm1_VARS.fd</nvram>
    <boot dev='hd'/>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file='/var/lib/libvirt/images/vm1.qcow2' index='3'/>
      <backingStore type='file' index='4'>
        <format type='qcow2'/>
        <source file='/var/lib/libvirt/images/base-snap.qcow2'/>
        <backingStore type='file' index='5'>
          <format type='raw'/>
          <source file='/var/lib/libvirt/images/base.img'/>
          <backingStore/>
        </backingStore>
      </backingStore>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
      <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/vm1-data.qcow2' index='2'/>
      <backingStore/>
      <target dev='sda' bus='sata'/>
      <alias name='sata0-0-0'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/libvirt/images/scratch.img'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native'/>
      <source dev='/dev/vg0/vm1-raw'/>
      <target dev='vdc' bus='virtio'/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source dev='/dev/vg0/vm1-qcow'/>
      <target dev='vdd' bus='virtio'/>
    </disk>
    <disk type='block' device='lun'>
      <driver name='qemu' type='raw'/>
      <source dev='/dev/sdz'/>
      <target dev='sdb' bus='scsi'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/isos/debian.iso'/>
      <target dev='sdc' bus='sata'/>
      <readonly/>
    </disk>
    <disk type='file' device='floppy'>
      <driver name='qemu' type='raw'/>
      <target dev='fda' bus='fdc'/>
    </disk>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source pool='default' volume='vm1-vol.qcow2'/>
      <target dev='vde' bus='virtio'/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='rbd' name='pool/image'>
        <host name='mon1' port='6789'/>
      </source>
      <target dev='vdf' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <target dev='vdg' bus='virtio'/>
    </disk>
    <tpm model='tpm-crb'>
      <backend type='emulator' version='2.0'/>
      <alias name='tpm0'/>
    </tpm>
  </devices>
  <qemu:capabilities>
    <qemu:add capability='incremental-backup'/>
  </qemu:capabilities>
</domain>
`;

describe('parseDomainXml', () => {
  const cfg = parseDomainXml(LIVE);

  test('name, uuid, boot files, TPM, capability', () => {
    expect(cfg.name).toBe('vm1');
    expect(cfg.uuid).toBe('4f1d0a2e-8a3c-4b55-9d1e-0c2f5a7b9e11');
    expect(cfg.bootFiles).toEqual({
      loader: '/usr/share/OVMF/OVMF_CODE_4M.fd',
      nvram: '/var/lib/libvirt/qemu/nvram/vm1_VARS.fd',
    });
    expect(cfg.tpmEmulated).toBe(true);
    expect(cfg.incrementalBackupCapability).toBe(true);
  });

  test('every disk, in document order', () => {
    expect(cfg.disks.map((d) => d.dev)).toEqual(['vda', 'sda', 'vdb', 'vdc', 'vdd', 'sdb', 'sdc', 'fda', 'vde', 'vdf', 'vdg']);
  });

  test('file qcow2 virtio with discard, backing chain outermost first, alias', () => {
    expect(cfg.disks[0]).toEqual({
      dev: 'vda',
      device: 'disk',
      type: 'file',
      format: 'qcow2',
      path: '/var/lib/libvirt/images/vm1.qcow2',
      discard: 'unmap',
      backingChain: ['/var/lib/libvirt/images/base-snap.qcow2', '/var/lib/libvirt/images/base.img'],
      alias: 'virtio-disk0',
    });
  });

  test('sata qcow2 with an empty backingStore', () => {
    expect(cfg.disks[1]).toEqual({
      dev: 'sda', device: 'disk', type: 'file', format: 'qcow2',
      path: '/var/lib/libvirt/images/vm1-data.qcow2', backingChain: [], alias: 'sata0-0-0',
    });
  });

  test('raw file, raw block, qcow2 block, lun', () => {
    expect(cfg.disks[2]).toMatchObject({ dev: 'vdb', type: 'file', device: 'disk', format: 'raw', path: '/var/lib/libvirt/images/scratch.img' });
    expect(cfg.disks[2]!.discard).toBeUndefined();
    expect(cfg.disks[2]!.alias).toBeUndefined();
    expect(cfg.disks[3]).toMatchObject({ dev: 'vdc', type: 'block', device: 'disk', format: 'raw', path: '/dev/vg0/vm1-raw' });
    expect(cfg.disks[4]).toMatchObject({ dev: 'vdd', type: 'block', device: 'disk', format: 'qcow2', path: '/dev/vg0/vm1-qcow' });
    expect(cfg.disks[5]).toMatchObject({ dev: 'sdb', type: 'block', device: 'lun', format: 'raw', path: '/dev/sdz' });
  });

  test('cdrom, floppy without source', () => {
    expect(cfg.disks[6]).toMatchObject({ dev: 'sdc', device: 'cdrom', type: 'file', path: '/isos/debian.iso' });
    expect(cfg.disks[7]).toMatchObject({ dev: 'fda', device: 'floppy', type: 'file', path: '' });
  });

  test('volume disk: pool and volume, no path', () => {
    expect(cfg.disks[8]).toMatchObject({ dev: 'vde', type: 'volume', format: 'qcow2', path: '', volume: { pool: 'default', volume: 'vm1-vol.qcow2' } });
  });

  test('network disk and a disk without source have no path', () => {
    expect(cfg.disks[9]).toMatchObject({ dev: 'vdf', type: 'network', path: '' });
    expect(cfg.disks[9]!.volume).toBeUndefined();
    expect(cfg.disks[10]).toMatchObject({ dev: 'vdg', type: 'file', format: 'qcow2', path: '' });
  });

  test('direct kernel boot, no TPM, no capability, defaults for missing attributes', () => {
    const c = parseDomainXml(`<?xml version="1.0"?>
<domain type="kvm">
  <name>k</name>
  <uuid>11111111-2222-3333-4444-555555555555</uuid>
  <os>
    <type>hvm</type>
    <kernel>/boot/vmlinuz-6.1</kernel>
    <initrd>/boot/initrd.img-6.1</initrd>
    <cmdline>console=ttyS0</cmdline>
  </os>
  <devices>
    <disk><source file="/img/k.qcow2"/><target dev="vda"/></disk>
    <tpm model="tpm-tis"><backend type="passthrough"><device path="/dev/tpm0"/></backend></tpm>
  </devices>
</domain>`);
    expect(c.bootFiles).toEqual({ kernel: '/boot/vmlinuz-6.1', initrd: '/boot/initrd.img-6.1' });
    expect(c.tpmEmulated).toBe(false);
    expect(c.incrementalBackupCapability).toBe(false);
    expect(c.disks).toEqual([{ dev: 'vda', device: 'disk', type: 'file', format: '', path: '/img/k.qcow2', backingChain: [] }]);
  });

  test('the qemu capability is found under any prefix bound to the qemu namespace', () => {
    const other = `<domain xmlns:q='http://libvirt.org/schemas/domain/qemu/1.0'><name>a</name>
      <q:capabilities><q:add capability='other'/><q:add capability='incremental-backup'/></q:capabilities></domain>`;
    expect(parseDomainXml(other).incrementalBackupCapability).toBe(true);
    const onElement = `<domain><name>a</name>
      <x:capabilities xmlns:x='http://libvirt.org/schemas/domain/qemu/1.0'><x:add capability='incremental-backup'/></x:capabilities></domain>`;
    expect(parseDomainXml(onElement).incrementalBackupCapability).toBe(true);
    const defaultNs = `<domain><name>a</name>
      <capabilities xmlns='http://libvirt.org/schemas/domain/qemu/1.0'><add capability='incremental-backup'/></capabilities></domain>`;
    expect(parseDomainXml(defaultNs).incrementalBackupCapability).toBe(true);
  });

  test('a qemu: prefix bound to another namespace, or a different capability, does not count', () => {
    const wrongNs = `<domain xmlns:qemu='http://example.com/not-qemu'><name>a</name>
      <qemu:capabilities><qemu:add capability='incremental-backup'/></qemu:capabilities></domain>`;
    expect(parseDomainXml(wrongNs).incrementalBackupCapability).toBe(false);
    const unbound = `<domain><name>a</name><qemu:capabilities><qemu:add capability='incremental-backup'/></qemu:capabilities></domain>`;
    expect(parseDomainXml(unbound).incrementalBackupCapability).toBe(false);
    const noNs = `<domain><name>a</name><capabilities><add capability='incremental-backup'/></capabilities></domain>`;
    expect(parseDomainXml(noNs).incrementalBackupCapability).toBe(false);
    const del = `<domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><name>a</name>
      <qemu:capabilities><qemu:del capability='incremental-backup'/></qemu:capabilities></domain>`;
    expect(parseDomainXml(del).incrementalBackupCapability).toBe(false);
  });

  test('entities and character references in attributes and text are decoded', () => {
    const c = parseDomainXml(`<domain><name>a&amp;b</name><os><nvram>/var/nv/&#x76;m&#49;&lt;x&gt;.fd</nvram></os>
      <devices><disk type='file' device='disk'><source file='/img/it&apos;s &quot;q&quot; &#233;.qcow2'/><target dev='vda'/></disk></devices></domain>`);
    expect(c.name).toBe('a&b');
    expect(c.bootFiles.nvram).toBe('/var/nv/vm1<x>.fd');
    expect(c.disks[0]!.path).toBe(`/img/it's "q" é.qcow2`);
    expect(decodeXmlEntities('&unknown; &#x110000;')).toBe('&unknown; &#x110000;');
  });

  test('malformed XML and wrong documents are clear errors', () => {
    expect(() => parseDomainXml('<domain><name>x</nam></domain>')).toThrow(/^Invalid domain XML: .*closing tag.*\(line 1/);
    expect(() => parseDomainXml('')).toThrow(/^Invalid domain XML/);
    expect(() => parseDomainXml('<domain><name>x</name></domain><domain/>')).toThrow(/single <domain> root/);
    expect(() => parseDomainXml('<network><name>x</name></network>')).toThrow(/single <domain> root.*<network>/);
    expect(() => parseDomainXml('<domain><uuid>u</uuid></domain>')).toThrow(/has no <name>/);
    expect(() => parseDomainXml(`<domain><name>a</name><devices><disk type='file' type='block'/></devices></domain>`)).toThrow(/repeated/);
  });
});
