/**
 * Owner keys at rest in Cassandra, one partition per owner, one row per rotation period, wrapped
 * with the master key (AD = owner + key id, so a wrapped key cannot be moved to another owner or id).
 *
 * Time is cut into rotation periods, shifted per owner so that not every owner rotates at the same
 * instant. The key of the current period is the current key; the first call in a period creates it
 * with `INSERT ... IF NOT EXISTS`, so concurrent first calls, on any node, agree on one key. The key
 * id carries its period, so a key is found by id with a single-row read. Every row has a TTL that
 * outlives the last value sealed with it (rotation period + task retention + margin).
 */
import { createHash, randomBytes } from "node:crypto";
import { types, type Client } from "cassandra-driver";
import { ConfigurationError, StorageUnavailableError } from "../errors";
import {
  EnvelopeError,
  KEY_BYTES,
  encodeAssociatedData,
  loadSodium,
  openEnvelope,
  sealEnvelope,
} from "./aead-envelope";
import type { OwnerKey } from "./key-provider";
import { TtlCache } from "./ttl-cache";

const DAY_MS = 86_400_000;
/** Cassandra's largest TTL: 20 years. */
const MAX_TTL_SECONDS = 630_720_000;
const WRAP_DOMAIN = "owner-key";
const IDENTIFIER = /^[a-zA-Z][a-zA-Z0-9_]{0,47}$/;

export interface OwnerKeyStoreOptions {
  client: Client;
  keyspace: string;
  /**
   * The table holding the wrapped keys (created when missing).
   * @defaultValue "owner_keys"
   */
  table?: string;
  /** 32 bytes that wrap every new owner key (the current master key). */
  masterKey: Buffer;
  /**
   * Earlier master keys: rows wrapped under them still unwrap (until `rewrapAll` moves them to the
   * current key). @defaultValue none
   */
  previousMasterKeys?: Buffer[];
  /**
   * After how many days an owner gets a new current key (fractions allowed).
   * @defaultValue 30
   */
  rotationDays?: number;
  /**
   * How long the queue keeps tasks: a key stays readable this long after its period ends.
   * @defaultValue 7
   */
  retentionDays?: number;
  /**
   * Extra lifetime on top of rotation + retention, for caches and clock skew.
   * @defaultValue 7
   */
  marginDays?: number;
  /**
   * How long unwrapped keys stay in memory.
   * @defaultValue 60000
   */
  cacheTtlMs?: number;
  /**
   * How many unwrapped keys are kept in memory at most.
   * @defaultValue 10000
   */
  maxCachedKeys?: number;
  /** @defaultValue Date.now */
  now?: () => number;
}

interface KeyRow {
  key_id: string;
  wrapped: Buffer;
  /** The id of the master key that wrapped it; null for rows written before ids were recorded. */
  master_id: string | null;
}

/** A master key's id: the first 8 bytes of its SHA-256, hex (names the key, reveals nothing of it). */
export function masterKeyId(key: Buffer): string {
  return createHash("sha256").update(key).digest().subarray(0, 8).toString("hex");
}

/** What a re-wrap did. */
export interface RewrapReport {
  /** Rows read. */
  rows: number;
  /** Rows moved to the current master key. */
  rewrapped: number;
  /** Rows already under it. */
  current: number;
}

export class OwnerKeyStore {
  private readonly client: Client;
  private readonly table: string;
  private readonly masterKey: Buffer;
  private readonly masterId: string;
  /** Every configured master key by id, the current one included. */
  private readonly masterKeys = new Map<string, Buffer>();
  private readonly rotationMs: number;
  private readonly ttlSeconds: number;
  private readonly cacheTtlMs: number;
  private readonly now: () => number;
  private readonly cache: TtlCache<OwnerKey>;
  /** Concurrent misses for the same owner and period within this process share one request. */
  private readonly inFlight = new Map<string, Promise<OwnerKey>>();

