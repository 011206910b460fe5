/**
 * UNet2DConditionModel built from a diffusers `config.json`, computing what diffusers computes.
 * Supports the fields SD 1.x, SD 2.x and AltDiffusion use; any other value is refused by name.
 */
import type { Gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { tidy } from "../tensor/scope.ts";
import { type Init, Module, newInit } from "../nn/module.ts";
import { Conv2d, GroupNorm, Linear } from "../nn/layers.ts";
import * as ops from "../ops.ts";
import { type BlockCommon, DownBlock, MidBlock, UpBlock } from "./unet_blocks.ts";

/** The config fields this model reads, with diffusers' defaults. */
export interface UNetConfig {
  sample_size: number | null;
  in_channels: number;
  out_channels: number;
  center_input_sample: boolean;
  flip_sin_to_cos: boolean;
  freq_shift: number;
  down_block_types: string[];
  mid_block_type: string | null;
  up_block_types: string[];
  only_cross_attention: boolean | boolean[];
  block_out_channels: number[];
  layers_per_block: number | number[];
  downsample_padding: number;
  mid_block_scale_factor: number;
  act_fn: string;
  norm_num_groups: number;
  norm_eps: number;
  cross_attention_dim: number | number[];
  transformer_layers_per_block: number | number[];
  attention_head_dim: number | number[];
  num_attention_heads: number | number[] | null;
  use_linear_projection: boolean;
  upcast_attention: boolean;
  resnet_out_scale_factor: number;
  [k: string]: unknown;
}

const DEFAULTS: UNetConfig = {
  sample_size: null,
  in_channels: 4,
  out_channels: 4,
  center_input_sample: false,
  flip_sin_to_cos: true,
  freq_shift: 0,
  down_block_types: [
    "CrossAttnDownBlock2D",
    "CrossAttnDownBlock2D",
    "CrossAttnDownBlock2D",
    "DownBlock2D",
  ],
  mid_block_type: "UNetMidBlock2DCrossAttn",
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  only_cross_attention: false,
  block_out_channels: [320, 640, 1280, 1280],
  layers_per_block: 2,
  downsample_padding: 1,
  mid_block_scale_factor: 1,
  act_fn: "silu",
  norm_num_groups: 32,
  norm_eps: 1e-5,
  cross_attention_dim: 1280,
  transformer_layers_per_block: 1,
  attention_head_dim: 8,
  num_attention_heads: null,
  use_linear_projection: false,
  upcast_attention: false,
  resnet_out_scale_factor: 1.0,
};

/** Fields that must hold their default (a feature this implementation does not have). */
const MUST_BE: Record<string, unknown[]> = {
  act_fn: ["silu"],
  resnet_time_scale_shift: ["default", undefined],
  resnet_skip_time_act: [false, undefined],
  class_embed_type: [null, undefined],
  addition_embed_type: [null, undefined],
  num_class_embeds: [null, undefined],
  time_embedding_type: ["positional", undefined],
  time_embedding_dim: [null, undefined],
  time_embedding_act_fn: [null, undefined],
  timestep_post_act: [null, undefined],
  time_cond_proj_dim: [null, undefined],
  conv_in_kernel: [3, undefined],
  conv_out_kernel: [3, undefined],
  encoder_hid_dim: [null, undefined],
  encoder_hid_dim_type: [null, undefined],
  dual_cross_attention: [false, undefined],
  attention_type: ["default", undefined],
  class_embeddings_concat: [false, undefined],
  reverse_transformer_layers_per_block: [null, undefined],
  mid_block_only_cross_attention: [null, false, undefined],
  cross_attention_norm: [null, undefined],
  dropout: [0, 0.0, undefined],
};

const DOWN = new Set(["CrossAttnDownBlock2D", "DownBlock2D"]);
const UP = new Set(["CrossAttnUpBlock2D", "UpBlock2D"]);

/** Error for a config value this model does not support. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Fills defaults and checks every field; throws naming the field and value it cannot build. */
export function resolveUNetConfig(
  raw: Record<string, unknown>,
  source = "config.json",
): UNetConfig {
  const c = { ...DEFAULTS, ...raw } as UNetConfig;
  for (const [k, ok] of Object.entries(MUST_BE)) {
    if (!ok.some((v) => v === c[k])) {
      throw new ConfigError(`${source}: unsupported ${k} = ${JSON.stringify(c[k])}`);
    }
  }
  const n = c.block_out_channels.length;
  if (c.down_block_types.length !== n || c.up_block_types.length !== n) {
    throw new ConfigError(
      `${source}: down_block_types (${c.down_block_types.length}), up_block_types ` +
        `(${c.up_block_types.length}) and block_out_channels (${n}) must have one entry per level`,
    );
  }
  for (const t of c.down_block_types) {
    if (!DOWN.has(t)) throw new ConfigError(`${source}: unsupported down_block_types entry "${t}"`);
  }
  for (const t of c.up_block_types) {
    if (!UP.has(t)) throw new ConfigError(`${source}: unsupported up_block_types entry "${t}"`);
  }
  if (c.mid_block_type !== "UNetMidBlock2DCrossAttn") {
    throw new ConfigError(
      `${source}: unsupported mid_block_type = ${JSON.stringify(c.mid_block_type)}`,
    );
  }
  for (
    const k of ["cross_attention_dim", "transformer_layers_per_block", "layers_per_block"] as const
  ) {
    const v = c[k];
    if (Array.isArray(v) && new Set(v).size !== 1) {
      throw new ConfigError(`${source}: per-block ${k} = ${JSON.stringify(v)} is not supported`);
    }
  }
  if (Array.isArray(c.only_cross_attention) && new Set(c.only_cross_attention).size !== 1) {
    throw new ConfigError(`${source}: per-block only_cross_attention is not supported`);
  }
  for (const ch of c.block_out_channels) {
    if (ch % c.norm_num_groups !== 0) {
      throw new ConfigError(
        `${source}: block_out_channels entry ${ch} is not divisible by norm_num_groups ${c.norm_num_groups}`,
      );
    }
  }
  return c;
}

const first = <T>(v: T | T[]): T => (Array.isArray(v) ? v[0] : v);

export class TimestepEmbedding extends Module {
  linear_1: Linear;
  linear_2: Linear;
  constructor(init: Init, inC: number, dim: number) {
    super();
    this.linear_1 = new Linear(init, inC, dim);
    this.linear_2 = new Linear(init, dim, dim);
  }
  forward(x: Tensor): Tensor {
    return this.linear_2.forward(ops.silu(this.linear_1.forward(x)));
  }
}

export class UNet2DConditionModel extends Module {
  conv_in: Conv2d;
  time_embedding: TimestepEmbedding;
  down_blocks: DownBlock[];
  mid_block: MidBlock;
  up_blocks: UpBlock[];
  conv_norm_out: GroupNorm;
  conv_out: Conv2d;
  /** Gradient checkpointing of every resnet and transformer block. */
  readonly checkpointing = { on: false };

  constructor(readonly config: UNetConfig, init: Init) {
    super();
    const c = config;
    const boc = c.block_out_channels;
    const tembC = boc[0] * 4;
    const heads = c.num_attention_heads ?? c.attention_head_dim;
    const headsAt = (i: number) => (Array.isArray(heads) ? heads[i] : heads);
    const layers = first(c.layers_per_block);
    const common: BlockCommon = {
      tembC,
      groups: c.norm_num_groups,
      eps: c.norm_eps,
      crossDim: first(c.cross_attention_dim),
      linearProjection: c.use_linear_projection,
      onlyCross: first(c.only_cross_attention),
      transformerLayers: first(c.transformer_layers_per_block),
      checkpointing: this.checkpointing,
    };
    this.conv_in = new Conv2d(init, c.in_channels, boc[0], 3, 1, 1);
    this.time_embedding = new TimestepEmbedding(init, boc[0], tembC);
    let out = boc[0];
    this.down_blocks = c.down_block_types.map((type, i) => {
      const inC = out;
      out = boc[i];
      const isFinal = i === boc.length - 1;
      const h = type === "CrossAttnDownBlock2D" ? headsAt(i) : null;
      return new DownBlock(init, common, inC, out, layers, h, !isFinal, c.downsample_padding);
    });
    const nLevels = boc.length;
    this.mid_block = new MidBlock(
      init,
      common,
      boc[nLevels - 1],
      headsAt(nLevels - 1),
      c.mid_block_scale_factor,
    );
    const rev = [...boc].reverse();
    out = rev[0];
    this.up_blocks = c.up_block_types.map((type, i) => {
      const prevOut = out;
      out = rev[i];
      const inC = rev[Math.min(i + 1, nLevels - 1)];
      const isFinal = i === nLevels - 1;
      const h = type === "CrossAttnUpBlock2D" ? headsAt(nLevels - 1 - i) : null;
      return new UpBlock(init, common, inC, out, prevOut, layers + 1, h, !isFinal);
    });
    this.conv_norm_out = new GroupNorm(init, c.norm_num_groups, boc[0], c.norm_eps);
    this.conv_out = new Conv2d(init, boc[0], c.out_channels, 3, 1, 1);
  }

  /** Builds the model with fresh weights (PyTorch default initialisation). */
  static create(gpu: Gpu, raw: Record<string, unknown>, seed = 0): UNet2DConditionModel {
    return new UNet2DConditionModel(resolveUNetConfig(raw), newInit(gpu, seed));
  }

  /**
   * sample [B, C, H, W], timesteps [B] (f32 values, e.g. floor(999 t)), context [B, L, cross_dim]
   * -> [B, out_channels, H, W].
   */
  forward(sample: Tensor, timesteps: Tensor, context: Tensor): Tensor {
    const c = this.config;
    const [B, C] = sample.shape;
    if (C !== c.in_channels) {
      throw new ConfigError(
        `UNet: sample has ${C} channels, config in_channels is ${c.in_channels}`,
      );
    }
    const cross = first(c.cross_attention_dim);
    if (context.shape.length !== 3 || context.shape[0] !== B || context.shape[2] !== cross) {
      throw new ConfigError(
        `UNet: encoder_hidden_states [${context.shape}] must be [${B}, L, ${cross}] (cross_attention_dim)`,
      );
    }
    if (timesteps.shape.length !== 1 || timesteps.shape[0] !== B) {
      throw new ConfigError(`UNet: timesteps [${timesteps.shape}] must be [${B}]`);
    }
    const dt = this.conv_in.weight.dtype as "f32" | "f16";
    return tidy(() => {
      // Inputs follow the weights' storage dtype (f16 after toDtype("f16")); the output is f32.
      let x = ops.cast(sample, dt);
      if (c.center_input_sample) x = ops.scale(x, 2, -1);
      context = ops.cast(context, dt);
      const tProj = ops.timestepEmbedding(timesteps, c.block_out_channels[0], {
        flipSinToCos: c.flip_sin_to_cos,
        downscaleFreqShift: c.freq_shift,
        dtype: dt,
      });
      // Every resnet projects silu(emb): computed once here (see ResnetBlock2D.forward).
      const emb = ops.silu(this.time_embedding.forward(tProj));
      let h = this.conv_in.forward(x);
      const skips: Tensor[] = [h];
      const sizes: [number, number][] = [];
      for (const blk of this.down_blocks) {
        sizes.push([h.shape[2], h.shape[3]]);
        const r = blk.forward(h, emb, context);
        h = r.h;
        skips.push(...r.skips);
      }
      h = this.mid_block.forward(h, emb, context);
      this.up_blocks.forEach((blk, i) => {
        const n = blk.resnets.length;
        const mine = skips.splice(skips.length - n, n);
        // Upsample to the matching down level's size (diffusers' upsample_size for odd sizes).
        const target = sizes[sizes.length - 2 - i];
        h = blk.forward(h, emb, context, mine, target);
      });
      h = this.conv_norm_out.forward(h, true);
      return ops.cast(this.conv_out.forward(h), "f32");
    });
  }
}

/** Shape check helper for callers: latent [B, C, H, W] sizes that the UNet can take. */
export function checkLatentSize(config: UNetConfig, H: number, W: number): void {
  const f = 2 ** (config.block_out_channels.length - 1);
  if (H % f !== 0 || W % f !== 0) {
    throw new ConfigError(`UNet: latent size ${H}x${W} must be a multiple of ${f}`);
  }
}

export { Tensor };
