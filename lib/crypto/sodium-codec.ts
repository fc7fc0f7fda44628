/**
 * Encryption at rest with the owner's key: XChaCha20-Poly1305-IETF over each stored field, with the
 * owner, queue, task id, field and key id bound in as associated data, so a ciphertext copied to
 * another task, queue, owner or field does not open. Blob layout: see aead-envelope.ts.
 */
import type { SealContext, Sealed, ValueCodec } from "../codec";
import { DecryptionError } from "../errors";
import {
  EnvelopeError,
  encodeAssociatedData,
  loadedSodium,
  loadSodium,
  openEnvelope,
  sealEnvelope,
} from "./aead-envelope";
import type { KeyProvider, OwnerKey } from "./key-provider";

/** Separates these associated data from those of other uses of the envelope (wrapped keys). */
const VALUE_DOMAIN = "queue-value";

export class SodiumCodec implements ValueCodec {
  constructor(private readonly keys: KeyProvider) {}

  async seal(context: SealContext, plaintext: Buffer, caller?: unknown): Promise<Sealed> {
    const [sodium, ownerKey] = await Promise.all([loadSodium(), this.keys.current(context.ownerId, caller)]);
    const blob = sealEnvelope(sodium, ownerKey.key, plaintext, associatedData(context, ownerKey.id));
    return { keyId: ownerKey.id, blob };
  }

  open(context: SealContext, sealed: Sealed, caller?: unknown): Promise<Buffer> {
    // Every fetch opens a value: with libsodium loaded and the key in memory, no waiting at all.
    const sodium = loadedSodium();
    const ownerKey = sodium && this.keys.cachedById?.(context.ownerId, sealed.keyId);
    if (sodium && ownerKey) {
      try {
        return Promise.resolve(openWith(sodium, ownerKey, context, sealed));
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return Promise.all([loadSodium(), this.ownerKey(context, sealed.keyId, caller)]).then(([s, k]) =>
      openWith(s, k, context, sealed),
    );
  }

  /** A key the keys service does not know (expired, or never issued) makes the value undecryptable. */
  private async ownerKey(context: SealContext, keyId: string, caller: unknown): Promise<OwnerKey> {
    try {
      return await this.keys.byId(context.ownerId, keyId, caller);
    } catch (err) {
      if ((err as { type?: unknown }).type === "OWNER_KEY_NOT_FOUND") {
        throw new DecryptionError(context.queue, context.taskId, context.field, `key ${keyId} no longer exists`);
      }
      throw err;
    }
  }
}

function openWith(
  sodium: NonNullable<ReturnType<typeof loadedSodium>>,
  ownerKey: OwnerKey,
  context: SealContext,
  sealed: Sealed,
): Buffer {
  try {
    return openEnvelope(sodium, ownerKey.key, sealed.blob, associatedData(context, sealed.keyId));
  } catch (err) {
    if (err instanceof EnvelopeError) {
      throw new DecryptionError(context.queue, context.taskId, context.field, err.reason);
    }
    throw err;
  }
}

function associatedData(context: SealContext, keyId: string): Buffer {
  return encodeAssociatedData([VALUE_DOMAIN, context.ownerId, context.queue, context.taskId, context.field, keyId]);
}
