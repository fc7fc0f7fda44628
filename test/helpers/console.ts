/**
 * The operator console in end-to-end tests: building it when `dist-console/` is missing or older
 * than its sources, and driving Debian's Chromium (never a downloaded browser) through playwright-core.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";

const ROOT = join(__dirname, "..", "..");
export const CONSOLE_SOURCES = join(ROOT, "console");
export const CONSOLE_BUILD = join(ROOT, "dist-console");
export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

/** Newest modification time of the files under `dir`, in ms. */
function newest(dir: string): number {
  let latest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    latest = Math.max(latest, entry.isDirectory() ? newest(path) : statSync(path).mtimeMs);
  }
  return latest;
}

/** Whether dist-console/ is there and newer than every source file (and the lock file, for the bundled libraries). */
export function consoleBuildIsFresh(): boolean {
  const index = join(CONSOLE_BUILD, "index.html");
  if (!existsSync(index)) return false;
  const sources = Math.max(newest(CONSOLE_SOURCES), statSync(join(ROOT, "package-lock.json")).mtimeMs);
  return statSync(index).mtimeMs >= sources;
}

/**
 * Runs `vite build console` unless the build is fresh (1-2 s here). Jest workers may call this
 * at the same time: a lock directory lets one build while the others wait for it.
 * @returns how long the build took in ms, or 0 when it was fresh.
 */
export async function ensureConsoleBuilt(): Promise<number> {
  const lock = join(ROOT, ".cache", "console-build.lock");
  mkdirSync(join(ROOT, ".cache"), { recursive: true });
  const giveUpAt = Date.now() + 120_000;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      // A lock older than two minutes is left over from a killed run.
      if (existsSync(lock) && Date.now() - statSync(lock).mtimeMs > 120_000)
        rmSync(lock, { recursive: true, force: true });
      if (Date.now() > giveUpAt) throw new Error(`waited too long for ${lock}`);
      await new Promise(r => setTimeout(r, 200));
    }
  }
  try {
    if (consoleBuildIsFresh()) return 0;
    const started = performance.now();
    // The pinned Node that runs jest runs Vite too.
    const vite = join(ROOT, "node_modules", "vite", "bin", "vite.js");
    const run = spawnSync(process.execPath, [vite, "build", "console"], { cwd: ROOT, encoding: "utf8" });
    if (run.status !== 0) {
      throw new Error(`npm run build:console failed (exit ${run.status}):\n${run.stdout}\n${run.stderr}`);
    }
    return performance.now() - started;
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

export interface ConsoleBrowser {
  context: BrowserContext;
  close(): Promise<void>;
}

/** Headless Chromium with a fresh profile, removed on close. */
export async function launchChromium(): Promise<ConsoleBrowser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `${CHROMIUM} is missing: install Debian's Chromium (apt-get install -y chromium) or set CHROMIUM_PATH`,
    );
  }
  const userDataDir = mkdtempSync(join(tmpdir(), "console-chromium-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1400, height: 900 },
    locale: "en-US",
    timezoneId: "UTC",
    colorScheme: "light",
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/** What a page reported that a person would see in the developer tools: console errors and uncaught exceptions. */
export function watchConsole(page: Page): string[] {
  const problems: string[] = [];
  page.on("console", message => {
    if (message.type() === "error" || message.type() === "warning") {
      problems.push(`console.${message.type()}: ${message.text()}`);
    }
  });
  page.on("pageerror", error => problems.push(`uncaught: ${error.message}`));
  return problems;
}
