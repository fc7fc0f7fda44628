/**
 * DeadlineHeap against a reference (a plain list): random pushes, moves (a push of an item already
 * in), deletes and pops; every pop must give an earliest item, and the heap holds each item once.
 */
import { DeadlineHeap } from "../lib/queue/deadline-heap";
import { prng } from "./helpers/prng";

test.each([1, 2, 3, 4, 5])("random pushes, moves, deletes and pops match a reference (seed %i)", seed => {
  const rnd = prng(seed);
  const heap = new DeadlineHeap<{ id: number }>();
  const items = Array.from({ length: 60 }, (_, id) => ({ id }));
  const reference = new Map<{ id: number }, number>();
  for (let step = 0; step < 5000; step++) {
    const r = rnd();
    const item = items[Math.floor(rnd() * items.length)]!;
    if (r < 0.5) {
      const at = Math.floor(rnd() * 1000);
      heap.push(at, item);
      reference.set(item, at);
    } else if (r < 0.75) {
      expect(heap.delete(item)).toBe(reference.delete(item));
    } else {
      const top = heap.pop();
      if (reference.size === 0) {
        expect(top).toBeUndefined();
      } else {
        const earliest = Math.min(...reference.values());
        expect(top?.at).toBe(earliest);
        expect(reference.get(top!.item)).toBe(earliest);
        reference.delete(top!.item);
      }
    }
    expect(heap.size).toBe(reference.size);
    if (reference.size > 0) expect(heap.peek()?.at).toBe(Math.min(...reference.values()));
  }
  const drained: number[] = [];
  for (let top = heap.pop(); top; top = heap.pop()) drained.push(top.at);
  expect(drained).toEqual([...reference.values()].sort((a, b) => a - b));
});

test("a pushed item moves to its new time, earlier or later, and is held once", () => {
  const heap = new DeadlineHeap<string>();
  heap.push(10, "a");
  heap.push(20, "b");
  heap.push(30, "c");
  heap.push(40, "a");
  expect(heap.size).toBe(3);
  expect(heap.peek()).toMatchObject({ at: 20, item: "b" });
  heap.push(5, "c");
  expect(heap.pop()).toMatchObject({ at: 5, item: "c" });
  expect(heap.delete("c")).toBe(false);
  expect(heap.pop()).toMatchObject({ at: 20, item: "b" });
  expect(heap.pop()).toMatchObject({ at: 40, item: "a" });
  expect(heap.pop()).toBeUndefined();
});
