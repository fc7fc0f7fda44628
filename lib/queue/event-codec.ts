/**
 * The compact form of a log event: every field but the kind in one blob (`queue_log.ev`), so an
 * event row is three cells (pos, kind, ev) instead of up to thirty. Cassandra's cost of a row grows
 * with its cells, and so does the driver's cost of binding it (docs/benchmarks.md, "One cell per
 * event"). The format is ours and versioned by its first byte; decoding never evaluates anything,
 * and a blob that does not parse is an error, never a partial event.
 *
 * Layout: [format = 1] then, for each field present, a tag byte and its value: numbers as float64
 * (little endian: exact for every JS number), booleans as one byte, strings as uint32 length and
 * UTF-8, sealed values as a string (key id) and uint32 length and bytes.
 */
import type { Sealed } from "../codec";
import type { EventKind, LogEvent, StoredEvent } from "./task";

const FORMAT = 1;

const enum T {
  Num = 0,
  Bool = 1,
  Str = 2,
  Sealed = 3,
}

/** Field tags, in encoding order. Never reuse or renumber a tag: stored rows hold them. */
const FIELDS: readonly (readonly [tag: number, name: keyof LogEvent, type: T])[] = [
  [1, "taskId", T.Str],
  [2, "seq", T.Num],
  [3, "clientId", T.Bool],
  [4, "value", T.Sealed],
  [5, "token", T.Sealed],
  [6, "attempt", T.Num],
  [7, "maxAttempts", T.Num],
  [8, "state", T.Num],
  [9, "notBefore", T.Num],
  [10, "worker", T.Str],
  [11, "leaseUntil", T.Num],
  [12, "ttrMs", T.Num],
  [13, "leaseStart", T.Num],
  [14, "expiresAt", T.Num],
  [15, "progress", T.Sealed],
  [16, "error", T.Sealed],
  [17, "reason", T.Str],
  [18, "cancelled", T.Bool],
  [19, "result", T.Sealed],
  [20, "src", T.Num],
  [21, "ref", T.Num],
  [22, "refPart", T.Num],
  [23, "refTime", T.Num],
  [24, "flags", T.Num],
];

const BY_TAG: (readonly [number, keyof LogEvent, T] | undefined)[] = [];
for (const f of FIELDS) BY_TAG[f[0]] = f;

const FIELD_COUNT = FIELDS.length;
const FIELD_TAGS = FIELDS.map(f => f[0]);
const FIELD_NAMES = FIELDS.map(f => f[1]);
const FIELD_TYPES = FIELDS.map(f => f[2]);
/** The fields of the event being encoded (encoding is synchronous: one scratch array will do). */
const present: unknown[] = new Array(FIELD_COUNT).fill(undefined);

/** The blob of an event (everything but its kind). */
export function encodeEvent(e: LogEvent): Buffer {
  const rec = e as unknown as Record<string, unknown>;
  // Index loops over flat arrays, not `for (const [..] of FIELDS)` twice: a quarter less allocated
  // and a fifth less time per event (docs/benchmarks.md, 2026-12-07).
  let size = 1;
  for (let k = 0; k < FIELD_COUNT; k++) {
    const v = rec[FIELD_NAMES[k]!];
    present[k] = v;
    if (v === undefined || v === null) continue;
    const type = FIELD_TYPES[k];
    if (type === T.Num) size += 9;
    else if (type === T.Bool) size += 2;
    else if (type === T.Str) size += 5 + Buffer.byteLength(v as string);
    else size += 9 + Buffer.byteLength((v as Sealed).keyId) + (v as Sealed).blob.length;
  }
  const out = Buffer.allocUnsafe(size);
  out[0] = FORMAT;
  let at = 1;
  for (let k = 0; k < FIELD_COUNT; k++) {
    const v = present[k];
    if (v === undefined || v === null) continue;
    present[k] = undefined;
    out[at++] = FIELD_TAGS[k]!;
    const type = FIELD_TYPES[k];
    if (type === T.Num) {
      out.writeDoubleLE(v as number, at);
      at += 8;
    } else if (type === T.Bool) {
      out[at++] = v ? 1 : 0;
    } else if (type === T.Str) {
      at = writeString(out, at, v as string);
    } else {
      const sealed = v as Sealed;
      at = writeString(out, at, sealed.keyId);
      out.writeUInt32LE(sealed.blob.length, at);
      at += 4;
      at += sealed.blob.copy(out, at);
    }
  }
  return out;
}

function writeString(out: Buffer, at: number, s: string): number {
  const n = out.write(s, at + 4, "utf8");
  out.writeUInt32LE(n, at);
  return at + 4 + n;
}

/** Thrown for a blob that is not an event of a known format. */
export class EventFormatError extends Error {
  constructor(at: number, why: string) {
    super(`log event at ${at} does not decode: ${why}`);
    this.name = "EventFormatError";
  }
}

