/** task_index lookups asked in one turn share requests of at most INDEX_BATCH ids; each caller gets its own id's answer. */
import { INDEX_BATCH } from "../lib/queue/derived-writer";
import { IndexLookups } from "../lib/queue/index-lookups";
import type { IndexEntry, QueueStore } from "../lib/queue/store";

const entry = (n: number): IndexEntry => ({ seq: n, pos: n, clientId: true, hint: { kind: "none" } });

function stub(fail?: () => boolean) {
  const requests: string[][] = [];
  const store = {
    readIndexes: async (_q: string, ids: readonly string[]) => {
      requests.push([...ids]);
      if (fail?.()) throw new Error("a timeout");
      // Even ids have an entry, odd ones none.
      return new Map(ids.map(id => [id, Number(id.slice(1)) % 2 === 0 ? entry(Number(id.slice(1))) : null]));
    },
  } as unknown as Pick<QueueStore, "readIndexes">;
  return { requests, lookups: new IndexLookups(store, "o/q") };
}

test("ids asked in one turn go in requests of at most INDEX_BATCH; each caller gets its id", async () => {
  const { requests, lookups } = stub();
  const ids = Array.from({ length: 20 }, (_, i) => `t${i}`);
  const answers = await Promise.all(ids.map(id => lookups.read(id)));
  ids.forEach((_, i) => expect(answers[i]).toEqual(i % 2 === 0 ? entry(i) : null));
  expect(requests.map(r => r.length)).toEqual([INDEX_BATCH, INDEX_BATCH, 20 - 2 * INDEX_BATCH]);
  expect(requests.flat().sort()).toEqual([...ids].sort());
  // A lookup asked after those answered is a request of its own.
  expect(await lookups.read("t6")).toEqual(entry(6));
  expect(requests[requests.length - 1]).toEqual(["t6"]);
});

test("an id asked twice before its request goes is read once, and both callers get it", async () => {
  const { requests, lookups } = stub();
  const answers = await Promise.all(["t0", "t1", "t0", "t1", "t2"].map(id => lookups.read(id)));
  expect(answers).toEqual([entry(0), null, entry(0), null, entry(2)]);
  expect(requests).toEqual([["t0", "t1", "t2"]]);
});

test("a failed request fails every lookup in it, and later lookups go on", async () => {
  let failing = true;
  const { lookups } = stub(() => failing);
  const all = await Promise.allSettled(["t0", "t1", "t0"].map(id => lookups.read(id)));
  expect(all.map(r => r.status)).toEqual(["rejected", "rejected", "rejected"]);
  failing = false;
  expect(await lookups.read("t2")).toEqual(entry(2));
});
