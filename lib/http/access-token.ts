/**
 * Bearer tokens of the HTTP API: what a verified token grants (an owner and the serviceIds it may
 * use), JWT verification with jose (HS256 shared secret, or RS256 / ES256 public key), and the
 * minting of development tokens. No Moleculer here beyond the error classes; tokens and secrets
 * never appear in an error.
 */
import { createPrivateKey, createPublicKey, type KeyObject } from "node:crypto";
import { errors as joseErrors, jwtVerify, SignJWT, type JWTVerifyGetKey, type JWTVerifyOptions } from "jose";
import { TtlCache } from "../crypto/ttl-cache";
import { ConfigurationError, InvalidTokenError, TokenExpiredError } from "../errors";

/** What a verified token allows: the owner whose queues it reaches, and which of them. */
export interface AccessGrant {
  ownerId: string;
  /** The serviceIds the token may use, or "*" for all of the owner's. */
  services: "*" | readonly string[];
  /** Operator rights (`ops: true` claim): health details, the operator console's node views. */
  ops?: boolean;
}

/** Turns a bearer token into a grant, or throws a 401 error (InvalidTokenError, TokenExpiredError). */
export type TokenVerifier = ((token: string) => Promise<AccessGrant>) & {
  /**
   * The grant of a token verified before and still remembered, without waiting (optional). It
   * must answer only what the verifier itself would answer now, its checks included: a wrapper
   * that adds checks must not copy another verifier's `cached`.
   */
  cached?(token: string): AccessGrant | undefined;
};

export interface JwtVerifierOptions {
  /** Shared secret for HS256 tokens, at least 32 bytes. @defaultValue API_JWT_SECRET */
  secret?: string;
  /** SPKI public key (PEM) for RS256 or ES256 tokens. @defaultValue API_JWT_PUBLIC_KEY */
  publicKey?: string;
  /** Expected `iss` claim, when set. @defaultValue API_JWT_ISSUER */
  issuer?: string;
  /** Expected `aud` claim, when set. @defaultValue API_JWT_AUDIENCE */
  audience?: string;
  /** Clock skew allowed on `exp` and `nbf`, in seconds. @defaultValue 5 */
  clockToleranceSeconds?: number;
}

/** How many verified tokens are remembered, and for how long at most. */
const VERIFIED_TOKENS_CACHED = 10_000;
const VERIFIED_TOKEN_TTL_MS = 60_000;

/** The shortest HS256 secret accepted (RFC 7518 asks for a key at least as long as the hash). */
export const MIN_SECRET_BYTES = 32;

/** Reads the verifier settings from `env`; unset variables stay unset. */
export function jwtOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): JwtVerifierOptions {
  return {
    secret: env.API_JWT_SECRET || undefined,
    // A PEM in an environment variable often arrives with its line breaks written as "\n".
    publicKey: env.API_JWT_PUBLIC_KEY ? env.API_JWT_PUBLIC_KEY.replace(/\\n/g, "\n") : undefined,
    issuer: env.API_JWT_ISSUER || undefined,
    audience: env.API_JWT_AUDIENCE || undefined,
  };
}

/** The HS256 key for `secret`; throws ConfigurationError when it is too short to be safe. */
export function hmacKey(secret: string): Uint8Array {
  const key = new TextEncoder().encode(secret);
  if (key.length < MIN_SECRET_BYTES) {
    throw new ConfigurationError(
      "API_JWT_SECRET",
      `API_JWT_SECRET is ${key.length} bytes long; use at least ${MIN_SECRET_BYTES} (e.g. \`openssl rand -base64 32\`)`,
    );
  }
  return key;
}

/** Parses the public key and picks its algorithm: RS256 for RSA, ES256 for P-256. */
function publicVerificationKey(pem: string): { key: KeyObject; algorithm: "RS256" | "ES256" } {
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch {
    throw new ConfigurationError("API_JWT_PUBLIC_KEY", "API_JWT_PUBLIC_KEY is not a PEM public key (SPKI)");
  }
  if (key.asymmetricKeyType === "rsa") return { key, algorithm: "RS256" };
  if (key.asymmetricKeyType === "ec" && key.asymmetricKeyDetails?.namedCurve === "prime256v1") {
    return { key, algorithm: "ES256" };
  }
  throw new ConfigurationError(
    "API_JWT_PUBLIC_KEY",
    "API_JWT_PUBLIC_KEY must be an RSA key (RS256) or a P-256 EC key (ES256)",
  );
}

/**
 * A verifier of JWTs: signature with the configured key (the algorithm is fixed by the key, never
 * chosen by the token), `exp` and `sub` required, `services` a list of serviceIds or "*".
 */
