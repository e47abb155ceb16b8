/**
 * Raw image output (FORMAT.md §4): `-t raw` and raw-format disks. The file is `<final>.partial`,
 * truncated to the virtual size, data written at its guest offsets (holes stay holes), fsynced and
 * published under its final name without ever replacing an existing file.
 */
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { publishNoReplace, syncDir } from '../util/atomic-file.js';

export class RawImageWriter {
  private done = false;
  private written = 0;

  private constructor(
    readonly finalPath: string,
    private readonly fh: FileHandle,
  ) {}

  get partialPath(): string {
    return `${this.finalPath}.partial`;
  }

  static async create(finalPath: string, virtualSize: number): Promise<RawImageWriter> {
    const fh = await open(`${finalPath}.partial`, 'wx', 0o600);
    try {
      await fh.truncate(virtualSize);
    } catch (e) {
      await fh.close().catch(() => undefined);
      await unlink(`${finalPath}.partial`).catch(() => undefined);
      throw e;
    }
    return new RawImageWriter(finalPath, fh);
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    let done = 0;
    while (done < buf.length) {
      const { bytesWritten } = await this.fh.write(buf, done, buf.length - done, offset + done);
      if (bytesWritten <= 0) throw new Error(`short write to ${this.partialPath} at offset ${offset + done}`);
      done += bytesWritten;
    }
    this.written += buf.length;
  }

  /** fsync, close, publish; returns the bytes of data written. */
  async finish(): Promise<{ path: string; bytes: number }> {
    await this.fh.sync();
    await this.fh.close();
    this.done = true;
    await publishNoReplace(this.partialPath, this.finalPath);
    await syncDir(dirname(this.finalPath));
    return { path: this.finalPath, bytes: this.written };
  }

  /** Close and remove the partial file (after an error). */
  async abort(): Promise<void> {
    if (!this.done) {
      this.done = true;
      await this.fh.close().catch(() => undefined);
    }
    await unlink(this.partialPath).catch(() => undefined);
  }
}
