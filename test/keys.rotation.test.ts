/**
 * Master key rotation (docs/ARCHITECTURE.md, Security): owner key rows record their master key's
 * id; after a rotation the previous key still unwraps them, `queue-node rewrap-keys` moves every row
 * to the current key, and then the previous key is no longer needed. Values written before and
 * after the rotation keep decrypting through the queue (real keys service, real Cassandra).
 */
import { execFile } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import type { Client } from "cassandra-driver";
import { ServiceBroker, type ServiceSchema } from "moleculer";
import { masterKeyId } from "../lib/crypto/owner-key-store";
import { createKeysService } from "../services/keys.service";
import { dropKeyspace, testClient, uniqueKeyspace } from "./helpers/cassandra";
import { startQueueBroker } from "./helpers/queue-cluster";

const run = promisify(execFile);
const keyspace = uniqueKeyspace("keys_rotation");
const replication = "{'class': 'SimpleStrategy', 'replication_factor': 1}";
const oldMaster = randomBytes(32);
const newMaster = randomBytes(32);
const serviceId = randomUUID();
const before = `owner-before-${randomUUID().slice(0, 8)}`;
const after = `owner-after-${randomUUID().slice(0, 8)}`;
let client: Client;

/** A node with the queue and the keys service under these master keys. */
function node(masterKey: Buffer, previousMasterKeys: Buffer[] = []): Promise<ServiceBroker> {
  return startQueueBroker(`rotation-${randomUUID().slice(0, 6)}`, {
    keyspace,
    client,
    defaultCodec: true,
    services: [
      createKeysService({
        client,
        keyspace,
        replication,
        masterKey,
        previousMasterKeys,
        trustMeta: true,
      }) as unknown as ServiceSchema,
    ],
  });
}

const call = (b: ServiceBroker, action: string, params: object, ownerId: string) =>
  b.call<any, object>(`worker.queue.${action}`, params, { meta: { ownerId } });

async function keyRows(): Promise<{ owner: string; master: string | null }[]> {
  const rs = await client.execute(`SELECT owner_id, master_id FROM ${keyspace}.owner_keys`);
  return rs.rows.map(r => ({
    owner: r.get("owner_id") as string,
    master: (r.get("master_id") as string | null) ?? null,
  }));
}

async function rewrap(env: Record<string, string>) {
  const loader = pathToFileURL(require.resolve("tsx")).href;
  const main = join(__dirname, "..", "lib", "server-main.ts");
  try {
    const { stdout, stderr } = await run(process.execPath, ["--import", loader, main, "rewrap-keys"], {
      env: {
        ...process.env,
        CASSANDRA_CONTACT_POINTS: process.env.CASSANDRA_CONTACT_POINTS ?? "",
        QUEUE_KEYSPACE: keyspace,
        KEYS_MASTER_KEY: newMaster.toString("base64"),
        ...env,
      },
      timeout: 60_000,
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

beforeAll(async () => {
  client = await testClient();
});

afterAll(async () => {
  await dropKeyspace(client, keyspace);
  await client.shutdown();
});

test("values sealed before and after a master key rotation decrypt; rewrap-keys retires the old key", async () => {
  // Before: the owner's key is wrapped under the old master key, and the row says so.
  const first = await node(oldMaster);
  await call(first, "add", { serviceId, taskId: "b1", value: { n: "before-1" } }, before);
  await call(first, "add", { serviceId, taskId: "b2", value: { n: "before-2" } }, before);
  await first.stop();
  expect(await keyRows()).toEqual([{ owner: before, master: masterKeyId(oldMaster) }]);

  // Rotated: the new master key wraps new owner keys, the previous one still unwraps old rows.
  const rotated = await node(newMaster, [oldMaster]);
  expect(await call(rotated, "fetch", { serviceId, workerId: "w" }, before)).toEqual({ n: "before-1" });
  expect(await call(rotated, "ack", { serviceId, workerId: "w" }, before)).toBe(true);
  await call(rotated, "add", { serviceId, taskId: "a1", value: { n: "after-1" } }, after);
  await rotated.stop();
  const rows = await keyRows();
  expect(rows).toContainEqual({ owner: after, master: masterKeyId(newMaster) });
  expect(rows).toContainEqual({ owner: before, master: masterKeyId(oldMaster) });

  // Without the previous key the old owner's key cannot be unwrapped: its values are unreadable.
  const withoutOld = await node(newMaster);
  const refused = await call(withoutOld, "fetch", { serviceId, workerId: "w" }, before).catch(e => e);
  expect(refused).toMatchObject({ type: expect.any(String) });
  expect(JSON.stringify(refused)).not.toContain(oldMaster.toString("base64"));
  await withoutOld.stop();

  // A legacy row (written before master ids were recorded) is found by trying every configured key.
  await client.execute(`UPDATE ${keyspace}.owner_keys SET master_id = null WHERE owner_id = ? AND period = ?`, [
    before,
    (await client.execute(`SELECT period FROM ${keyspace}.owner_keys WHERE owner_id = ?`, [before]))
      .first()
      .get("period"),
  ]);

  // The command needs the old key to unwrap, and says so when it is missing.
  const missing = await rewrap({});
  expect(missing.code).toBe(1);
  expect(missing.stderr).toMatch(/KEYS_PREVIOUS_MASTER_KEYS/);
  const done = await rewrap({ KEYS_PREVIOUS_MASTER_KEYS: oldMaster.toString("base64") });
  expect(done).toMatchObject({ code: 0 });
  expect(done.stdout).toContain("2 read, 1 re-wrapped, 1 already under the current master key");
  expect(await keyRows()).toEqual(
    expect.arrayContaining([
      { owner: before, master: masterKeyId(newMaster) },
      { owner: after, master: masterKeyId(newMaster) },
    ]),
  );
  const again = await rewrap({});
  expect(again.stdout).toContain("2 read, 0 re-wrapped, 2 already under the current master key");

  // Re-wrapped: only the new master key is configured, and everything decrypts.
  const last = await node(newMaster);
  // The refused fetch above leased b2 to "w" (its value could not be opened): "w" gets it again.
  expect(await call(last, "fetch", { serviceId, workerId: "w" }, before)).toEqual({ n: "before-2" });
  expect(await call(last, "fetch", { serviceId, workerId: "w3" }, after)).toEqual({ n: "after-1" });
  expect(await call(last, "inspect", { serviceId, taskId: "b2" }, before)).toMatchObject({ value: { n: "before-2" } });
  await last.stop();
  // The rows kept a lifetime (the re-wrap carried the remaining TTL over).
  const ttl = await client.execute(`SELECT TTL(wrapped) AS t FROM ${keyspace}.owner_keys`);
  for (const r of ttl.rows) expect(Number(r.get("t"))).toBeGreaterThan(0);
}, 180_000);
