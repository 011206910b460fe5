/**
 * sentencepiece's precompiled character map (`NormalizerSpec.precompiled_charsmap`): a darts-clone
 * double-array trie over UTF-8 bytes whose values index a blob of NUL-terminated replacement
 * strings. This is how rules such as `nmt_nfkc` (NFKC plus sentencepiece's own extra mappings:
 * control characters dropped, odd spaces mapped to U+0020, ...) are shipped inside a model, so
 * applying it reproduces sentencepiece exactly, where `String.prototype.normalize("NFKC")` would
 * only come close.
 *
 * @module
 */

/** Longest-match lookup of the precompiled charsmap. */
export class PrecompiledCharsmap {
  readonly #units: Uint32Array;
  readonly #normalized: Uint8Array;

  /**
   * @param blob the `precompiled_charsmap` bytes (uint32 LE trie size, trie units, strings)
   * @param source name for error messages
   */
  constructor(blob: Uint8Array, source: string) {
    if (blob.length < 4) throw new Error(`${source}: precompiled charsmap shorter than 4 bytes`);
    const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
    const trieSize = view.getUint32(0, true);
    if (trieSize % 4 !== 0 || 4 + trieSize > blob.length) {
      throw new Error(`${source}: precompiled charsmap trie size ${trieSize} is invalid`);
    }
    // Copy into an aligned array; the blob may sit at any offset in the file.
    this.#units = new Uint32Array(trieSize / 4);
    for (let i = 0; i < this.#units.length; i++) this.#units[i] = view.getUint32(4 + 4 * i, true);
    this.#normalized = blob.subarray(4 + trieSize);
  }

  /**
   * Find the longest key that prefixes `bytes[pos..]`.
   *
   * @returns the matched length in bytes and its replacement (UTF-8), or null when no key matches
   */
  match(bytes: Uint8Array, pos: number): { length: number; replacement: Uint8Array } | null {
    const units = this.#units;
    if (units.length === 0) return null;
    // darts-clone unit layout: bit 8 has_leaf, bits 0-7 label (+ bit 31), offset in bits 10..31
    // scaled by 256 when bit 9 is set; a leaf's value is the low 31 bits.
    const offset = (u: number) => (u >>> 10) << ((u & 0x200) >>> 6);
    let node = offset(units[0]);
    let bestLen = 0;
    let bestValue = -1;
    for (let i = pos; i < bytes.length; i++) {
      const c = bytes[i];
      node ^= c;
      if (node >= units.length) break;
      const u = units[node];
      if ((u & 0x800000ff) >>> 0 !== c) break;
      node ^= offset(u);
      if ((u >>> 8) & 1) {
        if (node >= units.length) break;
        bestLen = i + 1 - pos;
        bestValue = units[node] & 0x7fffffff;
      }
    }
    if (bestLen === 0) return null;
    const start = bestValue;
    let end = start;
    while (end < this.#normalized.length && this.#normalized[end] !== 0) end++;
    return { length: bestLen, replacement: this.#normalized.subarray(start, end) };
  }
}

/**
 * Apply only the charsmap to `text` (longest match at each position, unmatched characters kept),
 * without sentencepiece's whitespace handling. This is what a `tokenizer.json` `Precompiled`
 * normalizer does, apart from the Rust crate's grapheme-cluster fallback for long clusters.
 */
export function applyCharsmap(text: string, map: PrecompiledCharsmap): string {
  const bytes = new TextEncoder().encode(text);
  const parts: Uint8Array[] = [];
  let pos = 0;
  let plainStart = 0;
  while (pos < bytes.length) {
    const hit = map.match(bytes, pos);
    if (!hit) {
      const lead = bytes[pos];
      pos += lead < 0x80 ? 1 : lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : 2;
      continue;
    }
    parts.push(bytes.subarray(plainStart, pos), hit.replacement);
    pos += hit.length;
    plainStart = pos;
  }
  parts.push(bytes.subarray(plainStart, Math.min(pos, bytes.length)));
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return new TextDecoder().decode(out);
}
