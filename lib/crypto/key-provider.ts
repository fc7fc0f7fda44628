/**
 * Where the codec gets owner keys: the keys service (`<keys>.getOek({ service, id? })`), called with
 * the meta of the call that needs the key, with a bounded cache in front. The owner's current key
 * is cached briefly (so a rotation is picked up soon); a key named by id never changes, so it is
 * cached long.
 */
import { KeyOwnerMismatchError, KeysUnavailableError } from "../errors";
import { KEY_BYTES, loadSodium } from "./aead-envelope";
import { TtlCache } from "./ttl-cache";

export interface OwnerKey {
  id: string;
  key: Buffer;
}

export interface KeyProvider {
  /** The owner's current key, used to seal new values. */
  current(ownerId: string, caller?: unknown): Promise<OwnerKey>;
  /** The owner's key with this id, used to open values sealed with it (also after a rotation). */
  byId(ownerId: string, id: string, caller?: unknown): Promise<OwnerKey>;
  /**
   * The key `byId` would answer at once from memory, if it holds it (an optional fast path for
   * opening values). It must answer only what `byId` would answer now, its checks included: a
   * subclass that overrides `byId` overrides this too.
   */
  cachedById?(ownerId: string, id: string): OwnerKey | undefined;
}

/** What the provider needs of a Moleculer broker or context: `call`. */
export interface ActionCaller {
  call(
    actionName: string,
    params: unknown,
    opts?: { meta?: Record<string, unknown>; timeout?: number },
  ): Promise<unknown>;
}

/** The part of a Moleculer `Context` the provider uses. */
export interface CallerContext extends ActionCaller {
  meta: Record<string, unknown>;
}

export interface MoleculerKeyProviderOptions {
  /** Used when a key is needed outside any call (no caller context). */
  broker: ActionCaller;
  /** The name this service gives the keys service (`getOek({ service })`), e.g. "worker.queue". */
  service: string;
  /**
   * The keys service's name.
   * @defaultValue "keys"
   */
  keysService?: string;
  /**
   * How long the owner's current key is reused before asking again.
   * @defaultValue 60000
   */
  currentKeyTtlMs?: number;
  /**
   * How long a key fetched by id is kept.
   * @defaultValue 3600000
   */
  keyByIdTtlMs?: number;
  /**
   * How many keys the cache holds at most (least recently used go first).
   * @defaultValue 10000
   */
  maxCachedKeys?: number;
  /**
   * Call timeout for the keys service.
   * @defaultValue 5000
   */
  timeoutMs?: number;
  /**
   * The meta of a key request made outside any call (e.g. a hand-over): with a grant this node
   * signed, where the ACL middleware verifies grants. @defaultValue `{ ownerId, acl: { ownerId } }`
   */
  metaFor?: (ownerId: string) => Promise<Record<string, unknown>>;
}

interface GetOekParams {
  service: string;
  id?: string;
}

export class MoleculerKeyProvider implements KeyProvider {
  private readonly broker: ActionCaller;
  private readonly service: string;
  private readonly getOekAction: string;
  private readonly currentKeyTtlMs: number;
  private readonly keyByIdTtlMs: number;
  private readonly timeoutMs: number;
  private readonly metaFor: (ownerId: string) => Promise<Record<string, unknown>>;
  private readonly cache: TtlCache<OwnerKey>;
  /** One request per cache key in flight: concurrent misses for the same key share it. */
  private readonly inFlight = new Map<string, Promise<OwnerKey>>();

  constructor(options: MoleculerKeyProviderOptions) {
    this.broker = options.broker;
    this.service = options.service;
    this.getOekAction = `${options.keysService ?? "keys"}.getOek`;
    this.currentKeyTtlMs = options.currentKeyTtlMs ?? 60_000;
    this.keyByIdTtlMs = options.keyByIdTtlMs ?? 3_600_000;
    this.timeoutMs = options.timeoutMs ?? 5_000;
    this.metaFor = options.metaFor ?? (async ownerId => ({ ownerId, acl: { ownerId } }));
    this.cache = new TtlCache({ maxEntries: options.maxCachedKeys ?? 10_000 });
  }

  current(ownerId: string, caller?: unknown): Promise<OwnerKey> {
    const cacheKey = currentCacheKey(ownerId);
    return this.cached(cacheKey, async () => {
      const key = await this.fetch(ownerId, { service: this.service }, caller);
      this.cache.set(currentCacheKey(ownerId), key, this.currentKeyTtlMs);
      this.cache.set(byIdCacheKey(ownerId, key.id), key, this.keyByIdTtlMs);
      return key;
    });
  }

  byId(ownerId: string, id: string, caller?: unknown): Promise<OwnerKey> {
    const cacheKey = byIdCacheKey(ownerId, id);
    return this.cached(cacheKey, async () => {
      const key = await this.fetch(ownerId, { service: this.service, id }, caller);
      if (key.id !== id)
        throw new KeysUnavailableError(ownerId, `asked for key ${id}, the keys service sent ${key.id}`);
      this.cache.set(cacheKey, key, this.keyByIdTtlMs);
      return key;
    });
  }

  cachedById(ownerId: string, id: string): OwnerKey | undefined {
    return this.cache.get(byIdCacheKey(ownerId, id));
  }

  /** Forgets every cached key (e.g. after the keys service reported a revocation). */
  clear(): void {
    this.cache.clear();
  }

