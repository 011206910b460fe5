/**
 * Splitting special tokens out of text before tokenization, as transformers' slow tokenizers do
 * (so a literal `<|endoftext|>` or `<mask>` in a caption becomes its id, not its characters).
 *
 * @module
 */

import type { SpecialToken } from "./config.ts";

/** A piece of text: either a special token or ordinary text to tokenize. */
export type Chunk = { special: true; token: string } | { special: false; text: string };

/**
 * Split `text` on special tokens (longest match first at each position) and apply their
 * lstrip/rstrip flags to the neighbouring text.
 */
export function splitSpecialTokens(text: string, specials: SpecialToken[]): Chunk[] {
  const sorted = [...specials].filter((s) => s.content.length > 0)
    .sort((a, b) => b.content.length - a.content.length);
  const out: Chunk[] = [];
  const flags: SpecialToken[] = [];
  let buf = "";
  let i = 0;
  while (i < text.length) {
    const hit = sorted.find((s) => text.startsWith(s.content, i));
    if (!hit) {
      buf += text[i++];
      continue;
    }
    out.push({ special: false, text: buf });
    out.push({ special: true, token: hit.content });
    flags[out.length - 1] = hit;
    buf = "";
    i += hit.content.length;
  }
  out.push({ special: false, text: buf });
  out.forEach((c, k) => {
    if (!c.special) return;
    const prev = out[k - 1];
    const next = out[k + 1];
    if (flags[k].lstrip && prev && !prev.special) prev.text = prev.text.trimEnd();
    if (flags[k].rstrip && next && !next.special) next.text = next.text.trimStart();
  });
  return out.filter((c) => c.special || c.text.length > 0);
}
