/**
 * `npm run token`: `queuectl token` (lib/cli/queuectl.ts) signing with API_JWT_SECRET, or, when none
 * is exported, with the .dev-api-secret that `npm start` created in development. Prints only the
 * token, so that it can be captured: `export API_TOKEN=$(npm run -s token -- --owner o --service <uuid>)`.
 *
 *   npm run token -- --owner <ownerId> --service <uuid> [--service <uuid> ...] [--ttl <seconds>]
 *   npm run token -- --owner <ownerId> --service '*'        # every queue of the owner
 */
import { existsSync } from "node:fs";
import { runQueuectl } from "../lib/cli/queuectl";
import { DEV_API_SECRET_FILE, developmentSecret } from "./dev-secret";

const secret =
  process.env.API_JWT_SECRET || (existsSync(DEV_API_SECRET_FILE) ? developmentSecret(DEV_API_SECRET_FILE).secret : "");

void runQueuectl(["token", ...process.argv.slice(2)], {
  env: { ...process.env, API_JWT_SECRET: secret },
  out: text => process.stdout.write(`${text}\n`),
  err: text => process.stderr.write(`${text}\n`),
  fetch: (input, init) => fetch(input, init),
}).then(code => {
  process.exitCode = code;
});
