/**
 * libvirt client over the native binding (native/virt.cc): connections, domains, checkpoints,
 * pull-mode backup jobs, and the storage pool listing/refresh a restore needs. Every call that
 * talks to libvirtd runs off the event loop and returns a promise; everything it throws or
 * rejects with is a VirtError.
 * This module is the only user of the addon's libvirt part.
 */
import { makeXmlParser } from '../xml/parser.js';
import { decodeXmlEntities } from '../xml/domain-xml.js';
import { loadVirtNative, type NativeTypedParams, type NativeVirtCheckpoint, type NativeVirtConnect, type NativeVirtDomain } from './native.js';

// ---------------------------------------------------------------------------------------------
// Constants (libvirt's values; test/integration/virt-client.test.ts checks them against the
// headers the addon was built with)

/** virDomainState */
export const DOMAIN_STATE = {
  NOSTATE: 0,
  RUNNING: 1,
  BLOCKED: 2,
  PAUSED: 3,
  SHUTDOWN: 4,
  SHUTOFF: 5,
  CRASHED: 6,
  PMSUSPENDED: 7,
} as const;
export type DomainStateName = 'nostate' | 'running' | 'blocked' | 'paused' | 'shutdown' | 'shutoff' | 'crashed' | 'pmsuspended';
const STATE_NAMES: readonly DomainStateName[] = ['nostate', 'running', 'blocked', 'paused', 'shutdown', 'shutoff', 'crashed', 'pmsuspended'];

/** virDomainCreateFlags (create / createXML) */
export const DOMAIN_START = { NONE: 0, PAUSED: 1, AUTODESTROY: 2, BYPASS_CACHE: 4, FORCE_BOOT: 8, VALIDATE: 16 } as const;
/** virDomainXMLFlags */
export const DOMAIN_XML = { SECURE: 1, INACTIVE: 2, UPDATE_CPU: 4, MIGRATABLE: 8 } as const;
/** virDomainUndefineFlagsValues */
export const DOMAIN_UNDEFINE = { MANAGED_SAVE: 1, SNAPSHOTS_METADATA: 2, NVRAM: 4, KEEP_NVRAM: 8, CHECKPOINTS_METADATA: 16 } as const;
/** virDomainBackupBeginFlags. PRESERVE_SHUTDOWN_DOMAIN exists from libvirt 11.10.0 only (not in the 9.0 headers). */
export const BACKUP_BEGIN = { REUSE_EXTERNAL: 1, PRESERVE_SHUTDOWN_DOMAIN: 2 } as const;
/** virDomainJobType */
export const JOB_TYPE = { NONE: 0, BOUNDED: 1, UNBOUNDED: 2, COMPLETED: 3, FAILED: 4, CANCELLED: 5 } as const;
/** virDomainGetJobStatsFlags */
export const JOB_STATS = { COMPLETED: 1, KEEP_COMPLETED: 2 } as const;
/** virDomainCheckpointCreateFlags */
export const CHECKPOINT_CREATE = { REDEFINE: 1, QUIESCE: 2, REDEFINE_VALIDATE: 4 } as const;
/** virDomainCheckpointXMLFlags */
export const CHECKPOINT_XML = { SECURE: 1, NO_DOMAIN: 2, SIZE: 4 } as const;
/** virDomainCheckpointListFlags */
export const CHECKPOINT_LIST = { ROOTS: 1, TOPOLOGICAL: 2, LEAVES: 4, NO_LEAVES: 8 } as const;
/** virDomainCheckpointDeleteFlags */
export const CHECKPOINT_DELETE = { CHILDREN: 1, METADATA_ONLY: 2, CHILDREN_ONLY: 4 } as const;
/** virDomainGuestInfoTypes (0 = all the agent supports) */
export const GUEST_INFO = { USERS: 1, OS: 2, TIMEZONE: 4, HOSTNAME: 8, FILESYSTEM: 16, DISKS: 32, INTERFACES: 64 } as const;
/** virDomainQemuMonitorCommandFlags */
export const QEMU_MONITOR = { DEFAULT: 0, HMP: 1 } as const;
/** virDomainBlockCopyFlags */
export const BLOCK_COPY = { SHALLOW: 1, REUSE_EXT: 2, TRANSIENT_JOB: 4, SYNCHRONOUS_WRITES: 8 } as const;
/** virDomainBlockJobAbortFlags */
export const BLOCK_JOB_ABORT = { ASYNC: 1, PIVOT: 2 } as const;
/** virErrorNumber values callers test for (VirtError.code). */
export const VIR_ERR = {
  OK: 0,
  INTERNAL_ERROR: 1,
  NO_SUPPORT: 3,
  /** also: a call on a closed VirtConnection */
  INVALID_CONN: 6,
  INVALID_ARG: 8,
  OPERATION_FAILED: 9,
  NO_DOMAIN: 42,
  OPERATION_INVALID: 55,
  AUTH_FAILED: 45,
  SYSTEM_ERROR: 38,
  RPC: 39,
  OPERATION_TIMEOUT: 68,
  AGENT_UNRESPONSIVE: 86,
  OPERATION_UNSUPPORTED: 84,
  ARGUMENT_UNSUPPORTED: 74,
  NO_DOMAIN_CHECKPOINT: 103,
  NO_DOMAIN_BACKUP: 104,
  CHECKPOINT_INCONSISTENT: 109,
} as const;

