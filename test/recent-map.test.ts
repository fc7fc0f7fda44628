import { RecentMap } from "../lib/queue/recent-map";

describe("RecentMap", () => {
  it("keeps the keys set most recently, oldest first, and forgets the rest", () => {
    const m = new RecentMap<number>(3);
    for (const k of ["a", "b", "c", "d"]) m.set(k, k.charCodeAt(0));
    expect([...m].map(([k]) => k)).toEqual(["b", "c", "d"]);
    expect(m.has("a")).toBe(false);
    m.set("b", 0); // b becomes the newest
    m.set("e", 1);
    expect([...m]).toEqual([
      ["d", 100],
      ["b", 0],
      ["e", 1],
    ]);
    expect(m.size).toBe(3);
  });

  it("does not count deleted keys, and a stale order entry never evicts a key set again", () => {
    const m = new RecentMap<string>(2);
    m.set("x", "1");
    m.set("y", "1");
    expect(m.delete("x")).toBe(true);
    m.set("z", "1");
    expect([...m].map(([k]) => k)).toEqual(["y", "z"]);
    m.set("y", "2");
    m.set("w", "1"); // z is the oldest now, not the first pair written for y
    expect([...m]).toEqual([
      ["y", "2"],
      ["w", "1"],
    ]);
  });

  it("matches a plain map with front eviction over a long random run", () => {
    const limit = 50;
    const m = new RecentMap<number>(limit);
    const ref = new Map<string, number>();
    let seed = 7;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let i = 0; i < 5_000; i++) {
      const key = `k${Math.floor(rnd() * 120)}`;
      if (rnd() < 0.2) {
        expect(m.delete(key)).toBe(ref.delete(key));
      } else {
        m.set(key, i);
        ref.delete(key);
        ref.set(key, i);
        if (ref.size > limit) ref.delete(ref.keys().next().value as string);
      }
      expect(m.size).toBe(ref.size);
      expect(m.get(key)).toBe(ref.get(key));
    }
    expect([...m]).toEqual([...ref]);
  });

  it("starts from given entries and refuses a limit that is not a positive integer", () => {
    const m = new RecentMap<number>(2, [
      ["a", 1],
      ["b", 2],
      ["c", 3],
    ]);
    expect([...m]).toEqual([
      ["b", 2],
      ["c", 3],
    ]);
    expect(() => new RecentMap(0)).toThrow(RangeError);
    expect(() => new RecentMap(1.5)).toThrow(RangeError);
  });
});
