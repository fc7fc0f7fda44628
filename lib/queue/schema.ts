/**
 * The queue's tables, created idempotently and versioned: each migration runs once, in order, and
 * is recorded in schema_migrations. Add new migrations at the end; never edit an applied one. Two
 * nodes may run the same migration at once, so every statement must be safe to repeat.
 */
import type { Client } from "cassandra-driver";
import { ConfigurationError } from "../errors";
import type { QueueEngineOptions } from "./options";

interface Migration {
  id: number;
  name: string;
  statements: (o: QueueEngineOptions) => string[];
}

const twcs =
  "compaction = {'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'DAYS', 'compaction_window_size': 1}";

/** The columns of a task's full state, shared by the parked tables. */
const TASK_COLUMNS = `task_id text, seq bigint, client_id boolean,
         key_id text, value blob, token_key_id text, wf_token blob,
         attempt int, max_attempts int, expires_at bigint,
         progress_key_id text, progress blob, error_key_id text, error blob, reason text`;

const migrations: Migration[] = [
  {
    id: 1,
    name: "queue owner, event log, task index",
    statements: o => [
      `CREATE TABLE IF NOT EXISTS queue_owner (
         queue text PRIMARY KEY, range_id bigint, node text, lease_until timestamp, buckets text
       ) WITH default_time_to_live = ${o.retentionSeconds}`,
      `CREATE TABLE IF NOT EXISTS queue_log (
         queue text, range_id bigint, bucket int, pos int,
         sealed boolean STATIC,
         kind tinyint, task_id text, seq bigint, client_id boolean,
         key_id text, value blob, token_key_id text, wf_token blob,
         attempt int, max_attempts int, state tinyint, not_before bigint,
         worker text, lease_until bigint, ttr int, lease_start bigint, expires_at bigint,
         progress_key_id text, progress blob, error_key_id text, error blob, reason text, cancelled boolean,
         result_key_id text, result blob,
         PRIMARY KEY ((queue, range_id, bucket), pos)
       ) WITH ${twcs} AND default_time_to_live = ${o.retentionSeconds} AND gc_grace_seconds = 10800`,
      `CREATE TABLE IF NOT EXISTS task_index (
         queue text, task_id text, seq bigint, PRIMARY KEY ((queue, task_id))
       ) WITH default_time_to_live = ${o.retentionSeconds}`,
    ],
  },
  {
    id: 2,
    name: "owner queue index",
    statements: o => [
      `CREATE TABLE IF NOT EXISTS owner_queues (
         owner_id text, service_id text, seen_at timestamp, PRIMARY KEY ((owner_id), service_id)
       ) WITH default_time_to_live = ${o.retentionSeconds}`,
    ],
  },
  {
    id: 3,
    name: "core v2: checkpoints, sources, parked tasks, task index for every task",
    statements: o => [
      `ALTER TABLE queue_owner ADD log_state text`,
      `ALTER TABLE queue_log ADD (src bigint, ref bigint, ref_part int, ref_time bigint, flags int)`,
      `ALTER TABLE task_index ADD (pos bigint, client_id boolean, hint tinyint, hint_time bigint, hint_part int, hint_ref bigint)`,
      `CREATE TABLE IF NOT EXISTS queue_due (
         queue text, minute bigint, part int, due_at bigint, pos bigint,
         ${TASK_COLUMNS},
         cancelled boolean,
         PRIMARY KEY ((queue, minute, part), due_at, pos)
       ) WITH ${twcs} AND default_time_to_live = ${o.retentionSeconds} AND gc_grace_seconds = 10800`,
      `CREATE TABLE IF NOT EXISTS queue_checkpoint (
         queue text, slot tinyint, chunk int,
         range_id bigint STATIC, version bigint STATIC, chunks int STATIC,
         snapshot blob,
         PRIMARY KEY ((queue, slot), chunk)
       ) WITH default_time_to_live = ${o.retentionSeconds + 86_400}`,
      `CREATE TABLE IF NOT EXISTS pending_handovers (
         shard int, queue text, owner_id text, service_id text, pending boolean,
         PRIMARY KEY ((shard), queue)
       ) WITH default_time_to_live = ${o.retentionSeconds}`,
      `CREATE TABLE IF NOT EXISTS backlog_cancels (
         queue text, range_id bigint, bucket int, pos int,
         PRIMARY KEY ((queue, range_id, bucket), pos)
       ) WITH default_time_to_live = ${o.retentionSeconds}`,
      `CREATE TABLE IF NOT EXISTS queue_dead (
         queue text, hour bigint, part int, pos bigint,  -- hour: when the task's retention ends
         ${TASK_COLUMNS},
         consumed boolean,
         PRIMARY KEY ((queue, hour, part), pos)
       ) WITH ${twcs} AND default_time_to_live = ${o.retentionSeconds} AND gc_grace_seconds = 10800`,
    ],
  },
  {
    id: 4,
    name: "commit pipeline: the end of a sealed log partition",
    statements: () => [
      `ALTER TABLE queue_log ADD end_pos int static`,
      `ALTER TABLE queue_log ADD batch_end int`,
      // A takeover relies on it: what one quorum read returned, every later quorum read returns.
      `ALTER TABLE queue_log WITH read_repair = 'BLOCKING'`,
    ],
  },
  {
    id: 5,
    name: "one cell per event: the event's fields in one blob",
    statements: () => [`ALTER TABLE queue_log ADD ev blob`],
  },
  {
    id: 6,
    name: "runs: consecutive events of a batch with one TTL in one row",
    statements: () => [`ALTER TABLE queue_log ADD evs blob`],
  },
];

