#!/usr/bin/env node
/** The `queuectl` executable (package.json `bin`): see ./queuectl.ts. */
import { runQueuectl } from "./queuectl";

void runQueuectl(process.argv.slice(2), {
  env: process.env,
  out: text => process.stdout.write(`${text}\n`),
  err: text => process.stderr.write(`${text}\n`),
  fetch: (input, init) => fetch(input, init),
}).then(code => {
  process.exitCode = code;
});
