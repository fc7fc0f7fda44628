import type { ServiceSchema } from "moleculer";

/** The services `npm start` loads into the broker (filled in as the services land). */
export function serviceSchemas(): ServiceSchema[] {
  return [];
}
