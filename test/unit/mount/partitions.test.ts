/**
 * Parsing of `sfdisk -J` and `blkid -p -o export` output (captured from util-linux 2.38 on
 * images made with sfdisk/mkfs/mkswap) and the mount plan built from them.
 */
import {
  parseSfdiskJson,
  parseBlkidExport,
  planMounts,
  notMountableReason,
  mountOptions,
  isExtendedPartition,
  PartitionError,
  type Probe,
} from '../../../src/mount/partitions.js';

const GPT = `{
   "partitiontable": {
      "label": "gpt",
      "id": "C0689E23-C4DF-8A45-A2DE-714C5A339891",
      "device": "disk.img",
      "unit": "sectors",
      "firstlba": 2048,
      "lastlba": 131038,
      "sectorsize": 512,
      "partitions": [
         {"node": "disk.img1", "start": 2048, "size": 40960, "type": "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "uuid": "BA8B9419-054B-8244-AE91-EB3A574DAED2"},
         {"node": "disk.img2", "start": 43008, "size": 20480, "type": "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", "uuid": "85665FE9-86A6-B442-9293-8FED6EE760C5"},
         {"node": "disk.img3", "start": 63488, "size": 65536, "type": "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "uuid": "3FA3FD4B-271B-0549-A260-3313C225D6B2"}
      ]
   }
}`;

/** MBR with an extended partition (2) holding logical partitions 5 and 6. */
const DOS_EXTENDED = `{
   "partitiontable": {
      "label": "dos",
      "id": "0xe179e0c8",
      "device": "ext.img",
      "unit": "sectors",
      "sectorsize": 512,
      "partitions": [
         {"node": "ext.img1", "start": 2048, "size": 20480, "type": "83"},
         {"node": "ext.img2", "start": 22528, "size": 108544, "type": "5"},
         {"node": "ext.img5", "start": 24576, "size": 20480, "type": "83"},
         {"node": "ext.img6", "start": 47104, "size": 83968, "type": "82"}
      ]
   }
}`;

const EXT4_LABEL = `DEVNAME=lbl.img
LABEL=my\\ disk
UUID=811ecb65-0fff-4b80-80eb-a7897f6abafc
VERSION=1.0
BLOCK_SIZE=1024
TYPE=ext4
USAGE=filesystem
`;

const SWAP = `DEVNAME=sw.img
UUID=3f1551a8-be87-4e6c-8209-713514899491
VERSION=1
TYPE=swap
USAGE=other
`;

const PT_ONLY = `DEVNAME=disk.img
PTUUID=c0689e23-c4df-8a45-a2de-714c5a339891
PTTYPE=gpt
`;

describe('parseSfdiskJson', () => {
  it('converts a GPT table to byte offsets with partition numbers from the node names', () => {
    const t = parseSfdiskJson(GPT);
    expect(t.label).toBe('gpt');
    expect(t.sectorSize).toBe(512);
    expect(t.partitions).toEqual([
      { number: 1, start: 2048 * 512, size: 40960 * 512, type: '0FC63DAF-8483-4772-8E79-3D69D8477DE4' },
      { number: 2, start: 43008 * 512, size: 20480 * 512, type: '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F' },
      { number: 3, start: 63488 * 512, size: 65536 * 512, type: '0FC63DAF-8483-4772-8E79-3D69D8477DE4' },
    ]);
  });

  it('keeps logical partition numbers and device-style node names (/dev/nbd0p5)', () => {
    const t = parseSfdiskJson(DOS_EXTENDED);
    expect(t.partitions.map((p) => p.number)).toEqual([1, 2, 5, 6]);
    const dev = parseSfdiskJson(GPT.replace(/disk\.img(\d)/g, '/dev/nbd0p$1'));
    expect(dev.partitions.map((p) => p.number)).toEqual([1, 2, 3]);
  });

  it('uses the sector size given (4096-byte sectors)', () => {
    const t = parseSfdiskJson(GPT.replace('"sectorsize": 512', '"sectorsize": 4096'));
    expect(t.partitions[0]).toMatchObject({ start: 2048 * 4096, size: 40960 * 4096 });
  });

  it('accepts a table without partitions', () => {
    expect(parseSfdiskJson('{"partitiontable": {"label": "gpt", "unit": "sectors", "sectorsize": 512}}').partitions).toEqual([]);
  });

  it.each([
    ['not JSON', 'sfdisk: cannot open'],
    ['no table', '{}'],
    ['negative start', GPT.replace('"start": 2048', '"start": -1')],
    ['fractional size', GPT.replace('"size": 40960', '"size": 1.5')],
    ['node without a number', GPT.replace('"disk.img1"', '"disk.img"')],
    ['other unit', GPT.replace('"unit": "sectors"', '"unit": "bytes"')],
    ['sector size 0', GPT.replace('"sectorsize": 512', '"sectorsize": 0')],
    ['partitions not a list', '{"partitiontable": {"label": "gpt", "partitions": 3}}'],
  ])('rejects %s', (_what, text) => {
    expect(() => parseSfdiskJson(text)).toThrow(PartitionError);
  });
});

