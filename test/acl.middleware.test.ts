/**
 * The ACL middleware on a broker with a dummy `worker.queue` service. Grant mode: the owner is the
 * `sub` of a verified grant, nothing else; refusals are typed. Trust mode: the owner is required,
 * taken from either meta place and normalised. An ACL action can refuse, and unguarded actions pass.
 * (Every real queue action over NATS with grants: queue.grants.test.ts.)
 */
import { randomUUID } from "node:crypto";
import { ServiceBroker, type Context, type ServiceSchema } from "moleculer";
import { randomBytes } from "node:crypto";
import { createGrantSigner, createJwtVerifier, mintAccessToken } from "../lib/http/access-token";
import {
  AclMiddleware,
  aclGuardOf,
  callerGrant,
  type AclDecisionRequest,
  type AclMiddlewareOptions,
} from "../middleware/acl.middleware";

interface Seen {
  ownerId?: unknown;
  acl?: Record<string, unknown>;
}

const dummyQueue: ServiceSchema = {
  name: "worker.queue",
  actions: {
    add(ctx: Context<unknown, Record<string, any>>): Seen {
      return { ownerId: ctx.meta.ownerId, acl: ctx.meta.acl };
    },
    health: {
      acl: false,
      handler: () => "ok",
    },
    details: {
      acl: "optional",
      handler: (ctx: Context) => callerGrant(ctx) ?? null,
    },
    _internal: () => "internal",
    hidden: {
      visibility: "protected",
      handler: () => "hidden",
    },
    callsHidden(this: any) {
      return this.actions.hidden({});
    },
  },
};

const otherService: ServiceSchema = {
  name: "other",
  actions: { ping: () => "pong" },
};

async function startBroker(options: AclMiddlewareOptions, decisions: AclDecisionRequest[] = []) {
  const broker = new ServiceBroker({
    logger: false,
    nodeID: `acl-${randomUUID()}`,
    middlewares: [AclMiddleware(options)],
  });
  broker.createService(dummyQueue);
  broker.createService(otherService);
  broker.createService({
    name: "acl",
    actions: {
      // Denies "intruder", answers in both accepted shapes, and a non-boolean for "vague".
      decide(ctx: Context<AclDecisionRequest, Record<string, any>>) {
        decisions.push({ ...ctx.params });
        if (ctx.meta.ownerId !== ctx.params.ownerId) return false;
        if (ctx.params.ownerId === "intruder") return { result: false };
        if (ctx.params.ownerId === "vague") return "yes";
        return ctx.params.ownerId === "boolean-owner" ? true : { result: true };
      },
    },
  });
  await broker.start();
  return broker;
}

describe("AclMiddleware in trust mode", () => {
  let broker: ServiceBroker;

  beforeAll(async () => {
    broker = await startBroker({ trustMeta: true });
  });

  afterAll(() => broker.stop());

  it("refuses a call without an owner with OWNER_MISSING, naming the action", async () => {
    await expect(broker.call("worker.queue.add", {})).rejects.toMatchObject({
      type: "OWNER_MISSING",
      code: 401,
      data: { action: "worker.queue.add" },
    });
    await expect(broker.call("worker.queue.add", {}, { meta: { ownerId: "" } })).rejects.toMatchObject({
      type: "OWNER_MISSING",
    });
    await expect(broker.call("worker.queue.add", {}, { meta: { ownerId: 42 } })).rejects.toMatchObject({
      type: "OWNER_MISSING",
    });
  });

  it("takes the owner from ctx.meta.ownerId and sets ctx.meta.acl.ownerId too", async () => {
    const seen = await broker.call<Seen, object>("worker.queue.add", {}, { meta: { ownerId: "owner-1" } });
    expect(seen).toEqual({ ownerId: "owner-1", acl: { ownerId: "owner-1" } });
  });

  it("takes the owner from ctx.meta.acl.ownerId and sets ctx.meta.ownerId too, keeping other acl fields", async () => {
    const seen = await broker.call<Seen, object>(
      "worker.queue.add",
      {},
      { meta: { acl: { ownerId: "owner-2", role: "admin" } } },
    );
    expect(seen).toEqual({ ownerId: "owner-2", acl: { ownerId: "owner-2", role: "admin" } });
  });

  it("prefers ctx.meta.acl.ownerId when both places are set", async () => {
    const seen = await broker.call<Seen, object>(
      "worker.queue.add",
      {},
      { meta: { ownerId: "plain", acl: { ownerId: "from-acl" } } },
    );
    expect(seen).toEqual({ ownerId: "from-acl", acl: { ownerId: "from-acl" } });
  });

  it("leaves actions with acl: false, internal and protected actions, and other services alone", async () => {
    expect(await broker.call("worker.queue.health")).toBe("ok");
    expect(await broker.call("worker.queue._internal")).toBe("internal");
    expect(await broker.call("other.ping")).toBe("pong");
    // The protected action runs without an owner when the guarded action calls it.
    expect(await broker.call("worker.queue.callsHidden", {}, { meta: { ownerId: "o" } })).toBe("hidden");
  });
});