// ---------------------------------------------------------------------------------------------
// Errors

/** Every error of this module: libvirt's message, its virErrorNumber and virErrorDomain. */
export class VirtError extends Error {
  /** virErrorNumber (e.g. VIR_ERR.NO_DOMAIN = 42); 0 when the error did not come from libvirt. */
  readonly code: number;
  /** virErrorDomain (which part of libvirt reported it); 0 when unknown. */
  readonly libvirtDomain: number;

  constructor(message: string, code = 0, libvirtDomain = 0) {
    super(message);
    this.name = 'VirtError';
    this.code = code;
    this.libvirtDomain = libvirtDomain;
  }

  /** Converts what the native code threw or rejected with. */
  static from(e: unknown, prefix = ''): VirtError {
    if (e instanceof VirtError && prefix === '') return e;
    const o = (typeof e === 'object' && e !== null ? e : {}) as { message?: unknown; code?: unknown; domain?: unknown; libvirtDomain?: unknown };
    const message = typeof o.message === 'string' ? o.message : String(e);
    const dom = typeof o.libvirtDomain === 'number' ? o.libvirtDomain : typeof o.domain === 'number' ? o.domain : 0;
    return new VirtError(prefix + message, typeof o.code === 'number' ? o.code : 0, dom);
  }
}

async function nat<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw VirtError.from(e);
  }
}

function sync<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw VirtError.from(e);
  }
}

// ---------------------------------------------------------------------------------------------
// Classes

export type TypedParams = NativeTypedParams;

export interface DomainState {
  state: number;
  reason: number;
  name: DomainStateName;
}

export interface JobInfo {
  /** JOB_TYPE */
  type: number;
  /** virDomainGetJobStats' typed parameters, e.g. operation, time_elapsed, disk_total... */
  stats: TypedParams;
}

export interface OpenOptions {
  /** With user and password, SASL credentials are answered from these (virConnectOpenAuth). */
  user?: string;
  password?: string;
}

/** A storage pool as listStoragePools() reports it. */
export interface StoragePoolInfo {
  name: string;
  active: boolean;
  /** `<target><path>` of the pool's XML; undefined for pools without one (e.g. rbd). */
  targetPath?: string;
}

const POOL_XML_PARSER = makeXmlParser({ ignoreAttributes: true, trimValues: true });

/** `pool/target/path` of a storage pool XML (entities decoded), undefined when absent or unparsable. */
function poolTargetPath(xml: string): string | undefined {
  try {
    const doc = POOL_XML_PARSER.parse(xml) as { pool?: { target?: { path?: unknown } } };
    const p = doc.pool?.target?.path;
    return typeof p === 'string' && p !== '' ? decodeXmlEntities(p) : undefined;
  } catch {
    return undefined;
  }
}

export class VirtConnection {
  private constructor(
    private readonly h: NativeVirtConnect,
    /** The URI as given to open(). */
    readonly uri: string,
  ) {}

  /** Opens `uri` (e.g. qemu:///system, qemu+ssh://host/system); '' = libvirt's default. */
  static async open(uri: string, opts: OpenOptions = {}): Promise<VirtConnection> {
    const native = sync(() => loadVirtNative());
    const h = await nat(() => native.virtOpen(uri, opts.user ?? null, opts.password ?? null));
    return new VirtConnection(h, uri);
  }

  /** Drops this connection; domains and checkpoints obtained from it keep it open until collected. */
  close(): Promise<void> {
    return nat(() => this.h.close());
  }

  isAlive(): boolean {
    return sync(() => this.h.isAlive());
  }

  /** libvirt version of the daemon side, major * 1e6 + minor * 1e3 + micro. */
  libVersion(): Promise<number> {
    return nat(() => this.h.getLibVersion());
  }

