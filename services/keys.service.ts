/**
 * The keys service: `getOek({ service, id? })` gives the calling owner's encryption key, the current
 * one without `id`, that exact one with `id`. Keys are random, per owner, rotated every
 * `rotationDays`, and stored in Cassandra wrapped with the master key (lib/crypto/owner-key-store.ts).
 * The master key comes from KEYS_MASTER_KEY or KEYS_MASTER_KEY_FILE; without one the service
 * refuses to start, except in development, where it generates `.dev-master-key`.
 */
import type { Client } from "cassandra-driver";
import type { Context, Service, ServiceSchema, ServiceSettingSchema } from "moleculer";
import { connectCassandra, cassandraConfigFromEnv, type CassandraConfig } from "../lib/cassandra/client";
import { loadMasterKey, loadPreviousMasterKeys } from "../lib/crypto/master-key";
import { OwnerKeyStore } from "../lib/crypto/owner-key-store";
import { ConfigurationError, OwnerKeyNotFoundError, OwnerMissingError } from "../lib/errors";
import { requireAclGuard } from "../middleware/acl.middleware";

export interface KeysServiceOptions {
  /**
   * The service name callers use (`<name>.getOek`).
   * @defaultValue "keys"
   */
  name?: string;
  /** A connected client to use (not shut down by the service); otherwise one is connected at start. */
  client?: Client;
  /**
   * How to connect when no client is given.
   * @defaultValue cassandraConfigFromEnv(env)
   */
  cassandra?: CassandraConfig;
  /**
   * The keyspace holding the key table; it must exist unless `replication` is given.
   * @defaultValue the connection config's keyspace
   */
  keyspace?: string;
  /** When given (CQL map text), the keyspace is created with it if it does not exist. */
  replication?: string;
  /** @defaultValue "owner_keys" */
  table?: string;
  /** @defaultValue 30 */
  rotationDays?: number;
  /** How long the queue keeps tasks. @defaultValue 7 */
  retentionDays?: number;
  /** Added to every key's lifetime. @defaultValue 7 */
  marginDays?: number;
  /** How long unwrapped keys stay in memory. @defaultValue 60000 */
  cacheTtlMs?: number;
  /** The master key (base64 of 32 bytes, or the bytes); otherwise KEYS_MASTER_KEY / KEYS_MASTER_KEY_FILE. */
  masterKey?: string | Buffer;
  /**
   * Master keys from before a rotation, which still unwrap the owner keys written under them until
   * `queue-node rewrap-keys` re-wraps those. @defaultValue KEYS_PREVIOUS_MASTER_KEYS (comma separated)
   */
  previousMasterKeys?: (string | Buffer)[];
  masterKeyFile?: string;
  /** Allows a generated development master key. @defaultValue env.NODE_ENV === "development" */
  development?: boolean;
  /** @defaultValue ".dev-master-key" */
  devMasterKeyFile?: string;
  /** @defaultValue process.env */
  env?: NodeJS.ProcessEnv;
  /**
   * Run without the ACL middleware, trusting `ctx.meta.ownerId` as given: only where every node of
   * the network is trusted. Otherwise the broker must have AclMiddleware guarding this service.
   * @defaultValue false
   */
  trustMeta?: boolean;
}

export interface KeysServiceSettings extends ServiceSettingSchema {
  keyspace?: string;
  table: string;
  rotationDays: number;
  retentionDays: number;
  marginDays: number;
  cacheTtlMs: number;
  /** Secret: listed in $secureSettings, so it is never published to other nodes. */
  masterKey?: string | Buffer;
  previousMasterKeys?: (string | Buffer)[];
  masterKeyFile?: string;
  development?: boolean;
  devMasterKeyFile?: string;
}

export interface GetOekParams {
  service: string;
  id?: string;
}

export interface GetOekResult {
  id: string;
  /** Base64 of the 32-byte key. */
  key: string;
}

interface KeysMeta {
  ownerId?: unknown;
  acl?: { ownerId?: unknown };
}

interface KeysServiceVars {
  keyStore?: OwnerKeyStore;
  /** The client this service connected itself (and shuts down when it stops). */
  ownClient?: Client;
}

type KeysServiceThis = Service<KeysServiceSettings> & KeysServiceVars;

