/**
 * The live queue nodes, as this node sees them: every queue node beats every `beatIntervalMs`
 * (with the number of queues it owns) and says when it leaves; a node heard from and then silent
 * for `nodeTimeoutMs`, reported disconnected, or whose forward timed out is dead for routing. A
 * node not heard from yet (this one just started) is alive while Moleculer lists it. Being wrong
 * here is never unsafe (the fence decides who may write), only slower.
 */

/** What Moleculer's registry says: which nodes run the queue service now, and which nodes are connected. */
export interface NodeRegistry {
  queueNodes(): string[];
  /** Connected, whatever its services (a node that just started may not list the queue service yet). */
  isAvailable(nodeId: string): boolean;
}

export interface Beat {
  nodeId: string;
  /** Queues the node owns now. */
  owned: number;
  /** The node is stopping: forget it at once. */
  leaving?: boolean;
}

export interface MembershipOptions {
  beatIntervalMs: number;
  nodeTimeoutMs: number;
}

interface Peer {
  lastSeen: number;
  owned: number;
  /** Dead for routing until a beat newer than this arrives. */
  suspectUntil?: number;
}

export class Membership {
  private readonly peers = new Map<string, Peer>();
  /** Nodes that left or were reported gone, until they beat again. */
  private readonly gone = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private changedAt: number;
  private lastLive = "";

  constructor(
    readonly selfId: string,
    private readonly options: MembershipOptions,
    private readonly send: (beat: Beat) => void,
    private readonly ownedCount: () => number,
    private readonly registry: NodeRegistry = { queueNodes: () => [], isAvailable: () => false },
    private readonly clock: () => number = () => performance.now(),
  ) {
    this.changedAt = clock();
  }

  start(): void {
    this.beat();
    this.timer = setInterval(() => this.beat(), this.options.beatIntervalMs);
    this.timer.unref();
  }

  /** Tells the others this node leaves, and stops beating. */
  stop(): void {
    clearInterval(this.timer);
    this.send({ nodeId: this.selfId, owned: 0, leaving: true });
  }

  private beat(): void {
    this.send({ nodeId: this.selfId, owned: this.ownedCount() });
    this.noteChanges();
  }

  received(beat: Beat): void {
    if (beat.nodeId === this.selfId) return;
    if (beat.leaving) {
      this.peers.delete(beat.nodeId);
      this.gone.add(beat.nodeId);
    } else {
      this.gone.delete(beat.nodeId);
      const peer = this.peers.get(beat.nodeId);
      const now = this.clock();
      if (peer?.suspectUntil !== undefined && now < peer.suspectUntil) {
        peer.owned = beat.owned;
        return;
      }
      this.peers.set(beat.nodeId, { lastSeen: now, owned: beat.owned });
    }
    this.noteChanges();
  }

  /** This node just sent a queue to `nodeId` to take over: count it there until its next beat says. */
  placed(nodeId: string): void {
    const peer = this.peers.get(nodeId);
    if (peer) peer.owned++;
  }

  /** Moleculer reported the node gone. */
  disconnected(nodeId: string): void {
    this.peers.delete(nodeId);
    this.gone.add(nodeId);
    this.noteChanges();
  }

  /** A forward to the node got no answer in time: dead for routing until it beats again after a while. */
  suspect(nodeId: string): void {
    const peer = this.peers.get(nodeId);
    if (peer) peer.suspectUntil = this.clock() + this.options.nodeTimeoutMs;
    this.noteChanges();
  }

  isAlive(nodeId: string): boolean {
    if (nodeId === this.selfId) return true;
    const peer = this.peers.get(nodeId);
    if (!peer) return !this.gone.has(nodeId) && this.registry.isAvailable(nodeId);
    const now = this.clock();
    if (peer.suspectUntil !== undefined && now < peer.suspectUntil) return false;
    return now - peer.lastSeen <= this.options.nodeTimeoutMs;
  }

  /**
   * Resolves once the node counts as dead (checked every 100 ms), for callers waiting on it; the
   * returned `cancel` stops the watch.
   */
  whenDead(nodeId: string): { dead: Promise<void>; cancel: () => void } {
    let timer: NodeJS.Timeout | undefined;
    const dead = new Promise<void>(resolve => {
      timer = setInterval(() => {
        if (!this.isAlive(nodeId)) {
          clearInterval(timer);
          resolve();
        }
      }, 100);
      timer.unref();
    });
    return { dead, cancel: () => clearInterval(timer) };
  }

  /** The live queue nodes (this one included) with the queues each owns (0 for nodes not heard from yet). */
  live(): { nodeId: string; owned: number }[] {
    const out = new Map<string, number>([[this.selfId, this.ownedCount()]]);
    for (const [nodeId, peer] of this.peers) if (this.isAlive(nodeId)) out.set(nodeId, peer.owned);
    for (const nodeId of this.registry.queueNodes()) if (!out.has(nodeId) && this.isAlive(nodeId)) out.set(nodeId, 0);
    return [...out]
      .map(([nodeId, owned]) => ({ nodeId, owned }))
      .sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
  }

  /** How long the set of live nodes has been what it is now, in ms. */
  stableFor(): number {
    this.noteChanges();
    return this.clock() - this.changedAt;
  }

  private noteChanges(): void {
    const now = this.live()
      .map(n => n.nodeId)
      .join(",");
    if (now !== this.lastLive) {
      this.lastLive = now;
      this.changedAt = this.clock();
    }
  }
}
