/**
 * GPT-2/CLIP's reversible byte -> printable character table: bytes that are printable Latin-1
 * keep their own code point, the others are shifted to U+0100 and up, so BPE never sees spaces or
 * control characters.
 *
 * @module
 */

/** `table[b]` is the character standing for byte `b`. */
export const BYTE_TO_UNICODE: readonly string[] = (() => {
  const table: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
    table[b] = String.fromCodePoint(printable ? b : 256 + extra++);
  }
  return table;
})();

const encoder = new TextEncoder();

/** Map a string's UTF-8 bytes to their table characters. */
export function bytesToUnicode(text: string): string {
  let out = "";
  for (const b of encoder.encode(text)) out += BYTE_TO_UNICODE[b];
  return out;
}
