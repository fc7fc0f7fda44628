/**
 * A min-heap of items by a time in ms; the queue uses it to find the earliest expired lease. An item
 * is in it at most once: pushing it again moves it to its new time, and `delete` takes it out, so
 * a task that ends leaves the heap at once instead of staying referenced until its old deadline
 * (at 7,000 tasks/s and a 60 s lease that was 420,000 ended tasks kept alive).
 */
interface Entry<T> {
  at: number;
  item: T;
  /** Where the entry is in the array. */
  i: number;
}

export class DeadlineHeap<T> {
  private readonly items: Entry<T>[] = [];
  private readonly byItem = new Map<T, Entry<T>>();

  get size(): number {
    return this.items.length;
  }

  /** Schedules `item` at `at`, or moves it there if it is in the heap already. */
  push(at: number, item: T): void {
    const known = this.byItem.get(item);
    if (known) {
      const earlier = at < known.at;
      known.at = at;
      if (earlier) this.up(known.i);
      else this.down(known.i);
      return;
    }
    const e: Entry<T> = { at, item, i: this.items.length };
    this.items.push(e);
    this.byItem.set(item, e);
    this.up(e.i);
  }

  /** Takes `item` out; false if it was not in the heap. */
  delete(item: T): boolean {
    const e = this.byItem.get(item);
    if (!e) return false;
    this.byItem.delete(item);
    const last = this.items.pop()!;
    if (last !== e) {
      this.items[e.i] = last;
      last.i = e.i;
      this.up(last.i);
      this.down(last.i);
    }
    return true;
  }

  peek(): { at: number; item: T } | undefined {
    return this.items[0];
  }

  pop(): { at: number; item: T } | undefined {
    const top = this.items[0];
    if (top) this.delete(top.item);
    return top;
  }

  private up(i: number): void {
    const a = this.items;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (a[parent]!.at <= a[i]!.at) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  private down(i: number): void {
    const a = this.items;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < a.length && a[l]!.at < a[m]!.at) m = l;
      if (r < a.length && a[r]!.at < a[m]!.at) m = r;
      if (m === i) return;
      this.swap(i, m);
      i = m;
    }
  }

  private swap(i: number, j: number): void {
    const a = this.items;
    const x = a[i]!;
    const y = a[j]!;
    a[i] = y;
    a[j] = x;
    x.i = j;
    y.i = i;
  }
}