/**
 * The event stored at `at` with this kind and blob. Its sealed values are views of `blob`, or
 * with `ownSealed` copies in memory of their own (for a blob that is a slice of a larger one).
 */
export function decodeEvent(kind: EventKind, blob: Buffer, at: number, ownSealed = false): StoredEvent {
  if (blob.length < 1 || blob[0] !== FORMAT) throw new EventFormatError(at, `unknown format ${blob[0]}`);
  const e: Record<string, unknown> = { at, kind, taskId: "", expiresAt: 0 };
  // No closures here: this runs for every event a reader sees.
  let i = 1;
  while (i < blob.length) {
    const field = BY_TAG[blob[i++]!];
    if (!field) throw new EventFormatError(at, `unknown field ${blob[i - 1]}`);
    const [, name, type] = field;
    if (type === T.Num) {
      need(blob, i, 8, at);
      e[name] = blob.readDoubleLE(i);
      i += 8;
    } else if (type === T.Bool) {
      need(blob, i, 1, at);
      e[name] = blob[i++] === 1;
    } else if (type === T.Str) {
      const n = lengthAt(blob, i, at);
      e[name] = blob.toString("utf8", i + 4, i + 4 + n);
      i += 4 + n;
    } else {
      const k = lengthAt(blob, i, at);
      const keyId = blob.toString("utf8", i + 4, i + 4 + k);
      i += 4 + k;
      const n = lengthAt(blob, i, at);
      const sealed = blob.subarray(i + 4, i + 4 + n);
      e[name] = { keyId, blob: ownSealed ? ownCopy(sealed) : sealed } satisfies Sealed;
      i += 4 + n;
    }
  }
  return e as unknown as StoredEvent;
}

function need(blob: Buffer, i: number, n: number, at: number): void {
  if (i + n > blob.length) throw new EventFormatError(at, "truncated");
}

/** The uint32 length at `i`, checked against the blob (the bytes it counts follow it). */
function lengthAt(blob: Buffer, i: number, at: number): number {
  need(blob, i, 4, at);
  const n = blob.readUInt32LE(i);
  need(blob, i + 4, n, at);
  return n;
}

/** Bytes in memory of their own (not a view of a larger buffer, nor a slice of the shared pool). */
function ownCopy(bytes: Buffer): Buffer {
  const out = Buffer.allocUnsafeSlow(bytes.length);
  bytes.copy(out);
  return out;
}

const RUN_FORMAT = 1;

/**
 * The blob of a run: consecutive events of one batch that share a TTL, stored in one row
 * (`queue_log.evs`, at the run's first position). Layout: [format = 1], uint16 count, then per
 * event its kind (one byte), uint32 length and its event blob (as `encodeEvent`).
 */
export function encodeRun(events: readonly LogEvent[]): Buffer {
  return packRun(
    events.map(e => e.kind),
    events.map(encodeEvent),
  );
}

/** A run's blob from its events' kinds and blobs (`encodeEvent`'s), in order. */
export function packRun(kinds: readonly EventKind[], blobs: readonly Buffer[]): Buffer {
  let size = 3;
  for (const b of blobs) size += 5 + b.length;
  const out = Buffer.allocUnsafe(size);
  out[0] = RUN_FORMAT;
  out.writeUInt16LE(blobs.length, 1);
  let at = 3;
  for (let i = 0; i < blobs.length; i++) {
    out[at] = kinds[i]!;
    out.writeUInt32LE(blobs[i]!.length, at + 1);
    at += 5;
    at += blobs[i]!.copy(out, at);
  }
  return out;
}

/** The events of a run whose first event is at `firstPos` of its partition; `atOf` gives each one's position. */
export function decodeRun(blob: Buffer, firstPos: number, atOf: (pos: number) => number): StoredEvent[] {
  const first = atOf(firstPos);
  if (blob.length < 3 || blob[0] !== RUN_FORMAT) throw new EventFormatError(first, `unknown run format ${blob[0]}`);
  const count = blob.readUInt16LE(1);
  const out: StoredEvent[] = [];
  let i = 3;
  for (let n = 0; n < count; n++) {
    const at = atOf(firstPos + n);
    if (i + 5 > blob.length) throw new EventFormatError(at, "truncated run");
    const kind = blob[i] as EventKind;
    const len = blob.readUInt32LE(i + 1);
    i += 5;
    if (i + len > blob.length) throw new EventFormatError(at, "truncated run");
    // Sealed values copied: a task kept in memory (the backlog's window, a body) holds its own
    // value, not the whole run.
    out.push(decodeEvent(kind, blob.subarray(i, i + len), at, true));
    i += len;
  }
  if (i !== blob.length) throw new EventFormatError(first, "trailing bytes after the run");
  return out;
}
