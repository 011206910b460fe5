/**
 * The tiny model and data the job benchmarks share: a 2-level UNet at 4x8x8 latents with
 * cross-attention width 32, a 1-layer CLIP text encoder config, a character-code tokenizer, and a
 * seeded pair data set writer.
 */
import type { TextTokenizer } from "../models/tokenizers/types.ts";
import { pairPaths, writePairNpy } from "../data/pair_store.ts";
import { writeCaptions } from "../data/captions.ts";
import { f32ToF16Bits } from "../io/half.ts";
import { CounterRng } from "../train/rng.ts";
import { join } from "node:path";
import { getConfig, type TrainConfig } from "../../configs/train.ts";

export const TINY_BENCH_UNET = {
  sample_size: 8,
  in_channels: 4,
  out_channels: 4,
  down_block_types: ["CrossAttnDownBlock2D", "DownBlock2D"],
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D"],
  block_out_channels: [32, 64],
  layers_per_block: 1,
  norm_num_groups: 8,
  cross_attention_dim: 32,
  attention_head_dim: 4,
};

export const TINY_BENCH_CLIP = {
  vocab_size: 64,
  hidden_size: 32,
  intermediate_size: 64,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  max_position_embeddings: 8,
};

/** Ids from character codes: enough to give captions distinct embeddings without a vocabulary. */
export const charTokenizer: TextTokenizer = {
  kind: "clip",
  modelMaxLength: 8,
  padId: 0,
  encode(texts) {
    const ids = new Int32Array(texts.length * 8), mask = new Int32Array(texts.length * 8);
    texts.forEach((t, b) => {
      const row = [1, ...[...t].slice(0, 6).map((c) => 3 + (c.charCodeAt(0) % 60)), 2];
      ids.set(row, b * 8);
      mask.fill(1, b * 8, b * 8 + row.length);
    });
    return { ids, mask, length: 8 };
  },
};

/** Writes `n` seeded [2, 4, 8, 8] pairs with captions and an index under `root`. */
export async function writeTinyPairs(root: string, n: number): Promise<void> {
  const p = pairPaths(root);
  await Deno.mkdir(p.images, { recursive: true });
  await Deno.writeTextFile(p.index, JSON.stringify({ total_nums: n, bench: true }));
  await writeCaptions(p.captions, Array.from({ length: n }, (_, i) => `caption ${i}`));
  const rng = new CounterRng(1);
  for (let i = 0; i < n; i++) {
    const z0 = rng.normals(rng.advance(256), 256);
    const z1 = z0.map((x, j) => 0.3 * x + Math.sin(j / 5));
    await writePairNpy(p.images, i, [4, 8, 8], f32ToF16Bits(z0), f32ToF16Bits(z1));
  }
}

/** A train config for the tiny model on `<data>/train` and `<data>/eval`, logging nothing. */
export function benchConfig(data: string, steps: number): TrainConfig {
  const c = getConfig();
  c.diffusers.gradient_checkpointing = false;
  c.training = {
    ...c.training,
    batch_size: 2,
    num_steps: steps,
    log_freq: 1_000_000,
    eval_freq: 1_000_000,
    snapshot_freq: 1_000_000,
    sampling_freq: 1_000_000,
  };
  c.data = {
    ...c.data,
    image_size: 8,
    num_channels: 4,
    train_root: join(data, "train"),
    eval_root: join(data, "eval"),
  };
  c.optim.warmup = 1;
  return c;
}
