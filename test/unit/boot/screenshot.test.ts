/** PPM → PNG of verify screenshots (src/boot/screenshot.ts), checked by decoding the PNG again. */
import pngjs from 'pngjs';
import { encodePng, parsePpm, toPng } from '../../../src/boot/screenshot.js';

function ppm(header: string, data: number[]): Buffer {
  return Buffer.concat([Buffer.from(header, 'latin1'), Buffer.from(data)]);
}

test('P6 with comments; PNG decodes to the same pixels', () => {
  const pixels = [255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30, 40, 50, 60, 70, 80, 90];
  const img = parsePpm(ppm('P6\n# made by qemu\n3 2\n255\n', pixels));
  expect([img.width, img.height]).toEqual([3, 2]);
  const png = toPng(ppm('P6 3 2 255\n', pixels));
  const back = pngjs.PNG.sync.read(png);
  expect([back.width, back.height]).toEqual([3, 2]);
  const rgb: number[] = [];
  for (let i = 0; i < back.data.length; i += 4) rgb.push(back.data[i]!, back.data[i + 1]!, back.data[i + 2]!);
  expect(rgb).toEqual(pixels);
  expect(encodePng(img).equals(png)).toBe(true);
});

test('maxval below 255 is scaled; data that happens to start with whitespace bytes is kept', () => {
  const img = parsePpm(ppm('P6\n1 2\n15\n', [32, 0, 15, 15, 15, 15].map((v) => Math.min(v, 15))));
  expect([...img.rgb]).toEqual([255, 0, 255, 255, 255, 255]);
  const ws = parsePpm(ppm('P6\n1 1\n255\n', [0x20, 0x0a, 0x09]));
  expect([...ws.rgb]).toEqual([0x20, 0x0a, 0x09]);
});

test('PNG input passes through; anything else is refused', () => {
  const png = toPng(ppm('P6 1 1 255\n', [1, 2, 3]));
  expect(toPng(png)).toBe(png);
  expect(() => toPng(Buffer.from('P3\n1 1\n255\n1 2 3\n'))).toThrow(/not a binary PPM/);
  expect(() => toPng(Buffer.from('P6\n0 1\n255\n'))).toThrow(/bad PPM size/);
  expect(() => toPng(Buffer.from('P6\n1 1\n65535\n'))).toThrow(/maxval/);
  expect(() => toPng(ppm('P6\n2 2\n255\n', [1, 2, 3]))).toThrow(/truncated/);
});
