/**
 * Establishes the owner of every call to the guarded services before the action runs.
 *
 * Grant mode (the default): the owner comes only from a signed grant in `ctx.meta.grant`, a JWT of
 * the HTTP API's format (`sub` = owner, `services`, `exp`, optional `ops`), verified here with the
 * configured secret or public key (verified tokens are cached until their `exp`, at most a minute).
 * An `ownerId` in meta that differs from the grant's is refused, and so is a `serviceId` the grant
 * does not list. Trust mode (`trustMeta`, for closed networks only) takes `ctx.meta.acl.ownerId`,
 * else `ctx.meta.ownerId`, as given, as version 1 did. With `aclAction` set, that action decides
 * as well (an external verifier, as the original's acl service); without grant keys it is the only
 * check. Either way `ctx.meta.ownerId` and `ctx.meta.acl.ownerId` are then set to the owner, so
 * actions and the services they call read one value.
 *
 * Actions declaring `acl: false`, and protected, private or `_`-prefixed actions (not callable from
 * outside), are not guarded; `acl: "optional"` actions run without a grant, but a valid one is
 * verified and offered to them (`callerGrant(ctx)`).
 */
import type { ActionHandler, ActionSchema, Context, Middleware, Service, ServiceBroker } from "moleculer";
import {
  AccessDeniedError,
  ConfigurationError,
  GrantRequiredError,
  InvalidTokenError,
  OwnerMissingError,
  OwnerNotAllowedError,
  ServiceNotAllowedError,
} from "../lib/errors";
import {
  createGrantSigner,
  createJwtVerifier,
  grantCovers,
  type AccessGrant,
  type GrantSigner,
  type JwtVerifierOptions,
  type TokenVerifier,
} from "../lib/http/access-token";

declare module "moleculer" {
  interface ActionSchema {
    /**
     * `false`: the ACL middleware leaves this action alone. `"optional"`: no grant needed, but a
     * valid one is verified and offered to the action (`callerGrant(ctx)`), e.g. for more detail.
     */
    acl?: boolean | "optional";
  }
}

export interface AclMiddlewareOptions {
  /**
   * Full names of the services whose actions are guarded.
   * @defaultValue ["worker.queue", "keys"]
   */
  services?: string[];
  /**
   * An action asked `{ action, ownerId, params: { serviceId } }` before each guarded call; the call
   * proceeds only when it returns `true` or `{ result: true }`.
   */
  aclAction?: string;
  /**
   * How grants are verified: verifier options (secret or public key, issuer, audience) or a
   * verifier function. @defaultValue from the environment: ACL_GRANT_SECRET or ACL_GRANT_PUBLIC_KEY,
   * else API_JWT_SECRET or API_JWT_PUBLIC_KEY (the HTTP API's token keys)
   */
  grants?: JwtVerifierOptions | TokenVerifier;
  /**
   * Signs the grants queue nodes give themselves for work no caller asked for (a hand-over's key
   * lookup, adopting an orphaned queue). @defaultValue the HS256 secret that verifies, else
   * ACL_GRANT_PRIVATE_KEY
   */
  signer?: GrantSigner;
  /**
   * Trust `ctx.meta.ownerId` as given (version 1's behaviour): only for networks where every node
   * is trusted. @defaultValue ACL_TRUST_META=true, else false
   */
  trustMeta?: boolean;
  /** @defaultValue process.env */
  env?: NodeJS.ProcessEnv;
}

/** The request sent to `aclAction`. */
export interface AclDecisionRequest {
  action: string;
  ownerId: string;
  params: { serviceId?: unknown };
}

/** How owners are established: from verified grants, from meta as given, or by the ACL action. */
export type AclMode = "grant" | "trust" | "action";

/** What the middleware tells the services it guards (found with `aclGuardOf(broker)`). */
export interface AclGuard {
  readonly mode: AclMode;
  readonly services: ReadonlySet<string>;
  /** Whether this node can sign its own grants (needed in grant mode for callerless work). */
  readonly canSign: boolean;
  /**
   * Meta for a call this node makes for `ownerId` (a forward, a key lookup, its own work): in grant
   * mode with a fresh grant of its own, for `services` only (default all the owner's).
   */
  internalMeta(ownerId: string, services?: "*" | readonly string[]): Promise<Record<string, unknown>>;
  /** Signs a grant and verifies it: throws ConfigurationError when this node's signing key does not match. */
  checkSigning(): Promise<void>;
}

interface AclMeta {
  ownerId?: unknown;
  grant?: unknown;
  acl?: Record<string, unknown> & { ownerId?: unknown };
}

/** Internal grants live a minute and are reused for half of it. */
const INTERNAL_GRANT_SECONDS = 60;

