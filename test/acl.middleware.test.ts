/**
 * The ACL middleware on a broker with a dummy `worker.queue` service: the owner is required, taken
 * from either meta place and normalised, an ACL action can refuse, and unguarded actions pass.
 */
import { randomUUID } from "node:crypto";
import { ServiceBroker, type Context, type ServiceSchema } from "moleculer";
import { AclMiddleware, type AclDecisionRequest, type AclMiddlewareOptions } from "../middleware/acl.middleware";

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

describe("AclMiddleware", () => {
  let broker: ServiceBroker;

  beforeAll(async () => {
    broker = await startBroker({});
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
