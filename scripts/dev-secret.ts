/**
 * Development-only secrets: a random value kept in a local file (mode 0600, git-ignored), created on
 * first use, so that `npm start` works on a fresh clone and `npm run token` signs what the gateway
 * accepts. Never used when NODE_ENV is not "development".
 */
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";

export const DEV_API_SECRET_FILE = ".dev-api-secret";

export function developmentSecret(file: string): { secret: string; created: boolean } {
  if (existsSync(file)) return { secret: readFileSync(file, "utf8").trim(), created: false };
  const secret = randomBytes(32).toString("base64");
  try {
    writeFileSync(file, `${secret}\n`, { mode: 0o600, flag: "wx" });
    return { secret, created: true };
  } catch {
    // Another process created it first: use theirs.
    return { secret: readFileSync(file, "utf8").trim(), created: false };
  }
}
