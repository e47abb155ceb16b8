/** Our version number (printed by -V/--version), read from the package's package.json. */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

/**
 * The `version` of the nearest package.json named "virtnbd" above `startDir` (default: this
 * module's directory). Falls back to the nearest package.json with any version, then "0.0.0".
 */
export function packageVersion(startDir?: string): string {
  if (startDir === undefined && cached !== undefined) return cached;
  let dir = startDir ?? dirname(fileURLToPath(import.meta.url));
  let fallback: string | undefined;
  for (;;) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) {
      try {
        const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: unknown; version?: unknown };
        if (typeof pkg.version === 'string') {
          if (pkg.name === 'virtnbd') return remember(pkg.version, startDir);
          fallback ??= pkg.version;
        }
      } catch {
        // unreadable or invalid package.json: keep walking up
      }
    }
    const up = dirname(dir);
    if (up === dir) return remember(fallback ?? '0.0.0', startDir);
    dir = up;
  }
}

function remember(v: string, startDir: string | undefined): string {
  if (startDir === undefined) cached = v;
  return v;
}
