/** Locate files of the installed package (native addon, plugin .so, worker script). */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

/** The directory holding our package.json, found by walking up from this module. */
export function packageRoot(): string {
  if (cached) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'binding.gyp'))) return (cached = dir);
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot locate the virtnbd package root (package.json + binding.gyp)');
    dir = up;
  }
}

/** The nbdkit plugin shim built by binding.gyp. */
export function pluginPath(): string {
  return join(packageRoot(), 'build', 'Release', 'nbdkit-virtnbd-plugin.so');
}

/** The compiled Node worker the plugin starts. */
export function workerPath(): string {
  return join(packageRoot(), 'dist', 'src', 'worker', 'worker.js');
}
