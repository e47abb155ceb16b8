/**
 * src/restore/adjust-config.ts: every rule of BEHAVIOUR.md §11.7 (incl. D11, D22), the disk list
 * of §11.1, and round-trip fidelity of the XML edit on realistic libvirt domain XMLs (the
 * fixtures' vmconfig files, a live XML as libvirt 9 prints it, a rich XML with UEFI, qemu
 * namespace, metadata, comments and entities): the output differs from the input exactly by the
 * rules' edits and by attributes written in double quotes.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { XMLValidator } from 'fast-xml-parser';
import { parseDomainXml } from '../../../src/xml/domain-xml.js';
import { adjustConfig, restoredDiskList, type AdjustConfigOptions } from '../../../src/restore/adjust-config.js';
import { recordingLogger } from '../backup/recording-logger.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const FIXTURES = join(ROOT, 'test', 'fixtures', 'upstream-sets');

/** Attribute values written the way any serialiser writes them: in double quotes, with `'` and `"` escaped. */
function dq(xml: string): string {
  return xml.replace(/(\s[A-Za-z_][\w:.-]*)=(?:'([^']*)'|"([^"]*)")/g, (_m, name: string, sq: string | undefined, dqv: string | undefined) => {
    const v = sq ?? dqv ?? '';
    return `${name}="${v.replace(/"/g, '&quot;').replace(/'/g, '&apos;')}"`;
  });
}

function opts(restored: Record<string, string>, extra: Partial<AdjustConfigOptions> = {}): AdjustConfigOptions {
  return { restored: new Map(Object.entries(restored)), keepRaw: false, outputDir: '/restore', ...extra };
}

/** Remove exactly one occurrence of `part` from `s` (fails the test if it is not there once). */
function cut(s: string, part: string): string {
  expect(s.split(part).length - 1).toBe(1);
  return s.replace(part, '');
}

function swap(s: string, from: string, to: string): string {
  expect(s.split(from).length - 1).toBe(1);
  return s.replace(from, to);
}

// ---------------------------------------------------------------------------------------------
// XMLs

/** `virsh dumpxml` of a defined, shut-off test domain on these machines (libvirt 9.0). */
const INACTIVE = `<domain type='qemu'>
  <name>virtnbd-test-9301-mx1cz7rg</name>
  <uuid>759b414b-eeb8-439d-9503-34a2f3e802c6</uuid>
  <memory unit='KiB'>65536</memory>
  <currentMemory unit='KiB'>65536</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <boot dev='hd'/>
  </os>
  <cpu mode='custom' match='exact' check='none'>
    <model fallback='forbid'>qemu64</model>
  </cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/tmp/virtnbd-virt-ZlhxSL/vda.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/tmp/virtnbd-virt-ZlhxSL/sda.qcow2'/>
      <target dev='sda' bus='sata'/>
      <address type='drive' controller='0' bus='0' target='0' unit='0'/>
    </disk>
    <controller type='usb' index='0' model='piix3-uhci'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x2'/>
    </controller>
    <controller type='pci' index='0' model='pci-root'/>
    <controller type='sata' index='0'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>
    </controller>
    <input type='mouse' bus='ps2'/>
    <input type='keyboard' bus='ps2'/>
    <audio id='1' type='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
`;

// The parts of RICH the rules touch, so that the expected output can be derived from the input.
const R_UUID = `  <uuid>4f1d0a2e-8a3c-4b55-9d1e-0c2f5a7b9e11</uuid>\n`;
const R_CDROM = `
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/iso/debian &amp; co.iso' index='6'/>
      <target dev='sdc' bus='sata'/>
      <readonly/>
    </disk>`;
const R_FLOPPY = `
    <disk type='file' device='floppy'>
      <driver name='qemu' type='raw'/>
      <target dev='fda' bus='fdc'/>
    </disk>`;
const R_RAW = `
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native'/>
      <source file='/var/lib/libvirt/images/vm1-raw.img' index='1'/>
      <backingStore/>
      <target dev='vdc' bus='virtio'/>
      <alias name='virtio-disk2'/>
    </disk>`;
const R_VDA_BACKING = `
      <backingStore type='file' index='4'>
        <format type='qcow2'/>
        <source file='/var/lib/libvirt/images/base-snap.qcow2'/>
        <backingStore type='file' index='5'>
          <format type='raw'/>
          <source file='/var/lib/libvirt/images/base.img'/>
          <backingStore/>
        </backingStore>
      </backingStore>`;
