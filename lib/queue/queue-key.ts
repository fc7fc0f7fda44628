/**
 * The identity of a queue: its owner and its serviceId. Owners never share a queue, even with the
 * same serviceId. `id` is the one string form, used as the Cassandra partition key and map key; it
 * is built here and nowhere else, and never split back into its parts.
 */
export interface QueueKey {
  readonly ownerId: string;
  readonly serviceId: string;
  /** "<ownerId>/<serviceId>". */
  readonly id: string;
}

export function queueKey(ownerId: string, serviceId: string): QueueKey {
  return { ownerId, serviceId, id: `${ownerId}/${serviceId}` };
}
