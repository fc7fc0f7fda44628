/**
 * Evicting the oldest entry of a bounded map: a plain Map (`map.delete(map.keys().next().value)`,
 * which walks every deleted slot left before the first live key) against RecentMap
 * (lib/queue/recent-map.ts). 200,000 new keys into a full map, per set, two rounds.
 *
 *   npx tsx bench/recent-map.bench.ts
 */
import { RecentMap } from "../lib/queue/recent-map";

function frontEvicting<V>(map: Map<string, V>, key: string, value: V, limit: number): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > limit) map.delete(map.keys().next().value as string);
}

const N = 200_000;
const keys = Array.from({ length: N }, (_, i) => `task-${i}-abcdefabcdef`);
for (let round = 0; round < 2; round++) {
  for (const limit of [2048, 10_000]) {
    const plain = new Map<string, string>();
    for (let i = 0; i < limit; i++) plain.set(`t${i}`, "x");
    let t0 = performance.now();
    for (const k of keys) frontEvicting(plain, k, "done", limit);
    const a = performance.now() - t0;
    const recent = new RecentMap<string>(limit);
    for (let i = 0; i < limit; i++) recent.set(`t${i}`, "x");
    t0 = performance.now();
    for (const k of keys) recent.set(k, "done");
    const b = performance.now() - t0;
    console.log(
      `limit ${limit}: Map with front eviction ${((a * 1000) / N).toFixed(2)} µs, RecentMap ${((b * 1000) / N).toFixed(2)} µs per set`,
    );
  }
}
