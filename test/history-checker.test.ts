/** The history checker itself must catch what it claims to catch, or the load tests prove nothing. */
import { History } from "./helpers/history";

const d = (worker: string, taskId: string, attempt: number, claimedAt: number, ttr = 1000) => ({
  worker,
  taskId,
  attempt,
  leaseUntil: claimedAt + ttr,
  timeToRecoverMs: ttr,
  at: claimedAt + 1,
});

test("a task never acked is lost", () => {
  const h = new History();
  h.add("a");
  h.deliver(d("w1", "a", 1, 0));
  expect(h.verdict().lost).toEqual(["a"]);
});

test("two workers holding the same attempt is a duplicate", () => {
  const h = new History();
  h.add("a");
  h.deliver(d("w1", "a", 1, 0));
  h.deliver(d("w2", "a", 1, 10));
  h.ack("a", "w2");
  expect(h.verdict().duplicatedWhileLeased).toEqual(["a"]);
});

test("a new holder before the previous lease ran out is a duplicate; after it is a redelivery", () => {
  const early = new History();
  early.add("a");
  early.deliver(d("w1", "a", 1, 0));
  early.deliver(d("w2", "a", 2, 500));
  early.ack("a", "w2");
  expect(early.verdict().duplicatedWhileLeased).toEqual(["a"]);

  const late = new History();
  late.add("a");
  late.deliver(d("w1", "a", 1, 0));
  late.deliver(d("w2", "a", 2, 1000));
  late.ack("a", "w2");
  const v = late.verdict();
  expect(v.duplicatedWhileLeased).toEqual([]);
  expect(v.redeliveredAfterExpiry).toBe(1);
});

test("two successful acks of one task are a double completion", () => {
  const h = new History();
  h.add("a");
  h.deliver(d("w1", "a", 1, 0));
  h.ack("a", "w1");
  h.ack("a", "w2");
  expect(h.verdict().completedTwice).toEqual(["a"]);
});