export function createJwtVerifier(options: JwtVerifierOptions): TokenVerifier {
  const hmac = options.secret !== undefined ? hmacKey(options.secret) : undefined;
  const asymmetric = options.publicKey !== undefined ? publicVerificationKey(options.publicKey) : undefined;
  if (!hmac && !asymmetric) {
    throw new ConfigurationError(
      "API_JWT_SECRET",
      "The HTTP API needs a way to verify tokens: set API_JWT_SECRET (HS256), API_JWT_PUBLIC_KEY (RS256/ES256), or an authAction",
    );
  }
  const algorithms = [...(hmac ? ["HS256"] : []), ...(asymmetric ? [asymmetric.algorithm] : [])];
  const getKey: JWTVerifyGetKey = header => {
    const key = header.alg === "HS256" ? hmac : asymmetric?.key;
    if (key === undefined) throw new InvalidTokenError("algorithm not allowed");
    return key;
  };
  const verifyOptions: JWTVerifyOptions = {
    algorithms,
    requiredClaims: ["exp", "sub"],
    issuer: options.issuer,
    audience: options.audience,
    clockTolerance: options.clockToleranceSeconds ?? 5,
  };

  // A worker sends the same token on every request: a verified token is remembered until its `exp`
  // (at most a minute), which saves the signature check on the hot path.
  const verified = new TtlCache<AccessGrant>({ maxEntries: VERIFIED_TOKENS_CACHED });

  const verifier: TokenVerifier = async token => {
    const known = verified.get(token);
    if (known) return known;
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(token, getKey, verifyOptions));
    } catch (error) {
      throw verificationError(error);
    }
    const grant = grantFromClaims(payload);
    const ttl = Math.min((payload.exp as number) * 1000 - Date.now(), VERIFIED_TOKEN_TTL_MS);
    if (ttl > 0) verified.set(token, grant, ttl);
    return grant;
  };
  verifier.cached = token => verified.get(token);
  return verifier;
}

function verificationError(error: unknown): Error {
  if (error instanceof InvalidTokenError) return error;
  if (error instanceof joseErrors.JWTExpired) return new TokenExpiredError();
  if (error instanceof joseErrors.JWTClaimValidationFailed) {
    return new InvalidTokenError(`claim ${error.claim} ${error.reason.replace(/_/g, " ")}`);
  }
  if (error instanceof joseErrors.JWSSignatureVerificationFailed) return new InvalidTokenError("bad signature");
  if (error instanceof joseErrors.JOSEAlgNotAllowed) return new InvalidTokenError("algorithm not allowed");
  if (error instanceof joseErrors.JWSInvalid || error instanceof joseErrors.JWTInvalid) {
    return new InvalidTokenError("malformed token");
  }
  if (error instanceof joseErrors.JOSEError) return new InvalidTokenError(error.code);
  return new InvalidTokenError("unverifiable token");
}

/** Checks the claims a grant is made of: `sub` (the owner) and `services`. */
export function grantFromClaims(claims: Record<string, unknown>): AccessGrant {
  const ownerId = claims.sub;
  if (typeof ownerId !== "string" || ownerId === "") throw new InvalidTokenError("claim sub missing");
  return { ownerId, services: servicesClaim(claims.services), ...(claims.ops === true ? { ops: true } : {}) };
}

/** `services` must be "*" or an array of non-empty strings. */
export function servicesClaim(services: unknown): AccessGrant["services"] {
  if (services === "*") return "*";
  if (Array.isArray(services) && services.every(s => typeof s === "string" && s !== "")) {
    return services as string[];
  }
  throw new InvalidTokenError('claim services must be "*" or an array of serviceIds');
}

/** Whether the grant reaches the queue `serviceId` of its owner. */
export function grantCovers(grant: AccessGrant, serviceId: string): boolean {
  return grant.services === "*" || grant.services.includes(serviceId);
}

export interface MintTokenOptions {
  /** The HS256 secret (at least 32 bytes). */
  secret: string;
  ownerId: string;
  /** serviceIds the token may use, or "*". */
  services: "*" | string[];
  /** Lifetime in seconds. @defaultValue 86400 */
  expiresInSeconds?: number;
  issuer?: string;
  audience?: string;
  /** Grants operator rights (`ops: true`). */
  ops?: boolean;
}

/** Mints an HS256 token the default verifier accepts (grants for the bus, development tokens, tests). */
export async function mintAccessToken(options: MintTokenOptions): Promise<string> {
  return signGrant(hmacKey(options.secret), "HS256", options);
}

async function signGrant(
  key: Uint8Array | KeyObject,
  alg: "HS256" | "RS256" | "ES256",
  options: Omit<MintTokenOptions, "secret">,
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  let jwt = new SignJWT({ services: options.services, ...(options.ops ? { ops: true } : {}) })
    .setProtectedHeader({ alg, typ: "JWT" })
    .setSubject(options.ownerId)
    .setIssuedAt(now)
    .setExpirationTime(now + (options.expiresInSeconds ?? 86_400));
  if (options.issuer) jwt = jwt.setIssuer(options.issuer);
  if (options.audience) jwt = jwt.setAudience(options.audience);
  return jwt.sign(key);
}

/** Signs grants: with the HS256 secret, or with an RSA / P-256 private key (PKCS#8 PEM). */
export interface GrantSigner {
  sign(options: Omit<MintTokenOptions, "secret">): Promise<string>;
}

export function createGrantSigner(options: { secret?: string; privateKey?: string }): GrantSigner | undefined {
  if (options.secret !== undefined) {
    const key = hmacKey(options.secret);
    return { sign: o => signGrant(key, "HS256", o) };
  }
  if (options.privateKey === undefined) return undefined;
  let key: KeyObject;
  try {
    key = createPrivateKey(options.privateKey);
  } catch {
    throw new ConfigurationError("ACL_GRANT_PRIVATE_KEY", "ACL_GRANT_PRIVATE_KEY is not a PEM private key");
  }
  const alg =
    key.asymmetricKeyType === "rsa"
      ? "RS256"
      : key.asymmetricKeyType === "ec" && key.asymmetricKeyDetails?.namedCurve === "prime256v1"
        ? "ES256"
        : undefined;
  if (alg === undefined) {
    throw new ConfigurationError("ACL_GRANT_PRIVATE_KEY", "ACL_GRANT_PRIVATE_KEY must be an RSA or a P-256 EC key");
  }
  return { sign: o => signGrant(key, alg, o) };
}
