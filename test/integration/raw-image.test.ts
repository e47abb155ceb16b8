/**
 * Raw image data files (FORMAT.md §4: `-t raw` output, raw-format disks) are chain bases too: they
 * are mapped as they are, and an incremental stream on top of a raw base resolves correctly.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, readFileSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { startServer } from '../../src/daemon/nbdkit.js';
import { chainFromDir, resolveSelected } from '../../src/chain/index.js';
import { writeImageFile } from '../../src/devtools/image-chain.js';
import { isRawImageFile } from '../../src/chain/data-file.js';
import { prng } from '../../src/devtools/prng.js';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function readExport(uri: string, out: string): Promise<Buffer> {
  await execa('nbdcopy', [uri, out]);
  return readFileSync(out);
}

describe('raw image data files', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'virtnbd-raw-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test('a raw copy is served byte for byte, and an incremental stream on top of it resolves', async () => {
    const r = prng(42);
    const size = 4 * 1024 * 1024;
    const base = Buffer.alloc(size);
    for (let i = 0; i < 1024 * 1024; i++) base[i] = Math.floor(r() * 256);
    const set = join(dir, 'set');
    await execa('mkdir', ['-p', set]);
    writeFileSync(join(set, 'vdc.full.data'), base.subarray(0, 1024 * 1024));
    truncateSync(join(set, 'vdc.full.data'), size); // sparse tail, as the original writes raw images
    expect(isRawImageFile(join(set, 'vdc.full.data'))).toBe(true);

    // point 1: change 64 KiB in the middle and zero the first 4 KiB
    const next = Buffer.from(base);
    for (let i = 0; i < 65536; i++) next[2 * 1024 * 1024 + i] = 0x5a;
    next.fill(0, 0, 4096);
    const img0 = join(dir, 'img0');
    const img1 = join(dir, 'img1');
    writeFileSync(img0, base);
    writeFileSync(img1, next);
    await writeImageFile({
      image: img1, previous: img0, out: join(set, 'vdc.inc.virtnbdbackup.1.data'), dev: 'vdc', level: 'inc',
      checkpointName: 'virtnbdbackup.1', parentCheckpoint: 'virtnbdbackup.0', compress: false, blockSize: 4096,
    });

    for (const [until, want] of [['virtnbdbackup.0', base], [undefined, next]] as const) {
      // the raw base "creates" no metadata checkpoint; select point 0 by file name instead
      const chain = chainFromDir(set, { until: until ? 'vdc.full.data' : undefined });
      expect(resolveSelected(chain).map.size).toBe(size);
      const sock = join(dir, 'raw.sock');
      const server = await startServer({ files: chain.files.map((f) => f.path), socket: sock, exportName: 'vdc', readonly: true });
      try {
        expect(sha(await readExport(server.uri, join(dir, 'out.raw')))).toBe(sha(want));
      } finally {
        await server.stop();
      }
    }
  });
});
