/**
 * The keys service on a real Cassandra, in a keyspace of its own: current key and key by id, one
 * current key per owner also under concurrent first calls, rotation, the master key requirement,
 * and what actually lands in the table (wrapped keys only).
 */
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Client } from "cassandra-driver";
import { ServiceBroker, type Middleware } from "moleculer";
import { OwnerKeyStore } from "../lib/crypto/owner-key-store";
import { createKeysService, type GetOekResult, type KeysServiceOptions } from "../services/keys.service";
import { createKeyspace, dropKeyspace, testClient, uniqueKeyspace } from "./helpers/cassandra";

interface LogEntry {
  level: string;
  text: string;
}

/** A broker running one keys service; its log entries are collected (the broker itself prints nothing). */
async function startKeysBroker(options: KeysServiceOptions): Promise<{ broker: ServiceBroker; logs: LogEntry[] }> {
  const logs: LogEntry[] = [];
  const collectLogs: Middleware = {
    name: "CollectLogs",
    newLogEntry(type: string, args: unknown[]) {
      logs.push({ level: type, text: args.map(a => (typeof a === "string" ? a : JSON.stringify(a))).join(" ") });
    },
  };
  const broker = new ServiceBroker({ logger: false, nodeID: `keys-${randomUUID()}`, middlewares: [collectLogs] });
  broker.createService(createKeysService({ trustMeta: true, ...options }));
  try {
    await broker.start();
  } catch (err) {
    await broker.stop().catch(() => undefined);
    throw err;
  }
  return { broker, logs };
}

function getOek(broker: ServiceBroker, ownerId: string, id?: string): Promise<GetOekResult> {
  const params = id === undefined ? { service: "worker.queue" } : { service: "worker.queue", id };
  return broker.call("keys.getOek", params, { meta: { acl: { ownerId } } });
}

