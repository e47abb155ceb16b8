/** The upstream fixture sets (test/fixtures/upstream-sets, written by the original tool): paths and reference sums. */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const SETS = fileURLToPath(new URL('../fixtures/upstream-sets/', import.meta.url));

/** name → SHA-256 from a set's SHA256SUMS. */
export function sha256sums(set: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of readFileSync(join(SETS, set, 'SHA256SUMS'), 'utf8').split('\n')) {
    const [sum, name] = line.trim().split(/\s+/);
    if (sum && name) m.set(name, sum);
  }
  return m;
}

/** The Unix-time ident of the diff file of `disk` in directory `dir`. */
export function diffIdentIn(dir: string, disk: string): string {
  const n = readdirSync(dir).find((x) => new RegExp(`^${disk}\\.diff\\.\\d+\\.data$`).test(x));
  if (!n) throw new Error(`no diff file for ${disk} in ${dir}`);
  return n.split('.')[2]!;
}
