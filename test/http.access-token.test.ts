/** Bearer token verification (no broker, no Cassandra): keys, algorithms, claims, grants. */
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { SignJWT } from "jose";
import {
  createJwtVerifier,
  grantCovers,
  jwtOptionsFromEnv,
  mintAccessToken,
  type TokenVerifier,
} from "../lib/http/access-token";

const secret = randomBytes(32).toString("base64");

async function failure(verify: TokenVerifier, token: string): Promise<{ type: string; data: unknown; code: number }> {
  try {
    await verify(token);
  } catch (err) {
    return err as { type: string; data: unknown; code: number };
  }
  throw new Error("the token was accepted");
}

test("a minted HS256 token gives its owner and services", async () => {
  const verify = createJwtVerifier({ secret });
  const token = await mintAccessToken({ secret, ownerId: "o-1", services: ["s-1", "s-2"] });
  expect(await verify(token)).toEqual({ ownerId: "o-1", services: ["s-1", "s-2"] });
  expect(await verify(await mintAccessToken({ secret, ownerId: "o-1", services: "*" }))).toEqual({
    ownerId: "o-1",
    services: "*",
  });
});

test.each([
  ["RS256", () => generateKeyPairSync("rsa", { modulusLength: 2048 })],
  ["ES256", () => generateKeyPairSync("ec", { namedCurve: "P-256" })],
] as const)("a %s token verifies against the public key PEM", async (alg, generate) => {
  const { privateKey, publicKey } = generate();
  const pem = publicKey.export({ type: "spki", format: "pem" }).toString();
  const verify = createJwtVerifier({ publicKey: pem });
  const token = await new SignJWT({ services: ["s"] })
    .setProtectedHeader({ alg })
    .setSubject("o-2")
    .setExpirationTime("5m")
    .sign(privateKey);
  expect(await verify(token)).toEqual({ ownerId: "o-2", services: ["s"] });
  // The key decides the algorithm: an HS256 token "signed" with the public key text is refused.
  const confused = await new SignJWT({ services: "*" })
    .setProtectedHeader({ alg: "HS256" })
    .setSubject("o-2")
    .setExpirationTime("5m")
    .sign(new TextEncoder().encode(pem));
  expect(await failure(verify, confused)).toMatchObject({ code: 401, type: "INVALID_TOKEN" });
});

test("a PEM with escaped line breaks from the environment is accepted", async () => {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const escaped = publicKey.export({ type: "spki", format: "pem" }).toString().replace(/\n/g, "\\n");
  const verify = createJwtVerifier(jwtOptionsFromEnv({ API_JWT_PUBLIC_KEY: escaped }));
  const token = await new SignJWT({ services: "*" })
    .setProtectedHeader({ alg: "ES256" })
    .setSubject("o-3")
    .setExpirationTime("5m")
    .sign(privateKey);
  expect((await verify(token)).ownerId).toBe("o-3");
});

test("issuer and audience are checked when configured", async () => {
  const verify = createJwtVerifier({ secret, issuer: "https://issuer", audience: "queue" });
  const good = await mintAccessToken({
    secret,
    ownerId: "o",
    services: "*",
    issuer: "https://issuer",
    audience: "queue",
  });
  expect((await verify(good)).ownerId).toBe("o");
  const wrongAudience = await mintAccessToken({ secret, ownerId: "o", services: "*", issuer: "https://issuer" });
  expect(await failure(verify, wrongAudience)).toMatchObject({
    type: "INVALID_TOKEN",
    data: { reason: "claim aud missing" },
  });
});

test("an expired token is TOKEN_EXPIRED, beyond the clock tolerance only", async () => {
  const verify = createJwtVerifier({ secret, clockToleranceSeconds: 5 });
  expect(
    await failure(verify, await mintAccessToken({ secret, ownerId: "o", services: "*", expiresInSeconds: -30 })),
  ).toMatchObject({ code: 401, type: "TOKEN_EXPIRED" });
  const justExpired = await mintAccessToken({ secret, ownerId: "o", services: "*", expiresInSeconds: -2 });
  expect((await verify(justExpired)).ownerId).toBe("o");
});

test('services must be "*" or a list of serviceIds', async () => {
  const verify = createJwtVerifier({ secret });
  const key = new TextEncoder().encode(secret);
  for (const services of ["s-1", [1, 2], [""], { s: true }]) {
    const token = await new SignJWT({ services })
      .setProtectedHeader({ alg: "HS256" })
      .setSubject("o")
      .setExpirationTime("5m")
      .sign(key);
    expect(await failure(verify, token)).toMatchObject({ type: "INVALID_TOKEN" });
  }
});

test("configuration mistakes fail at creation and say what to set", () => {
  expect(() => createJwtVerifier({})).toThrow(/API_JWT_SECRET.*API_JWT_PUBLIC_KEY.*authAction/);
  expect(() => createJwtVerifier({ secret: "short" })).toThrow(/at least 32/);
  expect(() => createJwtVerifier({ publicKey: "not a pem" })).toThrow(/not a PEM public key/);
  const ed = generateKeyPairSync("ed25519").publicKey.export({ type: "spki", format: "pem" }).toString();
  expect(() => createJwtVerifier({ publicKey: ed })).toThrow(/RSA key \(RS256\) or a P-256 EC key/);
});

test('a grant covers its services, or all of them with "*"', () => {
  expect(grantCovers({ ownerId: "o", services: ["a", "b"] }, "b")).toBe(true);
  expect(grantCovers({ ownerId: "o", services: ["a", "b"] }, "c")).toBe(false);
  expect(grantCovers({ ownerId: "o", services: [] }, "a")).toBe(false);
  expect(grantCovers({ ownerId: "o", services: "*" }, "anything")).toBe(true);
});