const identifier = /^[a-z][a-z0-9_]{0,47}$/;

/** An ALTER that another node (or an earlier, interrupted run) has already applied. */
function alreadyApplied(err: unknown): boolean {
  return /already exist|conflicts with an existing column/i.test((err as Error).message ?? "");
}

/** Creates the keyspace (if missing) and applies pending migrations. Safe to run on every start, from many nodes. */
export async function migrateSchema(client: Client, options: QueueEngineOptions): Promise<void> {
  if (!identifier.test(options.keyspace)) {
    throw new Error(`Invalid keyspace name "${options.keyspace}": use lower-case letters, digits and _`);
  }
  const ks = options.keyspace;
  await client.execute(`CREATE KEYSPACE IF NOT EXISTS ${ks} WITH replication = ${options.replication}`);
  await client.execute(
    `CREATE TABLE IF NOT EXISTS ${ks}.schema_migrations (id int PRIMARY KEY, name text, applied_at timestamp)`,
  );
  const applied = await client.execute(`SELECT id FROM ${ks}.schema_migrations`);
  const done = new Set(applied.rows.map(r => r["id"] as number));
  // A keyspace a newer version migrated holds rows this version may misread (a run of events
  // read as none, say): refuse to start rather than serve from it.
  const known = Math.max(...migrations.map(m => m.id));
  const newest = Math.max(0, ...done);
  if (newest > known) {
    throw new ConfigurationError(
      "QUEUE_KEYSPACE",
      `Keyspace ${ks} was migrated by a newer version of the queue (schema ${newest}; this version knows up to ` +
        `${known}), whose rows this version may misread. Run the same version on every node of a keyspace.`,
    );
  }
  for (const m of migrations) {
    if (done.has(m.id)) continue;
    for (const stmt of m.statements(options)) {
      const qualified = stmt
        .replace(/CREATE TABLE IF NOT EXISTS /, `CREATE TABLE IF NOT EXISTS ${ks}.`)
        .replace(/^ALTER TABLE /, `ALTER TABLE ${ks}.`);
      try {
        await client.execute(qualified);
      } catch (err) {
        if (!alreadyApplied(err)) throw err;
      }
    }
    await client.execute(`INSERT INTO ${ks}.schema_migrations (id, name, applied_at) VALUES (?, ?, ?)`, [
      m.id,
      m.name,
      new Date(),
    ]);
  }
}