  constructor(options: OwnerKeyStoreOptions) {
    if (!IDENTIFIER.test(options.keyspace)) {
      throw new ConfigurationError("keyspace", `Keyspace name "${options.keyspace}" is not a plain CQL identifier`);
    }
    const table = options.table ?? "owner_keys";
    if (!IDENTIFIER.test(table))
      throw new ConfigurationError("table", `Table name "${table}" is not a plain CQL identifier`);
    if (options.masterKey.length !== KEY_BYTES) {
      throw new ConfigurationError("masterKey", `The master key must be ${KEY_BYTES} bytes`);
    }
    const rotationDays = positive("rotationDays", options.rotationDays ?? 30);
    const retentionDays = positive("retentionDays", options.retentionDays ?? 7);
    const marginDays = nonNegative("marginDays", options.marginDays ?? 7);
    this.rotationMs = Math.max(1, Math.round(rotationDays * DAY_MS));
    this.ttlSeconds = Math.ceil(((rotationDays + retentionDays + marginDays) * DAY_MS) / 1000);
    if (this.ttlSeconds > MAX_TTL_SECONDS) {
      throw new ConfigurationError(
        "rotationDays",
        `rotationDays + retentionDays + marginDays must stay under 20 years (Cassandra's largest TTL)`,
      );
    }
    this.client = options.client;
    this.table = `${options.keyspace}.${table}`;
    this.masterKey = Buffer.from(options.masterKey);
    this.masterId = masterKeyId(this.masterKey);
    this.masterKeys.set(this.masterId, this.masterKey);
    for (const previous of options.previousMasterKeys ?? []) {
      if (previous.length !== KEY_BYTES) {
        throw new ConfigurationError("previousMasterKeys", `Every previous master key must be ${KEY_BYTES} bytes`);
      }
      if (!this.masterKeys.has(masterKeyId(previous)))
        this.masterKeys.set(masterKeyId(previous), Buffer.from(previous));
    }
    this.cacheTtlMs = nonNegative("cacheTtlMs", options.cacheTtlMs ?? 60_000);
    this.now = options.now ?? Date.now;
    this.cache = new TtlCache({ maxEntries: options.maxCachedKeys ?? 10_000, now: this.now });
  }

  /** The TTL, in seconds, every key row is written with. */
  get keyTtlSeconds(): number {
    return this.ttlSeconds;
  }

  /** Creates the table when missing; safe to run on every start. */
  async init(): Promise<void> {
    await this.run("create the owner key table", () =>
      this.client.execute(
        `CREATE TABLE IF NOT EXISTS ${this.table} (
          owner_id text,
          period bigint,
          key_id text,
          wrapped blob,
          master_id text,
          created_at timestamp,
          PRIMARY KEY ((owner_id), period)
        ) WITH CLUSTERING ORDER BY (period DESC)
          AND comment = 'Owner encryption keys, wrapped with the master key; rows expire by TTL'`,
      ),
    );
    // Tables made before master key ids were recorded get the column (a no-op error when it exists).
    const columns = await this.run("read the owner key table's columns", () =>
      this.client.execute(
        "SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ?",
        this.table.split("."),
        { prepare: true },
      ),
    );
    if (!columns.rows.some(r => r.get("column_name") === "master_id")) {
      await this.run("add master_id to the owner key table", () =>
        this.client.execute(`ALTER TABLE ${this.table} ADD master_id text`).catch((err: Error) => {
          if (!/already exist|conflicts with an existing column/i.test(err.message)) throw err;
        }),
      );
    }
  }

  /** The owner's key for the current rotation period, created on first use. */
  current(ownerId: string): Promise<OwnerKey> {
    const now = this.now();
    const period = this.periodOf(ownerId, now);
    const cacheKey = `c:${ownerId.length}:${ownerId}:${period}`;
    const hit = this.cache.get(cacheKey);
    if (hit !== undefined) return Promise.resolve(hit);
    const pending = this.inFlight.get(cacheKey);
    if (pending !== undefined) return pending;
    const request = this.loadOrCreate(ownerId, period)
      .then(key => {
        const periodEndsIn = this.periodEnd(ownerId, period) - this.now();
        this.cache.set(cacheKey, key, Math.min(this.cacheTtlMs, periodEndsIn));
        this.cache.set(byIdCacheKey(ownerId, key.id), key, this.cacheTtlMs);
        return key;
      })
      .finally(() => this.inFlight.delete(cacheKey));
    this.inFlight.set(cacheKey, request);
    return request;
  }