export function createKeysService(
  options: KeysServiceOptions = {},
): ServiceSchema<KeysServiceSettings, Record<string, never>, KeysServiceVars> {
  const env = options.env ?? process.env;
  return {
    name: options.name ?? "keys",
    settings: {
      $secureSettings: ["masterKey", "previousMasterKeys", "masterKeyFile", "devMasterKeyFile"],
      keyspace: options.keyspace,
      table: options.table ?? "owner_keys",
      rotationDays: options.rotationDays ?? 30,
      retentionDays: options.retentionDays ?? 7,
      marginDays: options.marginDays ?? 7,
      cacheTtlMs: options.cacheTtlMs ?? 60_000,
      masterKey: options.masterKey,
      previousMasterKeys: options.previousMasterKeys,
      masterKeyFile: options.masterKeyFile,
      development: options.development,
      devMasterKeyFile: options.devMasterKeyFile,
    },

    actions: {
      getOek: {
        params: {
          service: { type: "string", empty: false },
          id: { type: "string", empty: false, optional: true },
        },
        async handler(this: KeysServiceThis, ctx: Context<GetOekParams, KeysMeta>): Promise<GetOekResult> {
          const ownerId = ownerOf(ctx.meta);
          if (ownerId === undefined) throw new OwnerMissingError(`${this.fullName}.getOek`);
          const store = this.keyStore;
          if (store === undefined) throw new ConfigurationError("keys", "The keys service has not started");
          const { id } = ctx.params;
          const ownerKey = id === undefined ? await store.current(ownerId) : await store.byId(ownerId, id);
          if (ownerKey === undefined) throw new OwnerKeyNotFoundError(ownerId, id ?? "");
          return { id: ownerKey.id, key: ownerKey.key.toString("base64") };
        },
      },
    },

    async started(this: KeysServiceThis) {
      // Whoever may call getOek for an owner gets that owner's key: the caller must be verified.
      requireAclGuard(this.broker, this.fullName, options.trustMeta === true);
      const settings = this.settings;
      const masterKey = loadMasterKey({
        masterKey: settings.masterKey,
        masterKeyFile: settings.masterKeyFile,
        development: settings.development,
        devMasterKeyFile: settings.devMasterKeyFile,
        env,
        warn: message => this.logger.warn(message),
      });
      const config = options.client === undefined ? (options.cassandra ?? cassandraConfigFromEnv(env)) : undefined;
      const keyspace = settings.keyspace ?? config?.keyspace;
      if (keyspace === undefined) {
        throw new ConfigurationError(
          "keyspace",
          "The keys service needs a keyspace: pass the keyspace option or set CASSANDRA_KEYSPACE",
        );
      }
      const client = config === undefined ? options.client : await connectCassandra(config);
      if (client === undefined) throw new ConfigurationError("client", "The keys service has no Cassandra client");
      if (config !== undefined) this.ownClient = client;
      let store: OwnerKeyStore;
      try {
        store = new OwnerKeyStore({
          client,
          keyspace,
          table: settings.table,
          masterKey,
          previousMasterKeys: loadPreviousMasterKeys(settings.previousMasterKeys, env),
          rotationDays: settings.rotationDays,
          retentionDays: settings.retentionDays,
          marginDays: settings.marginDays,
          cacheTtlMs: settings.cacheTtlMs,
        });
        if (options.replication !== undefined && /^[a-z][a-z0-9_]{0,47}$/.test(keyspace)) {
          await client.execute(`CREATE KEYSPACE IF NOT EXISTS ${keyspace} WITH replication = ${options.replication}`);
        }
        await store.init();
      } catch (err) {
        this.ownClient = undefined;
        if (config !== undefined) await client.shutdown();
        throw err;
      }
      this.keyStore = store;
      this.logger.info(
        `Owner keys in ${keyspace}.${settings.table}: rotated every ${settings.rotationDays} days, ` +
          `kept ${store.keyTtlSeconds} s`,
      );
    },

    async stopped(this: KeysServiceThis) {
      this.keyStore?.clearCache();
      this.keyStore = undefined;
      const own = this.ownClient;
      this.ownClient = undefined;
      if (own !== undefined) await own.shutdown();
    },
  };
}

function ownerOf(meta: KeysMeta): string | undefined {
  const owner = meta.acl?.ownerId ?? meta.ownerId;
  return typeof owner === "string" && owner.length > 0 ? owner : undefined;
}
