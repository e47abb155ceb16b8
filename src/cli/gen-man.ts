/**
 * `npm run build:man`: write man/<command>.1 for every command of src/cli/specs.ts
 * (node dist/src/cli/gen-man.js [OUTDIR]). The pages are build output, not committed: the specs
 * are the one source (docs/CLI.md §5). The footer date is SOURCE_DATE_EPOCH when set (reproducible
 * builds), else today.
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../util/package-root.js';
import { packageVersion } from './version.js';
import { manSpecs, renderManPage } from './man-page.js';

export function manDate(env: NodeJS.ProcessEnv = process.env): string {
  const epoch = env.SOURCE_DATE_EPOCH;
  const d = epoch && /^\d+$/.test(epoch) ? new Date(Number(epoch) * 1000) : new Date();
  return d.toISOString().slice(0, 10);
}

/** Write every page into `dir`; returns the paths written. */
export function writeManPages(dir: string, date = manDate()): string[] {
  mkdirSync(dir, { recursive: true });
  const out: string[] = [];
  for (const m of manSpecs()) {
    const path = join(dir, `${m.prog}.1`);
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, renderManPage(m, { date, version: packageVersion() }));
    renameSync(tmp, path);
    out.push(path);
  }
  return out;
}

const isMain = process.argv[1] !== undefined && /gen-man\.js$/.test(process.argv[1]);
if (isMain) {
  const dir = process.argv[2] ?? join(packageRoot(), 'man');
  for (const p of writeManPages(dir)) process.stdout.write(`${p}\n`);
}
