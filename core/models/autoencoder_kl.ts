/**
 * AutoencoderKL (Stable Diffusion's VAE) built from a diffusers `config.json`: the encoder (images to
 * latent mean / sample) and the decoder (latents to images), named as diffusers' checkpoints.
 */
import type { Gpu } from "../gpu/device.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { tidy } from "../tensor/scope.ts";
import { type Init, Module, newInit } from "../nn/module.ts";
import { Conv2d, GroupNorm, Linear } from "../nn/layers.ts";
import * as ops from "../ops.ts";
import { ResnetBlock2D, runBlock, Upsample2D } from "./unet_blocks.ts";
import { ConfigError } from "./unet2d_condition.ts";

export interface VaeConfig {
  in_channels: number;
  out_channels: number;
  down_block_types: string[];
  up_block_types: string[];
  block_out_channels: number[];
  layers_per_block: number;
  act_fn: string;
  latent_channels: number;
  norm_num_groups: number;
  sample_size: number;
  scaling_factor: number;
  [k: string]: unknown;
}

const DEFAULTS: VaeConfig = {
  in_channels: 3,
  out_channels: 3,
  down_block_types: ["DownEncoderBlock2D"],
  up_block_types: ["UpDecoderBlock2D"],
  block_out_channels: [64],
  layers_per_block: 1,
  act_fn: "silu",
  latent_channels: 4,
  norm_num_groups: 32,
  sample_size: 32,
  scaling_factor: 0.18215,
};

export function resolveVaeConfig(
  raw: Record<string, unknown>,
  source = "vae/config.json",
): VaeConfig {
  const c = { ...DEFAULTS, ...raw } as VaeConfig;
  if (c.act_fn !== "silu") throw new ConfigError(`${source}: unsupported act_fn = "${c.act_fn}"`);
  for (const t of c.down_block_types) {
    if (t !== "DownEncoderBlock2D") {
      throw new ConfigError(`${source}: unsupported down_block_types entry "${t}"`);
    }
  }
  for (const t of c.up_block_types) {
    if (t !== "UpDecoderBlock2D") {
      throw new ConfigError(`${source}: unsupported up_block_types entry "${t}"`);
    }
  }
  if (c.use_quant_conv === false || c.use_post_quant_conv === false) {
    throw new ConfigError(`${source}: use_quant_conv/use_post_quant_conv = false is not supported`);
  }
  if (c.mid_block_add_attention === false) {
    throw new ConfigError(`${source}: mid_block_add_attention = false is not supported`);
  }
  return c;
}

/** The VAE mid-block attention: one head over all pixels, with its own group norm and biases. */
class VaeAttention extends Module {
  group_norm: GroupNorm;
  to_q: Linear;
  to_k: Linear;
  to_v: Linear;
  to_out: [Linear, null];
  constructor(init: Init, ch: number, groups: number) {
    super();
    this.group_norm = new GroupNorm(init, groups, ch, 1e-6);
    this.to_q = new Linear(init, ch, ch);
    this.to_k = new Linear(init, ch, ch);
    this.to_v = new Linear(init, ch, ch);
    this.to_out = [new Linear(init, ch, ch), null];
  }
  forward(x: Tensor): Tensor {
    const [B, C, H, W] = x.shape;
    const h = ops.reshape(ops.permute(this.group_norm.forward(x), [0, 2, 3, 1]), [B, H * W, C]);
    const a = ops.attention(this.to_q.forward(h), this.to_k.forward(h), this.to_v.forward(h), {
      heads: 1,
      scale: 1 / Math.sqrt(C),
    });
    const o = this.to_out[0].forward(a);
    return ops.add(ops.permute(ops.reshape(o, [B, H, W, C]), [0, 3, 1, 2]), x);
  }
}

