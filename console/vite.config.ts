/**
 * Builds the operator console: `npm run build:console` (= `vite build console`) writes a static
 * single-page app to `dist-console/`, which the gateway serves at `/console`. Asset URLs are
 * relative, so the page works wherever the gateway mounts it.
 */
import { defineConfig } from "vite";

export default defineConfig({
  base: "./",
  publicDir: "public",
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: {
    outDir: "../dist-console",
    emptyOutDir: true,
    target: "es2022",
    // The polyfill would be an inline script, which the console's Content-Security-Policy forbids.
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
  },
  logLevel: "warn",
});
