/**
 * The compact event form (lib/queue/event-codec.ts): every field of every kind comes back as it went
 * in, absent fields stay absent, and a blob that is not an event fails loudly instead of decoding to
 * something else.
 */
import { decodeEvent, decodeRun, encodeEvent, encodeRun, EventFormatError } from "../lib/queue/event-codec";
import { EventKind, type LogEvent } from "../lib/queue/task";

const sealed = (text: string) => ({ keyId: `1-${text}`, blob: Buffer.from(`ciphertext of ${text} \u00e9\u4e2d`) });

const full: LogEvent = {
  kind: EventKind.Add,
  taskId: "task-\u00e9\u4e2d-1",
  seq: 2 ** 40 + 3,
  clientId: true,
  value: sealed("value"),
  token: sealed("token"),
  attempt: 3,
  maxAttempts: 20,
  state: 2,
  notBefore: Date.UTC(2026, 11, 2),
  worker: "worker-\u{1f600}",
  leaseUntil: Date.UTC(2026, 11, 2, 1),
  ttrMs: 30_000,
  leaseStart: Date.UTC(2026, 11, 2, 0, 30),
  expiresAt: Date.UTC(2026, 11, 9),
  progress: sealed("progress"),
  error: sealed("error"),
  reason: "MAX_ATTEMPTS",
  cancelled: false,
  result: sealed("result"),
  src: 3 * 2 ** 30 + 5 * 2 ** 14 + 77,
  ref: 2 ** 52,
  refPart: 0,
  refTime: Date.UTC(2026, 11, 2, 0, 1),
  flags: 15,
};

test("every field round-trips, with its type", () => {
  const back = decodeEvent(full.kind, encodeEvent(full), 42);
  expect(back).toEqual({ ...full, at: 42 });
  expect(Buffer.isBuffer(back.value!.blob)).toBe(true);
});

test("absent fields stay absent; a lease or an ack is small", () => {
  const lease: LogEvent = {
    kind: EventKind.Lease,
    taskId: "t",
    attempt: 1,
    worker: "w",
    leaseUntil: 1,
    ttrMs: 2,
    leaseStart: 0,
    expiresAt: 9,
    src: 7,
    flags: 8,
  };
  const back = decodeEvent(EventKind.Lease, encodeEvent(lease), 1);
  expect(back).toEqual({ ...lease, at: 1 });
  expect(Object.keys(back).sort()).toEqual([...Object.keys(lease), "at"].sort());
  expect(encodeEvent(lease).length).toBeLessThan(100);
  // Undefined fields are skipped, not stored as nulls.
  const withUndefined = { ...lease, progress: undefined, reason: undefined };
  expect(encodeEvent(withUndefined)).toEqual(encodeEvent(lease));
});

test("random events round-trip", () => {
  let s = 7;
  const rnd = () => (s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const keys = Object.keys(full) as (keyof LogEvent)[];
  for (let i = 0; i < 500; i++) {
    const e: Record<string, unknown> = { kind: full.kind, taskId: `t${i}`, expiresAt: Math.floor(rnd() * 2 ** 45) };
    for (const k of keys) if (rnd() < 0.5) e[k] = full[k];
    if (rnd() < 0.3) e["value"] = { keyId: "", blob: Buffer.alloc(Math.floor(rnd() * 3000), 7) };
    const ev = e as unknown as LogEvent;
    expect(decodeEvent(ev.kind, encodeEvent(ev), i)).toEqual({ ...ev, at: i });
  }
});

test("a blob that is not an event is an error naming its position", () => {
  const good = encodeEvent(full);
  for (const bad of [
    Buffer.alloc(0),
    Buffer.from([2, 1, 0, 0, 0, 0]), // a format this version does not know
    Buffer.from([1, 99]), // an unknown field
    good.subarray(0, good.length - 3), // truncated
    Buffer.concat([good.subarray(0, 20), Buffer.from([14])]), // a number cut short
  ]) {
    expect(() => decodeEvent(EventKind.Add, bad, 5)).toThrow(EventFormatError);
    expect(() => decodeEvent(EventKind.Add, bad, 5)).toThrow(/at 5/);
  }
});

test("an event cut anywhere decodes to its whole fields or is an EventFormatError, never another error", () => {
  const good = encodeEvent(full);
  const defaults: Record<string, unknown> = { taskId: "", expiresAt: 0 };
  let whole = 0;
  for (let n = 1; n < good.length; n++) {
    let back: Record<string, unknown> | undefined;
    try {
      back = decodeEvent(EventKind.Add, good.subarray(0, n), 5) as unknown as Record<string, unknown>;
    } catch (err) {
      expect(err).toBeInstanceOf(EventFormatError);
      continue;
    }
    // A cut at a field boundary: every field it holds is the full event's (or a decoder default).
    for (const [k, v] of Object.entries(back))
      if (k !== "at" && k !== "kind" && v !== defaults[k])
        expect(v).toEqual((full as unknown as Record<string, unknown>)[k]);
    whole++;
  }
  // Boundaries are few (one per field); every other cut is an error.
  expect(whole).toBeLessThan(Object.keys(full).length + 1);
});

test("a run holds consecutive events, each at its position; a damaged run is an error", () => {
  const events: LogEvent[] = [
    full,
    { kind: EventKind.Lease, taskId: "a", worker: "w", leaseUntil: 5, expiresAt: 9 },
    { kind: EventKind.Ack, taskId: "a", expiresAt: 9, result: { keyId: "k", blob: Buffer.from("r") } },
  ];
  const run = encodeRun(events);
  expect(decodeRun(run, 40, p => 1000 + p)).toEqual(events.map((e, i) => ({ ...e, at: 1040 + i })));
  for (const bad of [
    Buffer.alloc(0),
    Buffer.from([9, 1, 0]), // an unknown run format
    run.subarray(0, run.length - 1), // truncated
    Buffer.concat([run, Buffer.from([0])]), // trailing bytes
  ]) {
    expect(() => decodeRun(bad, 40, p => p)).toThrow(EventFormatError);
  }
});

test("an event read from a run holds its own bytes, not the run's (a task kept in memory keeps only its value)", () => {
  const value = (n: number) => ({ keyId: "k", blob: Buffer.alloc(6000, n) });
  const events: LogEvent[] = Array.from({ length: 10 }, (_, n) => ({
    kind: EventKind.Add,
    taskId: `t${n}`,
    expiresAt: 9,
    value: value(n),
  }));
  const run = encodeRun(events);
  expect(run.length).toBeGreaterThan(60_000);
  const decoded = decodeRun(run, 0, p => p);
  decoded.forEach((e, n) => {
    expect(e.value!.blob.equals(value(n).blob)).toBe(true);
    expect(e.value!.blob.buffer).not.toBe(run.buffer);
    expect(e.value!.blob.buffer.byteLength).toBeLessThan(run.length / 5);
  });
});
