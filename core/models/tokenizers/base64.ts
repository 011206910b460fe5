/**
 * Base64 decoding for the `precompiled_charsmap` field of tokenizer.json files.
 *
 * @module
 */

/** Decode standard base64 (with or without padding) into bytes. */
export function decodeBase64(text: string): Uint8Array {
  const bin = atob(text.replace(/\s+/g, ""));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