  /** The host name of the (possibly remote) hypervisor host. */
  hostname(): Promise<string> {
    return nat(() => this.h.getHostname());
  }

  /** Path of storage volume `volume` of pool `pool` (disk type='volume'). */
  storageVolumePath(pool: string, volume: string): Promise<string> {
    return nat(() => this.h.storageVolumePath(pool, volume));
  }

  /** Every storage pool (active or not) with its target path. */
  async storagePools(): Promise<StoragePoolInfo[]> {
    const list = await nat(() => this.h.listStoragePools());
    return list.map((p) => {
      const targetPath = poolTargetPath(p.xml);
      return targetPath !== undefined ? { name: p.name, active: p.active, targetPath } : { name: p.name, active: p.active };
    });
  }

  /** Rescans the volumes of active storage pool `name`. */
  refreshStoragePool(name: string): Promise<void> {
    return nat(() => this.h.refreshStoragePool(name));
  }

  /** Rejects with code VIR_ERR.NO_DOMAIN when there is no such domain. */
  async lookupByName(name: string): Promise<VirtDomain> {
    return new VirtDomain(this, await nat(() => this.h.lookupDomainByName(name)));
  }

  async lookupByUUID(uuid: string): Promise<VirtDomain> {
    return new VirtDomain(this, await nat(() => this.h.lookupDomainByUUIDString(uuid)));
  }

  /** Defines a persistent domain (not started). */
  async defineXML(xml: string, flags = 0): Promise<VirtDomain> {
    return new VirtDomain(this, await nat(() => this.h.defineDomainXML(xml, flags)));
  }

  /** Creates and starts a transient domain (flags: DOMAIN_START). */
  async createXML(xml: string, flags = 0): Promise<VirtDomain> {
    return new VirtDomain(this, await nat(() => this.h.createDomainXML(xml, flags)));
  }

  async listDomains(flags = 0): Promise<VirtDomain[]> {
    const list = await nat(() => this.h.listAllDomains(flags));
    return list.map((d) => new VirtDomain(this, d));
  }
}

export class VirtDomain {
  /** @internal created by VirtConnection only */
  constructor(
    /** The connection this handle came from (kept alive by the handle). */
    readonly connection: VirtConnection,
    private readonly h: NativeVirtDomain,
  ) {}

  get name(): string {
    return sync(() => this.h.getName());
  }

  get uuid(): string {
    return sync(() => this.h.getUUIDString());
  }

  async state(): Promise<DomainState> {
    const s = await nat(() => this.h.getState());
    return { ...s, name: STATE_NAMES[s.state] ?? 'nostate' };
  }

  isActive(): Promise<boolean> {
    return nat(() => this.h.isActive());
  }

  /** Domain XML (flags: DOMAIN_XML; 0 = live definition of a running domain). */
  xmlDesc(flags = 0): Promise<string> {
    return nat(() => this.h.getXMLDesc(flags));
  }

  autostart(): Promise<boolean> {
    return nat(() => this.h.getAutostart());
  }

  /** Marks (true) or unmarks the persistent domain for starting with libvirtd. */
  setAutostart(flag: boolean): Promise<void> {
    return nat(() => this.h.setAutostart(flag));
  }

  /** Starts a defined domain (flags: DOMAIN_START, e.g. PAUSED, AUTODESTROY). */
  create(flags = 0): Promise<void> {
    return nat(() => this.h.create(flags));
  }

  destroy(flags = 0): Promise<void> {
    return nat(() => this.h.destroy(flags));
  }

  /** flags: DOMAIN_UNDEFINE (e.g. CHECKPOINTS_METADATA to drop checkpoint metadata too). */
  undefine(flags = 0): Promise<void> {
    return nat(() => this.h.undefine(flags));
  }

  suspend(): Promise<void> {
    return nat(() => this.h.suspend());
  }

  resume(): Promise<void> {
    return nat(() => this.h.resume());
  }

  /** Starts a backup job (BEHAVIOUR.md §5); checkpointXml creates a checkpoint with it. */
  backupBegin(backupXml: string, checkpointXml: string | null = null, flags = 0): Promise<void> {
    return nat(() => this.h.backupBegin(backupXml, checkpointXml, flags));
  }

  /** The running backup job's XML (with libvirt's defaults filled in). */
  backupXmlDesc(): Promise<string> {
    return nat(() => this.h.backupGetXMLDesc(0));
  }

  /** Aborts the domain's job (that is how a pull backup ends). */
  abortJob(): Promise<void> {
    return nat(() => this.h.abortJob(0));
  }

