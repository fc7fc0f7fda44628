#!/usr/bin/env node
/**
 * The standalone queue node's executable (the Docker image's command; package.json `bin`).
 * `queue-node rewrap-keys` re-wraps the owner keys under the current master key and exits.
 */
import { rewrapOwnerKeys, runQueueNode } from "./server";

if (process.argv[2] === "rewrap-keys") {
  rewrapOwnerKeys(process.env).then(
    r => {
      console.log(
        `Owner keys: ${r.rows} read, ${r.rewrapped} re-wrapped, ${r.current} already under the current master key`,
      );
      process.exit(0);
    },
    (err: Error) => {
      console.error(err.message.split("\n")[0]);
      process.exit(1);
    },
  );
} else if (process.argv[2] !== undefined) {
  console.error(`Unknown command ${JSON.stringify(process.argv[2])}: run queue-node, or queue-node rewrap-keys`);
  process.exit(2);
} else {
  runQueueNode(process.env);
}
