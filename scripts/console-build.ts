/**
 * The operator console's build (`vite build console` into dist-console/): whether it is fresh, and
 * building it when it is missing or older than its sources. Used by `npm start` (so that a fresh
 * checkout serves the console at once) and by the console tests. Development only: an installed
 * package ships dist-console/ built.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";

const ROOT = join(__dirname, "..");
export const CONSOLE_SOURCES = join(ROOT, "console");
export const CONSOLE_BUILD = join(ROOT, "dist-console");
const VITE = join(ROOT, "node_modules", "vite", "bin", "vite.js");

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

/** Whether this checkout can build the console (its sources and Vite are there). */
export function canBuildConsole(): boolean {
  return existsSync(join(CONSOLE_SOURCES, "index.html")) && existsSync(VITE);
}

/**
 * Runs `vite build console` unless the build is fresh (1-2 s here). Several processes may call
 * this at the same time (jest workers, a node starting): a lock directory lets one build while the
 * others wait for it.
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
    // Built aside, then swapped in: a gateway serving the old build meanwhile never finds it half
    // written. The Node that runs this runs Vite too.
    const aside = `${CONSOLE_BUILD}.${process.pid}`;
    const run = spawnSync(process.execPath, [VITE, "build", "console", "--outDir", aside, "--emptyOutDir"], {
      cwd: ROOT,
      encoding: "utf8",
    });
    if (run.status !== 0) {
      rmSync(aside, { recursive: true, force: true });
      throw new Error(`npm run build:console failed (exit ${run.status}):\n${run.stdout}\n${run.stderr}`);
    }
    const old = `${CONSOLE_BUILD}.old-${process.pid}`;
    if (existsSync(CONSOLE_BUILD)) renameSync(CONSOLE_BUILD, old);
    renameSync(aside, CONSOLE_BUILD);
    rmSync(old, { recursive: true, force: true });
    return performance.now() - started;
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}
