/**
 * libvirt side of a restore's configuration output (BEHAVIOUR.md §11.7, after the adjusted XML
 * was written): `-D/--define` defines the domain from the adjusted XML and, when the set holds an
 * `autostart.*` file, marks it autostart; the storage pool whose target path is the output
 * directory is refreshed so that libvirt sees the new images (remote restores: the remote libvirt
 * and the remote path).
 */
import { realpath } from 'node:fs/promises';
import { posix, resolve } from 'node:path';
import type { Logger } from '../log/logger.js';
import type { StoragePoolInfo, VirtConnection, VirtDomain } from '../virt/client.js';
import { errorMessage } from '../util/error-message.js';

export interface DefineOptions {
  /** Mark the new domain autostart (the set has an `autostart.<ident>` file). */
  autostart: boolean;
}

/**
 * Define the (persistent, not started) domain from `xml`. Rejects with
 * `Failed to define domain: [<reason>]` when libvirt refuses it (the caller logs it, exit 1).
 * A failure to set autostart is logged as an error; the defined domain is still returned.
 */
export async function defineRestored(conn: VirtConnection, xml: string, opts: DefineOptions, log: Logger): Promise<VirtDomain> {
  let dom: VirtDomain;
  try {
    dom = await conn.defineXML(xml);
  } catch (e) {
    throw new Error(`Failed to define domain: [${errorMessage(e)}]`);
  }
  const name = dom.name;
  log.info(`Defined domain [${name}]`);
  if (opts.autostart) {
    try {
      await dom.setAutostart(true);
      log.info(`Marked domain [${name}] for autostart`);
    } catch (e) {
      log.error(`Failed to set autostart for domain [${name}]: [${errorMessage(e)}]`);
    }
  }
  return dom;
}

async function localRealOrSelf(p: string): Promise<string> {
  try {
    return await realpath(p);
  } catch {
    return p;
  }
}

/**
 * Refresh the active storage pool(s) whose target path is `outputDir` (compared as absolute
 * paths, and after resolving symlinks where both exist locally). Warning when there is none or
 * the refresh fails; an inactive matching pool is left alone (INFO: it scans when started).
 * Returns the names of the refreshed pools.
 */
export async function refreshPoolFor(conn: VirtConnection, outputDir: string, log: Logger, opts: { remote?: boolean } = {}): Promise<string[]> {
  // Remote (§11.9): the paths are the remote host's; symlinks cannot be resolved here.
  const realOrSelf = opts.remote === true ? async (p: string): Promise<string> => p : localRealOrSelf;
  const dir = opts.remote === true ? posix.resolve('/', outputDir) : resolve(outputDir);
  let pools: StoragePoolInfo[];
  try {
    pools = await conn.storagePools();
  } catch (e) {
    log.warn(`Unable to list storage pools, not refreshing the pool of [${dir}]: [${errorMessage(e)}]`);
    return [];
  }
  const realDir = await realOrSelf(dir);
  const matching: StoragePoolInfo[] = [];
  for (const p of pools) {
    if (p.targetPath === undefined) continue;
    const target = opts.remote === true ? posix.resolve('/', p.targetPath) : resolve(p.targetPath);
    if (target === dir || (await realOrSelf(target)) === realDir) matching.push(p);
  }
  if (matching.length === 0) {
    log.warn(`No storage pool with target path [${dir}] found, not refreshing.`);
    return [];
  }
  const refreshed: string[] = [];
  for (const p of matching) {
    if (!p.active) {
      log.info(`Storage pool [${p.name}] of [${dir}] is not active, not refreshing it.`);
      continue;
    }
    try {
      await conn.refreshStoragePool(p.name);
      log.info(`Refreshed storage pool [${p.name}]`);
      refreshed.push(p.name);
    } catch (e) {
      log.warn(`Failed to refresh storage pool [${p.name}]: [${errorMessage(e)}]`);
    }
  }
  return refreshed;
}
