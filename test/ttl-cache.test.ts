import { TtlCache } from "../lib/crypto/ttl-cache";

describe("TtlCache", () => {
  it("forgets an entry at its time-to-live", () => {
    let now = 1_000;
    const c = new TtlCache<string>({ now: () => now });
    c.set("a", "1", 500);
    expect(c.get("a")).toBe("1");
    now += 499;
    expect(c.get("a")).toBe("1");
    now += 1;
    expect(c.get("a")).toBeUndefined();
    c.set("b", "1", 0);
    expect(c.get("b")).toBeUndefined();
  });

  it("evicts the entry used least recently (to the second) when full", () => {
    let now = 0;
    const c = new TtlCache<number>({ maxEntries: 2, now: () => now });
    c.set("a", 1, 60_000);
    c.set("b", 2, 60_000);
    now += 1_000;
    expect(c.get("a")).toBe(1); // a is newer than b now
    c.set("c", 3, 60_000);
    expect(c.get("b")).toBeUndefined();
    expect(c.get("a")).toBe(1);
    expect(c.get("c")).toBe(3);
    // A hit within the same second does not reorder: a was touched at 1,000 ms, c set at 1,000 ms.
    expect(c.get("a")).toBe(1);
    c.set("d", 4, 60_000);
    expect(c.get("a")).toBeUndefined();
    expect([c.get("c"), c.get("d")]).toEqual([3, 4]);
  });

  it("refuses a size that is not a positive integer", () => {
    expect(() => new TtlCache({ maxEntries: 0 })).toThrow(RangeError);
  });
});