describe("keys service", () => {
  const keyspace = uniqueKeyspace("keys_service");
  const masterKey = randomBytes(32);
  const brokers: ServiceBroker[] = [];
  let client: Client;
  let broker: ServiceBroker;

  async function started(options: Partial<KeysServiceOptions> = {}): Promise<ServiceBroker> {
    const { broker: b } = await startKeysBroker({ client, keyspace, masterKey, ...options });
    brokers.push(b);
    return b;
  }

  beforeAll(async () => {
    client = await testClient();
    await createKeyspace(client, keyspace);
    broker = await started();
  });

  afterAll(async () => {
    await Promise.all(brokers.map(b => b.stop()));
    await dropKeyspace(client, keyspace);
    await client.shutdown();
  });

  it("gives the owner's current key, 32 bytes in base64, and the same key again by its id", async () => {
    const owner = `owner-${randomUUID()}`;
    const current = await getOek(broker, owner);
    expect(typeof current.id).toBe("string");
    expect(Buffer.from(current.key, "base64")).toHaveLength(32);
    expect(await getOek(broker, owner, current.id)).toEqual(current);
  });

  it("takes the owner from ctx.meta.ownerId as well as ctx.meta.acl.ownerId", async () => {
    const owner = `owner-${randomUUID()}`;
    const viaAcl = await getOek(broker, owner);
    const viaMeta = await broker.call("keys.getOek", { service: "worker.queue" }, { meta: { ownerId: owner } });
    expect(viaMeta).toEqual(viaAcl);
  });

  it("gives one owner the same current key on every call, also from another node", async () => {
    const owner = `owner-${randomUUID()}`;
    const first = await getOek(broker, owner);
    expect(await getOek(broker, owner)).toEqual(first);
    const other = await started();
    expect(await getOek(other, owner)).toEqual(first);
  });

  it("gives two owners different keys, and one owner's key id is unknown to the other", async () => {
    const a = await getOek(broker, `owner-${randomUUID()}`);
    const bOwner = `owner-${randomUUID()}`;
    const b = await getOek(broker, bOwner);
    expect(b.key).not.toBe(a.key);
    expect(b.id).not.toBe(a.id);
    await expect(getOek(broker, bOwner, a.id)).rejects.toMatchObject({ type: "OWNER_KEY_NOT_FOUND", code: 404 });
  });

  it("refuses a call without an owner", async () => {
    await expect(broker.call("keys.getOek", { service: "worker.queue" })).rejects.toMatchObject({
      type: "OWNER_MISSING",
      code: 401,
    });
    await expect(
      broker.call("keys.getOek", { service: "worker.queue" }, { meta: { ownerId: "" } }),
    ).rejects.toMatchObject({ type: "OWNER_MISSING" });
  });

  it("refuses an unknown or malformed key id, and a missing service name", async () => {
    const owner = `owner-${randomUUID()}`;
    await getOek(broker, owner);
    await expect(getOek(broker, owner, "1-0123456789abcdef")).rejects.toMatchObject({ type: "OWNER_KEY_NOT_FOUND" });
    await expect(getOek(broker, owner, "not a key id")).rejects.toMatchObject({ type: "OWNER_KEY_NOT_FOUND" });
    await expect(broker.call("keys.getOek", {}, { meta: { ownerId: owner } })).rejects.toMatchObject({
      type: "VALIDATION_ERROR",
    });
  });

  it("rotates to a new current key after the rotation period and keeps the old one readable by id", async () => {
    const rotating = await started({ rotationDays: 1 / 86_400, cacheTtlMs: 50 });
    const owner = `owner-${randomUUID()}`;
    const first = await getOek(rotating, owner);
    let next = first;
    const deadline = Date.now() + 5_000;
    while (next.id === first.id && Date.now() < deadline) {
      await new Promise(resolve => setTimeout(resolve, 100));
      next = await getOek(rotating, owner);
    }
    expect(next.id).not.toBe(first.id);
    expect(next.key).not.toBe(first.key);
    expect(await getOek(rotating, owner, first.id)).toEqual(first);
  });

  it("lets concurrent first calls on several nodes agree on one current key", async () => {
    const nodes = [broker, await started(), await started(), await started()];
    for (let round = 0; round < 5; round++) {
      const owner = `owner-${randomUUID()}`;
      const replies = await Promise.all(Array.from({ length: 24 }, (_, i) => getOek(nodes[i % nodes.length]!, owner)));
      expect(new Set(replies.map(r => r.id)).size).toBe(1);
      expect(new Set(replies.map(r => r.key)).size).toBe(1);
    }
  });

  it("lets concurrent first calls through separate stores agree (the conditional insert decides)", async () => {
    const stores = Array.from({ length: 8 }, () => new OwnerKeyStore({ client, keyspace, masterKey }));
    const owner = `owner-${randomUUID()}`;
    const keys = await Promise.all(stores.map(store => store.current(owner)));
    expect(new Set(keys.map(k => k.id)).size).toBe(1);
    expect(new Set(keys.map(k => k.key.toString("hex"))).size).toBe(1);
  });

  it("stores only wrapped keys, with a TTL covering rotation, retention and margin", async () => {
    const owner = `owner-${randomUUID()}`;
    const { id, key } = await getOek(broker, owner);
    const raw = Buffer.from(key, "base64");
    const rs = await client.execute(
      `SELECT owner_id, period, key_id, wrapped, created_at, TTL(wrapped) AS ttl FROM ${keyspace}.owner_keys WHERE owner_id = ?`,
      [owner],
    );
    expect(rs.rows).toHaveLength(1);
    const row = rs.rows[0]!;
    expect(row.get("key_id")).toBe(id);
    const wrapped = row.get("wrapped") as Buffer;
    expect(wrapped.length).toBe(1 + 24 + 32 + 16);
    expect(wrapped.includes(raw)).toBe(false);
    const rowText = JSON.stringify(row);
    expect(rowText).not.toContain(key);
    expect(rowText).not.toContain(raw.toString("hex"));
    const ttl = row.get("ttl") as number;
    expect(ttl).toBeGreaterThan((30 + 7 + 7) * 86_400 - 60);
    expect(ttl).toBeLessThanOrEqual((30 + 7 + 7) * 86_400);
  });

  it("does not publish the master key among the service's settings", async () => {
    const info = broker.registry.getLocalNodeInfo(true);
    const keys = (info.services as Record<string, any>[]).find(s => s.name === "keys");
    expect(keys).toBeDefined();
    expect(keys!.settings).not.toHaveProperty("masterKey");
    expect(JSON.stringify(info)).not.toContain(masterKey.toString("base64"));
  });

  it("refuses keys wrapped under another master key instead of handing out garbage", async () => {
    const owner = `owner-${randomUUID()}`;
    await getOek(broker, owner);
    const impostor = await started({ masterKey: randomBytes(32) });
    await expect(getOek(impostor, owner)).rejects.toMatchObject({ type: "CONFIGURATION_ERROR" });
  });

  describe("master key", () => {
    let folder: string;

    beforeEach(() => {
      folder = mkdtempSync(path.join(tmpdir(), "keys-master-"));
    });

    afterEach(() => {
      rmSync(folder, { recursive: true, force: true });
    });

    it("refuses to start without one, saying what to set", async () => {
      const err = await startKeysBroker({ client, keyspace, env: {} }).catch((e: unknown) => e);
      expect(err).toMatchObject({ type: "CONFIGURATION_ERROR", data: { setting: "KEYS_MASTER_KEY" } });
      expect((err as Error).message).toMatch(/KEYS_MASTER_KEY/);
      expect((err as Error).message).toMatch(/NODE_ENV=development/);
    });

    it("refuses a master key that is not 32 bytes of base64", async () => {
      const err = await startKeysBroker({
        client,
        keyspace,
        env: { KEYS_MASTER_KEY: randomBytes(16).toString("base64") },
      }).catch((e: unknown) => e);
      expect(err).toMatchObject({ type: "CONFIGURATION_ERROR" });
      expect((err as Error).message).toMatch(/32 bytes/);
    });

    it("reads KEYS_MASTER_KEY, and KEYS_MASTER_KEY_FILE, from the environment", async () => {
      const owner = `owner-${randomUUID()}`;
      const fromOption = await getOek(broker, owner);
      const viaEnv = await startKeysBroker({
        client,
        keyspace,
        env: { KEYS_MASTER_KEY: masterKey.toString("base64") },
      });
      brokers.push(viaEnv.broker);
      expect(await getOek(viaEnv.broker, owner)).toEqual(fromOption);

      const file = path.join(folder, "master.key");
      writeFileSync(file, `${masterKey.toString("base64")}\n`, { mode: 0o600 });
      const viaFile = await startKeysBroker({ client, keyspace, env: { KEYS_MASTER_KEY_FILE: file } });
      brokers.push(viaFile.broker);
      expect(await getOek(viaFile.broker, owner)).toEqual(fromOption);
    });

    it("in development, creates a master key file (mode 0600) and warns, never logging the key", async () => {
      const file = path.join(folder, ".dev-master-key");
      const dev = await startKeysBroker({
        client,
        keyspace,
        devMasterKeyFile: file,
        env: { NODE_ENV: "development" },
      });
      brokers.push(dev.broker);
      const stored = readFileSync(file, "utf8").trim();
      expect(Buffer.from(stored, "base64")).toHaveLength(32);
      expect(statSync(file).mode & 0o777).toBe(0o600);
      expect(dev.logs.some(l => l.level === "warn" && l.text.includes("Development mode"))).toBe(true);
      expect(dev.logs.some(l => l.text.includes(stored))).toBe(false);
      const owner = `owner-${randomUUID()}`;
      const key = await getOek(dev.broker, owner);

      // A second start reuses the same file, so keys created before still unwrap.
      const again = await startKeysBroker({ client, keyspace, devMasterKeyFile: file, development: true, env: {} });
      brokers.push(again.broker);
      expect(readFileSync(file, "utf8").trim()).toBe(stored);
      expect(await getOek(again.broker, owner)).toEqual(key);
    });
  });
});