  /** The owner's key with this id, or undefined when there is none (never created, or expired). */
  async byId(ownerId: string, keyId: string): Promise<OwnerKey | undefined> {
    const cacheKey = byIdCacheKey(ownerId, keyId);
    const hit = this.cache.get(cacheKey);
    if (hit !== undefined) return hit;
    const period = periodOfKeyId(keyId);
    if (period === undefined) return undefined;
    const row = await this.read(ownerId, period, types.consistencies.localQuorum);
    if (row === undefined || row.key_id !== keyId) return undefined;
    const key = await this.unwrap(ownerId, row);
    this.cache.set(cacheKey, key, this.cacheTtlMs);
    return key;
  }

  /** Forgets the unwrapped keys held in memory. */
  clearCache(): void {
    this.cache.clear();
  }

  private async loadOrCreate(ownerId: string, period: number): Promise<OwnerKey> {
    const existing = await this.read(ownerId, period, types.consistencies.localQuorum);
    if (existing !== undefined) return this.unwrap(ownerId, existing);

    const keyId = `${period}-${randomBytes(8).toString("hex")}`;
    const fresh = randomBytes(KEY_BYTES);
    const sodium = await loadSodium();
    const wrapped = sealEnvelope(sodium, this.masterKey, fresh, wrapAssociatedData(ownerId, keyId));
    let applied: boolean;
    let winner: KeyRow | undefined;
    try {
      const rs = await this.client.execute(
        `INSERT INTO ${this.table} (owner_id, period, key_id, wrapped, master_id, created_at)
         VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?`,
        [ownerId, types.Long.fromNumber(period), keyId, wrapped, this.masterId, new Date(this.now()), this.ttlSeconds],
        {
          prepare: true,
          consistency: types.consistencies.localQuorum,
          serialConsistency: types.consistencies.localSerial,
        },
      );
      applied = rs.wasApplied();
      winner = applied ? undefined : asKeyRow(rs.first());
    } catch (err) {
      // A timed-out LWT has an unknown outcome: a serial read tells which key (if any) won.
      winner = await this.read(ownerId, period, types.consistencies.localSerial);
      if (winner === undefined) throw storageError("create an owner key", err);
      applied = false;
    }
    if (applied) return { id: keyId, key: fresh };
    // Another caller created this period's key first: use theirs.
    winner ??= await this.read(ownerId, period, types.consistencies.localSerial);
    if (winner === undefined) {
      throw new StorageUnavailableError("create an owner key", "the conditional insert lost, yet no key row is there");
    }
    return this.unwrap(ownerId, winner);
  }

  private async read(ownerId: string, period: number, consistency: number): Promise<KeyRow | undefined> {
    const rs = await this.run("read an owner key", () =>
      this.client.execute(
        `SELECT key_id, wrapped, master_id FROM ${this.table} WHERE owner_id = ? AND period = ?`,
        [ownerId, types.Long.fromNumber(period)],
        { prepare: true, consistency, isIdempotent: true },
      ),
    );
    return asKeyRow(rs.first());
  }

  private async unwrap(ownerId: string, row: KeyRow): Promise<OwnerKey> {
    const sodium = await loadSodium();
    // A row names its master key; an older row does not, so every configured key is tried.
    const candidates =
      row.master_id !== null
        ? [this.masterKeys.get(row.master_id)].filter(k => k !== undefined)
        : [...this.masterKeys.values()];
    let reason = `master key ${row.master_id ?? "(unrecorded)"} is not configured`;
    for (const masterKey of candidates) {
      try {
        const key = openEnvelope(sodium, masterKey, row.wrapped, wrapAssociatedData(ownerId, row.key_id));
        return { id: row.key_id, key };
      } catch (err) {
        if (!(err instanceof EnvelopeError)) throw err;
        reason = err.reason;
      }
    }
    throw new ConfigurationError(
      "KEYS_MASTER_KEY",
      `Owner key ${row.key_id} does not unwrap with the configured master keys (${reason}); ` +
        "configure the master key that wrapped it (KEYS_MASTER_KEY, or KEYS_PREVIOUS_MASTER_KEYS after a rotation)",
    );
  }

