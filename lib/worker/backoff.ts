/**
 * Exponential backoff with jitter, and an abortable pause. Workers use them between failed calls
 * and after empty answers, so that a down gateway or an empty queue never makes them spin, and so
 * that many workers that failed together do not retry together.
 */

export class Backoff {
  private delay: number;

  /**
   * @param minMs - first delay
   * @param maxMs - the delay doubles up to this
   */
  constructor(
    private readonly minMs: number,
    private readonly maxMs: number,
  ) {
    this.delay = minMs;
  }

  /** The next pause: half the current delay plus a random part of the other half; the delay then doubles. */
  next(): number {
    const base = this.delay;
    this.delay = Math.min(this.delay * 2, this.maxMs);
    return Math.round(base / 2 + Math.random() * (base / 2));
  }

  reset(): void {
    this.delay = this.minMs;
  }
}

/** The longest delay setTimeout takes; a longer one would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Resolves after `ms` (Infinity: never), or at once when `signal` aborts (never rejects). */
export function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise(resolve => {
    if (signal?.aborted || !(ms > 0)) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = Number.isFinite(ms) ? setTimeout(done, Math.min(ms, MAX_TIMER_MS)) : undefined;
    signal?.addEventListener("abort", done, { once: true });
  });
}
