/**
 * Screenshot of a running domain as PNG (`--verify --screenshot FILE.png`, issue 12).
 *
 * libvirt's virDomainScreenshot (here through `virsh screenshot`, which streams it into a file)
 * gives what qemu's screendump writes: a binary PPM (P6) on the qemu versions we run on, PNG on
 * newer ones. PPM is converted in-process with pngjs (a small, dependency-free, widely used
 * encoder); PNG is kept as it is.
 */
import { readFileSync, rmSync, writeFileSync, renameSync } from 'node:fs';
import { execa } from 'execa';
import pngjs from 'pngjs';

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

export interface Pixmap {
  width: number;
  height: number;
  /** RGB, 8 bits per sample, row by row. */
  rgb: Buffer;
}

/** Parse a binary PPM (P6, maxval ≤ 255; comments allowed in the header). Throws on anything else. */
export function parsePpm(buf: Buffer): Pixmap {
  let pos = 0;
  const token = (): string => {
    for (;;) {
      while (pos < buf.length && /\s/.test(String.fromCharCode(buf[pos]!))) pos++;
      if (buf[pos] === 0x23) {
        while (pos < buf.length && buf[pos] !== 0x0a) pos++;
        continue;
      }
      break;
    }
    const start = pos;
    while (pos < buf.length && !/\s/.test(String.fromCharCode(buf[pos]!))) pos++;
    return buf.toString('latin1', start, pos);
  };
  if (token() !== 'P6') throw new Error('screenshot: not a binary PPM (P6) image');
  const width = Number(token());
  const height = Number(token());
  const maxval = Number(token());
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0 || width > 65535 || height > 65535)
    throw new Error(`screenshot: bad PPM size ${width}×${height}`);
  if (!Number.isInteger(maxval) || maxval <= 0 || maxval > 255) throw new Error(`screenshot: unsupported PPM maxval ${maxval}`);
  pos++; // the single whitespace after maxval
  const need = width * height * 3;
  if (buf.length - pos < need) throw new Error(`screenshot: PPM data truncated (${buf.length - pos} of ${need} bytes)`);
  let rgb = buf.subarray(pos, pos + need);
  if (maxval !== 255) rgb = Buffer.from(rgb.map((v) => Math.round((v * 255) / maxval)));
  return { width, height, rgb };
}

/** PNG (8-bit RGB) of a pixmap. */
export function encodePng(p: Pixmap): Buffer {
  const png = new pngjs.PNG({ width: p.width, height: p.height, colorType: 2, inputColorType: 2, inputHasAlpha: false });
  p.rgb.copy(png.data);
  return pngjs.PNG.sync.write(png, { colorType: 2, inputColorType: 2, inputHasAlpha: false });
}

/** PPM or PNG bytes → PNG bytes. */
export function toPng(image: Buffer): Buffer {
  if (image.subarray(0, 8).equals(PNG_SIGNATURE)) return image;
  return encodePng(parsePpm(image));
}

/** Screenshot of domain `name` (screen 0) into `dest` as PNG; written to `dest.partial` first. */
export async function screenshotPng(uri: string, name: string, dest: string): Promise<{ width: number; height: number }> {
  const raw = `${dest}.screendump`;
  try {
    const r = await execa('virsh', ['-c', uri, 'screenshot', name, '--file', raw, '--screen', '0'], { reject: false, timeout: 60_000 });
    if (r.exitCode !== 0) throw new Error(`virsh screenshot failed: ${String(r.stderr).trim() || `exit ${r.exitCode}`}`);
    const png = toPng(readFileSync(raw));
    writeFileSync(`${dest}.partial`, png);
    renameSync(`${dest}.partial`, dest);
    return { width: png.readUInt32BE(16), height: png.readUInt32BE(20) };
  } finally {
    rmSync(raw, { force: true });
    rmSync(`${dest}.partial`, { force: true });
  }
}
