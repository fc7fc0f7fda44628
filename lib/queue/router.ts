/**
 * Where a request runs: on the local owner, forwarded to the live owner (Moleculer `nodeID`), or on
 * the node placement picks when nobody alive owns the queue (which then takes it over). Routing is
 * never trusted for safety: the fence decides who may write, and a wrong guess costs a re-route.
 */
import { NotOwnerError, OwnershipLostError } from "../errors";
import type { Membership } from "./membership";
import type { QueueEngineOptions } from "./options";
import { placeQueue } from "./placement";
import type { QueueHost } from "./queue-host";
import type { QueueKey } from "./queue-key";
import type { QueueStore } from "./store";
import { ownedElsewhere } from "./takeover";
import {
  requestFromWire,
  requestToWire,
  resultFromWire,
  resultToWire,
  type QueueRequest,
  type WireRequest,
} from "./wire";

export interface ClusterLink {
  readonly nodeId: string;
  /** Runs the request on `nodeId` (QueueEngine.executeForwarded there); rejects after `timeoutMs`. */
  forward(nodeId: string, request: WireRequest, caller: unknown, timeoutMs: number): Promise<unknown>;
}

const MAX_HOPS = 8;

/** The node a forward waited on stopped beating: the call goes elsewhere (its answer, if any, is dropped). */
class OwnerGoneError extends Error {
  constructor(readonly nodeId: string) {
    super(`queue node ${nodeId} stopped answering`);
  }
}

/** A forward that failed because the target node is gone. */
function isUnreachable(err: unknown): boolean {
  const name = (err as { name?: string }).name;
  return name === "ServiceNotAvailableError" || name === "ServiceNotFoundError" || name === "RequestRejectedError";
}

function isTimeout(err: unknown): boolean {
  return (err as { name?: string }).name === "RequestTimeoutError";
}

export class Router {
  /** Last known owner per queue, so most calls skip the owner-row read. */
  private readonly routes = new Map<string, string>();

  constructor(
    private readonly host: QueueHost,
    private readonly membership: Membership,
    private readonly store: QueueStore,
    private readonly link: ClusterLink,
    private readonly options: Pick<QueueEngineOptions, "forwardTimeoutMs">,
  ) {}

  route(request: QueueRequest, caller: unknown): Promise<unknown> {
    // The usual case, a queue served here: no async frame of its own (one per call on the hot path).
    const local = this.host.get(request.key);
    if (!local) return this.routeFrom(0, request, caller, undefined);
    return this.host.run(local, request).catch((err: unknown) => {
      if (!(err instanceof OwnershipLostError)) throw err;
      return this.routeFrom(1, request, caller, err);
    });
  }

  /** The hops from `first` on (the first `first` failed with `lastError`). */
  private async routeFrom(first: number, request: QueueRequest, caller: unknown, failed: unknown): Promise<unknown> {
    let r = request;
    let lastError: unknown = failed;
    for (let hop = first; hop < MAX_HOPS; hop++) {
      if (hop > 1) await new Promise(res => setTimeout(res, 20 * hop));
      // After a failed attempt an add may have committed anyway: its retry checks the index first.
      if (hop > 0 && r.op === "add" && !r.retry) r = { ...r, retry: true };
      const local = this.host.get(r.key);
      if (local) {
        try {
          return await this.host.run(local, r);
        } catch (err) {
          if (!(err instanceof OwnershipLostError)) throw err;
          lastError = err;
          continue;
        }
      }
      const { target, placed } = await this.resolve(r.key);
      if (target === this.link.nodeId) {
        let got;
        try {
          got = await this.host.acquire(r.key);
        } catch (err) {
          // A takeover that lost a race with another one: look again who owns the queue.
          if (!(err instanceof OwnershipLostError)) throw err;
          lastError = err;
          this.routes.delete(r.key.id);
          continue;
        }
        if ("owner" in got) {
          if (got.owner) this.routes.set(r.key.id, got.owner);
          continue;
        }
        try {
          return await this.host.run(got, r);
        } catch (err) {
          if (!(err instanceof OwnershipLostError)) throw err;
          lastError = err;
          continue;
        }
      }
      try {
        const timeout = this.options.forwardTimeoutMs + (r.op === "fetch" ? r.waitMs : 0);
        // Do not wait out the timeout for an owner that stops beating meanwhile.
        const wire = await requestToWire(r);
        const watch = this.membership.whenDead(target);
        const answer = await Promise.race([
          this.link.forward(target, { ...wire, placed }, caller, timeout),
          watch.dead.then(() => {
            throw new OwnerGoneError(target);
          }),
        ]).finally(watch.cancel);
        // It answered, so it owns the queue now (it took it over if placement sent us there).
        this.routes.set(r.key.id, target);
        return resultFromWire(r.op, answer);
      } catch (err) {
        lastError = err;
        const type = (err as { type?: string }).type;
        if (type === "QUEUE_NOT_OWNER") {
          const owner = (err as { data?: { owner?: string | null } }).data?.owner;
          if (owner && owner !== target) this.routes.set(r.key.id, owner);
          else this.routes.delete(r.key.id);
          continue;
        }
        if (type === "QUEUE_OWNERSHIP_LOST") {
          this.routes.delete(r.key.id);
          continue;
        }
        if (err instanceof OwnerGoneError || isTimeout(err) || isUnreachable(err)) {
          // Do not wait for a dead (or stuck) owner: the next hop takes the queue over.
          this.membership.suspect(target);
          this.routes.delete(r.key.id);
          continue;
        }
        throw err;
      }
    }
    throw lastError instanceof Error ? lastError : new OwnershipLostError(request.key.id, "no owner could be reached");
  }

  /**
   * The node that should serve the queue: its live owner (`placed` false), else the one placement
   * picks (`placed` true: that node may take the queue over).
   */
  private async resolve(key: QueueKey): Promise<{ target: string; placed: boolean }> {
    const self = this.link.nodeId;
    const cached = this.routes.get(key.id);
    if (cached && cached !== self && this.membership.isAlive(cached)) return { target: cached, placed: false };
    const row = await this.store.readOwner(key.id);
    if (row && ownedElsewhere(row, { nodeId: self, isNodeAlive: id => this.membership.isAlive(id) })) {
      this.routes.set(key.id, row.node);
      return { target: row.node, placed: false };
    }
    this.routes.delete(key.id);
    const target = placeQueue(key.id, this.membership.live()) ?? self;
    if (target !== self) this.membership.placed(target);
    return { target, placed: true };
  }

  /**
   * Runs a request another node forwarded here: on this node's queue, or taken over when the caller
   * chose this node by placement. A caller that only thought this node owned the queue (a route it
   * remembered) is told it does not, and looks again: so a queue this node gave away is placed
   * anew instead of coming straight back.
   */
  async executeForwarded(wire: WireRequest): Promise<unknown> {
    const r = requestFromWire(wire);
    let owned = this.host.get(r.key);
    if (!owned) {
      if (wire["placed"] !== true) throw new NotOwnerError(r.key.id, null);
      const got = await this.host.acquire(r.key);
      if ("owner" in got) throw new NotOwnerError(r.key.id, got.owner || null);
      owned = got;
    }
    return resultToWire(r.op, await this.host.run(owned, r));
  }

  /** Forgets the route of a queue (its owner is known to be gone). */
  forget(nodeId: string): void {
    for (const [q, n] of this.routes) if (n === nodeId) this.routes.delete(q);
  }
}
