/**
 * Broker options for `npm start` (and moleculer-runner), from the environment: see
 * lib/broker-options.ts.
 */
import { brokerOptionsFromEnv } from "./lib/broker-options";

export { brokerOptionsFromEnv };
export default brokerOptionsFromEnv();
