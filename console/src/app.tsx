/** Sign-in with a bearer token (kept in sessionStorage), then the overview or one queue. */
import { useMemo, useState } from "preact/hooks";
import { api, ApiError, tokenClaims } from "./api";
import { SessionContext, useRoute, type Session } from "./hooks";
import { asApiError, ErrorLine } from "./messages";
import { Overview } from "./overview";
import { QueuePage } from "./queue";

const TOKEN_KEY = "queue-console.token";

function storedToken(): string {
  try {
    return window.sessionStorage.getItem(TOKEN_KEY) ?? "";
  } catch {
    return "";
  }
}

function storeToken(token: string | undefined): void {
  try {
    if (token) window.sessionStorage.setItem(TOKEN_KEY, token);
    else window.sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage refused (privacy mode): the session lasts as long as the page.
  }
}

export function App() {
  const [token, setToken] = useState(storedToken);
  const [reason, setReason] = useState<ApiError>();
  const session = useMemo<Session>(
    () => ({
      token,
      signOut(why?: ApiError) {
        storeToken(undefined);
        setReason(why);
        setToken("");
      },
    }),
    [token],
  );
  if (!token) {
    return (
      <SignIn
        reason={reason}
        onSignedIn={t => {
          storeToken(t);
          setReason(undefined);
          setToken(t);
        }}
      />
    );
  }
  return (
    <SessionContext.Provider value={session}>
      <Shell />
    </SessionContext.Provider>
  );
}

function Shell() {
  const route = useRoute();
  return (
    <>
      <TopBar />
      <main>{route.page === "queue" ? <QueuePage key={route.serviceId} route={route} /> : <Overview />}</main>
    </>
  );
}

function TopBar() {
  return (
    <SessionContext.Consumer>
      {session => {
        const claims = tokenClaims(session.token);
        const services =
          claims?.services === "*"
            ? "all queues"
            : Array.isArray(claims?.services)
              ? `${claims.services.length} queue(s)`
              : undefined;
        return (
          <header class="topbar">
            <a class="brand" href="#/">
              Queue console
            </a>
            <span class="who" data-testid="who">
              {claims?.sub ? (
                <>
                  Owner <strong>{claims.sub}</strong>
                  {services ? ` · ${services}` : ""}
                  {claims.exp ? ` · token valid until ${new Date(claims.exp * 1000).toLocaleString()}` : ""}
                </>
              ) : (
                "Signed in"
              )}
            </span>
            <button type="button" data-testid="sign-out" onClick={() => session.signOut()}>
              Sign out
            </button>
          </header>
        );
      }}
    </SessionContext.Consumer>
  );
}

function SignIn({ reason, onSignedIn }: { reason?: ApiError; onSignedIn(token: string): void }) {
  const [text, setText] = useState("");
  const [error, setError] = useState<ApiError | undefined>(reason);
  const [busy, setBusy] = useState(false);
  const submit = async () => {
    const token = text.trim().replace(/^Bearer\s+/i, "");
    if (!token) return setError(new ApiError(0, "TOKEN_MISSING", "Paste a bearer token first."));
    setBusy(true);
    try {
      await api.queues(token);
      onSignedIn(token);
    } catch (err) {
      setError(asApiError(err));
      setBusy(false);
    }
  };
  return (
    <main class="signin">
      <form
        data-testid="signin"
        onSubmit={e => {
          e.preventDefault();
          void submit();
        }}
      >
        <h1>Queue console</h1>
        <p>
          Sign in with a bearer token of the HTTP API (<code>npm run token -- --owner &lt;owner&gt; --service '*'</code>
          ). It stays in this tab only (sessionStorage) and is sent to this gateway only.
        </p>
        <label for="token">Bearer token</label>
        <textarea
          id="token"
          data-testid="token"
          rows={5}
          spellcheck={false}
          autocomplete="off"
          value={text}
          onInput={e => setText((e.currentTarget as HTMLTextAreaElement).value)}
        />
        <ErrorLine error={error} context="Signing in failed" />
        <button type="submit" data-testid="sign-in" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}
