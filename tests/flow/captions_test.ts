/** Caption hidden states: the mask reaches the encoder only where its config asks for it. */
import assert from "node:assert/strict";
import { encodeCaptions, type PromptEncoder } from "../../core/flow/captions.ts";
import { charTokenizer } from "../../core/bench/tiny_setup.ts";
import type { Tensor } from "../../core/tensor/tensor.ts";

Deno.test("encodeCaptions: tokenizer rows to the encoder, mask only with use_attention_mask", () => {
  const captions = ["a cat", "a red bus", ""];
  const tok = charTokenizer.encode(captions);
  for (const use of [undefined, false, true]) {
    const calls: unknown[][] = [];
    const result = {} as Tensor;
    const encoder: PromptEncoder = {
      encode(ids, mask, B, L) {
        calls.push([ids, mask, B, L]);
        return result;
      },
      config: use === undefined ? undefined : { use_attention_mask: use },
    };
    assert.equal(encodeCaptions(charTokenizer, encoder, captions), result);
    assert.deepEqual(calls, [[tok.ids, use === true ? tok.mask : null, 3, tok.length]]);
  }
});
