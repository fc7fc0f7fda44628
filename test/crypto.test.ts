/**
 * The value codec (XChaCha20-Poly1305 with the owner's key) and the key provider in front of the
 * keys service: binding of ciphertexts to their place, tamper detection, rotation, caching and the
 * keys service being unreachable. Most tests use an in-memory keys service that counts its calls;
 * the last one goes through the real keys service on Cassandra.
 */
import { randomBytes, randomUUID } from "node:crypto";
import type { Client } from "cassandra-driver";
import { ServiceBroker, type Context, type ServiceSchema } from "moleculer";
import type { SealContext, Sealed } from "../lib/codec";
import { encodeAssociatedData } from "../lib/crypto/aead-envelope";
import { MoleculerKeyProvider, parseKeyReply, type KeyProvider } from "../lib/crypto/key-provider";
import { SodiumCodec } from "../lib/crypto/sodium-codec";
import { DecryptionError, KeysUnavailableError } from "../lib/errors";
import { createKeysService } from "../services/keys.service";
import { createKeyspace, dropKeyspace, testClient, uniqueKeyspace } from "./helpers/cassandra";

interface KeyRequest {
  params: { service?: string; id?: string };
  meta: Record<string, any>;
}

/** An in-memory keys service: per owner a list of keys, the last one current; `rotate` adds one. */
class StubKeys {
  readonly requests: KeyRequest[] = [];
  private readonly keys = new Map<string, { id: string; key: string }[]>();
  hang = false;

  rotate(ownerId: string): void {
    const list = this.keys.get(ownerId) ?? [];
    list.push({ id: `${ownerId}-k${list.length + 1}`, key: randomBytes(32).toString("base64") });
    this.keys.set(ownerId, list);
  }

  /** Arrow handlers keep `this` the stub (Moleculer binds handlers to the service otherwise). */
  schema(): ServiceSchema {
    return {
      name: "keys",
      actions: {
        getOek: async (ctx: Context<{ service: string; id?: string }, Record<string, any>>) => {
          this.requests.push({ params: { ...ctx.params }, meta: { ...ctx.meta } });
          if (this.hang) await new Promise(resolve => setTimeout(resolve, 2_000));
          const owner = ctx.meta.acl?.ownerId ?? ctx.meta.ownerId;
          if (!this.keys.has(owner)) this.rotate(owner);
          const list = this.keys.get(owner)!;
          return ctx.params.id === undefined ? list[list.length - 1] : list.find(k => k.id === ctx.params.id);
        },
      },
    };
  }
}

function place(overrides: Partial<SealContext> = {}): SealContext {
  return { ownerId: "owner-a", queue: randomUUID(), taskId: randomUUID(), field: "value", ...overrides };
}

async function expectDecryptionError(promise: Promise<unknown>, at: SealContext): Promise<DecryptionError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(DecryptionError);
  const decryptionError = err as DecryptionError;
  expect(decryptionError.type).toBe("DECRYPTION_FAILED");
  expect(decryptionError.data).toMatchObject({ queue: at.queue, taskId: at.taskId, field: at.field });
  expect(decryptionError.message).toContain(at.taskId);
  return decryptionError;
}