  /**
   * Re-wraps every owner key not under the current master key with it, keeping each row's remaining
   * lifetime; safe to run again, and beside running keys services (a conditional update per row).
   * Afterwards previous master keys are no longer needed.
   */
  async rewrapAll(): Promise<RewrapReport> {
    const report: RewrapReport = { rows: 0, rewrapped: 0, current: 0 };
    const sodium = await loadSodium();
    let pageState: string | undefined;
    do {
      const rs = await this.run("page through owner keys", () =>
        this.client.execute(
          `SELECT owner_id, period, key_id, wrapped, master_id, TTL(wrapped) AS ttl FROM ${this.table}`,
          [],
          { prepare: true, fetchSize: 500, pageState, consistency: types.consistencies.localQuorum },
        ),
      );
      pageState = rs.pageState ?? undefined;
      for (const r of rs.rows) {
        report.rows++;
        const row = asKeyRow(r);
        if (row === undefined) continue;
        if (row.master_id === this.masterId) {
          report.current++;
          continue;
        }
        const ownerId = r.get("owner_id") as string;
        const { key } = await this.unwrap(ownerId, row);
        const wrapped = sealEnvelope(sodium, this.masterKey, key, wrapAssociatedData(ownerId, row.key_id));
        const ttl = Math.max(1, Number(r.get("ttl") ?? this.ttlSeconds));
        const update = await this.run("re-wrap an owner key", () =>
          this.client.execute(
            `UPDATE ${this.table} USING TTL ? SET wrapped = ?, master_id = ? WHERE owner_id = ? AND period = ?
             IF master_id = ?`,
            [ttl, wrapped, this.masterId, ownerId, r.get("period"), row.master_id],
            {
              prepare: true,
              consistency: types.consistencies.localQuorum,
              serialConsistency: types.consistencies.localSerial,
            },
          ),
        );
        // Not applied: another re-wrap got there first (the row is under the current key now).
        if (update.wasApplied()) report.rewrapped++;
        else report.current++;
      }
    } while (pageState !== undefined);
    this.cache.clear();
    return report;
  }

  /** Each owner's periods are shifted by an offset derived from the owner id. */
  private periodOf(ownerId: string, now: number): number {
    return Math.floor((now + this.offsetOf(ownerId)) / this.rotationMs);
  }

  private periodEnd(ownerId: string, period: number): number {
    return (period + 1) * this.rotationMs - this.offsetOf(ownerId);
  }

  private offsetOf(ownerId: string): number {
    return createHash("sha256").update(ownerId).digest().readUIntBE(0, 6) % this.rotationMs;
  }

  private async run<T>(operation: string, query: () => Promise<T>): Promise<T> {
    try {
      return await query();
    } catch (err) {
      throw storageError(operation, err);
    }
  }
}

function wrapAssociatedData(ownerId: string, keyId: string): Buffer {
  return encodeAssociatedData([WRAP_DOMAIN, ownerId, keyId]);
}

function byIdCacheKey(ownerId: string, keyId: string): string {
  return `k:${ownerId.length}:${ownerId}:${keyId}`;
}

/** Key ids are `<period>-<16 hex digits>`. */
function periodOfKeyId(keyId: string): number | undefined {
  const match = /^(\d{1,15})-[0-9a-f]{16}$/.exec(keyId);
  return match?.[1] === undefined ? undefined : Number(match[1]);
}

function asKeyRow(row: types.Row | null | undefined): KeyRow | undefined {
  if (row === null || row === undefined) return undefined;
  const keyId: unknown = row.get("key_id");
  const wrapped: unknown = row.get("wrapped");
  const masterId: unknown = row.get("master_id");
  if (typeof keyId !== "string" || !Buffer.isBuffer(wrapped)) return undefined;
  return { key_id: keyId, wrapped, master_id: typeof masterId === "string" ? masterId : null };
}

function storageError(operation: string, err: unknown): StorageUnavailableError {
  if (err instanceof StorageUnavailableError) return err;
  return new StorageUnavailableError(operation, err instanceof Error ? err.message : String(err));
}

function positive(setting: string, value: number): number {
  if (!Number.isFinite(value) || value <= 0) {
    throw new ConfigurationError(setting, `${setting} must be a positive number, got ${value}`);
  }
  return value;
}

function nonNegative(setting: string, value: number): number {
  if (!Number.isFinite(value) || value < 0) {
    throw new ConfigurationError(setting, `${setting} must be zero or a positive number, got ${value}`);
  }
  return value;
}
