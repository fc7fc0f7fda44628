/** An error answer of the queue's HTTP gateway: the status and its `{ type, message, data }` body. */
export class HttpApiError extends Error {
  override name = "HttpApiError";

  constructor(
    readonly status: number,
    readonly type: string,
    /** The gateway's message. */
    readonly detail: string,
    readonly data: unknown,
    /** The `Retry-After` header, in seconds, when the gateway sent one. */
    readonly retryAfterSeconds?: number,
  ) {
    super(`${status} ${type}: ${detail}`);
  }

  /** Reads an error response (its body is consumed). */
  static async from(res: Response): Promise<HttpApiError> {
    const text = await res.text().catch(() => "");
    let body: { type?: unknown; message?: unknown; data?: unknown } = {};
    try {
      const parsed: unknown = JSON.parse(text);
      if (typeof parsed === "object" && parsed !== null) body = parsed as typeof body;
    } catch {
      body = { message: text.slice(0, 200) };
    }
    const retryAfter = Number(res.headers.get("retry-after"));
    return new HttpApiError(
      res.status,
      typeof body.type === "string" ? body.type : "HTTP_ERROR",
      typeof body.message === "string" && body.message !== "" ? body.message : res.statusText,
      body.data,
      Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : undefined,
    );
  }

  /** Retrying the same request may succeed: the gateway or the queue is busy, starting or moving. */
  get transient(): boolean {
    return this.status >= 500 || this.status === 429 || this.status === 408;
  }
}