describe("AclMiddleware with an ACL action", () => {
  const decisions: AclDecisionRequest[] = [];
  let broker: ServiceBroker;

  beforeAll(async () => {
    broker = await startBroker({ aclAction: "acl.decide", services: ["worker.queue", "other"] }, decisions);
  });

  afterAll(() => broker.stop());

  beforeEach(() => {
    decisions.length = 0;
  });

  it("asks the ACL action with the action, the owner, the serviceId only, and the caller's meta", async () => {
    const serviceId = randomUUID();
    const seen = await broker.call<Seen, object>(
      "worker.queue.add",
      { serviceId, value: { secret: "not for the ACL" } },
      { meta: { ownerId: "owner-ok" } },
    );
    expect(seen).toEqual({ ownerId: "owner-ok", acl: { ownerId: "owner-ok" } });
    expect(decisions).toEqual([{ action: "worker.queue.add", ownerId: "owner-ok", params: { serviceId } }]);
  });

  it("accepts true as well as { result: true }", async () => {
    await expect(broker.call("worker.queue.add", {}, { meta: { ownerId: "boolean-owner" } })).resolves.toMatchObject({
      ownerId: "boolean-owner",
    });
  });

  it("refuses with ACCESS_DENIED when the ACL action says no", async () => {
    await expect(broker.call("worker.queue.add", {}, { meta: { ownerId: "intruder" } })).rejects.toMatchObject({
      type: "ACCESS_DENIED",
      code: 403,
      data: { action: "worker.queue.add", ownerId: "intruder" },
    });
  });

  it("refuses anything but true or { result: true }", async () => {
    await expect(broker.call("worker.queue.add", {}, { meta: { ownerId: "vague" } })).rejects.toMatchObject({
      type: "ACCESS_DENIED",
    });
  });

  it("guards every listed service, and still requires an owner before asking", async () => {
    await expect(broker.call("other.ping", {}, { meta: { acl: { ownerId: "intruder" } } })).rejects.toMatchObject({
      type: "ACCESS_DENIED",
    });
    await expect(broker.call("other.ping")).rejects.toMatchObject({ type: "OWNER_MISSING" });
    expect(decisions).toHaveLength(1);
  });

  it("does not ask for actions with acl: false", async () => {
    expect(await broker.call("worker.queue.health")).toBe("ok");
    expect(decisions).toHaveLength(0);
  });
});