describe('parseBlkidExport', () => {
  it('reads KEY=value lines and unescapes values', () => {
    expect(parseBlkidExport(EXT4_LABEL)).toEqual({
      DEVNAME: 'lbl.img',
      LABEL: 'my disk',
      UUID: '811ecb65-0fff-4b80-80eb-a7897f6abafc',
      VERSION: '1.0',
      BLOCK_SIZE: '1024',
      TYPE: 'ext4',
      USAGE: 'filesystem',
    });
    expect(parseBlkidExport('')).toEqual({});
  });
});

describe('notMountableReason', () => {
  it('accepts file systems and names the reason for everything else', () => {
    expect(notMountableReason(parseBlkidExport(EXT4_LABEL))).toBeUndefined();
    expect(notMountableReason({ TYPE: 'vfat', USAGE: 'filesystem' })).toBeUndefined();
    expect(notMountableReason(parseBlkidExport(SWAP))).toMatch(/swap/);
    expect(notMountableReason({ TYPE: 'LVM2_member', USAGE: 'raid' })).toMatch(/LVM2_member \(raid\)/);
    expect(notMountableReason({ TYPE: 'crypto_LUKS', USAGE: 'crypto' })).toMatch(/crypto/);
    expect(notMountableReason({})).toMatch(/no recognised file system/);
    expect(notMountableReason(parseBlkidExport(PT_ONLY))).toMatch(/no recognised file system/);
  });
});

describe('mountOptions', () => {
  it('is ro always, plus norecovery for journalled file systems on a read-only device', () => {
    expect(mountOptions('ext4', false)).toBe('ro');
    expect(mountOptions('ext4', true)).toBe('ro,norecovery');
    expect(mountOptions('xfs', true)).toBe('ro,norecovery');
    expect(mountOptions('vfat', true)).toBe('ro');
    expect(mountOptions('ext2', true)).toBe('ro');
  });
});

describe('isExtendedPartition', () => {
  it('recognises MBR container types only', () => {
    for (const t of ['5', 'f', 'F', '85', '0x5']) expect(isExtendedPartition('dos', t)).toBe(true);
    for (const t of ['83', '82', '7', 'c']) expect(isExtendedPartition('dos', t)).toBe(false);
    expect(isExtendedPartition('gpt', '5')).toBe(false);
  });
});

describe('planMounts', () => {
  const SIZE = 64 * 1024 * 1024;

  it('mounts the whole disk when it holds a file system', () => {
    expect(planMounts(SIZE, parseBlkidExport(EXT4_LABEL), null, new Map())).toEqual([
      { partition: null, offset: 0, size: SIZE, fstype: 'ext4' },
    ]);
  });

  it('lists every partition, skipping extended containers and marking what cannot be mounted', () => {
    const probes = new Map<number, Probe>([
      [1, parseBlkidExport(EXT4_LABEL)],
      [5, { TYPE: 'vfat', USAGE: 'filesystem' }],
      [6, parseBlkidExport(SWAP)],
    ]);
    const plan = planMounts(SIZE, parseBlkidExport(PT_ONLY), parseSfdiskJson(DOS_EXTENDED), probes);
    expect(plan).toEqual([
      { partition: 1, offset: 2048 * 512, size: 20480 * 512, fstype: 'ext4' },
      { partition: 5, offset: 24576 * 512, size: 20480 * 512, fstype: 'vfat' },
      { partition: 6, offset: 47104 * 512, size: 83968 * 512, fstype: 'swap', reason: 'swap (other), not a file system' },
    ]);
  });

  it('marks partitions without a probe result as not mountable', () => {
    const plan = planMounts(SIZE, {}, parseSfdiskJson(GPT), new Map([[1, parseBlkidExport(EXT4_LABEL)]]));
    expect(plan.map((e) => [e.partition, e.reason ?? 'mount'])).toEqual([
      [1, 'mount'],
      [2, 'no recognised file system'],
      [3, 'no recognised file system'],
    ]);
  });

  it('fails when there is neither a file system nor a partition table', () => {
    expect(() => planMounts(SIZE, {}, null, new Map())).toThrow(/no file system and no partition table/);
    expect(() => planMounts(SIZE, parseBlkidExport(SWAP), null, new Map())).toThrow(/swap/);
  });
});
