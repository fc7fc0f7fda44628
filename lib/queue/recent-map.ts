/**
 * A map that keeps the `limit` keys set most recently: setting a key makes it the newest, and past
 * the limit the oldest is forgotten. Every operation is O(1) amortized.
 *
 * Why not a plain Map with `map.delete(map.keys().next().value)`: a Map keeps deleted entries as
 * holes until it rehashes, and finding its first key skips every hole, so evicting from the front
 * of a 10,000-entry Map costs about 10 µs per call (measured in docs/benchmarks.md, 2026-12-02).
 * Here the order lives in an array of (key, stamp) pairs read from a moving head; a pair whose
 * stamp no longer matches the key's entry (set again, or deleted) is skipped and dropped.
 */
export class RecentMap<V> implements Iterable<[string, V]> {
  private readonly entries = new Map<string, { value: V; stamp: number }>();
  private order: { key: string; stamp: number }[] = [];
  private head = 0;
  private stamp = 0;

  constructor(
    private readonly limit: number,
    initial?: Iterable<readonly [string, V]>,
  ) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`limit must be a positive integer, got ${limit}`);
    if (initial) for (const [k, v] of initial) this.set(k, v);
  }

  get size(): number {
    return this.entries.size;
  }

  get(key: string): V | undefined {
    return this.entries.get(key)?.value;
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  delete(key: string): boolean {
    return this.entries.delete(key);
  }

  /** Sets `key` as the newest; forgets the oldest keys past the limit. */
  set(key: string, value: V): void {
    const stamp = ++this.stamp;
    this.entries.delete(key);
    this.entries.set(key, { value, stamp });
    this.order.push({ key, stamp });
    while (this.entries.size > this.limit) {
      const oldest = this.order[this.head++]!;
      if (this.entries.get(oldest.key)?.stamp === oldest.stamp) this.entries.delete(oldest.key);
    }
    // Stale pairs (keys set again or deleted) pile up in `order`: rebuild it from the live entries
    // (the Map's own order is the same, oldest first) once it holds twice the limit.
    if (this.order.length - this.head > 2 * this.limit + 16) this.compact();
    else if (this.head > this.limit) {
      this.order = this.order.slice(this.head);
      this.head = 0;
    }
  }

  /** Live entries, oldest first. */
  *[Symbol.iterator](): IterableIterator<[string, V]> {
    for (const [k, e] of this.entries) yield [k, e.value];
  }

  private compact(): void {
    this.order = [...this.entries].map(([key, e]) => ({ key, stamp: e.stamp }));
    this.head = 0;
  }
}
