/**
 * Establishes the owner of every call to the guarded services before the action runs: the owner is
 * `ctx.meta.acl.ownerId`, else `ctx.meta.ownerId`; both are then set to it, so actions and the
 * services they call read one value. With `aclAction` set, that action decides whether the owner
 * may call the action. Actions declaring `acl: false`, and protected, private or `_`-prefixed
 * actions (not callable from outside), are not guarded.
 */
import type { ActionHandler, ActionSchema, Context, Middleware, Service } from "moleculer";
import { AccessDeniedError, OwnerMissingError } from "../lib/errors";

declare module "moleculer" {
  interface ActionSchema {
    /** `false`: the ACL middleware leaves this action alone (e.g. health checks). */
    acl?: boolean;
  }
}

export interface AclMiddlewareOptions {
  /**
   * Full names of the services whose actions are guarded.
   * @defaultValue ["worker.queue"]
   */
  services?: string[];
  /**
   * An action asked `{ action, ownerId, params: { serviceId } }` before each guarded call; the call
   * proceeds only when it returns `true` or `{ result: true }`. Unset: any established owner may call.
   */
  aclAction?: string;
}

/** The request sent to `aclAction`. */
export interface AclDecisionRequest {
  action: string;
  ownerId: string;
  params: { serviceId?: unknown };
}

interface AclMeta {
  ownerId?: unknown;
  acl?: Record<string, unknown> & { ownerId?: unknown };
}

export function AclMiddleware(options: AclMiddlewareOptions = {}): Middleware {
  const services = new Set(options.services ?? ["worker.queue"]);
  const aclAction = options.aclAction;

  return {
    name: "Acl",
    localAction(next: ActionHandler, action: ActionSchema): ActionHandler {
      if (!isGuarded(action, services)) return next;
      const actionName = action.name ?? "";

      return async function guardOwner(this: Service, ctx: Context<unknown, AclMeta>) {
        const ownerId = ownerOf(ctx.meta);
        if (ownerId === undefined) throw new OwnerMissingError(actionName);
        ctx.meta.ownerId = ownerId;
        ctx.meta.acl = { ...(isRecord(ctx.meta.acl) ? ctx.meta.acl : {}), ownerId };

        if (aclAction !== undefined) {
          const request: AclDecisionRequest = {
            action: actionName,
            ownerId,
            params: { serviceId: isRecord(ctx.params) ? ctx.params.serviceId : undefined },
          };
          const decision = await ctx.call<unknown, AclDecisionRequest>(aclAction, request, { meta: ctx.meta });
          if (!isAllowed(decision)) throw new AccessDeniedError({ action: actionName, ownerId });
        }
        return next.call(this, ctx);
      };
    },
  };
}

function isGuarded(action: ActionSchema, services: Set<string>): boolean {
  const serviceName = action.service?.fullName;
  if (serviceName === undefined || !services.has(serviceName)) return false;
  if (action.acl === false) return false;
  if (action.visibility === "protected" || action.visibility === "private") return false;
  const rawName = (action as { rawName?: unknown }).rawName;
  return !(typeof rawName === "string" && rawName.startsWith("_"));
}

function ownerOf(meta: AclMeta): string | undefined {
  const owner = (isRecord(meta.acl) ? meta.acl.ownerId : undefined) ?? meta.ownerId;
  return typeof owner === "string" && owner.length > 0 ? owner : undefined;
}

function isAllowed(decision: unknown): boolean {
  if (decision === true) return true;
  return isRecord(decision) && decision.result === true;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null;
}