  private cached(cacheKey: string, load: () => Promise<OwnerKey>): Promise<OwnerKey> {
    const hit = this.cache.get(cacheKey);
    if (hit !== undefined) return Promise.resolve(hit);
    const pending = this.inFlight.get(cacheKey);
    if (pending !== undefined) return pending;
    const request = load().finally(() => this.inFlight.delete(cacheKey));
    this.inFlight.set(cacheKey, request);
    return request;
  }

  private async fetch(ownerId: string, params: GetOekParams, caller: unknown): Promise<OwnerKey> {
    let reply: unknown;
    try {
      if (isCallerContext(caller)) {
        const callerOwner = ownerOf(caller.meta);
        if (callerOwner !== undefined && callerOwner !== ownerId) throw new KeyOwnerMismatchError(ownerId, callerOwner);
        const meta = callerOwner === undefined ? withOwner(caller.meta, ownerId) : caller.meta;
        reply = await caller.call(this.getOekAction, params, { meta, timeout: this.timeoutMs });
      } else {
        reply = await this.broker.call(this.getOekAction, params, {
          meta: await this.metaFor(ownerId),
          timeout: this.timeoutMs,
        });
      }
    } catch (err) {
      if (err instanceof KeyOwnerMismatchError || isCallerMistake(err)) throw err;
      throw new KeysUnavailableError(ownerId, describeFailure(err));
    }
    return parseKeyReply(ownerId, reply);
  }
}

/** Turns a `getOek` reply into a 32-byte key; throws KeysUnavailableError on a malformed reply. */
export async function parseKeyReply(ownerId: string, reply: unknown): Promise<OwnerKey> {
  if (typeof reply !== "object" || reply === null) {
    throw new KeysUnavailableError(ownerId, "the keys service replied without { id, key }");
  }
  const { id, key } = reply as { id?: unknown; key?: unknown };
  if (typeof id !== "string" || id.length === 0) {
    throw new KeysUnavailableError(ownerId, "the keys service replied without a key id");
  }
  const material = keyMaterial(key);
  if (material === undefined || material.length === 0) {
    throw new KeysUnavailableError(ownerId, `the keys service replied without key material for key ${id}`);
  }
  return { id, key: await toKeyBytes(material) };
}

/**
 * Exactly 32 bytes (raw, base64 or hex) are the key; anything else (e.g. the original keys service's
 * free-form string) is hashed to 32 bytes with BLAKE2b, the same way every time.
 */
async function toKeyBytes(material: Buffer | string): Promise<Buffer> {
  if (typeof material === "string") {
    const decoded = decodeExact(material);
    if (decoded !== undefined) return decoded;
  } else if (material.length === KEY_BYTES) {
    return Buffer.from(material);
  }
  const sodium = await loadSodium();
  const digest = sodium.crypto_generichash(
    KEY_BYTES,
    typeof material === "string" ? Buffer.from(material) : material,
    null,
  );
  return Buffer.from(digest);
}

function decodeExact(text: string): Buffer | undefined {
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, "hex");
  const base64 = Buffer.from(text, "base64");
  if (base64.length === KEY_BYTES && base64.toString("base64") === text) return base64;
  return undefined;
}

function keyMaterial(key: unknown): Buffer | string | undefined {
  if (typeof key === "string") return key;
  if (key instanceof Uint8Array) return Buffer.from(key.buffer, key.byteOffset, key.byteLength);
  // A Buffer that crossed a JSON-serialising transporter.
  if (typeof key === "object" && key !== null) {
    const { type, data } = key as { type?: unknown; data?: unknown };
    if (type === "Buffer" && Array.isArray(data)) return Buffer.from(data as number[]);
  }
  return undefined;
}

function currentCacheKey(ownerId: string): string {
  return `c:${ownerId.length}:${ownerId}`;
}

function byIdCacheKey(ownerId: string, id: string): string {
  return `k:${ownerId.length}:${ownerId}:${id}`;
}

function isCallerContext(caller: unknown): caller is CallerContext {
  if (typeof caller !== "object" || caller === null) return false;
  const candidate = caller as Partial<CallerContext>;
  return typeof candidate.call === "function" && typeof candidate.meta === "object" && candidate.meta !== null;
}

function ownerOf(meta: Record<string, unknown>): string | undefined {
  const acl = meta.acl as { ownerId?: unknown } | undefined;
  const owner = acl?.ownerId ?? meta.ownerId;
  return typeof owner === "string" && owner.length > 0 ? owner : undefined;
}

function withOwner(meta: Record<string, unknown>, ownerId: string): Record<string, unknown> {
  const acl = typeof meta.acl === "object" && meta.acl !== null ? meta.acl : {};
  return { ...meta, ownerId, acl: { ...acl, ownerId } };
}

/** The keys service refused the caller (e.g. no owner, access denied): retrying cannot help. */
function isCallerMistake(err: unknown): boolean {
  const { code, retryable } = err as { code?: unknown; retryable?: unknown };
  return typeof code === "number" && code >= 400 && code < 500 && retryable !== true;
}

function describeFailure(err: unknown): string {
  if (err instanceof Error) {
    const type = (err as { type?: unknown }).type;
    return typeof type === "string" && type.length > 0 ? `${type}: ${err.message}` : err.message;
  }
  return "unknown failure";
}