const R_VDA_SOURCE = `<source file='/var/lib/libvirt/images/vm1 &amp; co&apos;s.qcow2' index='3'/>`;
const R_VDB_SOURCE_OPEN = `<source file='/var/lib/libvirt/images/vm1-data.qcow2' index='2'>`;
const R_VDB_DATASTORE = `<dataStore type='block'>
          <format type='raw'/>
          <source dev='/dev/vg0/vm1-data'/>
        </dataStore>`;
const R_SDA_DISK_OPEN = `<disk type='block' device='disk'>`;
const R_SDA_SOURCE = `<source dev='/dev/vg0/vm1-sda' index='7'>
        <reservations managed='yes'/>
      </source>`;
const R_VOL_DISK_OPEN = `<disk type='volume' device='disk'>`;
const R_VOL_SOURCE = `<source pool='default' volume='vm1-vol.qcow2' mode='host'/>`;

/** A live XML of a UEFI domain with everything the rules and the serialiser must get right. */
const RICH = `<domain type='kvm' id='7' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>vm1</name>
${R_UUID}  <title>Tom &amp; Jerry&apos;s &lt;VM&gt;</title>
  <description>line one
   line two with &quot;quotes&quot;, a tab\tand &#x263A; &#65;</description>
  <metadata>
    <app:info xmlns:app='urn:example:app' owner='a&amp;b' note="it's">kept &lt;as is&gt;</app:info>
  </metadata>
  <!-- managed by hand: do not edit -->
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
      ${R_VDA_SOURCE}${R_VDA_BACKING}
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
      <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      ${R_VDB_SOURCE_OPEN}
        ${R_VDB_DATASTORE}
      </source>
      <target dev='vdb' bus='virtio'/>
    </disk>${R_RAW}${R_CDROM}${R_FLOPPY}
    ${R_SDA_DISK_OPEN}
      <driver name='qemu' type='qcow2'/>
      ${R_SDA_SOURCE}
      <target dev='sda' bus='sata'/>
    </disk>
    ${R_VOL_DISK_OPEN}
      <driver name='qemu' type='qcow2'/>
      ${R_VOL_SOURCE}
      <target dev='sdb' bus='sata'/>
    </disk>
    <interface type='network'>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
    <tpm model='tpm-crb'>
      <backend type='emulator' version='2.0'/>
    </tpm>
  </devices>
  <seclabel type='dynamic' model='dac' relabel='yes'>
    <label>+64055:+64055</label>
  </seclabel>
  <qemu:commandline>
    <qemu:arg value='-set'/>
    <qemu:arg value='device.virtio-disk0.x-foo=a&amp;b'/>
    <qemu:env name='SPICE_DEBUG_LEVEL' value='&apos;10&apos;'/>
  </qemu:commandline>
  <qemu:capabilities>
    <qemu:add capability='incremental-backup'/>
  </qemu:capabilities>
</domain>
`;

const RICH_RESTORED = {
  vda: '/restore/vm1 & co\'s.qcow2',
  vdb: '/restore/vm1-data.qcow2',
  sda: '/restore/vm1-sda',
  sdb: '/restore/vm1-vol.qcow2',
};

