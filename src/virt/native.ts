/**
 * Typed view of the libvirt part of the native addon (native/virt.cc). Only
 * src/virt/client.ts uses this. The addon is loaded by the shared loader of src/nbd/native.ts.
 *
 * Every promise rejects with an Error carrying libvirt's message, `code` (virErrorNumber) and
 * `domain` (virErrorDomain); argument mistakes throw TypeError/RangeError synchronously.
 */
import { loadNative } from '../nbd/native.js';

/** Values of libvirt's typed parameters (64-bit integers above 2^53 lose precision). */
export type NativeTypedParams = Record<string, number | string | boolean>;

export interface NativeVirtCheckpoint {
  getName(): string;
  getXMLDesc(flags?: number): Promise<string>;
  delete(flags?: number): Promise<void>;
}

export interface NativeVirtDomain {
  getName(): string;
  getUUIDString(): string;
  getState(): Promise<{ state: number; reason: number }>;
  isActive(): Promise<boolean>;
  getXMLDesc(flags?: number): Promise<string>;
  getAutostart(): Promise<boolean>;
  setAutostart(flag: boolean): Promise<void>;
  create(flags?: number): Promise<void>;
  destroy(flags?: number): Promise<void>;
  undefine(flags?: number): Promise<void>;
  suspend(): Promise<void>;
  resume(): Promise<void>;
  backupBegin(backupXml: string, checkpointXml: string | null, flags?: number): Promise<void>;
  backupGetXMLDesc(flags?: number): Promise<string>;
  abortJob(flags?: number): Promise<void>;
  getJobStats(flags?: number): Promise<{ type: number; stats: NativeTypedParams }>;
  checkpointCreateXML(xml: string, flags?: number): Promise<NativeVirtCheckpoint>;
  listAllCheckpoints(flags?: number): Promise<NativeVirtCheckpoint[]>;
  checkpointLookupByName(name: string, flags?: number): Promise<NativeVirtCheckpoint>;
  fsFreeze(mountpoints?: string[] | null, flags?: number): Promise<number>;
  fsThaw(mountpoints?: string[] | null, flags?: number): Promise<number>;
  getGuestInfo(types?: number, flags?: number): Promise<NativeTypedParams>;
  qemuMonitorCommand(cmd: string, flags?: number): Promise<string>;
  qemuAgentCommand(cmd: string, timeoutSeconds: number, flags?: number): Promise<string>;
  shutdown(flags?: number): Promise<void>;
  blockCopy(disk: string, destXml: string, flags?: number): Promise<void>;
  getBlockJobInfo(disk: string): Promise<{ type: number; cur: number; end: number; bandwidth: number } | null>;
  blockJobAbort(disk: string, flags?: number): Promise<void>;
}

export interface NativeVirtConnect {
  close(): Promise<void>;
  isAlive(): boolean;
  getLibVersion(): Promise<number>;
  getHostname(): Promise<string>;
  storageVolumePath(pool: string, volume: string): Promise<string>;
  /** Every storage pool with its XML description (flags 0). */
  listStoragePools(): Promise<Array<{ name: string; active: boolean; xml: string }>>;
  refreshStoragePool(name: string): Promise<void>;
  lookupDomainByName(name: string): Promise<NativeVirtDomain>;
  lookupDomainByUUIDString(uuid: string): Promise<NativeVirtDomain>;
  defineDomainXML(xml: string, flags?: number): Promise<NativeVirtDomain>;
  createDomainXML(xml: string, flags?: number): Promise<NativeVirtDomain>;
  listAllDomains(flags?: number): Promise<NativeVirtDomain[]>;
}

export interface NativeVirtAddon {
  virtOpen(uri: string, user?: string | null, password?: string | null): Promise<NativeVirtConnect>;
  virtConstants: Record<string, number>;
}

/** The addon's libvirt part (loads the addon once; throws a clear error if it is not built). */
export function loadVirtNative(): NativeVirtAddon {
  const addon = loadNative() as unknown as Partial<NativeVirtAddon>;
  if (typeof addon.virtOpen !== 'function' || addon.virtConstants === undefined) {
    throw new Error('the native addon was built without its libvirt part: rebuild it with `npm run build:native`.');
  }
  return addon as NativeVirtAddon;
}
