import { createServer, type AddressInfo } from "node:net";
import { types, type Client } from "cassandra-driver";
import { cassandraClientOptions, cassandraConfigFromEnv, connectCassandra } from "../lib/cassandra/client";
import { ensureCassandra } from "../scripts/cassandra-launcher";
import { ConfigurationError, StorageUnavailableError } from "../lib/errors";
import { createKeyspace, dropKeyspace, testClient, uniqueKeyspace } from "./helpers/cassandra";

describe("Cassandra client", () => {
  let client: Client;
  const keyspace = uniqueKeyspace("cassandra_client");

  beforeAll(async () => {
    client = await testClient();
    await createKeyspace(client, keyspace);
  });

  afterAll(async () => {
    await dropKeyspace(client, keyspace);
    await client.shutdown();
  });

  it("writes and reads a row with a TTL", async () => {
    await client.execute(`CREATE TABLE ${keyspace}.items (id text PRIMARY KEY, body text)`);
    await client.execute(`INSERT INTO ${keyspace}.items (id, body) VALUES (?, ?) USING TTL 3600`, ["a", "hello"]);

    const rs = await client.execute(`SELECT body, TTL(body) AS ttl FROM ${keyspace}.items WHERE id = ?`, ["a"]);
    expect(rs.rows).toHaveLength(1);
    expect(rs.rows[0]!.get("body")).toBe("hello");
    const ttl = rs.rows[0]!.get("ttl") as number;
    expect(ttl).toBeGreaterThan(3500);
    expect(ttl).toBeLessThanOrEqual(3600);
  });

  it("uses prepared statements, LOCAL_QUORUM and LOCAL_SERIAL, and the port of the contact points", () => {
    const options = cassandraClientOptions({
      contactPoints: ["10.0.0.1:9142", "10.0.0.2:9142"],
      localDataCenter: "dc1",
    });
    expect(options.queryOptions).toEqual({
      prepare: true,
      consistency: types.consistencies.localQuorum,
      serialConsistency: types.consistencies.localSerial,
    });
    expect(options.contactPoints).toEqual(["10.0.0.1", "10.0.0.2"]);
    expect(options.protocolOptions?.port).toBe(9142);
  });

  it("connects into a configured keyspace", async () => {
    const config = { ...cassandraConfigFromEnv(), keyspace };
    const scoped = await connectCassandra(config);
    try {
      const rs = await scoped.execute("SELECT id FROM items WHERE id = ?", ["a"]);
      expect(rs.rows).toHaveLength(1);
    } finally {
      await scoped.shutdown();
    }
  });

  it("uniqueKeyspace gives distinct valid identifiers", () => {
    const a = uniqueKeyspace("Queue-Test!");
    const b = uniqueKeyspace("Queue-Test!");
    expect(a).not.toBe(b);
    expect(a).toMatch(/^[a-z][a-z0-9_]{0,47}$/);
    expect(uniqueKeyspace("9lives".repeat(20))).toMatch(/^t_[a-z0-9_]{1,46}$/);
  });
});

describe("one-line connection errors", () => {
  it("names an unreachable contact point and says what to do", async () => {
    const error = await connectCassandra(
      { contactPoints: ["127.0.0.1:1"], localDataCenter: "datacenter1" },
      { attempts: 2, retryDelayMs: 10 },
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StorageUnavailableError);
    const message = (error as Error).message;
    expect(message).toContain("Cannot reach Cassandra at 127.0.0.1:1: start one with `npm run cassandra`");
    expect(message).not.toContain("\n");
  });

  it("names the data centers it saw when CASSANDRA_LOCAL_DC is wrong", async () => {
    const config = { ...cassandraConfigFromEnv(), localDataCenter: "foo" };
    const error = await connectCassandra(config).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigurationError);
    const message = (error as Error).message;
    expect(message).toMatch(/^CASSANDRA_LOCAL_DC=foo does not match .*\(datacenter1\)/);
    expect(message).not.toContain("\n");
  });

  it("says which keyspace is missing", async () => {
    const config = { ...cassandraConfigFromEnv(), keyspace: uniqueKeyspace("missing") };
    const error = await connectCassandra(config).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigurationError);
    expect((error as Error).message).toContain(`CASSANDRA_KEYSPACE=${config.keyspace} does not exist`);
  });

  it("rejects malformed settings before connecting, without echoing the password", async () => {
    expect(() => cassandraConfigFromEnv({})).toThrow(/^CASSANDRA_CONTACT_POINTS is not set/);
    const badPort = connectCassandra(cassandraConfigFromEnv({ CASSANDRA_CONTACT_POINTS: "h:99999" }));
    await expect(badPort).rejects.toThrow(/entry "h:99999" is not host or host:port/);
    const noUser = connectCassandra(
      cassandraConfigFromEnv({ CASSANDRA_CONTACT_POINTS: "127.0.0.1:9042", CASSANDRA_PASSWORD: "s3cret" }),
    );
    const error = await noUser.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigurationError);
    expect((error as Error).message).toMatch(/CASSANDRA_PASSWORD is set without CASSANDRA_USERNAME/);
    expect((error as Error).message).not.toContain("s3cret");
  });

  it("reads every setting from the environment", () => {
    expect(
      cassandraConfigFromEnv({
        CASSANDRA_CONTACT_POINTS: " 10.0.0.1:9142 , 10.0.0.2:9142",
        CASSANDRA_LOCAL_DC: "dc2",
        CASSANDRA_KEYSPACE: "queue",
        CASSANDRA_USERNAME: "app",
        CASSANDRA_PASSWORD: "pw",
      }),
    ).toEqual({
      contactPoints: ["10.0.0.1:9142", "10.0.0.2:9142"],
      localDataCenter: "dc2",
      keyspace: "queue",
      username: "app",
      password: "pw",
    });
  });
});

describe("launcher", () => {
  const javaRequired =
    "Java 17 is required to run a local Cassandra: install openjdk-17-jdk-headless, or set CASSANDRA_CONTACT_POINTS";

  it("says Java 17 is required when java is not on PATH", async () => {
    await expect(ensureCassandra({ env: { PATH: "/nonexistent" }, log: () => {} })).rejects.toThrow(javaRequired);
  });

  it("says Java 17 is required when the java path does not exist", async () => {
    await expect(ensureCassandra({ mode: "jvm", javaPath: "/nonexistent/bin/java", log: () => {} })).rejects.toThrow(
      javaRequired,
    );
  });

  it("uses CASSANDRA_CONTACT_POINTS and starts nothing", async () => {
    const handle = await ensureCassandra({ env: { CASSANDRA_CONTACT_POINTS: "db1:9042,db2:9042" } });
    expect(handle).toMatchObject({
      contactPoints: ["db1:9042", "db2:9042"],
      localDataCenter: "datacenter1",
      startedByUs: false,
    });
    await handle.stop();
  });

  it("refuses a port that is already taken", async () => {
    const server = createServer();
    await new Promise<void>(done => server.listen(0, "127.0.0.1", done));
    const port = (server.address() as AddressInfo).port;
    try {
      await expect(ensureCassandra({ mode: "jvm", nativePort: port, storagePort: 0, log: () => {} })).rejects.toThrow(
        `Port ${port} (CQL) on 127.0.0.1 is already in use`,
      );
    } finally {
      server.close();
    }
  });
});
