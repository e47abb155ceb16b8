/**
 * The fuzz targets: everything that parses a file a user may be handed (fuzz/README.md).
 * File-based parsers get the input written to a private scratch directory first.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseCheckpointXml } from '../src/backup/checkpoints.js';
import { CheckpointError, readCptFile } from '../src/backup/cpt-file.js';
import { parseDomainXml } from '../src/xml/domain-xml.js';
import { bootDomainXml } from '../src/boot/boot-config.js';
import { discoverBackupDir, resolveSelected, chainFromSet, ChainError } from '../src/chain/index.js';
import { resolveChain } from '../src/chain/resolve.js';
import { createLogger, type Logger } from '../src/log/logger.js';
import { adjustConfig } from '../src/restore/adjust-config.js';
import { RestoreInputError } from '../src/restore/dump-files.js';
import { dumpSet } from '../src/restore/dump.js';
import { readQcowJson } from '../src/restore/target-image.js';
import { verifySet } from '../src/restore/verify.js';
import { verifyStreamFile } from '../src/restore/verify-stream.js';
import { indexSaveset } from '../src/saveset/reader.js';
import { SavesetFormatError, type Metadata } from '../src/saveset/types.js';
import { SavesetWriter } from '../src/saveset/writer.js';
import { packageRoot } from '../src/util/package-root.js';
import type { FuzzTarget } from './engine.js';

const ROOT = packageRoot();
const FIXTURES = join(ROOT, 'test', 'fixtures', 'upstream-sets');

let scratchDir: string | undefined;
/** A private scratch directory (tmpfs when there is one). */
export function scratch(): string {
  if (scratchDir === undefined) {
    let base = tmpdir();
    try {
      readdirSync('/dev/shm');
      base = '/dev/shm';
    } catch {
      /* no tmpfs */
    }
    scratchDir = mkdtempSync(join(base, `virtnbd-fuzz-${process.pid}-`));
  }
  return scratchDir;
}

export function cleanScratch(): void {
  if (scratchDir !== undefined) rmSync(scratchDir, { recursive: true, force: true });
  scratchDir = undefined;
}

const quietLog = (): Logger => createLogger({ stderr: false, color: false, verbose: true });

const fixture = (rel: string): Buffer => readFileSync(join(FIXTURES, rel));

const meta = (over: Partial<Metadata>): Metadata => ({
  virtualSize: 65536,
  dataSize: 0,
  date: '2026-01-01T00:00:00',
  diskName: 'vda',
  diskFormat: 'qcow2',
  checkpointName: 'virtnbdbackup.0',
  compressed: false,
  compressionMethod: 'lz4',
  parentCheckpoint: '',
  incremental: false,
  streamVersion: 2,
  ...over,
});

/** Small valid streams made with our writer (uncompressed and LZ4), plus cut fixture heads. */
async function streamSeeds(): Promise<Buffer[]> {
  const dir = join(scratch(), 'seeds');
  mkdirSync(dir, { recursive: true });
  const out: Buffer[] = [];
  const payload = Buffer.alloc(4096);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 31) & 0xff;
  for (const compress of [false, 2] as const) {
    for (const [n, incremental] of [
      [0, false],
      [1, true],
    ] as const) {
      const p = join(dir, `s${n}-${compress}.data`);
      const w = await SavesetWriter.create(
        p,
        meta({ dataSize: 4096 + 512, compressed: compress, incremental, checkpointName: `virtnbdbackup.${n}`, parentCheckpoint: n ? 'virtnbdbackup.0' : '' }),
        { compress, fsync: false },
      );
      await w.data(0, payload);
      await w.zero(8192, 8192);
      await w.data(20480, payload.subarray(0, 512));
      await w.finish();
      out.push(readFileSync(p));
    }
  }
  // the upstream files' own metadata and first frames (cut: no longer valid, but real)
  for (const f of ['d2/backup/sdb.inc.virtnbdbackup.2.data', 'd1/backup/sdb.inc.virtnbdbackup.2.data', 'd2/backup/vda.diff.1795884529.data']) {
    out.push(fixture(f).subarray(0, 2048));
  }
  return out;
}