class VaeMidBlock extends Module {
  resnets: ResnetBlock2D[];
  attentions: VaeAttention[];
  constructor(init: Init, ch: number, groups: number) {
    super();
    this.resnets = [0, 1].map(() => new ResnetBlock2D(init, ch, ch, 0, groups, 1e-6, 1));
    this.attentions = [new VaeAttention(init, ch, groups)];
  }
  forward(x: Tensor, ck: boolean): Tensor {
    let h = runBlock(ck, (t) => this.resnets[0].forward(t, null), [x]);
    h = runBlock(ck, (t) => this.attentions[0].forward(t), [h]);
    return runBlock(ck, (t) => this.resnets[1].forward(t, null), [h]);
  }
}

/** Stride-2 conv after padding right and bottom by one, as diffusers' Downsample2D(padding=0). */
class EncoderDownsample extends Module {
  conv: Conv2d;
  constructor(init: Init, ch: number) {
    super();
    this.conv = new Conv2d(init, ch, ch, 3, 2, 0);
  }
  forward(x: Tensor): Tensor {
    return this.conv.forward(ops.padRightBottom(x, 1));
  }
}

class DownEncoderBlock2D extends Module {
  resnets: ResnetBlock2D[];
  downsamplers: EncoderDownsample[] | null;
  constructor(
    init: Init,
    inC: number,
    outC: number,
    layers: number,
    groups: number,
    down: boolean,
  ) {
    super();
    this.resnets = Array.from(
      { length: layers },
      (_, j) => new ResnetBlock2D(init, j === 0 ? inC : outC, outC, 0, groups, 1e-6, 1),
    );
    this.downsamplers = down ? [new EncoderDownsample(init, outC)] : null;
  }
  forward(x: Tensor, ck: boolean): Tensor {
    let h = x;
    for (const r of this.resnets) h = runBlock(ck, (t) => r.forward(t, null), [h]);
    if (this.downsamplers) h = runBlock(false, (t) => this.downsamplers![0].forward(t), [h]);
    return h;
  }
}

class UpDecoderBlock2D extends Module {
  resnets: ResnetBlock2D[];
  upsamplers: Upsample2D[] | null;
  constructor(init: Init, inC: number, outC: number, layers: number, groups: number, up: boolean) {
    super();
    this.resnets = Array.from(
      { length: layers },
      (_, j) => new ResnetBlock2D(init, j === 0 ? inC : outC, outC, 0, groups, 1e-6, 1),
    );
    this.upsamplers = up ? [new Upsample2D(init, outC)] : null;
  }
  forward(x: Tensor, ck: boolean): Tensor {
    let h = x;
    for (const r of this.resnets) h = runBlock(ck, (t) => r.forward(t, null), [h]);
    if (this.upsamplers) h = runBlock(false, (t) => this.upsamplers![0].forward(t), [h]);
    return h;
  }
}

class Encoder extends Module {
  conv_in: Conv2d;
  down_blocks: DownEncoderBlock2D[];
  mid_block: VaeMidBlock;
  conv_norm_out: GroupNorm;
  conv_out: Conv2d;
  constructor(init: Init, c: VaeConfig) {
    super();
    const boc = c.block_out_channels;
    const g = c.norm_num_groups;
    this.conv_in = new Conv2d(init, c.in_channels, boc[0], 3, 1, 1);
    let out = boc[0];
    this.down_blocks = boc.map((ch, i) => {
      const inC = out;
      out = ch;
      return new DownEncoderBlock2D(init, inC, ch, c.layers_per_block, g, i !== boc.length - 1);
    });
    this.mid_block = new VaeMidBlock(init, boc[boc.length - 1], g);
    this.conv_norm_out = new GroupNorm(init, g, boc[boc.length - 1], 1e-6);
    this.conv_out = new Conv2d(init, boc[boc.length - 1], 2 * c.latent_channels, 3, 1, 1);
  }
  forward(x: Tensor, ck: boolean): Tensor {
    let h = this.conv_in.forward(x);
    for (const b of this.down_blocks) h = b.forward(h, ck);
    h = this.mid_block.forward(h, ck);
    return this.conv_out.forward(this.conv_norm_out.forward(h, true));
  }
}