  /** Type and statistics of the current job (flags: JOB_STATS, e.g. COMPLETED for the last one). */
  jobInfo(flags = 0): Promise<JobInfo> {
    return nat(() => this.h.getJobStats(flags));
  }

  async checkpointCreateXML(xml: string, flags = 0): Promise<VirtCheckpoint> {
    return new VirtCheckpoint(this, await nat(() => this.h.checkpointCreateXML(xml, flags)));
  }

  async listCheckpoints(flags = 0): Promise<VirtCheckpoint[]> {
    const list = await nat(() => this.h.listAllCheckpoints(flags));
    return list.map((c) => new VirtCheckpoint(this, c));
  }

  /** Names of the domain's checkpoints (flags: CHECKPOINT_LIST; TOPOLOGICAL = parents first). */
  async checkpointNames(flags = 0): Promise<string[]> {
    return (await this.listCheckpoints(flags)).map((c) => c.name);
  }

  /** Rejects with code VIR_ERR.NO_DOMAIN_CHECKPOINT when there is none of that name. */
  async checkpointLookupByName(name: string): Promise<VirtCheckpoint> {
    return new VirtCheckpoint(this, await nat(() => this.h.checkpointLookupByName(name, 0)));
  }

  /** Freezes guest file systems through the guest agent (all when mountpoints is empty); returns how many. */
  fsFreeze(mountpoints: string[] = []): Promise<number> {
    return nat(() => this.h.fsFreeze(mountpoints, 0));
  }

  fsThaw(mountpoints: string[] = []): Promise<number> {
    return nat(() => this.h.fsThaw(mountpoints, 0));
  }

  /** Guest agent information as flat typed parameters ('os.id', 'hostname', 'fs.0.name', ...). */
  guestInfo(types = 0): Promise<TypedParams> {
    return nat(() => this.h.getGuestInfo(types, 0));
  }

  /** Asks the guest to shut down (ACPI / agent, flags: virDomainShutdownFlagValues); returns at once. */
  shutdown(flags = 0): Promise<void> {
    return nat(() => this.h.shutdown(flags));
  }

  /** Starts a block copy (mirror) of `disk` into the target described by `destXml` (flags: BLOCK_COPY). */
  blockCopy(disk: string, destXml: string, flags = 0): Promise<void> {
    return nat(() => this.h.blockCopy(disk, destXml, flags));
  }

  /** Progress of the block job on `disk`, or null when it has none. */
  blockJobInfo(disk: string): Promise<{ type: number; cur: number; end: number; bandwidth: number } | null> {
    return nat(() => this.h.getBlockJobInfo(disk));
  }

  /** Ends the block job on `disk`; with BLOCK_JOB_ABORT.PIVOT a ready copy becomes the disk. */
  blockJobAbort(disk: string, flags = 0): Promise<void> {
    return nat(() => this.h.blockJobAbort(disk, flags));
  }

  /** Raw monitor command (libvirt-qemu); HMP by default, `hmp: false` for QMP JSON. */
  qemuMonitorCommand(cmd: string, opts: { hmp?: boolean } = {}): Promise<string> {
    const flags = opts.hmp === false ? QEMU_MONITOR.DEFAULT : QEMU_MONITOR.HMP;
    return nat(() => this.h.qemuMonitorCommand(cmd, flags));
  }

  /**
   * Raw guest-agent command (libvirt-qemu virDomainQemuAgentCommand): `cmd` is the agent's JSON
   * request, the result its JSON reply. `timeoutS`: seconds to wait for the agent (> 0), or -2
   * (libvirt's default), -1 (block), 0 (do not wait). No agent → VirtError with libvirt's code.
   */
  agentCommand(cmd: string, timeoutS: number): Promise<string> {
    return nat(() => this.h.qemuAgentCommand(cmd, timeoutS, 0));
  }
}

export class VirtCheckpoint {
  /** @internal created by VirtDomain only */
  constructor(
    readonly domain: VirtDomain,
    private readonly h: NativeVirtCheckpoint,
  ) {}

  get name(): string {
    return sync(() => this.h.getName());
  }

  /** flags: CHECKPOINT_XML (SIZE adds each disk's bitmap size, needs a running domain). */
  xmlDesc(flags = 0): Promise<string> {
    return nat(() => this.h.getXMLDesc(flags));
  }

  /** flags: CHECKPOINT_DELETE (METADATA_ONLY keeps the bitmaps in the images). */
  delete(flags = 0): Promise<void> {
    return nat(() => this.h.delete(flags));
  }
}

/** The constants the addon was built with (for checking the tables above). */
export function nativeVirtConstants(): Record<string, number> {
  return sync(() => loadVirtNative().virtConstants);
}
