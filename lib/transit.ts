/**
 * What protects the bus itself (docs/ARCHITECTURE.md, Security): the transporter's credentials and
 * TLS from the environment, and TRANSIT_KEY, which seals every packet with AES-256-GCM (a random
 * 96-bit nonce per packet, authenticated), so a process without the key can neither read a packet
 * nor inject one. Moleculer's own Encryption middleware is not used: it encrypts with CBC under a
 * fixed IV and authenticates nothing.
 */
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import type { BrokerOptions, Middleware } from "moleculer";
import { ConfigurationError } from "./errors";

const VERSION = 1;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
/** Bound into every packet, so a ciphertext of another use of the same key does not open. */
const ASSOCIATED = Buffer.from("worker-queue-transit-v1");

/** Seals every packet with `key` (32 bytes): version, nonce, tag, ciphertext. */
export function TransitEncryption(key: Buffer): Middleware {
  if (key.length !== 32) throw new ConfigurationError("TRANSIT_KEY", "TRANSIT_KEY must be base64 of 32 bytes");
  let dropped = 0;
  let logger: { warn(...a: unknown[]): void } | undefined;
  return {
    name: "TransitEncryption",
    /** Packets received that were not sealed with this key (dropped unread). */
    get droppedPackets() {
      return dropped;
    },
    created(this: { logger: { warn(...a: unknown[]): void; info(...a: unknown[]): void } }) {
      logger = this.logger;
      this.logger.info("Transit packets are sealed with AES-256-GCM (TRANSIT_KEY)");
    },
    transporterSend(next: (topic: string, data: Buffer, meta: unknown) => Promise<void>) {
      return (topic: string, data: Buffer, meta: unknown) => next(topic, sealPacket(key, data), meta);
    },
    transporterReceive(next: (cmd: string, data: Buffer, s: unknown) => unknown) {
      return (cmd: string, data: Buffer, s: unknown) => {
        const plain = openPacket(key, data);
        if (plain === undefined) {
          // Not sealed with our key: a node without it, or a forgery. Dropped, counted, never parsed.
          dropped++;
          if (dropped === 1 || dropped % 1000 === 0) {
            logger?.warn(`Dropped ${dropped} transit packet(s) not sealed with this network's TRANSIT_KEY`);
          }
          return;
        }
        return next(cmd, plain, s);
      };
    },
  } as unknown as Middleware;
}

export function sealPacket(key: Buffer, data: Buffer): Buffer {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv("aes-256-gcm", key, nonce);
  cipher.setAAD(ASSOCIATED);
  const body = Buffer.concat([cipher.update(data), cipher.final()]);
  return Buffer.concat([Buffer.from([VERSION]), nonce, cipher.getAuthTag(), body]);
}

export function openPacket(key: Buffer, packet: Buffer): Buffer | undefined {
  if (!Buffer.isBuffer(packet) || packet.length < 1 + NONCE_BYTES + TAG_BYTES || packet[0] !== VERSION) {
    return undefined;
  }
  try {
    const decipher = createDecipheriv("aes-256-gcm", key, packet.subarray(1, 1 + NONCE_BYTES));
    decipher.setAAD(ASSOCIATED);
    decipher.setAuthTag(packet.subarray(1 + NONCE_BYTES, 1 + NONCE_BYTES + TAG_BYTES));
    return Buffer.concat([decipher.update(packet.subarray(1 + NONCE_BYTES + TAG_BYTES)), decipher.final()]);
  } catch {
    return undefined;
  }
}

/** TRANSIT_KEY (base64 of 32 bytes): the packet sealing middleware, else none. */
export function transitMiddlewares(env: NodeJS.ProcessEnv): Middleware[] {
  const raw = env.TRANSIT_KEY?.trim();
  if (!raw) return [];
  const key = Buffer.from(raw, "base64");
  if (key.length !== 32) {
    throw new ConfigurationError(
      "TRANSIT_KEY",
      `TRANSIT_KEY must be base64 of 32 bytes (it decodes to ${key.length}); make one with \`openssl rand -base64 32\``,
    );
  }
  return [TransitEncryption(key)];
}

/**
 * The transporter from TRANSPORTER: a URL as Moleculer takes it, except that NATS credentials in
 * the URL (`nats://user:password@host:4222`) are decoded (percent-escapes allowed in a password)
 * and TRANSPORTER_TLS_CA_FILE / _CERT_FILE / _KEY_FILE, or a `tls://` URL, turn on TLS.
 */
export function transporterFromEnv(env: NodeJS.ProcessEnv): BrokerOptions["transporter"] {
  const raw = env.TRANSPORTER?.trim();
  if (!raw || raw === "none") return null;
  if (!/^[a-z][a-z0-9+.-]*:\/\/\S+$/i.test(raw)) {
    throw new ConfigurationError(
      "TRANSPORTER",
      "TRANSPORTER is not a transporter URL: use e.g. nats://127.0.0.1:4222, or none for a local-only broker",
    );
  }
  const scheme = raw.slice(0, raw.indexOf(":")).toLowerCase();
  const tlsFiles = {
    ca: env.TRANSPORTER_TLS_CA_FILE,
    cert: env.TRANSPORTER_TLS_CERT_FILE,
    key: env.TRANSPORTER_TLS_KEY_FILE,
  };
  const wantsTls = scheme === "tls" || Object.values(tlsFiles).some(Boolean);
  if (scheme !== "nats" && scheme !== "tls") {
    if (wantsTls) {
      throw new ConfigurationError("TRANSPORTER_TLS_CA_FILE", "TRANSPORTER_TLS_* settings apply to NATS only");
    }
    return raw as BrokerOptions["transporter"];
  }
  const servers: string[] = [];
  let user: string | undefined;
  let pass: string | undefined;
  for (const part of raw.split(",")) {
    let url: URL;
    try {
      url = new URL(part.trim());
    } catch {
      // Never echo the value: it may hold a password.
      throw new ConfigurationError("TRANSPORTER", "TRANSPORTER is not a valid URL (check its escaping)");
    }
    servers.push(`nats://${url.host}`);
    if (url.username) user ??= decodeURIComponent(url.username);
    if (url.password) pass ??= decodeURIComponent(url.password);
  }
  const tls = wantsTls
    ? {
        ...(tlsFiles.ca ? { ca: readTlsFile(tlsFiles.ca, "TRANSPORTER_TLS_CA_FILE") } : {}),
        ...(tlsFiles.cert ? { cert: readTlsFile(tlsFiles.cert, "TRANSPORTER_TLS_CERT_FILE") } : {}),
        ...(tlsFiles.key ? { key: readTlsFile(tlsFiles.key, "TRANSPORTER_TLS_KEY_FILE") } : {}),
      }
    : undefined;
  return {
    type: "NATS",
    options: {
      servers,
      ...(user !== undefined ? { user } : {}),
      ...(pass !== undefined ? { pass } : {}),
      ...(tls ? { tls } : {}),
    },
  } as BrokerOptions["transporter"];
}

function readTlsFile(file: string, setting: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    throw new ConfigurationError(
      setting,
      `Cannot read ${setting}=${file} (${(err as NodeJS.ErrnoException).code ?? "error"})`,
    );
  }
}
