/**
 * The bus itself (docs/ARCHITECTURE.md, Security), with brokers configured the way a standalone node
 * is (brokerOptionsFromEnv): a nats-server that requires a user and password, reached through the
 * TRANSPORTER URL (a password with URL escapes); a nats-server that requires TLS, reached with
 * TRANSPORTER_TLS_CA_FILE; and TRANSIT_KEY, which seals every packet so a tap reads nothing and a
 * node with another key is not heard.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ServiceBroker, type ServiceSchema } from "moleculer";
import { connect as natsConnect } from "nats";
import { brokerOptionsFromEnv } from "../lib/broker-options";
import { openPacket, sealPacket } from "../lib/transit";
import { describeTransporter } from "../lib/server";
import { freePort } from "./helpers/http-api";
import { waitFor } from "./helpers/queue-cluster";

const NATS_SERVER = process.env.NATS_SERVER_PATH ?? "/usr/sbin/nats-server";
const USER = "queue-node";
const PASSWORD = "p@ss:w/rd%+ok";
const dir = mkdtempSync(join(tmpdir(), "transport-"));
const servers: ChildProcess[] = [];
const brokers: ServiceBroker[] = [];

const echo: ServiceSchema = { name: "echo", actions: { say: (ctx: any) => ({ heard: ctx.params.text }) } };

async function natsServer(args: string[]): Promise<number> {
  if (!existsSync(NATS_SERVER)) {
    throw new Error(
      `${NATS_SERVER} is missing: install Debian's nats-server (apt-get install -y nats-server) or set NATS_SERVER_PATH`,
    );
  }
  const port = await freePort();
  const child = spawn(NATS_SERVER, ["-a", "127.0.0.1", "-p", String(port), ...args], { stdio: "ignore" });
  servers.push(child);
  await waitFor(
    () =>
      new Promise<boolean>(resolve => {
        const socket = connect(port, "127.0.0.1", () => {
          socket.destroy();
          resolve(true);
        }).on("error", () => resolve(false));
      }),
    20_000,
  );
  return port;
}

async function broker(env: Record<string, string>, services: ServiceSchema[] = []): Promise<ServiceBroker> {
  const options = brokerOptionsFromEnv({ ACL_TRUST_META: "true", LOGLEVEL: "error", ...env });
  const b = new ServiceBroker({ ...options, logger: false });
  for (const s of services) b.createService(s);
  brokers.push(b);
  await b.start();
  return b;
}

afterAll(async () => {
  await Promise.all(brokers.filter(b => b.started).map(b => b.stop().catch(() => undefined)));
  for (const s of servers) s.kill("SIGTERM");
  rmSync(dir, { recursive: true, force: true });
});

test("NATS with a user and password: the credentials in TRANSPORTER are used (escapes decoded), never logged; without them the server refuses", async () => {
  const port = await natsServer(["--user", USER, "--pass", PASSWORD]);
  const namespace = `creds-${randomUUID().slice(0, 8)}`;
  const url = `nats://${USER}:${encodeURIComponent(PASSWORD)}@127.0.0.1:${port}`;
  const options = brokerOptionsFromEnv({ TRANSPORTER: url, ACL_TRUST_META: "true" });
  expect(describeTransporter(options.transporter)).toBe(`NATS nats://127.0.0.1:${port} (with credentials)`);
  expect(describeTransporter(options.transporter)).not.toContain(PASSWORD);

  await broker({ TRANSPORTER: url, NAMESPACE: namespace, NODEID: "creds-server" }, [echo]);
  const caller = await broker({ TRANSPORTER: url, NAMESPACE: namespace, NODEID: "creds-caller" });
  await caller.waitForServices(["echo"], 20_000);
  expect(await caller.call("echo.say", { text: "hi" })).toEqual({ heard: "hi" });

  // The server really requires them.
  await expect(natsConnect({ servers: `127.0.0.1:${port}`, reconnect: false })).rejects.toMatchObject({
    code: "AUTHORIZATION_VIOLATION",
  });
  await expect(
    natsConnect({ servers: `127.0.0.1:${port}`, user: USER, pass: "wrong", reconnect: false }),
  ).rejects.toMatchObject({ code: "AUTHORIZATION_VIOLATION" });
}, 60_000);

test("NATS over TLS: TRANSPORTER_TLS_CA_FILE trusts the server's certificate", async () => {
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      key,
      "-out",
      cert,
      "-days",
      "1",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=IP:127.0.0.1,DNS:localhost",
    ],
    { stdio: "ignore" },
  );
  const port = await natsServer(["--tls", "--tlscert", cert, "--tlskey", key]);
  const namespace = `tls-${randomUUID().slice(0, 8)}`;
  const env = { TRANSPORTER: `nats://127.0.0.1:${port}`, TRANSPORTER_TLS_CA_FILE: cert, NAMESPACE: namespace };
  expect(describeTransporter(brokerOptionsFromEnv({ ...env, ACL_TRUST_META: "true" }).transporter)).toContain("TLS");
  await broker({ ...env, NODEID: "tls-server" }, [echo]);
  const caller = await broker({ ...env, NODEID: "tls-caller" });
  await caller.waitForServices(["echo"], 20_000);
  expect(await caller.call("echo.say", { text: "over tls" })).toEqual({ heard: "over tls" });
  // A client that does not trust the certificate gets no connection.
  await expect(natsConnect({ servers: `127.0.0.1:${port}`, tls: {}, reconnect: false })).rejects.toBeDefined();
}, 60_000);

test("TRANSIT_KEY: a tap on the subjects reads no payload; a node with another key is not heard", async () => {
  const port = await natsServer([]);
  const namespace = `transit-${randomUUID().slice(0, 8)}`;
  const transitKey = randomBytes(32).toString("base64");
  const env = { TRANSPORTER: `nats://127.0.0.1:${port}`, NAMESPACE: namespace, TRANSIT_KEY: transitKey };
  const tap = await natsConnect({ servers: `127.0.0.1:${port}` });
  const packets: Buffer[] = [];
  const sub = tap.subscribe(`MOL-${namespace}.>`);
  void (async () => {
    for await (const m of sub) packets.push(Buffer.from(m.data));
  })();

  const server = await broker({ ...env, NODEID: "transit-server" }, [echo]);
  const caller = await broker({ ...env, NODEID: "transit-caller" });
  await caller.waitForServices(["echo"], 20_000);
  const marker = `MARKER-${randomBytes(8).toString("hex")}`;
  expect(await caller.call("echo.say", { text: marker })).toEqual({ heard: marker });
  await tap.flush();

  expect(packets.length).toBeGreaterThan(0);
  for (const p of packets) {
    expect(p.includes(marker)).toBe(false);
    expect(p.includes("echo.say")).toBe(false);
    // Every packet opens with the key, and only with it.
    expect(openPacket(Buffer.from(transitKey, "base64"), p)).toBeDefined();
    expect(openPacket(randomBytes(32), p)).toBeUndefined();
  }

  // A node with another key: its packets are dropped unread, and it never learns of the service.
  const other = await broker({ ...env, NODEID: "transit-other", TRANSIT_KEY: randomBytes(32).toString("base64") });
  const dropped = () =>
    (
      server as unknown as { middlewares: { list: { name?: string; droppedPackets?: number }[] } }
    ).middlewares.list.find(m => m.name === "TransitEncryption")?.droppedPackets ?? 0;
  await waitFor(() => dropped() > 0, 20_000);
  await expect(other.call("echo.say", { text: "let me in" })).rejects.toMatchObject({ name: "ServiceNotFoundError" });
  await tap.close();
}, 60_000);

test("a sealed packet does not open when altered", () => {
  const key = randomBytes(32);
  const packet = sealPacket(key, Buffer.from('{"hello":"world"}'));
  expect(openPacket(key, packet)?.toString()).toBe('{"hello":"world"}');
  for (const at of [0, 1, 13, packet.length - 1]) {
    const altered = Buffer.from(packet);
    altered[at] = altered[at]! ^ 1;
    expect(openPacket(key, altered)).toBeUndefined();
  }
  expect(openPacket(key, packet.subarray(0, 20))).toBeUndefined();
  // Two seals of the same packet differ (a fresh nonce each time).
  expect(sealPacket(key, Buffer.from("x")).equals(sealPacket(key, Buffer.from("x")))).toBe(false);
});
