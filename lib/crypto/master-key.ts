/**
 * The master key that wraps every owner key at rest. It comes from the environment or a file; only
 * in development is one made up (and kept in a local file) so the service can start at all.
 * The key itself is never logged and never part of an error.
 */
import { randomBytes } from "node:crypto";
import { linkSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { ConfigurationError } from "../errors";
import { KEY_BYTES } from "./aead-envelope";

export interface MasterKeyOptions {
  /** The key itself: base64 of 32 bytes, or the bytes. Takes precedence over the environment. */
  masterKey?: string | Buffer;
  /** A file holding the base64 key. Takes precedence over `KEYS_MASTER_KEY_FILE`. */
  masterKeyFile?: string;
  /**
   * Allows a generated key kept in `devMasterKeyFile` when no key is configured.
   * @defaultValue env.NODE_ENV === "development"
   */
  development?: boolean;
  /**
   * Where the development key is kept.
   * @defaultValue ".dev-master-key" in the working directory
   */
  devMasterKeyFile?: string;
  /** @defaultValue process.env */
  env?: NodeJS.ProcessEnv;
  /** Receives warnings (development key in use, key file readable by others). */
  warn?: (message: string) => void;
}

const HOW_TO_CONFIGURE =
  "Set KEYS_MASTER_KEY to base64 of 32 random bytes (e.g. `openssl rand -base64 32`), or KEYS_MASTER_KEY_FILE " +
  "to a file (mode 0600) holding one; for local development only, set NODE_ENV=development to generate " +
  ".dev-master-key.";

export function loadMasterKey(options: MasterKeyOptions = {}): Buffer {
  const env = options.env ?? process.env;
  const warn = options.warn ?? (() => undefined);

  if (options.masterKey !== undefined) return parseMasterKey(options.masterKey, "masterKey");
  const fromEnv = env.KEYS_MASTER_KEY;
  if (fromEnv !== undefined && fromEnv.trim() !== "") return parseMasterKey(fromEnv, "KEYS_MASTER_KEY");

  const file = options.masterKeyFile ?? nonEmpty(env.KEYS_MASTER_KEY_FILE);
  if (file !== undefined) return readMasterKeyFile(file, "KEYS_MASTER_KEY_FILE", warn);

  const development = options.development ?? env.NODE_ENV === "development";
  if (!development)
    throw new ConfigurationError("KEYS_MASTER_KEY", `The keys service has no master key. ${HOW_TO_CONFIGURE}`);

  const devFile = path.resolve(options.devMasterKeyFile ?? ".dev-master-key");
  const key = readOrCreateDevKey(devFile, warn);
  warn(
    `Development mode: owner keys are wrapped with the generated master key in ${devFile}; never use it in production`,
  );
  return key;
}

function parseMasterKey(value: string | Buffer, setting: string): Buffer {
  const key = typeof value === "string" ? Buffer.from(value.trim(), "base64") : Buffer.from(value);
  if (key.length !== KEY_BYTES) {
    throw new ConfigurationError(
      setting,
      `${setting} must be base64 of exactly ${KEY_BYTES} bytes (it decodes to ${key.length}). ${HOW_TO_CONFIGURE}`,
    );
  }
  return key;
}

function readMasterKeyFile(file: string, setting: string, warn: (message: string) => void): Buffer {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new ConfigurationError(
      setting,
      `Cannot read the master key file ${file} (${(err as NodeJS.ErrnoException).code ?? "error"}). ${HOW_TO_CONFIGURE}`,
    );
  }
  if ((statSync(file).mode & 0o077) !== 0) {
    warn(`The master key file ${file} is readable by other users; restrict it with chmod 600`);
  }
  return parseMasterKey(text, `${setting} (${file})`);
}

/**
 * Written to a temporary file and linked into place (link fails if the name exists), so two
 * processes starting together end up with the same, complete key.
 */
function readOrCreateDevKey(file: string, warn: (message: string) => void): Buffer {
  const key = randomBytes(KEY_BYTES);
  const temporary = `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  try {
    writeFileSync(temporary, `${key.toString("base64")}\n`, { mode: 0o600, flag: "wx" });
    linkSync(temporary, file);
    return key;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") {
      throw new ConfigurationError(
        "devMasterKeyFile",
        `Cannot create the development master key file ${file} (${(err as NodeJS.ErrnoException).code ?? "error"}); ` +
          "make its folder writable or set KEYS_MASTER_KEY.",
      );
    }
  } finally {
    rmSync(temporary, { force: true });
  }
  return readMasterKeyFile(file, "devMasterKeyFile", warn);
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === "" ? undefined : value;
}

/**
 * Master keys from before a rotation (KEYS_PREVIOUS_MASTER_KEYS: base64 keys, comma separated, or
 * `previous` when given): owner keys wrapped under them still unwrap until they are re-wrapped.
 */
export function loadPreviousMasterKeys(
  previous: readonly (string | Buffer)[] | undefined,
  env: NodeJS.ProcessEnv = process.env,
): Buffer[] {
  const list =
    previous ??
    (env.KEYS_PREVIOUS_MASTER_KEYS ?? "")
      .split(",")
      .map(k => k.trim())
      .filter(k => k !== "");
  return list.map((k, i) => parseMasterKey(k, `KEYS_PREVIOUS_MASTER_KEYS (entry ${i + 1})`));
}
