/**
 * The README's demo: build an ext4 disk image holding a text file, back it up with our writer as a
 * full + incremental chain (uncompressed and compressed), map every point with virtnbdmap, read the
 * file out of the mapped export through nbdfuse and print what each point holds. Cleans up after
 * itself; exits 1 if any point shows the wrong content.
 */
import { mkdtempSync, mkdirSync, writeFileSync, copyFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { writeImageChain } from './image-chain.js';
import { packageRoot } from '../util/package-root.js';

const say = (s: string): void => void process.stdout.write(s + '\n');

async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

/** Replace /hello.txt in an ext4 image without mounting it (debugfs). */
async function setFile(image: string, dir: string, text: string): Promise<void> {
  const src = join(dir, 'hello.src');
  writeFileSync(src, text);
  await execa('debugfs', ['-w', '-R', 'rm hello.txt', image]);
  await execa('debugfs', ['-w', '-R', `write ${src} hello.txt`, image]);
}

/** Map one point, expose it as a file with nbdfuse, read /hello.txt with debugfs. */
async function readPoint(set: string, until: string | undefined, work: string): Promise<string> {
  const sock = join(work, 'map.sock');
  const args = [join(packageRoot(), 'bin', 'virtnbdmap'), '-i', set, '--disk', 'vda', '--socket', sock, '--json', '--no-device', '-L', join(work, 'virtnbdmap.log')];
  if (until) args.push('--until', until);
  const map = execa(process.execPath, args, { stdout: 'pipe', stderr: 'pipe', reject: false });
  const info = await new Promise<{ uri: string }>((resolve, reject) => {
    let buf = '';
    map.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(buf.slice(0, nl)));
    });
    void map.then((r) => reject(new Error(`virtnbdmap exited early (${r.exitCode}):\n${String(r.stderr)}`)));
  });
  const fuseDir = join(work, 'fuse');
  mkdirSync(fuseDir, { recursive: true });
  const fuse = execa('nbdfuse', ['-r', join(fuseDir, 'disk'), '--unix', sock], { reject: false, forceKillAfterDelay: 5000 });
  try {
    for (let i = 0; i < 100 && !existsSync(join(fuseDir, 'disk')); i++) await sleep(50);
    const r = await execa('debugfs', ['-R', 'cat /hello.txt', join(fuseDir, 'disk')], { stderr: 'ignore', timeout: 30_000 });
    say(`  served at ${info.uri}`);
    return r.stdout.trim();
  } finally {
    await execa('fusermount3', ['-u', fuseDir], { reject: false, timeout: 10_000 });
    fuse.kill('SIGTERM');
    await fuse;
    map.kill('SIGTERM');
    const r = await map;
    if (r.exitCode !== 0) throw new Error(`virtnbdmap exited with ${r.exitCode}:\n${String(r.stderr)}`);
  }
}

async function main(): Promise<number> {
  const work = mkdtempSync(join(tmpdir(), 'virtnbd-demo-'));
  try {
    const root = join(work, 'root');
    mkdirSync(root);
    writeFileSync(join(root, 'hello.txt'), 'Hello from backup point 0 (the full backup)\n');
    const img0 = join(work, 'disk0.img');
    const img1 = join(work, 'disk1.img');
    await execa('mkfs.ext4', ['-q', '-F', '-d', root, img0, '64M']);
    copyFileSync(img0, img1);
    await setFile(img1, work, 'Hello from backup point 1 (an incremental backup)\n');
    say(`Demo disk: 64 MiB ext4 image with /hello.txt, changed between two backups (in ${work})`);
    let ok = true;
    for (const compress of [false, 2] as const) {
      const set = join(work, compress ? 'set-lz4' : 'set');
      mkdirSync(set);
      const files = await writeImageChain(set, 'vda', [{ image: img0, level: 'full' }, { image: img1, level: 'inc' }], compress);
      say(`\nBackup set ${set} (${compress ? 'LZ4-compressed' : 'uncompressed'}): ${files.join(', ')}`);
      for (const [until, want] of [['virtnbdbackup.0', 'point 0'], [undefined, 'point 1']] as const) {
        say(`virtnbdmap -i ${set} --disk vda${until ? ` --until ${until}` : ''}`);
        const text = await readPoint(set, until, work);
        const good = text.includes(want);
        ok &&= good;
        say(`  /hello.txt: "${text}" ${good ? '✓' : `✗ (expected ${want})`}`);
      }
    }
    say(ok ? '\nDemo finished: every point served the file content it was backed up with.' : '\nDemo FAILED');
    return ok ? 0 : 1;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    process.stderr.write(`demo failed: ${err.message}\n`);
    process.exit(1);
  },
);