const STREAM_DICT = ['meta ', 'data ', 'zero ', 'stop ', 'comp ', '\r\n', '0000000000000000', '"virtualSize": ', '"dataSize": ', '"compressed": ', '"streamVersion": 2', '"stream-version": 1', '"incremental": ', 'true', 'false', '"compressionMethod": "lz4"', '\x04\x22\x4d\x18', '\x00\x00\x00\x00', '[', ']', '{', '}', '": [', ','];

/** True when `e` is a SavesetFormatError naming `file` and an offset within the file (or at its end). */
function isFormatError(e: unknown, file: string, size: number): boolean {
  return e instanceof SavesetFormatError && e.file === file && Number.isSafeInteger(e.offset) && e.offset >= 0 && e.offset <= size && e.message.includes(file);
}

function writeInput(name: string, data: Buffer): string {
  const p = join(scratch(), name);
  writeFileSync(p, data);
  return p;
}

/** The saveset indexer (and, for accepted streams, the resolver on the single-file chain). */
const savesetIndex: FuzzTarget = {
  name: 'saveset-index',
  what: 'src/saveset/reader.ts indexSaveset + src/chain/resolve.ts',
  seeds: () => [],
  dict: STREAM_DICT,
  maxLen: 64 * 1024,
  run(data) {
    const p = writeInput('vda.full.data', data);
    let ix;
    try {
      ix = indexSaveset(p);
    } catch (e) {
      if (isFormatError(e, p, data.length)) throw new Rejection();
      throw e;
    }
    for (const f of ix.frames) {
      if (f.start + f.length > ix.metadata.virtualSize) throw new Error(`accepted a frame past the virtual size: ${JSON.stringify(f)}`);
      if (f.kind === 'data' && f.payloadOffset + f.payloadSize > data.length) throw new Error(`accepted a payload past the end of the file: ${JSON.stringify(f)}`);
    }
    resolveChain([ix]);
  },
  isRejection: (e) => e instanceof Rejection,
};

/** `-o verify` of one stream: never throws; every problem has an offset inside the file. */
const verifyStream: FuzzTarget = {
  name: 'verify-stream',
  what: 'src/restore/verify-stream.ts verifyStreamFile',
  seeds: () => [],
  dict: STREAM_DICT,
  maxLen: 64 * 1024,
  async run(data) {
    const p = writeInput('vda.full.data', data);
    const r = await verifyStreamFile(p, { expectDev: 'vda', readSize: 4096 });
    for (const pr of r.problems) {
      if (pr.offset === undefined || pr.offset < 0 || pr.offset > data.length) throw new Error(`problem without an offset in the file: ${JSON.stringify(pr)}`);
    }
    if (r.checksum === undefined) throw new Error('no checksum for a readable file');
  },
  isRejection: () => false,
};

class Rejection extends Error {}

/**
 * A backup directory of fuzzed names and contents: the input is a list of entries
 * `\n@@<name>\n<content>`. Names that are not plain file names are dropped (the scratch
 * directory must stay the only place written to).
 */
function unpackDir(data: Buffer, dir: string): number {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const text = data.toString('latin1');
  let n = 0;
  for (const part of text.split('\n@@').slice(1)) {
    const nl = part.indexOf('\n');
    const name = nl < 0 ? part : part.slice(0, nl);
    if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0') || name.length > 200) continue;
    try {
      writeFileSync(join(dir, name), Buffer.from(nl < 0 ? '' : part.slice(nl + 1), 'latin1'), { flag: 'wx' });
      n++;
    } catch {
      /* duplicate name */
    }
  }
  return n;
}

export function packDir(files: Array<[string, Buffer]>): Buffer {
  return Buffer.concat(files.flatMap(([n, c]) => [Buffer.from(`\n@@${n}\n`, 'latin1'), c]));
}

