/**
 * Which node should own a queue nobody owns, and which queue an overloaded owner gives away.
 * Rendezvous hashing (each queue ranks the nodes by hash(queue, node)) with a load cap of
 * ceil(owned / nodes), the even share: a new queue goes to the first node in its order that is
 * under the cap, an owner over it gives queues away. A joining node so receives its share, a
 * leaving node's queues spread over the others, and nothing moves while membership and the number
 * of queues stay the same. Pure functions; routing only.
 */

/** A 53-bit string hash (cyrb53): stable across processes and platforms. */
export function hash53(text: string, seed = 0): number {
  let h1 = 0xdeadbeef ^ seed;
  let h2 = 0x41c6ce57 ^ seed;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (2097151 & h2) + (h1 >>> 0);
}

/** The nodes in the queue's preference order, most preferred first. */
export function rendezvousOrder(queue: string, nodes: readonly string[]): string[] {
  return [...nodes]
    .map(n => ({ n, w: hash53(`${queue}\u0000${n}`) }))
    .sort((a, b) => b.w - a.w || (a.n < b.n ? -1 : 1))
    .map(x => x.n);
}

export interface NodeLoad {
  nodeId: string;
  owned: number;
}

/** Most queues one node should own: the even share (rounded up). */
export function loadCap(nodes: readonly NodeLoad[], extra = 0): number {
  const total = nodes.reduce((n, x) => n + x.owned, 0) + extra;
  return Math.ceil(total / Math.max(1, nodes.length));
}

/** Where a queue nobody owns goes: the first node in its order that is under the cap. */
export function placeQueue(queue: string, nodes: readonly NodeLoad[]): string | undefined {
  if (nodes.length === 0) return undefined;
  const cap = loadCap(nodes, 1);
  const owned = new Map(nodes.map(n => [n.nodeId, n.owned]));
  const order = rendezvousOrder(
    queue,
    nodes.map(n => n.nodeId),
  );
  return order.find(n => (owned.get(n) ?? 0) < cap) ?? order[0];
}

/**
 * The queue an owner over the cap should give away: the one that ranks it lowest, among `prefer`
 * (queues it took recently) when any of those is its own. Undefined when it is not over the cap.
 */
export function queueToShed(
  self: string,
  mine: readonly string[],
  nodes: readonly NodeLoad[],
  prefer: readonly string[] = [],
): string | undefined {
  if (nodes.length < 2 || mine.length <= loadCap(nodes)) return undefined;
  const ids = nodes.map(n => n.nodeId);
  const own = new Set(mine);
  const preferred = prefer.filter(q => own.has(q));
  let worst: { queue: string; rank: number } | undefined;
  for (const q of preferred.length > 0 ? preferred : mine) {
    const rank = rendezvousOrder(q, ids).indexOf(self);
    if (!worst || rank > worst.rank) worst = { queue: q, rank };
  }
  return worst?.queue;
}
