/**
 * The interface shared by every text tokenizer, and the padding/truncation step they all end with.
 *
 * @module
 */

/** A batch of encoded captions, row-major `[batch, length]`. */
export interface TokenBatch {
  /** Token ids, `batch * length` entries. */
  ids: Int32Array;
  /** 1 for real tokens (specials included), 0 for padding; same layout as `ids`. */
  mask: Int32Array;
  /** Sequence length of every row (the tokenizer's `modelMaxLength`). */
  length: number;
}

/** Which tokenizer family produced the ids. */
export type TokenizerKind = "clip" | "xlm-roberta" | "tokenizer.json";

/** A tokenizer that turns captions into fixed-length id rows, as transformers does with
 * `padding="max_length", truncation=True, max_length=model_max_length`. */
export interface TextTokenizer {
  /** Family: the slow CLIP/XLM-R re-implementations or a `tokenizer.json` file. */
  readonly kind: TokenizerKind;
  /** Row length: every caption is truncated or padded to this many ids. */
  readonly modelMaxLength: number;
  /** Id used for padding. */
  readonly padId: number;
  /** Encode captions to `[texts.length, modelMaxLength]` ids and attention mask. */
  encode(texts: string[]): TokenBatch;
}

/**
 * Wrap content ids in the special tokens and fit them in `maxLength`: content is cut from the end
 * so the prefix and suffix (e.g. bos ... eos) always survive, then the row is right-padded.
 *
 * @param rows content ids per caption (without special tokens)
 * @param prefix ids placed before the content (e.g. `[bos]`)
 * @param suffix ids placed after the content (e.g. `[eos]`)
 * @param maxLength row length
 * @param padId id for padding positions
 */
export function packRows(
  rows: number[][],
  prefix: number[],
  suffix: number[],
  maxLength: number,
  padId: number,
): TokenBatch {
  const room = maxLength - prefix.length - suffix.length;
  if (room < 0) {
    throw new Error(
      `max length ${maxLength} cannot hold ${prefix.length + suffix.length} specials`,
    );
  }
  const ids = new Int32Array(rows.length * maxLength).fill(padId);
  const mask = new Int32Array(rows.length * maxLength);
  rows.forEach((content, r) => {
    const row = [...prefix, ...content.slice(0, room), ...suffix];
    ids.set(row, r * maxLength);
    mask.fill(1, r * maxLength, r * maxLength + row.length);
  });
  return { ids, mask, length: maxLength };
}