class Decoder extends Module {
  conv_in: Conv2d;
  mid_block: VaeMidBlock;
  up_blocks: UpDecoderBlock2D[];
  conv_norm_out: GroupNorm;
  conv_out: Conv2d;
  constructor(init: Init, c: VaeConfig) {
    super();
    const rev = [...c.block_out_channels].reverse();
    const g = c.norm_num_groups;
    this.conv_in = new Conv2d(init, c.latent_channels, rev[0], 3, 1, 1);
    this.mid_block = new VaeMidBlock(init, rev[0], g);
    let out = rev[0];
    this.up_blocks = rev.map((ch, i) => {
      const prev = out;
      out = ch;
      return new UpDecoderBlock2D(init, prev, ch, c.layers_per_block + 1, g, i !== rev.length - 1);
    });
    this.conv_norm_out = new GroupNorm(init, g, rev[rev.length - 1], 1e-6);
    this.conv_out = new Conv2d(init, rev[rev.length - 1], c.out_channels, 3, 1, 1);
  }
  forward(z: Tensor, ck: boolean): Tensor {
    let h = this.conv_in.forward(z);
    h = this.mid_block.forward(h, ck);
    for (const b of this.up_blocks) h = b.forward(h, ck);
    return this.conv_out.forward(this.conv_norm_out.forward(h, true));
  }
}

export class AutoencoderKL extends Module {
  encoder: Encoder;
  decoder: Decoder;
  quant_conv: Conv2d;
  post_quant_conv: Conv2d;
  readonly checkpointing = { on: false };
  constructor(readonly config: VaeConfig, init: Init) {
    super();
    const l = config.latent_channels;
    this.encoder = new Encoder(init, config);
    this.decoder = new Decoder(init, config);
    this.quant_conv = new Conv2d(init, 2 * l, 2 * l, 1);
    this.post_quant_conv = new Conv2d(init, l, l, 1);
  }

  static create(gpu: Gpu, raw: Record<string, unknown>, seed = 0): AutoencoderKL {
    return new AutoencoderKL(resolveVaeConfig(raw), newInit(gpu, seed));
  }

  /** Images [B, 3, H, W] in [-1, 1] -> latent distribution {mean, logvar} [B, latent, H/f, W/f]. */
  encode(x: Tensor): { mean: Tensor; logvar: Tensor } {
    return tidy(() => {
      const m = this.quant_conv.forward(this.encoder.forward(x, this.checkpointing.on));
      const l = this.config.latent_channels;
      const [mean, logvar] = ops.split(m, [l, l], 1);
      return { mean, logvar: ops.clamp(logvar, -30, 20) };
    });
  }

  /** A sample of the latent distribution: mean + exp(logvar / 2) * N(0, 1) (seeded). */
  encodeSample(x: Tensor, seed: number): Tensor {
    return tidy(() => {
      const { mean, logvar } = this.encode(x);
      const eps = ops.randomNormal(x.gpu, mean.shape, { seed });
      return ops.add(mean, ops.mul(ops.exp(ops.scale(logvar, 0.5)), eps));
    });
  }

  /** Latents [B, latent, h, w] (already divided by the scaling factor) -> images in about [-1, 1]. */
  decode(z: Tensor): Tensor {
    return tidy(() => this.decoder.forward(this.post_quant_conv.forward(z), this.checkpointing.on));
  }

  /** The original's decode_latents: decode(z / scaling_factor), then (x / 2 + 0.5) clamped to [0, 1]. */
  decodeLatents(z: Tensor): Tensor {
    return tidy(() => {
      const x = this.decode(ops.scale(z, 1 / this.config.scaling_factor));
      return ops.clamp(ops.scale(x, 0.5, 0.5), 0, 1);
    });
  }
}

/** Renames the pre-0.14 diffusers VAE attention keys (query/key/value/proj_attn) to today's. */
export function renameLegacyVaeKey(k: string): string {
  return k.replace(/\.attentions\.0\.query\./, ".attentions.0.to_q.")
    .replace(/\.attentions\.0\.key\./, ".attentions.0.to_k.")
    .replace(/\.attentions\.0\.value\./, ".attentions.0.to_v.")
    .replace(/\.attentions\.0\.proj_attn\./, ".attentions.0.to_out.0.");
}
