/**
 * Raw queue_log rows for tests that look at (or tamper with) what is stored: the event of each row
 * decoded from its `ev` blob, and read back under the names of the columns it would have had.
 */
import type { Client, types } from "cassandra-driver";
import type { Sealed } from "../../lib/codec";
import { decodeEvent, decodeRun, encodeEvent, encodeRun } from "../../lib/queue/event-codec";
import type { EventKind, StoredEvent } from "../../lib/queue/task";

export interface LogRow {
  queue: string;
  range_id: types.Long;
  bucket: number;
  pos: number;
  event: StoredEvent;
  /** Where the row holding it starts: `pos` for an event row, the run's first position for a run row. */
  rowPos: number;
  /** A field of the event under its column name (key_id, value, wf_token, task_id...); null when absent. */
  get(column: string): unknown;
}

const SEALED_COLUMNS: Record<string, [keyof StoredEvent, "keyId" | "blob"]> = {
  key_id: ["value", "keyId"],
  value: ["value", "blob"],
  token_key_id: ["token", "keyId"],
  wf_token: ["token", "blob"],
  progress_key_id: ["progress", "keyId"],
  progress: ["progress", "blob"],
  error_key_id: ["error", "keyId"],
  error: ["error", "blob"],
  result_key_id: ["result", "keyId"],
  result: ["result", "blob"],
};

function columnOf(e: StoredEvent, column: string): unknown {
  const sealed = SEALED_COLUMNS[column];
  if (sealed) return (e[sealed[0]] as Sealed | undefined)?.[sealed[1]] ?? null;
  if (column === "task_id") return e.taskId;
  if (column === "kind") return e.kind;
  return null;
}

/**
 * The events a queue_log row read with `pos, kind, ev, evs` holds (a run's, one event's, or none
 * for a marker), each with its position in the partition as `at`.
 */
export function eventsOfLogRow(r: types.Row): StoredEvent[] {
  const rowPos = r["pos"] as number;
  if (Buffer.isBuffer(r["evs"])) return decodeRun(r["evs"] as Buffer, rowPos, p => p);
  if (r["kind"] === null) return [];
  return [decodeEvent(r["kind"] as EventKind, r["ev"] as Buffer, rowPos)];
}

/** Every event row of the keyspace's log (all queues when `queue` is not given). */
export async function logRows(client: Client, keyspace: string, queue?: string): Promise<LogRow[]> {
  const out: LogRow[] = [];
  let pageState: string | undefined;
  do {
    const rs = await client.execute(
      `SELECT queue, range_id, bucket, pos, kind, ev, evs FROM ${keyspace}.queue_log`,
      [],
      { fetchSize: 1000, pageState },
    );
    for (const r of rs.rows) {
      if (queue !== undefined && r["queue"] !== queue) continue;
      const rowPos = r["pos"] as number;
      for (const event of eventsOfLogRow(r)) {
        out.push({
          queue: r["queue"] as string,
          range_id: r["range_id"] as types.Long,
          bucket: r["bucket"] as number,
          pos: event.at,
          rowPos,
          event,
          get: (column: string) => columnOf(event, column),
        });
      }
    }
    pageState = rs.pageState ?? undefined;
  } while (pageState);
  return out;
}

/** Rewrites one stored event with `patch` applied (a tampering test's only way into the log). */
export async function rewriteEvent(
  client: Client,
  keyspace: string,
  row: LogRow,
  patch: (e: StoredEvent) => StoredEvent,
): Promise<void> {
  const key = [row.queue, row.range_id, row.bucket, row.rowPos];
  const where = `WHERE queue = ? AND range_id = ? AND bucket = ? AND pos = ?`;
  const stored = (
    await client.execute(`SELECT evs FROM ${keyspace}.queue_log ${where}`, key, { prepare: true })
  ).first();
  if (Buffer.isBuffer(stored?.["evs"])) {
    // A run row: the run again, with this one event patched.
    const events = decodeRun(stored["evs"] as Buffer, row.rowPos, p => p).map(e =>
      e.at === row.pos ? patch({ ...e }) : e,
    );
    await client.execute(`UPDATE ${keyspace}.queue_log SET evs = ? ${where}`, [encodeRun(events), ...key], {
      prepare: true,
    });
    return;
  }
  const next = patch({ ...row.event });
  await client.execute(`UPDATE ${keyspace}.queue_log SET ev = ? ${where}`, [encodeEvent(next), ...key], {
    prepare: true,
  });
}
