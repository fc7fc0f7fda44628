/** Polling and routing, the console's only moving parts. */
import { createContext } from "preact";
import { useCallback, useContext, useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import { ApiError } from "./api";

/** Every view refreshes this often. */
export const POLL_MS = 2000;

export interface Session {
  token: string;
  /** Leaves the console: back to sign-in, with the reason when there is one. */
  signOut(reason?: ApiError): void;
}

export const SessionContext = createContext<Session>({ token: "", signOut: () => undefined });
export const useSession = () => useContext(SessionContext);

export interface Polled<T> {
  data?: T;
  error?: ApiError;
  /** When the last successful answer arrived. */
  updatedAt?: number;
  /** Loads now (after an action), then goes on polling. */
  refresh(): void;
}

/**
 * Calls `load` now and every POLL_MS after each answer (never two at a time); a new `key` starts
 * over. A 401 signs out; another refusal stops the polling (`refresh` starts it again). The last data
 * stays on screen when a poll fails; the error shows next to it.
 */
export function usePoll<T>(key: string, load: (token: string) => Promise<T>, enabled = true): Polled<T> {
  const session = useSession();
  const [state, setState] = useState<{ key: string; data?: T; error?: ApiError; updatedAt?: number }>({ key });
  const loadRef = useRef(load);
  loadRef.current = load;
  const kick = useRef<() => void>(() => undefined);

  // A layout effect: the first request leaves right after the first render, not a frame later.
  useLayoutEffect(() => {
    if (!enabled) return undefined;
    let stopped = false;
    let timer: number | undefined;
    let generation = 0;
    setState(s => (s.key === key ? s : { key }));
    const run = async () => {
      window.clearTimeout(timer);
      const mine = ++generation;
      try {
        const data = await loadRef.current(session.token);
        if (stopped || mine !== generation) return;
        setState({ key, data, updatedAt: Date.now() });
      } catch (err) {
        if (stopped || mine !== generation) return;
        const error = err instanceof ApiError ? err : new ApiError(0, "CONSOLE_ERROR", String(err));
        if (error.unauthenticated) return session.signOut(error);
        setState(s => ({ ...s, key, error }));
        // A refusal (403, 404, 422) stays one until something changes: no point asking every 2 s.
        if (!error.transient) return;
      }
      if (!stopped && mine === generation) timer = window.setTimeout(() => void run(), POLL_MS);
    };
    kick.current = () => void run();
    void run();
    return () => {
      stopped = true;
      window.clearTimeout(timer);
    };
  }, [key, enabled, session]);

  const refresh = useCallback(() => kick.current(), []);
  const current = state.key === key ? state : { key };
  return { data: current.data, error: current.error, updatedAt: current.updatedAt, refresh };
}

export type Route =
  { page: "overview" } | { page: "queue"; serviceId: string; state?: string; offset: number; taskId?: string };

/** `#/`, `#/queue/<serviceId>?state=dead&offset=25&task=<taskId>`. */
export function parseRoute(hash: string): Route {
  const [path = "", search = ""] = hash.replace(/^#/, "").split("?", 2);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "queue" && parts[1]) {
    const query = new URLSearchParams(search);
    const offset = Number(query.get("offset") ?? 0);
    return {
      page: "queue",
      serviceId: parts[1],
      state: query.get("state") || undefined,
      offset: Number.isInteger(offset) && offset > 0 ? offset : 0,
      taskId: query.get("task") || undefined,
    };
  }
  return { page: "overview" };
}

export function routeHref(route: Route): string {
  if (route.page === "overview") return "#/";
  const query = new URLSearchParams();
  if (route.state) query.set("state", route.state);
  if (route.offset) query.set("offset", String(route.offset));
  if (route.taskId) query.set("task", route.taskId);
  const search = query.toString();
  return `#/queue/${encodeURIComponent(route.serviceId)}${search ? `?${search}` : ""}`;
}

export function useRoute(): Route {
  const [hash, setHash] = useState(window.location.hash);
  useEffect(() => {
    const onChange = () => setHash(window.location.hash);
    window.addEventListener("hashchange", onChange);
    return () => window.removeEventListener("hashchange", onChange);
  }, []);
  return parseRoute(hash);
}

export const navigate = (route: Route) => {
  window.location.hash = routeHref(route);
};
