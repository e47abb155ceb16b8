/**
 * NBD client over libnbd (native/nbd.cc). One NbdClient = one connection; any number of
 * requests may be in flight on it at once (issue them without awaiting each one).
 */
import { loadNative, type NativeConnectOptions, type NativeNbd, type NativeNbdInfo, type NativeNbdStats } from './native.js';

/** NBD command flags (the protocol's values, as in libnbd.h). */
export const CMD_FLAG = { FUA: 0x01, NO_HOLE: 0x02, DF: 0x04, REQ_ONE: 0x08, FAST_ZERO: 0x10 } as const;
/** base:allocation extent flags. */
export const STATE_HOLE = 1;
export const STATE_ZERO = 2;
/** qemu:dirty-bitmap:* extent flag. */
export const STATE_DIRTY = 1;
export const CONTEXT_BASE_ALLOCATION = 'base:allocation';

/**
 * Every error from the client: libnbd's message (or the server's errno as text, with the
 * request's offset and length) and, when known, the errno.
 */
export class NbdError extends Error {
  /** Positive errno value as libnbd reports it (e.g. 5). */
  readonly errno?: number;
  /** Its name, e.g. 'EIO', 'EINVAL', 'ENOTCONN'. */
  readonly code?: string;

  constructor(message: string, errno?: number, code?: string) {
    super(message);
    this.name = 'NbdError';
    if (errno !== undefined) this.errno = errno;
    if (code !== undefined) this.code = code;
  }

  /** Converts what the native code threw (an Error of the main realm with errno/code). */
  static from(e: unknown, prefix = ''): NbdError {
    if (e instanceof NbdError && prefix === '') return e;
    const o = (typeof e === 'object' && e !== null ? e : {}) as { message?: unknown; errno?: unknown; code?: unknown };
    const message = typeof o.message === 'string' ? o.message : String(e);
    return new NbdError(
      prefix + message,
      typeof o.errno === 'number' ? o.errno : undefined,
      typeof o.code === 'string' ? o.code : undefined,
    );
  }
}

/** Runs a native call; whatever it throws or rejects with becomes an NbdError. */
async function nat<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw NbdError.from(e);
  }
}

/** Options of NbdClient.connect (see NativeConnectOptions for each field). */
export type ConnectOptions = NativeConnectOptions;

export interface BlockSizeConstraints {
  minimum: number;
  preferred: number;
  maximum: number;
}

export type NbdInfo = NativeNbdInfo;
export type NbdStats = NativeNbdStats;

/** [length, flags] as the server sent them. */
export type ExtentPair = [length: number, flags: number];

export interface BlockStatusReply {
  /** Offset of the first extent of every context. */
  offset: number;
  /** Extents per meta context, in order from `offset`; may cover less (or more) than asked. */
  contexts: Record<string, ExtentPair[]>;
}

export interface Extent {
  offset: number;
  length: number;
  flags: number;
}

/** libnbd refuses reads/writes above 64 MiB; servers usually advertise 32 MiB. */
const LIBNBD_MAX_REQUEST = 64 * 1024 * 1024;
const DEFAULT_MAX_REQUEST = 32 * 1024 * 1024;
/** Zero/trim/block-status lengths are 32-bit on the wire. */
const MAX_RANGE = 2 ** 31;

export class NbdClient {
  private constructor(
    private readonly h: NativeNbd,
    /** The URI (or socket path) connected to. */
    readonly uri: string,
    /** What the server told at connect time. */
    readonly info: NbdInfo,
  ) {}

  /** Connects to `uri` (nbd://, nbd+unix:///export?socket=..., nbds://...) or a unix socket path. */
  static async connect(uri: string, opts: ConnectOptions = {}): Promise<NbdClient> {
    const { NBD } = loadNative();
    const h = new NBD();
    try {
      await h.connect(uri, opts);
      return new NbdClient(h, uri, h.info());
    } catch (e) {
      await h.close(false).catch(() => undefined);
      throw NbdError.from(e, `NBD connect to ${uri}: `);
    }
  }

  size(): number {
    return this.info.size;
  }

  canMultiConn(): boolean {
    return this.info.canMultiConn;
  }

  canMetaContext(name: string): boolean {
    try {
      return this.h.canMetaContext(name);
    } catch (e) {
      throw NbdError.from(e);
    }
  }

  /** The server's block size constraints, or null if it sent none. */
  blockSize(): BlockSizeConstraints | null {
    return this.info.blockSize;
  }

  /** Largest read/write sent as one request; larger ones are split (and issued concurrently). */
  maxRequest(): number {
    const max = this.info.blockSize?.maximum ?? 0;
    return max > 0 ? Math.min(max, LIBNBD_MAX_REQUEST) : DEFAULT_MAX_REQUEST;
  }

