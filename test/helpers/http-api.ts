/** The HTTP gateway in integration tests: its bound port, tokens, and a small request helper. */
import { randomBytes } from "node:crypto";
import type { Server } from "node:http";
import { createServer } from "node:net";
import type { ServiceBroker } from "moleculer";
import { mintAccessToken } from "../../lib/http/access-token";

/** A fresh HS256 secret for one test file. */
export const newJwtSecret = (): string => randomBytes(32).toString("base64");

/** A TCP port free on 127.0.0.1 now, for a process the test starts with PORT set. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** The port the gateway `name` listens on (started with port 0). */
export function apiPort(broker: ServiceBroker, name = "api"): number {
  const service = broker.getLocalService(name) as unknown as { server?: Server } | undefined;
  const address = service?.server?.address();
  if (!address || typeof address === "string") throw new Error(`the ${name} service is not listening`);
  return address.port;
}

export function tokenFor(
  secret: string,
  ownerId: string,
  services: "*" | string[],
  expiresInSeconds = 600,
): Promise<string> {
  return mintAccessToken({ secret, ownerId, services, expiresInSeconds });
}

export interface HttpAnswer {
  status: number;
  headers: Headers;
  text: string;
  /** The body parsed as JSON, or undefined when it is empty or not JSON. */
  json: any;
}

/** One request; `body` is sent as JSON unless it is already a string. */
export async function request(
  url: string,
  options: { method?: string; token?: string; body?: unknown; headers?: Record<string, string> } = {},
): Promise<HttpAnswer> {
  const headers: Record<string, string> = { "content-type": "application/json", ...options.headers };
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
  const res = await fetch(url, {
    method: options.method ?? "POST",
    headers,
    body:
      options.body === undefined
        ? undefined
        : typeof options.body === "string"
          ? options.body
          : JSON.stringify(options.body),
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = text === "" ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}
