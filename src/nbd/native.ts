/**
 * Loads the native addon (build/Release/virtnbd_native.node, built by `npm run build:native`)
 * and describes the part of it that binds libnbd. Only src/nbd/client.ts uses this.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { packageRoot } from '../util/package-root.js';

export interface NativeConnectOptions {
  /** Meta contexts to request before connecting, e.g. ['base:allocation', 'qemu:dirty-bitmap:backup-sda']. */
  metaContexts?: string[];
  /** Only with a unix socket path as target; with a URI, the export name is the URI's path. */
  exportName?: string;
  tls?: 'disable' | 'allow' | 'require';
  tlsCertificates?: string;
  /** libnbd debug messages on stderr. */
  debug?: boolean;
  /**
   * Let libnbd zero each read buffer before the read (its default; costs ~35% of large-read
   * throughput). Off by default: a failed read's buffer is never returned by pread().
   */
  initializeReadBuffers?: boolean;
}

export interface NativeNbdInfo {
  size: number;
  readOnly: boolean;
  canFlush: boolean;
  canFua: boolean;
  canTrim: boolean;
  canZero: boolean;
  canFastZero: boolean;
  canDf: boolean;
  canMultiConn: boolean;
  canCache: boolean;
  structuredReplies: boolean;
  protocol: string | null;
  exportName: string | null;
  blockSize: { minimum: number; preferred: number; maximum: number } | null;
  libnbdVersion: string;
}

export interface NativeNbdStats {
  inFlight: number;
  maxInFlight: number;
  completed: number;
}

/** One libnbd handle. Promises reject with an Error carrying `errno` and `code` when known. */
export interface NativeNbd {
  /** `target`: an NBD URI (nbd://, nbd+unix://, nbds://...) or a unix socket path. */
  connect(target: string, opts?: NativeConnectOptions): Promise<void>;
  /** graceful: let requests in flight finish and send NBD_CMD_DISC. Idempotent. */
  close(graceful?: boolean): Promise<void>;
  pread<T extends Uint8Array>(buf: T, offset: number, flags?: number): Promise<T>;
  pwrite(buf: Uint8Array, offset: number, flags?: number): Promise<void>;
  zero(length: number, offset: number, flags?: number): Promise<void>;
  trim(length: number, offset: number, flags?: number): Promise<void>;
  flush(flags?: number): Promise<void>;
  /** One request (length capped at 2 GiB); per context: length, flags, length, flags, ... */
  blockStatus(length: number, offset: number, flags?: number): Promise<Record<string, Uint32Array>>;
  info(): NativeNbdInfo;
  canMetaContext(name: string): boolean;
  stats(reset?: boolean): NativeNbdStats;
  isConnected(): boolean;
}

export interface NativeAddon {
  NBD: new () => NativeNbd;
  nbdConstants: Record<string, number | string>;
}

let addon: NativeAddon | undefined;

/** Loads the addon once; throws a clear error if it has not been built. */
export function loadNative(): NativeAddon {
  if (addon !== undefined) return addon;
  const root = packageRoot();
  const path = join(root, 'build', 'Release', 'virtnbd_native.node');
  if (!existsSync(path)) {
    throw new Error(`the native addon is not built: ${path} is missing. Run \`npm run build:native\` in ${root}.`);
  }
  const require = createRequire(import.meta.url);
  try {
    addon = require(path) as NativeAddon;
  } catch (e) {
    throw new Error(`cannot load the native addon ${path}: ${(e as Error).message}. Rebuild it with \`npm run build:native\`.`);
  }
  return addon;
}