  /** Reads `length` bytes at `offset` into a new Buffer. */
  async pread(length: number, offset: number, flags = 0): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length);
    if (length > 0) await this.preadInto(buf, offset, flags);
    return buf;
  }

  /** Reads buf.length bytes at `offset` into `buf`; resolves to `buf`. */
  async preadInto<T extends Uint8Array>(buf: T, offset: number, flags = 0): Promise<T> {
    const max = this.maxRequest();
    if (buf.length <= max) return nat(() => this.h.pread(buf, offset, flags));
    const parts: Promise<unknown>[] = [];
    for (let p = 0; p < buf.length; p += max) {
      parts.push(nat(() => this.h.pread(buf.subarray(p, Math.min(p + max, buf.length)), offset + p, flags)));
    }
    await settleAll(parts);
    return buf;
  }

  async pwrite(buf: Uint8Array, offset: number, flags = 0): Promise<void> {
    const max = this.maxRequest();
    if (buf.length <= max) return nat(() => this.h.pwrite(buf, offset, flags));
    const parts: Promise<unknown>[] = [];
    for (let p = 0; p < buf.length; p += max) {
      parts.push(nat(() => this.h.pwrite(buf.subarray(p, Math.min(p + max, buf.length)), offset + p, flags)));
    }
    await settleAll(parts);
  }

  /** Writes zeroes (flags: CMD_FLAG.NO_HOLE / FAST_ZERO / FUA). */
  async zero(length: number, offset: number, flags = 0): Promise<void> {
    for (let p = 0; p < length; p += MAX_RANGE) {
      await nat(() => this.h.zero(Math.min(MAX_RANGE, length - p), offset + p, flags));
    }
  }

  async trim(length: number, offset: number, flags = 0): Promise<void> {
    for (let p = 0; p < length; p += MAX_RANGE) {
      await nat(() => this.h.trim(Math.min(MAX_RANGE, length - p), offset + p, flags));
    }
  }

  async flush(flags = 0): Promise<void> {
    return nat(() => this.h.flush(flags));
  }

  /**
   * One NBD_CMD_BLOCK_STATUS (length capped at 2 GiB). The server may describe less than
   * asked, differently per context. `contexts` filters the reply (default: all negotiated).
   */
  async blockStatus(length: number, offset: number, contexts?: string[], flags = 0): Promise<BlockStatusReply> {
    const raw = await nat(() => this.h.blockStatus(length, offset, flags));
    const out: Record<string, ExtentPair[]> = {};
    for (const [name, entries] of Object.entries(raw)) {
      if (contexts !== undefined && !contexts.includes(name)) continue;
      const pairs: ExtentPair[] = [];
      for (let i = 0; i + 1 < entries.length; i += 2) pairs.push([entries[i]!, entries[i + 1]!]);
      out[name] = pairs;
    }
    return { offset, contexts: out };
  }

  /**
   * Walks [offset, offset + length) with as many block status requests as the server needs and
   * returns the extents of `context`, adjacent ones with equal flags merged, clipped to the range.
   */
  async blockStatusAll(context: string, offset: number, length: number): Promise<Extent[]> {
    if (!this.canMetaContext(context)) {
      throw new NbdError(`block status: meta context ${context} was not negotiated with ${this.uri}`, 95, 'EOPNOTSUPP');
    }
    const end = offset + length;
    const out: Extent[] = [];
    let pos = offset;
    while (pos < end) {
      const raw = await nat(() => this.h.blockStatus(end - pos, pos, 0));
      const entries = raw[context];
      let p = pos;
      if (entries !== undefined) {
        for (let i = 0; i + 1 < entries.length && p < end; i += 2) {
          const len = Math.min(entries[i]!, end - p);
          const flags = entries[i + 1]!;
          if (len === 0) continue;
          const last = out[out.length - 1];
          if (last !== undefined && last.flags === flags && last.offset + last.length === p) last.length += len;
          else out.push({ offset: p, length: len, flags });
          p += len;
        }
      }
      if (p === pos) {
        throw new NbdError(`block status: the server described nothing for ${context} at offset ${pos}`, 71, 'EPROTO');
      }
      pos = p;
    }
    return out;
  }

  /** Requests in flight now, the most seen at once (since the last reset), requests completed. */
  stats(reset = false): NbdStats {
    return this.h.stats(reset);
  }

  isConnected(): boolean {
    return this.h.isConnected();
  }

  /** Waits for requests in flight, disconnects cleanly and releases the handle; rejects if the disconnect failed. */
  async shutdown(): Promise<void> {
    return nat(() => this.h.close(true));
  }

  /** Like shutdown() but never rejects; safe to call any number of times. */
  async close(): Promise<void> {
    try {
      await this.h.close(true);
    } catch {
      await this.h.close(false).catch(() => undefined);
    }
  }

  /** Drops the connection at once; requests in flight reject. */
  async abort(): Promise<void> {
    return nat(() => this.h.close(false));
  }
}

/** Like Promise.all, but waits for every part before rejecting (buffers stay in use until then). */
async function settleAll(parts: Promise<unknown>[]): Promise<void> {
  const results = await Promise.allSettled(parts);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}