function fixtureVmconfigs(): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const set of readdirSync(FIXTURES).filter((d) => d !== 'README.md').sort()) {
    const dir = join(FIXTURES, set, 'backup');
    for (const f of readdirSync(dir).filter((n) => /^vmconfig\..*\.xml$/.test(n)).sort()) out.push([`${set}/${f}`, join(dir, f)]);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Fidelity

describe('round trip: only the rules change the XML', () => {
  const files = fixtureVmconfigs();

  test('the fixtures have vmconfig files', () => {
    expect(files.length).toBeGreaterThanOrEqual(10);
  });

  test.each(files)('fixture %s: vda restored, sdb not', (_name, path) => {
    const xml = readFileSync(path, 'utf8');
    const cfg = parseDomainXml(xml);
    const vda = cfg.disks.find((d) => d.dev === 'vda')!;
    const log = recordingLogger();
    const out = adjustConfig(xml, opts({ vda: '/restore/vda.qcow2' }), log);

    let expected = dq(xml);
    expected = swap(expected, `<name>${cfg.name}</name>`, `<name>restore_${cfg.name}</name>`);
    expected = cut(expected, `  <uuid>${cfg.uuid}</uuid>\n`);
    // the sdb disk, with the indentation in front of it
    const sdbStart = expected.indexOf('\n    <disk', expected.indexOf('</disk>'));
    const sdbEnd = expected.indexOf('</disk>', sdbStart) + '</disk>'.length;
    expect(expected.slice(sdbStart, sdbEnd)).toContain(`<target dev="sdb"`);
    expected = expected.slice(0, sdbStart) + expected.slice(sdbEnd);
    expected = cut(expected, '\n      <backingStore/>');
    expected = swap(expected, `file="${vda.path}"`, 'file="/restore/vda.qcow2"');
    expect(out).toBe(expected);
    expect(log.counts).toEqual({ warnings: 0, errors: 0 });
  });

  test('inactive XML of a defined domain: both disks restored, trailing newline kept', () => {
    const out = adjustConfig(INACTIVE, opts({ vda: '/r/vda.qcow2', sda: '/r/sda.qcow2' }), recordingLogger());
    let expected = dq(INACTIVE);
    expected = swap(expected, '<name>virtnbd-test-9301-mx1cz7rg</name>', '<name>restore_virtnbd-test-9301-mx1cz7rg</name>');
    expected = cut(expected, '  <uuid>759b414b-eeb8-439d-9503-34a2f3e802c6</uuid>\n');
    expected = swap(expected, 'file="/var/tmp/virtnbd-virt-ZlhxSL/vda.qcow2"', 'file="/r/vda.qcow2"');
    expected = swap(expected, 'file="/var/tmp/virtnbd-virt-ZlhxSL/sda.qcow2"', 'file="/r/sda.qcow2"');
    expect(out).toBe(expected);
    expect(out.endsWith('</domain>\n')).toBe(true);
  });

  test('rich XML: entities, comments, namespaces, metadata and untouched devices survive byte for byte', () => {
    const log = recordingLogger();
    const out = adjustConfig(RICH, opts(RICH_RESTORED), log);

    let expected = RICH;
    expected = cut(expected, R_UUID);
    expected = swap(expected, '<name>vm1</name>', '<name>restore_vm1</name>');
    expected = cut(expected, R_CDROM);
    expected = cut(expected, R_FLOPPY);
    expected = cut(expected, R_RAW);
    expected = cut(expected, R_VDA_BACKING);
    expected = swap(expected, R_VDA_SOURCE, `<source file='/restore/vm1 &amp; co&apos;s.qcow2' index='3'/>`);
    expected = swap(expected, R_VDB_SOURCE_OPEN, `<source file='/restore/vm1-data.qcow2' index='2'>`);
    expected = swap(expected, R_VDB_DATASTORE, R_VDB_DATASTORE.replace(`type='block'`, `type='file'`).replace(`dev='/dev/vg0/vm1-data'`, `file='/restore/vm1-data'`));
    expected = swap(expected, R_SDA_DISK_OPEN, `<disk type='file' device='disk'>`);
    expected = swap(expected, R_SDA_SOURCE, R_SDA_SOURCE.replace(`dev='/dev/vg0/vm1-sda'`, `file='/restore/vm1-sda'`));
    expected = swap(expected, R_VOL_DISK_OPEN, `<disk type='file' device='disk'>`);
    expected = swap(expected, R_VOL_SOURCE, `<source file='/restore/vm1-vol.qcow2'/>`);
    expect(out).toBe(dq(expected));

    // entities exactly as written, in text and attributes
    expect(out).toContain('<title>Tom &amp; Jerry&apos;s &lt;VM&gt;</title>');
    expect(out).toContain('with &quot;quotes&quot;, a tab\tand &#x263A; &#65;</description>');
    expect(out).toContain('owner="a&amp;b" note="it&apos;s">kept &lt;as is&gt;</app:info>');
    expect(out).toContain('<qemu:arg value="device.virtio-disk0.x-foo=a&amp;b"/>');
    expect(out).toContain('<qemu:env name="SPICE_DEBUG_LEVEL" value="&apos;10&apos;"/>');
    expect(out).toContain('<!-- managed by hand: do not edit -->');
    expect(out).not.toMatch(/\n[ \t]*\n/); // removals take their indentation with them
    expect(XMLValidator.validate(out)).toBe(true);

    // what the rest of the program reads back
    const cfg = parseDomainXml(out);
    expect(cfg.name).toBe('restore_vm1');
    expect(cfg.uuid).toBe('');
    expect(cfg.incrementalBackupCapability).toBe(true);
    expect(cfg.tpmEmulated).toBe(true);
    expect(cfg.bootFiles).toEqual({ loader: '/usr/share/OVMF/OVMF_CODE_4M.fd', nvram: '/var/lib/libvirt/qemu/nvram/vm1_VARS.fd' });
    expect(cfg.disks.map((d) => [d.dev, d.type, d.path, d.backingChain])).toEqual([
      ['vda', 'file', "/restore/vm1 & co's.qcow2", []],
      ['vdb', 'file', '/restore/vm1-data.qcow2', []],
      ['sda', 'file', '/restore/vm1-sda', []],
      ['sdb', 'file', '/restore/vm1-vol.qcow2', []],
    ]);
    expect(log.at('WARNING')).toEqual(['Removing raw disk [vdc] from vm config, use --raw to copy as is.']);
  });

  test('a document with an XML declaration and a comment before the root keeps them', () => {
    const xml = `<?xml version="1.0" encoding="UTF-8"?>\n<!-- saved by hand -->\n<domain type="qemu"><name>a</name></domain>\n`;
    expect(adjustConfig(xml, opts({}), recordingLogger())).toBe(xml.replace('<name>a</name>', '<name>restore_a</name>'));
  });

  test('not well-formed or not a domain: clear errors', () => {
    expect(() => adjustConfig('<domain><name>x</domain>', opts({}), recordingLogger())).toThrow(/^Invalid domain XML: /);
    expect(() => adjustConfig('<pool><name>x</name></pool>', opts({}), recordingLogger())).toThrow('Invalid domain XML: expected a single <domain> root element');
  });
});

// ---------------------------------------------------------------------------------------------
// Rules

function disksOf(xml: string): Array<{ dev: string; type: string; path: string; device: string; format: string }> {
  return parseDomainXml(xml).disks.map(({ dev, type, path, device, format }) => ({ dev, type, path, device, format }));
}

describe('§11.7 rules', () => {
  test('1: cdrom and floppy are removed (INFO, not counted as warnings)', () => {
    const log = recordingLogger();
    const out = adjustConfig(RICH, opts(RICH_RESTORED), log);
    expect(disksOf(out).map((d) => d.device)).not.toContain('cdrom');
    expect(disksOf(out).map((d) => d.device)).not.toContain('floppy');
    expect(out).not.toContain('debian');
    expect(log.at('INFO')).toEqual(expect.arrayContaining(['Removing [cdrom] device [sdc] from vm config.', 'Removing [floppy] device [fda] from vm config.']));
  });

  test('2: raw disks are removed with a warning unless keepRaw; with keepRaw a restored raw disk is adjusted', () => {
    const log = recordingLogger();
    expect(disksOf(adjustConfig(RICH, opts({ ...RICH_RESTORED, vdc: '/restore/vm1-raw.img' }), log)).map((d) => d.dev)).toEqual(['vda', 'vdb', 'sda', 'sdb']);
    expect(log.counts.warnings).toBe(1);

    const kept = recordingLogger();
    const out = adjustConfig(RICH, opts({ ...RICH_RESTORED, vdc: '/restore/vm1-raw.img' }, { keepRaw: true }), kept);
    expect(disksOf(out).find((d) => d.dev === 'vdc')).toEqual({ dev: 'vdc', type: 'file', path: '/restore/vm1-raw.img', device: 'disk', format: 'raw' });
    expect(kept.counts.warnings).toBe(0);
    // its empty backingStore went too (rule 3), the driver options stayed
    expect(out).toContain('<driver name="qemu" type="raw" cache="none" io="native"/>\n      <source file="/restore/vm1-raw.img" index="1"/>\n      <target dev="vdc"');
  });

  test('3: only the first backingStore child of a disk is removed (with its whole chain)', () => {
    const xml = `<domain><name>n</name><devices><disk type='file' device='disk'><driver type='qcow2'/><source file='/a'/><backingStore type='file'><source file='/b'/><backingStore/></backingStore><backingStore/><target dev='vda'/></disk></devices></domain>`;
    const out = adjustConfig(xml, opts({ vda: '/r/a' }), recordingLogger());
    expect(out).toBe(`<domain><name>restore_n</name><devices><disk type="file" device="disk"><driver type="qcow2"/><source file="/r/a"/><backingStore/><target dev="vda"/></disk></devices></domain>`);
  });

  test('4: data store pointed at the new data file — explicit path, or <output>/<base name>; block data store becomes a file', () => {
    const explicit = adjustConfig(RICH, opts(RICH_RESTORED, { dataFiles: new Map([['vdb', '/elsewhere/data.raw']]) }), recordingLogger());
    expect(explicit).toContain('<dataStore type="file">\n          <format type="raw"/>\n          <source file="/elsewhere/data.raw"/>');

    const xml = `<domain><name>n</name><devices><disk type='file' device='disk'><driver type='qcow2'/><source file='/img/a.qcow2'><dataStore type='file'><format type='raw'/><source file='/img/a data.raw'/></dataStore></source><target dev='vda'/></disk></devices></domain>`;
    const out = adjustConfig(xml, opts({ vda: '/out/a.qcow2' }, { outputDir: '/out/' }), recordingLogger());
    expect(out).toContain(`<source file="/out/a.qcow2"><dataStore type="file"><format type="raw"/><source file="/out/a data.raw"/></dataStore></source>`);
  });

  test('5 / D22: a block disk becomes a file disk with source@file only; file disk keeps its other attributes in place', () => {
    const xml = `<domain><name>n</name><devices><disk type='block' device='disk'><driver name='qemu' type='qcow2'/><source dev='/dev/vg/lv' index='1'/><target dev='vda' bus='virtio'/></disk></devices></domain>`;
    const out = adjustConfig(xml, opts({ vda: '/r/lv' }), recordingLogger());
    expect(out).toContain(`<disk type="file" device="disk"><driver name="qemu" type="qcow2"/><source file="/r/lv" index="1"/>`);
    expect(out).not.toContain('dev="/dev/vg/lv"');
  });

  test('5: a volume disk becomes a file disk; a direct attached lun becomes a disk device', () => {
    const out = adjustConfig(RICH, opts(RICH_RESTORED), recordingLogger());
    expect(out).toContain(`<disk type="file" device="disk">\n      <driver name="qemu" type="qcow2"/>\n      <source file="/restore/vm1-vol.qcow2"/>`);
    const lun = `<domain><name>n</name><devices><disk type='block' device='lun' sgio='unfiltered' rawio='yes'><driver name='qemu' type='raw'/><source dev='/dev/sdx'/><target dev='sdc' bus='scsi'/></disk></devices></domain>`;
    const log = recordingLogger();
    expect(adjustConfig(lun, opts({ sdc: '/r/sdc' }, { keepRaw: true }), log)).toBe(
      `<domain><name>restore_n</name><devices><disk type="file" device="disk"><driver name="qemu" type="raw"/><source file="/r/sdc"/><target dev="sdc" bus="scsi"/></disk></devices></domain>`,
    );
    expect(log.counts).toEqual({ warnings: 0, errors: 0 });
  });

  test('5: image paths are made absolute, special characters are escaped', () => {
    const xml = `<domain><name>n</name><devices><disk type='file' device='disk'><driver type='qcow2'/><source file='/a'/><target dev='vda'/></disk></devices></domain>`;
    const out = adjustConfig(xml, opts({ vda: `rel/a<b>&"c'.qcow2` }), recordingLogger());
    expect(out).toContain(`<source file="${resolve('rel')}/a&lt;b&gt;&amp;&quot;c&apos;.qcow2"/>`);
    expect(parseDomainXml(out).disks[0]!.path).toBe(resolve(`rel/a<b>&"c'.qcow2`));
  });

  test('6: disks that were not restored are removed', () => {
    const log = recordingLogger();
    const out = adjustConfig(RICH, opts({ vda: '/r/vda.qcow2' }), log);
    expect(disksOf(out).map((d) => d.dev)).toEqual(['vda']);
    expect(log.at('INFO')).toEqual(expect.arrayContaining(['Removing disk [vdb] from vm config: it has not been restored.']));
    expect(log.counts.warnings).toBe(1); // the raw disk only
  });

  test('7: uuid removed', () => {
    const out = adjustConfig(INACTIVE, opts({}), recordingLogger());
    expect(out).not.toContain('<uuid>');
    expect(out).not.toContain('759b414b');
  });

  test.each([
    ['vm1', undefined, 'restore_vm1'],
    ['vm1', 'vm1-copy', 'vm1-copy'],
    ['restore-vm1', undefined, 'restore-vm1'], // D11: kept, not emptied
    ['restore_vm1', undefined, 'restore_vm1'],
    ['restored', undefined, 'restored'],
    ['a&amp;b', undefined, 'restore_a&amp;b'],
    ['x', 'Tom & <Jerry>', 'Tom &amp; &lt;Jerry&gt;'],
  ])('8: name %s with --name %s → %s', (name, given, expected) => {
    const out = adjustConfig(`<domain><name>${name}</name></domain>`, opts({}, given !== undefined ? { name: given } : {}), recordingLogger());
    expect(out).toBe(`<domain><name>${expected}</name></domain>`);
  });
});

// ---------------------------------------------------------------------------------------------
// §11.1

describe('restoredDiskList', () => {
  const fixture = readFileSync(join(FIXTURES, 'd1', 'backup', 'vmconfig.virtnbdbackup.0.xml'), 'utf8');

  test('fixture: every disk in document order; --disk is an exact include filter', async () => {
    const all = await restoredDiskList(fixture, { raw: false }, recordingLogger());
    expect(all.map((d) => [d.dev, d.format, d.path, d.qcow])).toEqual([
      ['vda', 'qcow2', '/var/lib/libvirt/images/fixture-3/vda.qcow2', true],
      ['sdb', 'qcow2', '/var/lib/libvirt/images/fixture-3/sdb.qcow2', true],
    ]);
    const one = await restoredDiskList(fixture, { raw: false, disk: 'sdb' }, recordingLogger());
    expect(one.map((d) => d.dev)).toEqual(['sdb']);
    await expect(restoredDiskList(fixture, { raw: false, disk: 'sd' }, recordingLogger())).rejects.toThrow('Unable to parse disks from config');
  });

  test('rich XML: cdrom/floppy skipped, raw only with --raw, block qcow2 kept, volume turned into <output>/<volume> with a warning', async () => {
    const log = recordingLogger();
    const disks = await restoredDiskList(RICH, { raw: false, outputDir: '/restore' }, log);
    expect(disks.map((d) => [d.dev, d.type, d.path])).toEqual([
      ['vda', 'file', "/var/lib/libvirt/images/vm1 & co's.qcow2"],
      ['vdb', 'file', '/var/lib/libvirt/images/vm1-data.qcow2'],
      ['sda', 'block', '/dev/vg0/vm1-sda'],
      ['sdb', 'file', '/restore/vm1-vol.qcow2'],
    ]);
    expect(log.at('WARNING')).toEqual(
      expect.arrayContaining([
        'Disk [sdb] is storage volume [vm1-vol.qcow2] of pool [default]: restoring it as file [/restore/vm1-vol.qcow2].',
        'Raw disk [vdc] excluded by default, use option --raw to include.',
      ]),
    );
    expect(log.counts.errors).toBe(0);
    const raw = await restoredDiskList(RICH, { raw: true, outputDir: '/restore' }, recordingLogger());
    expect(raw.map((d) => d.dev)).toEqual(['vda', 'vdb', 'vdc', 'sda', 'sdb']);
  });

  test('volume disks: no warning for a disk --disk leaves out; an unsafe volume name falls back to <dev>', async () => {
    const log = recordingLogger();
    expect((await restoredDiskList(RICH, { raw: false, disk: 'vda', outputDir: '/o' }, log)).map((d) => d.dev)).toEqual(['vda']);
    expect(log.at('WARNING').filter((m) => m.includes('storage volume'))).toEqual([]);
    const xml = `<domain><name>n</name><devices><disk type='volume' device='disk'><driver type='qcow2'/><source pool='p' volume='../x'/><target dev='vdz'/></disk></devices></domain>`;
    expect((await restoredDiskList(xml, { raw: false, outputDir: 'out' }, recordingLogger()))[0]!.path).toBe(resolve('out', 'vdz'));
  });

  test('no disk qualifies: Unable to parse disks from config', async () => {
    const xml = `<domain><name>n</name><devices><disk type='file' device='cdrom'><target dev='sda'/></disk></devices></domain>`;
    await expect(restoredDiskList(xml, { raw: false }, recordingLogger())).rejects.toThrow('Unable to parse disks from config');
  });
});
