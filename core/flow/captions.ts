/**
 * Caption hidden states, as diffusers' `_encode_prompt` computes them: the one encoding that the
 * teacher, the trainer, the sample job and the demo share, so a student sees the states its
 * teacher saw.
 *
 * @module
 */

import type { Tensor } from "../tensor/tensor.ts";
import { noGrad } from "../tensor/autograd.ts";
import type { TextTokenizer } from "../models/tokenizers/types.ts";

/** What caption encoding needs of a text encoder. */
export interface PromptEncoder {
  /** ids [B*L] row-major, optional mask -> hidden states [B, L, D]. */
  encode(ids: Int32Array, mask: Int32Array | null, B: number, L: number): Tensor;
  /** transformers config; `use_attention_mask: true` makes the pipeline pass the mask. */
  readonly config?: object;
}

/**
 * Hidden states [B, L, D] for captions (no autograd tape): the tokenizer pads and truncates to its
 * max length; the mask goes to the encoder only when its config sets `use_attention_mask` (CLIP
 * and AltDiffusion's XLM-R do not).
 */
export function encodeCaptions(
  tokenizer: TextTokenizer,
  encoder: PromptEncoder,
  captions: readonly string[],
): Tensor {
  const tok = tokenizer.encode([...captions]);
  // The model classes carry their transformers config even where the interface does not say so.
  const config = (encoder as { config?: { use_attention_mask?: unknown } }).config;
  const mask = config?.use_attention_mask === true ? tok.mask : null;
  return noGrad(() => encoder.encode(tok.ids, mask, captions.length, tok.length));
}
