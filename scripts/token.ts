/**
 * Mints a development token for the HTTP API, signed with API_JWT_SECRET (HS256), and prints only
 * the token, so that it can be captured: `export API_TOKEN=$(npm run -s token -- --owner o --service <uuid>)`.
 *
 *   npm run token -- --owner <ownerId> --service <uuid> [--service <uuid> ...] [--ttl <seconds>]
 *   npm run token -- --owner <ownerId> --service '*'        # every queue of the owner
 */
import { parseArgs } from "node:util";
import { existsSync } from "node:fs";
import { DEV_API_SECRET_FILE, developmentSecret } from "./dev-secret";
import { mintAccessToken } from "../lib/http/access-token";

const USAGE =
  "usage: npm run token -- --owner <ownerId> --service <serviceId|*> [--service ...] [--ttl <seconds, default 86400>]";

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      owner: { type: "string" },
      service: { type: "string", multiple: true },
      ttl: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.error(USAGE);
    return;
  }
  // `npm start` in development signs with the secret in .dev-api-secret; use it when none is exported.
  const secret =
    process.env.API_JWT_SECRET ||
    (existsSync(DEV_API_SECRET_FILE) ? developmentSecret(DEV_API_SECRET_FILE).secret : "");
  if (!secret) throw new Error("API_JWT_SECRET is not set: export the same secret the gateway uses, then run again");
  if (!values.owner) throw new Error(`--owner is required\n${USAGE}`);
  const services = values.service ?? [];
  if (services.length === 0) throw new Error(`--service is required (a serviceId, or '*' for all)\n${USAGE}`);
  const ttl = values.ttl === undefined ? 86_400 : Number(values.ttl);
  if (!Number.isInteger(ttl) || ttl <= 0) throw new Error(`--ttl must be a positive number of seconds\n${USAGE}`);

  const token = await mintAccessToken({
    secret,
    ownerId: values.owner,
    services: services.includes("*") ? "*" : services,
    expiresInSeconds: ttl,
    issuer: process.env.API_JWT_ISSUER || undefined,
    audience: process.env.API_JWT_AUDIENCE || undefined,
  });
  process.stdout.write(`${token}\n`);
}

main().catch((error: Error) => {
  console.error(error.message);
  process.exit(1);
});