export function AclMiddleware(options: AclMiddlewareOptions = {}): Middleware & AclGuard {
  const env = options.env ?? process.env;
  const services = new Set(options.services ?? ["worker.queue", "keys"]);
  const aclAction = options.aclAction;
  const trustMeta = options.trustMeta ?? isTrue(env.ACL_TRUST_META);
  const verifierOptions = typeof options.grants === "object" ? options.grants : grantKeysFromEnv(env);
  const hasKeys = typeof options.grants === "function" || hasVerifierKey(verifierOptions);

  let mode: AclMode;
  if (trustMeta) mode = "trust";
  else if (hasKeys) mode = "grant";
  else if (aclAction !== undefined) mode = "action";
  else {
    throw new ConfigurationError(
      "ACL_GRANT_SECRET",
      "The ACL middleware verifies signed grants: set ACL_GRANT_SECRET (or API_JWT_SECRET), or ACL_GRANT_PUBLIC_KEY " +
        "with ACL_GRANT_PRIVATE_KEY; or ACL_ACTION for an external verifier; ACL_TRUST_META=true trusts " +
        "meta.ownerId as given (closed networks only)",
    );
  }
  const verify: TokenVerifier | undefined =
    mode !== "grant"
      ? undefined
      : typeof options.grants === "function"
        ? options.grants
        : createJwtVerifier(verifierOptions);
  const signer =
    options.signer ??
    (mode === "grant"
      ? createGrantSigner({ secret: verifierOptions.secret, privateKey: privateKeyFromEnv(env) })
      : undefined);
  const minted = new Map<string, { meta: Promise<Record<string, unknown>>; until: number }>();

  async function internalMeta(
    ownerId: string,
    services: "*" | readonly string[] = "*",
  ): Promise<Record<string, unknown>> {
    const base = { ownerId, acl: { ownerId } };
    if (mode !== "grant") return base;
    if (signer === undefined) {
      throw new ConfigurationError(
        "ACL_GRANT_SECRET",
        "This node verifies grants with a public key but cannot sign its own: set ACL_GRANT_PRIVATE_KEY",
      );
    }
    const now = Date.now();
    const cacheKey = JSON.stringify([ownerId, services]);
    const known = minted.get(cacheKey);
    if (known && known.until > now) return known.meta;
    const meta = signer
      .sign({
        ownerId,
        services: services === "*" ? "*" : [...services],
        expiresInSeconds: INTERNAL_GRANT_SECONDS,
        issuer: verifierOptions.issuer,
        audience: verifierOptions.audience,
      })
      .then(grant => ({ ...base, grant }));
    minted.set(cacheKey, { meta, until: now + (INTERNAL_GRANT_SECONDS * 1000) / 2 });
    if (minted.size > 10_000) minted.delete(minted.keys().next().value as string);
    meta.catch(() => minted.delete(cacheKey));
    return meta;
  }

  async function checkSigning(): Promise<void> {
    if (mode !== "grant" || !verify) return;
    const meta = await internalMeta("signing-check", []);
    try {
      await verify(meta.grant as string);
    } catch (err) {
      throw new ConfigurationError(
        "ACL_GRANT_PRIVATE_KEY",
        `This node's own grants do not verify here (${(err as Error).message}): the signing key ` +
          "(ACL_GRANT_SECRET or ACL_GRANT_PRIVATE_KEY) must match the verification key",
      );
    }
  }

  return {
    name: "Acl",
    mode,
    services,
    canSign: signer !== undefined,
    internalMeta,
    checkSigning,
    localAction(next: ActionHandler, action: ActionSchema): ActionHandler {
      if (!isGuarded(action, services)) return next;
      const actionName = action.name ?? "";

      if (action.acl === "optional") {
        return async function offerGrant(this: Service, ctx: Context<unknown, AclMeta>) {
          if (mode === "trust") setGrant(ctx, { ownerId: "", services: "*", ops: true });
          else if (verify && typeof ctx.meta.grant === "string" && ctx.meta.grant !== "") {
            const grant = await verify(ctx.meta.grant).catch(() => undefined);
            if (grant) setGrant(ctx, grant);
          }
          return next.call(this, ctx);
        };
      }

      /**
       * The call, once its owner is established: from the verified `grant` when grants are verified
       * (then `grant` must be one: a verifier that answers nothing refuses the call), else from meta.
       */
      const admit = (service: Service, ctx: Context<unknown, AclMeta>, grant: AccessGrant | undefined) => {
        const named = ownerOf(ctx.meta);
        let ownerId: string;
        if (verify) {
          if (!isRecord(grant) || typeof grant.ownerId !== "string" || grant.ownerId === "") {
            throw new InvalidTokenError("the verifier gave no owner");
          }
          if (named !== undefined && named !== grant.ownerId) throw new OwnerNotAllowedError();
          const serviceId = serviceIdOf(ctx.params);
          if (typeof serviceId === "string" && !grantCovers(grant, serviceId)) {
            throw new ServiceNotAllowedError(serviceId);
          }
          ownerId = grant.ownerId;
          setGrant(ctx, grant);
        } else {
          if (named === undefined) throw new OwnerMissingError(actionName);
          ownerId = named;
        }
        ctx.meta.ownerId = ownerId;
        ctx.meta.acl = { ...(isRecord(ctx.meta.acl) ? ctx.meta.acl : {}), ownerId };
        if (aclAction === undefined) return next.call(service, ctx);
        const request: AclDecisionRequest = {
          action: actionName,
          ownerId,
          params: { serviceId: serviceIdOf(ctx.params) },
        };
        return ctx.call<unknown, AclDecisionRequest>(aclAction, request, { meta: ctx.meta }).then(decision => {
          if (!isAllowed(decision)) throw new AccessDeniedError({ action: actionName, ownerId });
          return next.call(service, ctx);
        });
      };
      // Not async: a worker's token verified before (the usual case) costs no waiting and no frame.
      return function guardOwner(this: Service, ctx: Context<unknown, AclMeta>) {
        try {
          if (!verify) return Promise.resolve(admit(this, ctx, undefined));
          const token = ctx.meta.grant;
          if (typeof token !== "string" || token === "") throw new GrantRequiredError(actionName);
          const known = verify.cached?.(token);
          if (known) return Promise.resolve(admit(this, ctx, known));
          // Promise.resolve: a custom verifier may answer with a plain value.
          return Promise.resolve(verify(token)).then(grant => admit(this, ctx, grant));
        } catch (err) {
          return Promise.reject(err);
        }
      };
    },
  };
}

