/** The name of a VM booted from a backup: the user's, or `restore_<original>` made unique. */
import type { VirtConnection } from '../virt/client.js';
import { VIR_ERR } from '../virt/client.js';

async function exists(conn: VirtConnection, name: string): Promise<boolean> {
  try {
    await conn.lookupByName(name);
    return true;
  } catch (e) {
    if ((e as { code?: number }).code === VIR_ERR.NO_DOMAIN) return false;
    throw e;
  }
}

/** `wanted` must be free (error otherwise); without it, `restore_<original>`, `_2`, `_3`, … */
export async function bootDomainName(conn: VirtConnection, original: string, wanted?: string): Promise<string> {
  if (wanted !== undefined) {
    if (await exists(conn, wanted)) throw new Error(`A domain named [${wanted}] exists already: choose another --name.`);
    return wanted;
  }
  const base = original.startsWith('restore') ? original : `restore_${original}`;
  for (let i = 1; i < 1000; i++) {
    const name = i === 1 ? base : `${base}_${i}`;
    if (!(await exists(conn, name))) return name;
  }
  throw new Error(`No free domain name like [${base}_N]: give one with --name.`);
}
