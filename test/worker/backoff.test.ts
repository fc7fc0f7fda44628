/** The workers' pure parts: jittered backoff, the abortable pause, and how an error is stored. */
import { Backoff, pause } from "../../lib/worker/backoff";
import { serializeError } from "../../lib/worker/pull-worker";

test("backoff: each pause lies in the upper half of a delay that doubles up to the maximum", () => {
  const backoff = new Backoff(100, 1000);
  const bounds = [100, 200, 400, 800, 1000, 1000];
  for (const base of bounds) {
    const next = backoff.next();
    expect(next).toBeGreaterThanOrEqual(base / 2);
    expect(next).toBeLessThanOrEqual(base);
  }
  backoff.reset();
  expect(backoff.next()).toBeLessThanOrEqual(100);
});

test("backoff: pauses of workers that failed together are spread out", () => {
  const pauses = new Set(Array.from({ length: 20 }, () => new Backoff(1000, 1000).next()));
  expect(pauses.size).toBeGreaterThan(10);
});

test("pause ends early when its signal aborts, and an infinite pause waits for the signal only", async () => {
  // With fake timers no pause can end by its own timer: only the abort can end them.
  jest.useFakeTimers();
  try {
    const controller = new AbortController();
    const finite = pause(10_000, controller.signal);
    const infinite = pause(Infinity, controller.signal);
    controller.abort();
    await Promise.all([finite, infinite]);
    await pause(5, controller.signal); // already aborted: at once
  } finally {
    jest.useRealTimers();
  }
});

test("an error is stored as name, message, and its code and type when it has them", () => {
  const moleculerLike = Object.assign(new Error("no node"), {
    code: 503,
    type: "SERVICE_NOT_AVAILABLE",
    data: { x: 1 },
  });
  expect(serializeError(moleculerLike)).toEqual({
    name: "Error",
    message: "no node",
    code: 503,
    type: "SERVICE_NOT_AVAILABLE",
  });
  expect(serializeError(Object.assign(new TypeError("bad"), { code: "E_BAD" }))).toEqual({
    name: "TypeError",
    message: "bad",
    code: "E_BAD",
  });
  expect(serializeError("plain string")).toEqual({ name: "Error", message: "plain string" });
  expect((serializeError(new Error("x".repeat(5000))).message as string).length).toBeLessThan(2010);
});