/** Small valid sets: a full and an incremental of one disk, with chksum, cpt and vmconfig. */
async function setSeeds(s: Buffer[]): Promise<Buffer[]> {
  return [
    packDir([
      ['vda.full.data', s[0]!],
      ['vda.inc.virtnbdbackup.1.data', s[1]!],
      ['vda.full.data.chksum', Buffer.from('12345')],
      ['fx.cpt', Buffer.from('["virtnbdbackup.0", "virtnbdbackup.1"]')],
    ]),
    packDir([
      ['sda.copy.data', s[2]!],
      ['sda.diff.1795884529.data', s[3]!],
      ['sdb.full.data.partial', Buffer.from('x')],
    ]),
  ];
}

const SET_DICT = ['\n@@', '.full.data', '.copy.data', '.inc.virtnbdbackup.', '.diff.', '.data', '.partial', '.chksum', 'vda', 'sdb', '..', ...STREAM_DICT];

const isSetRejection = (e: unknown): boolean =>
  e instanceof Rejection || e instanceof ChainError || e instanceof RestoreInputError || e instanceof SavesetFormatError || (e instanceof Error && /: not a data file name|metadata names disk/.test(e.message));

/** Discovery, chain selection and resolution, `-o dump` and `-o verify` on a fuzzed directory. */
const chainSet: FuzzTarget = {
  name: 'chain-dir',
  what: 'src/chain (discover, order, resolve), src/restore/dump.ts, src/restore/verify.ts on a directory',
  seeds: () => [],
  dict: SET_DICT,
  maxLen: 64 * 1024,
  async run(data) {
    const dir = join(scratch(), 'set');
    if (unpackDir(data, dir) === 0) throw new Rejection();
    const log = quietLog();
    await dumpSet(dir, {}, log).catch((e: unknown) => {
      if (!(e instanceof RestoreInputError)) throw e;
    });
    await verifySet(dir, {}, log).catch((e: unknown) => {
      if (!(e instanceof RestoreInputError)) throw e;
    });
    const set = discoverBackupDir(dir);
    for (const dev of set.disks.keys()) {
      resolveSelected(chainFromSet(set, { disk: dev }));
    }
  },
  isRejection: isSetRejection,
};

/** `<domain>.cpt` and the checkpoint XML files of `checkpoints/`. */
const checkpointFiles: FuzzTarget = {
  name: 'checkpoint-files',
  what: 'src/backup/cpt-file.ts readCptFile, src/backup/checkpoints.ts parseCheckpointXml',
  seeds: () => [
    fixture('d2/backup/fx418065.cpt'),
    Buffer.from('["virtnbdbackup.0"]'),
    fixture('d2/backup/checkpoints/virtnbdbackup.1.xml'),
    Buffer.from('<domaincheckpoint><name>virtnbdbackup.1</name><parent><name>virtnbdbackup.0</name></parent></domaincheckpoint>'),
  ],
  dict: ['virtnbdbackup.', '"', ', ', '[', ']', '<domaincheckpoint>', '</domaincheckpoint>', '<name>', '</name>', '<parent>', '&amp;', '&#x41;', '<![CDATA[', ']]>', '<!--', '-->', '<?xml version="1.0"?>'],
  maxLen: 16 * 1024,
  async run(data) {
    const p = writeInput('dom.cpt', data);
    let rejected = 0;
    try {
      const names = await readCptFile(p);
      for (const n of names) if (!/^virtnbdbackup\.[0-9]+$/.test(n)) throw new Error(`accepted checkpoint name ${JSON.stringify(n)}`);
    } catch (e) {
      if (!(e instanceof CheckpointError) || !e.message.includes(p)) throw e;
      rejected++;
    }
    try {
      parseCheckpointXml(data.toString('utf8'));
    } catch (e) {
      if (!(e instanceof Error) || e.constructor !== Error || !/not well-formed XML|single <domaincheckpoint>|has no <name>/.test(e.message)) throw e;
      rejected++;
    }
    if (rejected === 2) throw new Rejection();
  },
  isRejection: (e) => e instanceof Rejection,
};

