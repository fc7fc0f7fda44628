/**
 * The authenticated envelope shared by stored values and wrapped owner keys:
 * `version (1 byte) | nonce (24 bytes) | XChaCha20-Poly1305-IETF ciphertext with its 16-byte tag`.
 * The version byte is also bound into the associated data, so it cannot be altered either.
 * Nonces come from node:crypto (libsodium's WASM randombytes is much slower); 24 random bytes make
 * a nonce collision negligible however many values one key seals. They are cut from a pool that
 * the CSPRNG refills every 170 nonces, each byte of it used once: a `randomBytes` call per value
 * cost 2-3 µs, as much as the encryption itself (docs/benchmarks.md).
 */
import { randomFillSync } from "node:crypto";
import sodium from "libsodium-wrappers";

export const ENVELOPE_VERSION = 1;
export const KEY_BYTES = 32;
export const NONCE_BYTES = 24;
export const TAG_BYTES = 16;
const HEADER_BYTES = 1 + NONCE_BYTES;

/** Why an envelope did not open; callers turn it into their own error (never carries data). */
export class EnvelopeError extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = "EnvelopeError";
  }
}

let sodiumReady: Promise<typeof sodium> | undefined;

/** libsodium after its WASM module has loaded; loads it once per process. */
export function loadSodium(): Promise<typeof sodium> {
  sodiumReady ??= sodium.ready.then(() => {
    sodiumLoaded = sodium;
    return sodium;
  });
  return sodiumReady;
}

let sodiumLoaded: typeof sodium | undefined;

/** libsodium if `loadSodium` has loaded it already, for paths that need not wait. */
export function loadedSodium(): typeof sodium | undefined {
  return sodiumLoaded;
}

/**
 * Associated data as length-prefixed parts (uint32 big-endian byte length, then UTF-8), preceded by
 * the envelope version: no two different lists of parts encode to the same bytes.
 */
export function encodeAssociatedData(parts: readonly string[]): Buffer {
  // Lengths first, then each part written in place: no buffer per part (this runs for every value).
  let size = 1;
  for (let i = 0; i < parts.length; i++) size += 4 + Buffer.byteLength(parts[i]!, "utf8");
  const out = Buffer.allocUnsafe(size);
  out[0] = ENVELOPE_VERSION;
  let offset = 1;
  for (let i = 0; i < parts.length; i++) {
    const written = out.write(parts[i]!, offset + 4, "utf8");
    out.writeUInt32BE(written, offset);
    offset += 4 + written;
  }
  return out;
}

/** Random bytes not handed out yet: `noncePool[nonceAt...]`. Memory of its own, never a shared slab. */
const noncePool = Buffer.allocUnsafeSlow(NONCE_BYTES * 170);
let nonceAt = noncePool.length;

/** Fills `out[at, at + NONCE_BYTES)` with random bytes no other nonce of this process got. */
function writeNonce(out: Buffer, at: number): void {
  if (nonceAt + NONCE_BYTES > noncePool.length) {
    randomFillSync(noncePool);
    nonceAt = 0;
  }
  noncePool.copy(out, at, nonceAt, nonceAt + NONCE_BYTES);
  // Spent bytes are zeroed: were the pool ever read twice, the nonce would be zeros, not a repeat.
  noncePool.fill(0, nonceAt, nonceAt + NONCE_BYTES);
  nonceAt += NONCE_BYTES;
}

export function sealEnvelope(lib: typeof sodium, key: Uint8Array, plaintext: Uint8Array, ad: Uint8Array): Buffer {
  if (key.length !== KEY_BYTES) throw new EnvelopeError(`key must be ${KEY_BYTES} bytes, got ${key.length}`);
  const out = Buffer.allocUnsafe(HEADER_BYTES + plaintext.length + TAG_BYTES);
  out[0] = ENVELOPE_VERSION;
  writeNonce(out, 1);
  const nonce = out.subarray(1, HEADER_BYTES);
  out.set(lib.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, null, nonce, key), HEADER_BYTES);
  return out;
}

/** Throws EnvelopeError when the blob is malformed or does not authenticate for this key and AD. */
export function openEnvelope(lib: typeof sodium, key: Uint8Array, blob: Uint8Array, ad: Uint8Array): Buffer {
  if (blob.length < HEADER_BYTES + TAG_BYTES) {
    throw new EnvelopeError(`blob is ${blob.length} bytes, shorter than the ${HEADER_BYTES + TAG_BYTES}-byte minimum`);
  }
  if (blob[0] !== ENVELOPE_VERSION) throw new EnvelopeError(`unknown format version ${blob[0]}`);
  if (key.length !== KEY_BYTES) throw new EnvelopeError(`key must be ${KEY_BYTES} bytes, got ${key.length}`);
  const nonce = blob.subarray(1, HEADER_BYTES);
  const ciphertext = blob.subarray(HEADER_BYTES);
  let plaintext: Uint8Array;
  try {
    plaintext = lib.crypto_aead_xchacha20poly1305_ietf_decrypt(null, ciphertext, ad, nonce, key);
  } catch {
    throw new EnvelopeError("authentication failed: wrong key, altered bytes, or sealed for another place");
  }
  return Buffer.from(plaintext.buffer, plaintext.byteOffset, plaintext.byteLength);
}
