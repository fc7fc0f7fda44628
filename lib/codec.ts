/**
 * How task values, tokens and results are turned into stored bytes and back. The store only ever
 * sees `{ keyId, blob }`; the encryption (lib/crypto) implements this interface, and tests may use
 * the plain JSON codec. Never evaluates data as code: JSON.parse only.
 */

/** Where a sealed value belongs: bound into the ciphertext so it cannot be moved elsewhere. */
export interface SealContext {
  ownerId: string;
  /** The queue (serviceId). */
  queue: string;
  taskId: string;
  /** Which field of the task: "value", "token", "result", "meta". */
  field: string;
}

export interface Sealed {
  keyId: string;
  blob: Buffer;
}

/**
 * `caller` is the Moleculer context of the call that needs the key (the keys service is called
 * with its meta); the codec treats it as opaque.
 */
export interface ValueCodec {
  seal(context: SealContext, plaintext: Buffer, caller?: unknown): Promise<Sealed>;
  /** Throws DecryptionError when the blob does not authenticate for this context. */
  open(context: SealContext, sealed: Sealed, caller?: unknown): Promise<Buffer>;
}

/** No encryption: for unit tests and benchmarks that isolate the queue engine. */
export class PlainCodec implements ValueCodec {
  async seal(_context: SealContext, plaintext: Buffer): Promise<Sealed> {
    return { keyId: "plain", blob: plaintext };
  }

  async open(_context: SealContext, sealed: Sealed): Promise<Buffer> {
    return sealed.blob;
  }
}
