/**
 * Gradient checkpointing: run a block without recording, and recompute it with recording during
 * backward. Trades one extra forward of the block for not keeping its activations (the original's
 * `diffusers.gradient_checkpointing`). The block must be deterministic (no dropout noise).
 */
import { backward, isGradEnabled, noGrad, record, save, setGradEnabled } from "./autograd.ts";
import { keep } from "./scope.ts";
import type { Tensor } from "./tensor.ts";

export function checkpoint(fn: (...xs: Tensor[]) => Tensor, inputs: Tensor[]): Tensor {
  if (!isGradEnabled()) return fn(...inputs);
  const out = noGrad(() => fn(...inputs));
  const saved = inputs.map((x) => save(x));
  return record(
    "checkpoint",
    out,
    inputs,
    (g) => {
      const leaves = saved.map((s, i) => {
        const l = s.alias();
        l.requiresGrad = inputs[i].requiresGrad;
        return l;
      });
      const prev = setGradEnabled(true);
      try {
        const y = fn(...leaves);
        if (y.requiresGrad) backward([y], [g]);
        y.dispose();
      } finally {
        setGradEnabled(prev);
      }
      return leaves.map((l) => {
        const gr = l.grad;
        l.grad = null;
        return gr ? keep(gr) : null;
      });
    },
    saved,
    true,
  );
}
