/**
 * SHA-256 of a backup point as our plugin serves it: resolve the chain of one disk from a backup
 * directory (newest point or `until`), serve it read-only with nbdkit + the virtnbd plugin on a
 * unix socket, copy the whole export with nbdcopy to a pipe and hash it.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { chainFromDir } from '../../src/chain/index.js';
import { startServer } from '../../src/daemon/nbdkit.js';

export async function nbdcopySha(uri: string): Promise<string> {
  const h = createHash('sha256');
  const p = execa('nbdcopy', [uri, '-'], { reject: false, buffer: { stdout: false, stderr: true }, stdin: 'ignore' });
  p.stdout!.on('data', (c: Buffer) => h.update(c));
  const r = await p;
  if (r.exitCode !== 0 || r.stderr !== '') throw new Error(`nbdcopy ${uri} failed (${r.exitCode}): ${r.stderr}`);
  return h.digest('hex');
}

/** The files of the chain and the SHA-256 of the disk at that point. */
export async function chainSha(dir: string, disk: string, until?: string): Promise<{ sha: string; files: string[] }> {
  const chain = chainFromDir(dir, { disk, until });
  const files = chain.files.map((f) => f.path);
  const tmp = mkdtempSync(join(tmpdir(), 'virtnbd-mapsha-'));
  const srv = await startServer({ files, socket: join(tmp, 'sock'), exportName: disk, readonly: true });
  try {
    return { sha: await nbdcopySha(srv.uri), files };
  } finally {
    await srv.stop();
    rmSync(tmp, { recursive: true, force: true });
  }
}

export async function fileSha(path: string): Promise<string> {
  const h = createHash('sha256');
  const { createReadStream } = await import('node:fs');
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return h.digest('hex');
}