/** `*.qcow.json`: never throws, never keeps a data-file path that is not a plain name. */
const qcowJson: FuzzTarget = {
  name: 'qcow-json',
  what: 'src/restore/target-image.ts readQcowJson',
  seeds: () => [fixture('d2/backup/sdb.virtnbdbackup.0.qcow.json'), fixture('d2/backup/vda.1795884529.qcow.json'), Buffer.from('{"cluster-size": 65536, "format-specific": {"type": "qcow2", "data": {"compat": "1.1", "data-file": "x.raw", "data-file-raw": true}}}')],
  dict: ['"cluster-size": ', '"format-specific": ', '"data": ', '"compat": "1.1"', '"data-file": "', '../', '/', '"lazy-refcounts": true', '"compression-type": "zstd"', '"extended-l2": ', '"data-file-raw": true', '65536', '1e400', '-0'],
  maxLen: 16 * 1024,
  async run(data) {
    const p = writeInput('vda.virtnbdbackup.0.qcow.json', data);
    const o = await readQcowJson(p, () => undefined);
    if (o.dataFile !== undefined && (o.dataFile.includes('/') || o.dataFile === '..' || o.dataFile === '.')) throw new Error(`data-file ${o.dataFile} is not a plain name`);
  },
  isRejection: () => false,
};

/** vmconfig XML as `--boot` and `-c` (restore) use it. */
const vmconfig: FuzzTarget = {
  name: 'vmconfig-xml',
  what: 'src/xml/domain-xml.ts parseDomainXml, src/boot/boot-config.ts bootDomainXml, src/restore/adjust-config.ts adjustConfig',
  seeds: () => [fixture('d2/backup/vmconfig.virtnbdbackup.0.xml').subarray(0, 4096)],
  dict: ['<disk type="file" device="disk">', '</disk>', '<target dev="vda" bus="virtio"/>', '<source file="/x/../y"/>', '<driver name="qemu" type="qcow2"/>', '<backingStore/>', '<dataStore type="file"><source file="d.raw"/></dataStore>', '<os><kernel>/boot/k</kernel><initrd>../i</initrd><loader>/l</loader><nvram>/n</nvram></os>', '<serial type="file"><source path="/var/log/x"/></serial>', '<name>', '</name>', '<uuid>', '&amp;', '&#0;', '<![CDATA[', '<!--', 'device="lun"', 'type="volume"', '<source pool="p" volume="../v"/>'],
  maxLen: 16 * 1024,
  run(data) {
    const xml = data.toString('utf8');
    const log = quietLog();
    let cfg;
    try {
      cfg = parseDomainXml(xml);
    } catch (e) {
      if (e instanceof Error && e.constructor === Error && /^Invalid domain XML|^Unable to parse/.test(e.message)) throw new Rejection();
      throw e;
    }
    const devs = cfg.disks.map((d) => d.dev);
    const out = join(scratch(), 'out');
    const runDir = join(scratch(), 'run');
    const restored = new Map(devs.map((d) => [d, join(out, `${d}.qcow2`)]));
    adjustConfig(xml, { restored, keepRaw: false, outputDir: out, name: 'restored' }, log);
    const disks = new Map(devs.map((d) => [d, { kind: 'nbd' as const, socket: join(runDir, `${d}.sock`), exportName: d }]));
    const { consoleLogs } = bootDomainXml(xml, { name: 'boot', disks, bootFiles: new Map(), runDir }, log);
    for (const c of consoleLogs) {
      if (!resolve(c).startsWith(runDir + '/')) throw new Error(`console log ${c} outside the run directory`);
    }
  },
  isRejection: (e) => e instanceof Rejection || (e instanceof Error && e.constructor === Error && /^Invalid domain XML/.test(e.message)),
};

export const TARGETS: FuzzTarget[] = [savesetIndex, verifyStream, chainSet, checkpointFiles, qcowJson, vmconfig];

/** Seeds that need the writer (async) are filled in here. */
export async function prepareSeeds(): Promise<void> {
  const streams = await streamSeeds();
  savesetIndex.seeds = () => [...streams];
  verifyStream.seeds = () => [...streams];
  const sets = await setSeeds(streams);
  chainSet.seeds = () => [...sets];
}
