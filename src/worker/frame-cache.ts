/**
 * A small LRU of decoded LZ4 frames for the plugin worker, keyed by (file index, frame offset)
 * and bounded by the total decoded bytes it holds. A frame larger than the bound is not cached.
 */
export const DEFAULT_FRAME_CACHE_BYTES = 64 * 1024 * 1024;

export class FrameCache {
  /** Map iteration order is insertion order: the first entry is the least recently used. */
  private readonly entries = new Map<string, Buffer>();
  private total = 0;

  constructor(readonly maxBytes: number = DEFAULT_FRAME_CACHE_BYTES) {
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) throw new RangeError(`bad cache size ${maxBytes}`);
  }

  private static key(file: number, offset: number): string {
    return `${file}:${offset}`;
  }

  /** The cached frame, marked most recently used; undefined on a miss. */
  get(file: number, offset: number): Buffer | undefined {
    const k = FrameCache.key(file, offset);
    const v = this.entries.get(k);
    if (v !== undefined) {
      this.entries.delete(k);
      this.entries.set(k, v);
    }
    return v;
  }

  set(file: number, offset: number, frame: Buffer): void {
    const k = FrameCache.key(file, offset);
    const old = this.entries.get(k);
    if (old !== undefined) {
      this.entries.delete(k);
      this.total -= old.length;
    }
    if (frame.length > this.maxBytes) return;
    this.entries.set(k, frame);
    this.total += frame.length;
    for (const [key, v] of this.entries) {
      if (this.total <= this.maxBytes) break;
      this.entries.delete(key);
      this.total -= v.length;
    }
  }

  clear(): void {
    this.entries.clear();
    this.total = 0;
  }

  get size(): number {
    return this.entries.size;
  }

  get bytes(): number {
    return this.total;
  }
}