describe("AclMiddleware in grant mode", () => {
  const secret = randomBytes(32).toString("base64");
  let broker: ServiceBroker;
  const grant = (o: { ownerId?: string; services?: "*" | string[]; expiresInSeconds?: number; ops?: boolean } = {}) =>
    mintAccessToken({ secret, ownerId: o.ownerId ?? "owner-a", services: o.services ?? "*", ...o });

  beforeAll(async () => {
    broker = await startBroker({ grants: { secret, clockToleranceSeconds: 0 } });
  });
  afterAll(() => broker.stop());

  it("takes the owner from the grant's sub only, and sets both meta places to it", async () => {
    const seen = await broker.call<Seen, object>("worker.queue.add", {}, { meta: { grant: await grant() } });
    expect(seen).toEqual({ ownerId: "owner-a", acl: { ownerId: "owner-a" } });
    // Naming the same owner in meta as well is fine.
    const named = await broker.call<Seen, object>(
      "worker.queue.add",
      {},
      { meta: { grant: await grant(), ownerId: "owner-a", acl: { ownerId: "owner-a" } } },
    );
    expect(named.ownerId).toBe("owner-a");
  });

  it("refuses a call without a grant (GRANT_REQUIRED), also when meta names an owner", async () => {
    for (const meta of [
      undefined,
      { ownerId: "owner-a" },
      { acl: { ownerId: "owner-a" } },
      { grant: "" },
      { grant: 7 },
    ]) {
      await expect(broker.call("worker.queue.add", {}, { meta })).rejects.toMatchObject({
        type: "GRANT_REQUIRED",
        code: 401,
        data: { action: "worker.queue.add" },
      });
    }
  });

  it("refuses forged, malformed and expired grants with 401s that never quote the token", async () => {
    const forged = await mintAccessToken({
      secret: randomBytes(32).toString("base64"),
      ownerId: "owner-a",
      services: "*",
    });
    const err = await broker.call("worker.queue.add", {}, { meta: { grant: forged } }).catch(e => e);
    expect(err).toMatchObject({ type: "INVALID_TOKEN", code: 401, data: { reason: "bad signature" } });
    expect(JSON.stringify(err)).not.toContain(forged);
    await expect(broker.call("worker.queue.add", {}, { meta: { grant: "not.a.jwt" } })).rejects.toMatchObject({
      type: "INVALID_TOKEN",
    });
    const expired = await grant({ expiresInSeconds: -10 });
    await expect(broker.call("worker.queue.add", {}, { meta: { grant: expired } })).rejects.toMatchObject({
      type: "TOKEN_EXPIRED",
      code: 401,
    });
  });

  it("refuses a meta owner other than the grant's (403 OWNER_NOT_ALLOWED), in either place", async () => {
    const token = await grant({ ownerId: "owner-b" });
    for (const meta of [
      { grant: token, ownerId: "owner-a" },
      { grant: token, acl: { ownerId: "owner-a" } },
    ]) {
      await expect(broker.call("worker.queue.add", {}, { meta })).rejects.toMatchObject({
        type: "OWNER_NOT_ALLOWED",
        code: 403,
      });
    }
  });

  it("refuses a serviceId the grant does not list (403 SERVICE_NOT_ALLOWED)", async () => {
    const token = await grant({ services: ["q-1"] });
    expect(await broker.call("worker.queue.add", { serviceId: "q-1" }, { meta: { grant: token } })).toMatchObject({
      ownerId: "owner-a",
    });
    await expect(
      broker.call("worker.queue.add", { serviceId: "q-2" }, { meta: { grant: token } }),
    ).rejects.toMatchObject({
      type: "SERVICE_NOT_ALLOWED",
      code: 403,
      data: { serviceId: "q-2" },
    });
  });

  it("offers a valid grant to optional actions and ignores a bad one", async () => {
    expect(await broker.call("worker.queue.details", {})).toBeNull();
    expect(await broker.call("worker.queue.details", {}, { meta: { grant: "forged" } })).toBeNull();
    expect(await broker.call("worker.queue.details", {}, { meta: { grant: await grant({ ops: true }) } })).toEqual({
      ownerId: "owner-a",
      services: "*",
      ops: true,
    });
  });

  it("signs grants for its own calls that it (and any node with the key) verifies", async () => {
    const guard = aclGuardOf(broker)!;
    expect(guard).toMatchObject({ mode: "grant", canSign: true });
    const meta = await guard.internalMeta("owner-z");
    expect(meta).toMatchObject({ ownerId: "owner-z", acl: { ownerId: "owner-z" }, grant: expect.any(String) });
    expect(await createJwtVerifier({ secret })(meta.grant as string)).toEqual({ ownerId: "owner-z", services: "*" });
    expect(await broker.call<Seen, object>("worker.queue.add", {}, { meta })).toMatchObject({ ownerId: "owner-z" });
  });

  it("signs with an RSA private key beside a public key", async () => {
    const { generateKeyPairSync } = await import("node:crypto");
    const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const signer = createGrantSigner({ privateKey: privateKey.export({ type: "pkcs8", format: "pem" }) as string })!;
    const token = await signer.sign({ ownerId: "owner-r", services: ["s"] });
    const verify = createJwtVerifier({ publicKey: publicKey.export({ type: "spki", format: "pem" }) as string });
    expect(await verify(token)).toEqual({ ownerId: "owner-r", services: ["s"] });
  });

  it("signs its own grants with the configured issuer and audience, scoped when asked; a mismatched key is caught", async () => {
    const guard = AclMiddleware({ grants: { secret, issuer: "queue-iss", audience: "queue-aud" } });
    await expect(guard.checkSigning()).resolves.toBeUndefined();
    const scoped = await guard.internalMeta("owner-s", ["only-this"]);
    const verify = createJwtVerifier({ secret, issuer: "queue-iss", audience: "queue-aud" });
    expect(await verify(scoped.grant as string)).toEqual({ ownerId: "owner-s", services: ["only-this"] });
    const { generateKeyPairSync } = await import("node:crypto");
    const pem = (k: import("node:crypto").KeyObject, type: "pkcs8" | "spki") =>
      k.export({ type, format: "pem" }) as string;
    const mine = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const other = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const mismatched = AclMiddleware({
      env: { ACL_GRANT_PUBLIC_KEY: pem(mine.publicKey, "spki"), ACL_GRANT_PRIVATE_KEY: pem(other.privateKey, "pkcs8") },
    });
    await expect(mismatched.checkSigning()).rejects.toMatchObject({ type: "CONFIGURATION_ERROR" });
    const matched = AclMiddleware({
      env: { ACL_GRANT_PUBLIC_KEY: pem(mine.publicKey, "spki"), ACL_GRANT_PRIVATE_KEY: pem(mine.privateKey, "pkcs8") },
    });
    await expect(matched.checkSigning()).resolves.toBeUndefined();
  });

  it("will not start without a way to verify grants, unless told to trust meta or ask an ACL action", () => {
    expect(() => AclMiddleware({ env: {} })).toThrow(expect.objectContaining({ type: "CONFIGURATION_ERROR" }));
    expect(AclMiddleware({ env: { ACL_TRUST_META: "true" } }).mode).toBe("trust");
    expect(AclMiddleware({ env: {}, aclAction: "acl.decide" }).mode).toBe("action");
    expect(AclMiddleware({ env: { API_JWT_SECRET: secret } }).mode).toBe("grant");
    expect(() => AclMiddleware({ env: { ACL_TRUST_META: "maybe" } })).toThrow(/ACL_TRUST_META/);
  });
});