describe("SodiumCodec with an in-memory keys service", () => {
  const stub = new StubKeys();
  const broker = new ServiceBroker({ logger: false, nodeID: `crypto-${randomUUID()}` });
  broker.createService(stub.schema());
  let provider: MoleculerKeyProvider;
  let codec: SodiumCodec;
  // Seals inside an action, passing its context as the caller.
  broker.createService({
    name: "probe",
    actions: {
      async seal(ctx: Context<{ ownerId: string }>) {
        return (await codec.seal(place({ ownerId: ctx.params.ownerId }), Buffer.from("v"), ctx)).keyId;
      },
    },
  });

  beforeAll(() => broker.start());
  afterAll(() => broker.stop());

  beforeEach(() => {
    stub.requests.length = 0;
    provider = new MoleculerKeyProvider({ broker, service: "worker.queue" });
    codec = new SodiumCodec(provider);
  });

  it("opens what it sealed, and the blob is version 1, nonce, ciphertext and tag", async () => {
    const at = place();
    const plaintext = Buffer.from(JSON.stringify({ hello: "world", n: 42 }));
    const sealed = await codec.seal(at, plaintext);
    expect(sealed.keyId).toBe("owner-a-k1");
    expect(sealed.blob[0]).toBe(1);
    expect(sealed.blob.length).toBe(1 + 24 + plaintext.length + 16);
    expect(sealed.blob.includes(plaintext)).toBe(false);
    expect(await codec.open(at, sealed)).toEqual(plaintext);
  });

  it("seals an empty value", async () => {
    const at = place();
    const sealed = await codec.seal(at, Buffer.alloc(0));
    expect(await codec.open(at, sealed)).toEqual(Buffer.alloc(0));
  });

  it("uses a fresh nonce for every value, so equal plaintexts give different blobs", async () => {
    const at = place();
    const plaintext = Buffer.from("same value");
    // Enough values to go through the nonce pool (170 nonces) several times.
    const blobs = await Promise.all(Array.from({ length: 1000 }, () => codec.seal(at, plaintext)));
    const nonces = new Set(blobs.map(s => s.blob.subarray(1, 25).toString("hex")));
    expect(nonces.size).toBe(1000);
    expect(nonces.has("00".repeat(24))).toBe(false);
    for (const sealed of blobs) expect(await codec.open(at, sealed)).toEqual(plaintext);
  });

  it.each([
    ["another task", { taskId: randomUUID() }],
    ["another queue", { queue: randomUUID() }],
    ["another field", { field: "result" }],
  ])("refuses a ciphertext moved to %s, naming the task", async (_name, change) => {
    const at = place();
    const sealed = await codec.seal(at, Buffer.from("secret payload"));
    const elsewhere = { ...at, ...change };
    const err = await expectDecryptionError(codec.open(elsewhere, sealed), elsewhere);
    expect(err.message).not.toContain("secret payload");
  });

  it("refuses a ciphertext moved to another owner, even were both owners' keys the same", async () => {
    const key = randomBytes(32);
    const oneKeyForAll: KeyProvider = {
      current: async () => ({ id: "shared", key }),
      byId: async () => ({ id: "shared", key }),
    };
    const shared = new SodiumCodec(oneKeyForAll);
    const at = place({ ownerId: "owner-a" });
    const sealed = await shared.seal(at, Buffer.from("payload"));
    expect((await shared.open(at, sealed)).toString()).toBe("payload");
    const elsewhere = { ...at, ownerId: "owner-b" };
    await expectDecryptionError(shared.open(elsewhere, sealed), elsewhere);
  });

  it("refuses boundary parts that only differ in where one ends and the next begins", async () => {
    const at = place({ queue: "ab", taskId: "c" });
    const sealed = await codec.seal(at, Buffer.from("payload"));
    const shifted = { ...at, queue: "a", taskId: "bc" };
    await expectDecryptionError(codec.open(shifted, sealed), shifted);
  });

  it.each([
    ["the version byte", 0],
    ["a nonce byte", 5],
    ["a ciphertext byte", 30],
    ["the tag's last byte", -1],
  ])("refuses a blob with %s changed", async (_name, position) => {
    const at = place();
    const sealed = await codec.seal(at, Buffer.from("a value long enough to have a ciphertext byte 30"));
    const blob = Buffer.from(sealed.blob);
    const index = position < 0 ? blob.length + position : position;
    blob[index] = blob[index]! ^ 0x01;
    await expectDecryptionError(codec.open(at, { keyId: sealed.keyId, blob }), at);
  });

  it("refuses a truncated blob", async () => {
    const at = place();
    const sealed = await codec.seal(at, Buffer.from("value"));
    const err = await expectDecryptionError(codec.open(at, { ...sealed, blob: sealed.blob.subarray(0, 30) }), at);
    expect(err.data.reason).toMatch(/shorter/);
  });

  it("seals with the current key after a rotation and still opens old values by their key id", async () => {
    const owner = `owner-${randomUUID()}`;
    const at = place({ ownerId: owner });
    const before = await codec.seal(at, Buffer.from("before rotation"));
    stub.rotate(owner);
    provider.clear();
    const after = await codec.seal(at, Buffer.from("after rotation"));
    expect(before.keyId).toBe(`${owner}-k1`);
    expect(after.keyId).toBe(`${owner}-k2`);

    const fresh = new SodiumCodec(new MoleculerKeyProvider({ broker, service: "worker.queue" }));
    stub.requests.length = 0;
    expect((await fresh.open(at, before)).toString()).toBe("before rotation");
    expect((await fresh.open(at, after)).toString()).toBe("after rotation");
    expect(stub.requests.map(r => r.params.id)).toEqual([`${owner}-k1`, `${owner}-k2`]);
  });

  it("asks the keys service once for many seals and opens (the cache)", async () => {
    const at = place({ ownerId: `owner-${randomUUID()}` });
    const first = await codec.seal(at, Buffer.from("one"));
    const second = await codec.seal(at, Buffer.from("two"));
    await Promise.all(Array.from({ length: 10 }, () => codec.seal(at, Buffer.from("more"))));
    await codec.open(at, first);
    await codec.open(at, second);
    expect(stub.requests).toHaveLength(1);
    expect(stub.requests[0]!.params).toEqual({ service: "worker.queue" });
  });

  it("shares one request among concurrent first seals of one owner", async () => {
    const at = place({ ownerId: `owner-${randomUUID()}` });
    await Promise.all(Array.from({ length: 10 }, () => codec.seal(at, Buffer.from("x"))));
    expect(stub.requests).toHaveLength(1);
  });

  it("asks again for the current key once its short cache time has passed", async () => {
    const shortLived = new MoleculerKeyProvider({ broker, service: "worker.queue", currentKeyTtlMs: 50 });
    const owner = `owner-${randomUUID()}`;
    const k1 = await shortLived.current(owner);
    stub.rotate(owner);
    expect((await shortLived.current(owner)).id).toBe(k1.id);
    await new Promise(resolve => setTimeout(resolve, 80));
    expect((await shortLived.current(owner)).id).toBe(`${owner}-k2`);
    expect((await shortLived.byId(owner, k1.id)).key).toEqual(k1.key);
    expect(stub.requests).toHaveLength(2);
  });

  it("calls the keys service with the caller's meta when given its context", async () => {
    const owner = `owner-${randomUUID()}`;
    const meta = { ownerId: owner, acl: { ownerId: owner, role: "x" } };
    const keyId = await broker.call("probe.seal", { ownerId: owner }, { meta });
    expect(keyId).toBe(`${owner}-k1`);
    expect(stub.requests).toHaveLength(1);
    expect(stub.requests[0]!.meta).toMatchObject(meta);
  });

  it("refuses to fetch one owner's key through another owner's context", async () => {
    const caller = { meta: { ownerId: "owner-x" }, call: () => Promise.resolve({ id: "k", key: "k" }) };
    await expect(provider.current("owner-y", caller)).rejects.toMatchObject({ type: "KEY_OWNER_MISMATCH" });
  });

  it("sends the owner in meta when there is no caller context", async () => {
    const owner = `owner-${randomUUID()}`;
    await provider.current(owner);
    expect(stub.requests[0]!.meta).toMatchObject({ ownerId: owner, acl: { ownerId: owner } });
  });

  it("reports a keys service that does not answer in time as KeysUnavailableError, retryable", async () => {
    stub.hang = true;
    try {
      const impatient = new MoleculerKeyProvider({ broker, service: "worker.queue", timeoutMs: 100 });
      const err = await impatient.current(`owner-${randomUUID()}`).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(KeysUnavailableError);
      expect((err as KeysUnavailableError).retryable).toBe(true);
      expect((err as KeysUnavailableError).type).toBe("KEYS_UNAVAILABLE");
    } finally {
      stub.hang = false;
    }
  });

  it("reports a missing keys service as KeysUnavailableError, retryable, on seal and open", async () => {
    const lonely = new ServiceBroker({ logger: false, nodeID: `lonely-${randomUUID()}` });
    await lonely.start();
    try {
      const orphan = new SodiumCodec(new MoleculerKeyProvider({ broker: lonely, service: "worker.queue" }));
      const at = place();
      const sealErr = await orphan.seal(at, Buffer.from("v")).catch((e: unknown) => e);
      expect(sealErr).toBeInstanceOf(KeysUnavailableError);
      expect((sealErr as KeysUnavailableError).retryable).toBe(true);
      const sealed = await codec.seal(at, Buffer.from("v"));
      await expect(orphan.open(at, sealed)).rejects.toBeInstanceOf(KeysUnavailableError);
    } finally {
      await lonely.stop();
    }
  });

  it("reports a malformed reply as KeysUnavailableError without echoing key material", async () => {
    await expect(parseKeyReply("o", null)).rejects.toBeInstanceOf(KeysUnavailableError);
    await expect(parseKeyReply("o", { id: "", key: "x" })).rejects.toBeInstanceOf(KeysUnavailableError);
    const err = await parseKeyReply("o", { id: "k", key: 42 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KeysUnavailableError);
    expect((err as Error).message).not.toContain("42");
  });
});

describe("encodeAssociatedData", () => {
  // Stored ciphertexts were sealed with these bytes: the encoding may never change.
  const reference = (parts: string[]) =>
    Buffer.concat([
      Buffer.from([1]),
      ...parts.flatMap(p => {
        const bytes = Buffer.from(p, "utf8");
        const n = Buffer.alloc(4);
        n.writeUInt32BE(bytes.length);
        return [n, bytes];
      }),
    ]);

  it("is the version byte, then each part as a uint32 big-endian length and its UTF-8", () => {
    expect(encodeAssociatedData(["a", "é", ""]).toString("hex")).toBe("0100000001610000000" + "2c3a900000000");
  });

  it("gives the reference bytes for any text (multi-byte, astral, lone surrogates)", () => {
    const alphabet = ["a", "Z", "0", "é", "ß", "€", "中", "😀", "\ud800", "\udfff", "/", " ", "\u0000"];
    let s = 11;
    const rnd = (n: number) => (s = (s * 1103515245 + 12345) % 2 ** 31) % n;
    for (let i = 0; i < 500; i++) {
      const parts = Array.from({ length: 1 + rnd(7) }, () =>
        Array.from({ length: rnd(12) }, () => alphabet[rnd(alphabet.length)]).join(""),
      );
      expect(encodeAssociatedData(parts)).toEqual(reference(parts));
    }
  });
});

describe("parseKeyReply", () => {
  const raw = randomBytes(32);

  it("takes 32 bytes given as base64, hex or a Buffer as they are", async () => {
    for (const key of [raw.toString("base64"), raw.toString("hex"), raw, { type: "Buffer", data: [...raw] }]) {
      expect((await parseKeyReply("o", { id: "k", key })).key).toEqual(raw);
    }
  });

  it("derives 32 bytes from any other string, the same way every time (the original keys service)", async () => {
    const a = await parseKeyReply("o", { id: "k", key: "a free-form secret of the original keys service" });
    const b = await parseKeyReply("o", { id: "k", key: "a free-form secret of the original keys service" });
    const c = await parseKeyReply("o", { id: "k", key: "another secret" });
    expect(a.key).toHaveLength(32);
    expect(a.key).toEqual(b.key);
    expect(a.key).not.toEqual(c.key);
  });
});

describe("SodiumCodec with the real keys service on Cassandra", () => {
  const keyspace = uniqueKeyspace("crypto_codec");
  let client: Client;
  let broker: ServiceBroker;

  beforeAll(async () => {
    client = await testClient();
    await createKeyspace(client, keyspace);
    broker = new ServiceBroker({ logger: false, nodeID: `crypto-real-${randomUUID()}` });
    // A 1.5 s rotation period, so a rotation happens within the test.
    broker.createService(
      createKeysService({
        client,
        keyspace,
        masterKey: randomBytes(32),
        rotationDays: 1.5 / 86_400,
        cacheTtlMs: 100,
        trustMeta: true,
      }),
    );
    await broker.start();
  });

  afterAll(async () => {
    await broker?.stop();
    await dropKeyspace(client, keyspace);
    await client.shutdown();
  });

  it("opens values sealed before a rotation after it", async () => {
    const codec = new SodiumCodec(new MoleculerKeyProvider({ broker, service: "worker.queue", currentKeyTtlMs: 50 }));
    const at = place({ ownerId: `owner-${randomUUID()}` });
    const before: Sealed = await codec.seal(at, Buffer.from("sealed before"));
    let after: Sealed = before;
    const deadline = Date.now() + 6_000;
    while (after.keyId === before.keyId && Date.now() < deadline) {
      await new Promise(resolve => setTimeout(resolve, 100));
      after = await codec.seal(at, Buffer.from("sealed after"));
    }
    expect(after.keyId).not.toBe(before.keyId);

    const fresh = new SodiumCodec(new MoleculerKeyProvider({ broker, service: "worker.queue" }));
    expect((await fresh.open(at, before)).toString()).toBe("sealed before");
    expect((await fresh.open(at, after)).toString()).toBe("sealed after");
  });

  it("turns an unknown key id into a DecryptionError naming the task", async () => {
    const codec = new SodiumCodec(new MoleculerKeyProvider({ broker, service: "worker.queue" }));
    const at = place({ ownerId: `owner-${randomUUID()}` });
    const sealed = await codec.seal(at, Buffer.from("v"));
    const err = await expectDecryptionError(codec.open(at, { ...sealed, keyId: "1-0000000000000000" }), at);
    expect(err.data.reason).toMatch(/no longer exists/);
  });
});
