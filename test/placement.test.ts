/** Placement, membership and the storage error mapping: pure logic, no Cassandra. */
import { errors, types } from "cassandra-driver";
import { asStorageError } from "../lib/queue/engine";
import { Membership } from "../lib/queue/membership";
import { loadCap, placeQueue, queueToShed, rendezvousOrder } from "../lib/queue/placement";

const ids = (n: number) => Array.from({ length: n }, (_, i) => `q-${i}-${(i * 7919) % 1000}`);

describe("placement", () => {
  test("rendezvous order is the same on every node and moves only a leaver's queues", () => {
    const nodes = ["a", "b", "c"];
    for (const q of ids(200)) {
      expect(rendezvousOrder(q, nodes)).toEqual(rendezvousOrder(q, [...nodes].reverse()));
      const withD = rendezvousOrder(q, [...nodes, "d"]);
      // Adding d only ever puts d first: the others keep their order.
      expect(withD.filter(n => n !== "d")).toEqual(rendezvousOrder(q, nodes));
    }
  });

  test("24 queues placed one by one over 3 nodes end 8 / 8 / 8, and 4 nodes 6 each", () => {
    for (const n of [3, 4]) {
      const loads = Array.from({ length: n }, (_, i) => ({ nodeId: `node-${i}`, owned: 0 }));
      for (const q of ids(24)) loads.find(l => l.nodeId === placeQueue(q, loads))!.owned++;
      expect(loads.map(l => l.owned)).toEqual(loads.map(() => 24 / n));
    }
  });

  test("an owner over the even share gives away the queue that ranks it lowest; none while balanced", () => {
    const nodes = [
      { nodeId: "a", owned: 10 },
      { nodeId: "b", owned: 7 },
      { nodeId: "c", owned: 7 },
    ];
    const mine = ids(10);
    expect(loadCap(nodes)).toBe(8);
    const shed = queueToShed("a", mine, nodes)!;
    expect(mine).toContain(shed);
    const rank = (q: string) => rendezvousOrder(q, ["a", "b", "c"]).indexOf("a");
    expect(Math.max(...mine.map(rank))).toBe(rank(shed));
    // Queues taken since membership changed go first (the settled ones stay).
    const recent = mine.slice(0, 3);
    const shedRecent = queueToShed("a", mine, nodes, recent)!;
    expect(recent).toContain(shedRecent);
    expect(Math.max(...recent.map(rank))).toBe(rank(shedRecent));
    expect(queueToShed("a", mine, nodes, ["not-mine"])).toBe(shed);
    expect(queueToShed("b", ids(7), nodes)).toBeUndefined();
    expect(
      queueToShed("a", ids(8), [
        { nodeId: "a", owned: 8 },
        { nodeId: "b", owned: 8 },
        { nodeId: "c", owned: 8 },
      ]),
    ).toBeUndefined();
  });
});

describe("membership", () => {
  let now = 0;
  const clock = () => now;
  const make = (registry: string[] = []) =>
    new Membership(
      "self",
      { beatIntervalMs: 500, nodeTimeoutMs: 1500 },
      () => undefined,
      () => 3,
      {
        queueNodes: () => registry,
        isAvailable: id => registry.includes(id),
      },
      clock,
    );

  test("a node heard from and then silent is dead after the timeout; a beat brings it back", () => {
    const m = make();
    m.received({ nodeId: "b", owned: 2 });
    expect(m.isAlive("b")).toBe(true);
    now += 1400;
    expect(m.isAlive("b")).toBe(true);
    now += 200;
    expect(m.isAlive("b")).toBe(false);
    m.received({ nodeId: "b", owned: 2 });
    expect(m.isAlive("b")).toBe(true);
  });

  test("a node not heard from yet is alive while Moleculer lists it; a leaving beat ends it at once", () => {
    const m = make(["c"]);
    expect(m.isAlive("c")).toBe(true);
    expect(m.isAlive("x")).toBe(false);
    expect(m.live().map(n => n.nodeId)).toEqual(["c", "self"]);
    m.received({ nodeId: "c", owned: 1 });
    m.received({ nodeId: "c", owned: 0, leaving: true });
    expect(m.isAlive("c")).toBe(false);
  });

  test("a suspected node (its forward timed out) is dead until it beats after the suspicion", () => {
    const m = make();
    m.received({ nodeId: "b", owned: 1 });
    m.suspect("b");
    expect(m.isAlive("b")).toBe(false);
    m.received({ nodeId: "b", owned: 1 });
    expect(m.isAlive("b")).toBe(false);
    now += 1600;
    m.received({ nodeId: "b", owned: 1 });
    expect(m.isAlive("b")).toBe(true);
  });

  test("stableFor counts from the last change of the set of live nodes", () => {
    const m = make();
    now = 10_000;
    m.received({ nodeId: "b", owned: 1 });
    now = 12_000;
    m.received({ nodeId: "b", owned: 4 });
    expect(m.stableFor()).toBe(2000);
  });
});

describe("storage errors", () => {
  test("Cassandra failures become the queue's typed errors", () => {
    const timeout = new errors.ResponseError(types.responseErrorCodes.writeTimeout, "timed out");
    expect(asStorageError("add", timeout)).toMatchObject({
      type: "STORAGE_UNAVAILABLE",
      retryable: true,
      data: { operation: "add" },
    });
    // What the driver throws when a connection drops mid-request (a DriverError).
    const closed = Object.assign(Object.create(errors.DriverError.prototype) as Error, {
      message: "Socket was closed",
    });
    expect(asStorageError("fetch", closed)).toMatchObject({ type: "STORAGE_UNAVAILABLE", retryable: true });
    const noHost = new errors.NoHostAvailableError({});
    expect(asStorageError("ack", noHost)).toMatchObject({ type: "STORAGE_UNAVAILABLE" });
    const invalid = new errors.ResponseError(types.responseErrorCodes.invalid, "unconfigured table");
    expect(asStorageError("add", invalid)).toMatchObject({ type: "STORAGE_ERROR", retryable: false });
    const other = new Error("not from the driver");
    expect(asStorageError("add", other)).toBe(other);
  });
});