describe("AclMiddleware with a verifier function of the user's", () => {
  it("refuses a call when the verifier answers no grant, whatever meta names (INVALID_TOKEN)", async () => {
    // A verifier that answers nothing for a token it does not know must not fall back to meta.
    const verifier = (async () => undefined) as unknown as NonNullable<AclMiddlewareOptions["grants"]>;
    const broker = await startBroker({ grants: verifier });
    try {
      for (const meta of [
        { grant: "unknown", ownerId: "victim" },
        { grant: "unknown", acl: { ownerId: "victim" } },
        { grant: "unknown" },
      ]) {
        await expect(broker.call("worker.queue.add", {}, { meta })).rejects.toMatchObject({
          type: "INVALID_TOKEN",
          code: 401,
        });
      }
    } finally {
      await broker.stop();
    }
  });

  it("takes a grant answered as a plain value, and checks it as any other", async () => {
    const verifier = ((token: string) =>
      token === "good"
        ? { ownerId: "owner-f", services: ["q1"] }
        : Promise.reject(new Error("no"))) as unknown as NonNullable<AclMiddlewareOptions["grants"]>;
    const broker = await startBroker({ grants: verifier });
    try {
      const seen = await broker.call<Seen, object>(
        "worker.queue.add",
        { serviceId: "q1" },
        { meta: { grant: "good" } },
      );
      expect(seen).toEqual({ ownerId: "owner-f", acl: { ownerId: "owner-f" } });
      await expect(
        broker.call("worker.queue.add", { serviceId: "q2" }, { meta: { grant: "good" } }),
      ).rejects.toMatchObject({ type: "SERVICE_NOT_ALLOWED" });
      await expect(
        broker.call("worker.queue.add", { serviceId: "q1" }, { meta: { grant: "good", ownerId: "other" } }),
      ).rejects.toMatchObject({ type: "OWNER_NOT_ALLOWED" });
    } finally {
      await broker.stop();
    }
  });
});
