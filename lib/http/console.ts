/**
 * The operator console's side of the gateway: serving the built single-page app (`npm run
 * build:console` writes it to `dist-console/`) under `/console`, and the errors of the console's
 * API routes. The assets need no token; every piece of data comes through the authenticated API.
 */
import { existsSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { join } from "node:path";
import { Errors } from "moleculer";
import ApiGateway from "moleculer-web";

const { MoleculerClientError, MoleculerError } = Errors;

/** The folder `npm run build:console` writes. */
export const CONSOLE_BUILD_FOLDER = "dist-console";

/** A task the queue does not know (never added, or past its retention). */
export class TaskNotFoundError extends MoleculerClientError {
  constructor(serviceId: string, taskId: string) {
    super("No such task in this queue", 404, "TASK_NOT_FOUND", { serviceId, taskId });
  }
}

/** The gateway runs without a built console. */
export class ConsoleNotBuiltError extends MoleculerError {
  constructor() {
    super("The operator console is not built: run `npm run build:console`", 503, "CONSOLE_NOT_BUILT", {});
  }
}

/**
 * Where the built console is: next to the package root, both when the gateway runs from source
 * (`services/`) and from the compiled package (`dist/services/`).
 */
export function defaultConsoleFolders(): string[] {
  return [join(__dirname, "..", "..", CONSOLE_BUILD_FOLDER), join(__dirname, "..", "..", "..", CONSOLE_BUILD_FOLDER)];
}

/** Headers of every console asset: the page loads nothing but its own files and talks only to this origin. */
const SECURITY_HEADERS: Record<string, string> = {
  "Content-Security-Policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
    "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "X-Content-Type-Options": "nosniff",
  "Referrer-Policy": "no-referrer",
  "X-Frame-Options": "DENY",
};

type Next = (err?: unknown) => void;

/**
 * A moleculer-web route middleware serving the console's files for a route mounted at `mountPath`
 * (moleculer-web has already made `req.url` relative to it). `/console` redirects to `/console/`
 * so that the page's relative asset URLs resolve; anything not a file falls through (404).
 * `folders` are tried in order until one holds an index.html, on each request until one does, so a
 * console built after the gateway started is found.
 */
export function consoleAssets(mountPath: string, folders: string[]) {
  let serve: ((req: IncomingMessage, res: ServerResponse, next: Next) => void) | undefined;

  const find = () => {
    const folder = folders.find(f => existsSync(join(f, "index.html")));
    if (folder === undefined) return undefined;
    return ApiGateway.serveStatic(folder, {
      index: ["index.html"],
      redirect: false,
      fallthrough: true,
      dotfiles: "ignore",
      setHeaders(res: ServerResponse, path: string) {
        for (const [name, value] of Object.entries(SECURITY_HEADERS)) res.setHeader(name, value);
        // Vite names every asset after its content: they never change. The page itself always revalidates.
        const hashed = /[\\/]assets[\\/][^\\/]+-[A-Za-z0-9_-]{8,}\.\w+$/.test(path);
        res.setHeader("Cache-Control", hashed ? "public, max-age=31536000, immutable" : "no-cache");
      },
    }) as unknown as (req: IncomingMessage, res: ServerResponse, next: Next) => void;
  };

  return function serveConsole(req: IncomingMessage & { originalUrl?: string }, res: ServerResponse, next: Next) {
    const original = req.originalUrl ?? req.url ?? "";
    const queryAt = original.indexOf("?");
    const path = queryAt === -1 ? original : original.slice(0, queryAt);
    // The route matches by prefix: /consoles is not the console.
    if (path !== mountPath && !path.startsWith(`${mountPath}/`)) return next();
    if (req.method !== "GET" && req.method !== "HEAD") return next();
    if (path === mountPath) {
      res.writeHead(301, { Location: `${mountPath}/${queryAt === -1 ? "" : original.slice(queryAt)}` });
      res.end();
      return;
    }
    serve ??= find();
    if (!serve) return next(new ConsoleNotBuiltError());
    serve(req, res, next);
  };
}
