/**
 * A bounded in-memory cache with a time-to-live per entry, evicting the least recently used entry
 * when full. Map keeps insertion order, so re-inserting on a hit makes the first key the oldest.
 * A hit re-inserts its entry at most once a second (TOUCH_MS): recency to the second is enough to
 * choose what to evict, and a key read on every call (a worker's token) does not churn the Map.
 */
export interface TtlCacheOptions {
  /**
   * How many entries are kept at most.
   * @defaultValue 10000
   */
  maxEntries?: number;
  /** The clock, replaceable in tests. @defaultValue Date.now */
  now?: () => number;
}

interface Entry<V> {
  value: V;
  expiresAt: number;
  touchedAt: number;
}

const TOUCH_MS = 1000;

export class TtlCache<V> {
  private readonly entries = new Map<string, Entry<V>>();
  private readonly maxEntries: number;
  private readonly now: () => number;

  constructor(options: TtlCacheOptions = {}) {
    this.maxEntries = options.maxEntries ?? 10_000;
    this.now = options.now ?? Date.now;
    if (!Number.isInteger(this.maxEntries) || this.maxEntries < 1) {
      throw new RangeError(`maxEntries must be a positive integer, got ${this.maxEntries}`);
    }
  }

  get(key: string): V | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    const now = this.now();
    if (entry.expiresAt <= now) {
      this.entries.delete(key);
      return undefined;
    }
    if (now - entry.touchedAt >= TOUCH_MS) {
      entry.touchedAt = now;
      this.entries.delete(key);
      this.entries.set(key, entry);
    }
    return entry.value;
  }

  set(key: string, value: V, ttlMs: number): void {
    this.entries.delete(key);
    if (ttlMs <= 0) return;
    const now = this.now();
    this.entries.set(key, { value, expiresAt: now + ttlMs, touchedAt: now });
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      this.entries.delete(oldest.value);
    }
  }

  clear(): void {
    this.entries.clear();
  }
}
