/**
 * task_index lookups of one queue, grouped: the ids asked for in the same turn (a burst of adds
 * that name their task, each checking that its id is new) are read together, up to INDEX_BATCH
 * per request (`QueueStore.readIndexes`), instead of one request each. A lookup still reads the
 * table after it was asked for, so it sees every write that landed before (what the callers'
 * overlays of pending writes rely on).
 */
import { INDEX_BATCH } from "./derived-writer";
import type { IndexEntry, QueueStore } from "./store";

interface Waiting {
  resolve: (entry: IndexEntry | null) => void;
  reject: (err: Error) => void;
}

export class IndexLookups {
  /** Ids asked for and not sent yet, each with its callers. */
  private asked = new Map<string, Waiting[]>();
  private scheduled = false;

  constructor(
    private readonly store: Pick<QueueStore, "readIndexes">,
    private readonly queue: string,
  ) {}

  read(taskId: string): Promise<IndexEntry | null> {
    return new Promise((resolve, reject) => {
      const waiting = this.asked.get(taskId);
      if (waiting) waiting.push({ resolve, reject });
      else this.asked.set(taskId, [{ resolve, reject }]);
      if (this.asked.size >= INDEX_BATCH) this.send();
      else if (!this.scheduled) {
        this.scheduled = true;
        queueMicrotask(() => {
          this.scheduled = false;
          this.send();
        });
      }
    });
  }

  private send(): void {
    if (this.asked.size === 0) return;
    const group = this.asked;
    this.asked = new Map();
    this.store.readIndexes(this.queue, [...group.keys()]).then(
      entries => {
        for (const [id, waiting] of group) for (const w of waiting) w.resolve(entries.get(id) ?? null);
      },
      (err: Error) => {
        for (const waiting of group.values()) for (const w of waiting) w.reject(err);
      },
    );
  }
}