/** The ACL middleware registered on `broker`, if any. */
export function aclGuardOf(broker: ServiceBroker): AclGuard | undefined {
  const list = (broker as unknown as { middlewares?: { list?: unknown[] } }).middlewares?.list ?? [];
  return list.find(
    (m): m is AclGuard => isRecord(m) && (m as { name?: unknown }).name === "Acl" && "internalMeta" in m,
  );
}

/**
 * Refuses to run `service` on a broker whose ACL middleware does not guard it: without it any node
 * on the bus could name any owner. `trustMeta` (closed networks) allows it.
 */
export function requireAclGuard(broker: ServiceBroker, service: string, trustMeta: boolean): AclGuard | undefined {
  const guard = aclGuardOf(broker);
  if (trustMeta) return guard;
  if (!guard || !guard.services.has(service)) {
    throw new ConfigurationError(
      "middlewares",
      `${service} must run behind the ACL middleware: add AclMiddleware({ services: [..., "${service}"] }) to the ` +
        "broker's middlewares, or pass trustMeta: true if every node of this network is trusted",
    );
  }
  return guard;
}

/** The grant the middleware verified for this call (trust mode: an operator grant without owner). */
export function callerGrant(ctx: Context): AccessGrant | undefined {
  return (ctx.locals as { aclGrant?: AccessGrant } | undefined)?.aclGrant;
}

function setGrant(ctx: Context, grant: AccessGrant): void {
  (ctx.locals as { aclGrant?: AccessGrant }).aclGrant = grant;
}

function grantKeysFromEnv(env: NodeJS.ProcessEnv): JwtVerifierOptions {
  const secret = env.ACL_GRANT_SECRET || env.API_JWT_SECRET || undefined;
  const publicKey = env.ACL_GRANT_PUBLIC_KEY || env.API_JWT_PUBLIC_KEY || undefined;
  return {
    secret,
    publicKey: publicKey?.replace(/\\n/g, "\n"),
    issuer: env.ACL_GRANT_ISSUER || env.API_JWT_ISSUER || undefined,
    audience: env.ACL_GRANT_AUDIENCE || env.API_JWT_AUDIENCE || undefined,
  };
}

function privateKeyFromEnv(env: NodeJS.ProcessEnv): string | undefined {
  return env.ACL_GRANT_PRIVATE_KEY ? env.ACL_GRANT_PRIVATE_KEY.replace(/\\n/g, "\n") : undefined;
}

function hasVerifierKey(o: JwtVerifierOptions): boolean {
  return o.secret !== undefined || o.publicKey !== undefined;
}

function isTrue(raw: string | undefined): boolean {
  const v = (raw ?? "").toLowerCase();
  if (v === "" || ["0", "false", "no", "off"].includes(v)) return false;
  if (["1", "true", "yes", "on"].includes(v)) return true;
  throw new ConfigurationError("ACL_TRUST_META", `ACL_TRUST_META=${raw} is not a boolean: use true or false`);
}

function isGuarded(action: ActionSchema, services: Set<string>): boolean {
  const serviceName = action.service?.fullName;
  if (serviceName === undefined || !services.has(serviceName)) return false;
  if (action.acl === false) return false;
  if (action.visibility === "protected" || action.visibility === "private") return false;
  const rawName = (action as { rawName?: unknown }).rawName;
  return !(typeof rawName === "string" && rawName.startsWith("_"));
}

function ownerOf(meta: AclMeta): string | undefined {
  const owner = (isRecord(meta.acl) ? meta.acl.ownerId : undefined) ?? meta.ownerId;
  return typeof owner === "string" && owner.length > 0 ? owner : undefined;
}

/** The queue a call is about: `serviceId`, or that of a forwarded request (`shardExec`). */
function serviceIdOf(params: unknown): unknown {
  if (!isRecord(params)) return undefined;
  if (params.serviceId !== undefined) return params.serviceId;
  return isRecord(params.request) ? params.request.serviceId : undefined;
}

function isAllowed(decision: unknown): boolean {
  if (decision === true) return true;
  return isRecord(decision) && decision.result === true;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null;
}
