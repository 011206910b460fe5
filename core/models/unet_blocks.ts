/**
 * The UNet's down, mid and up blocks, named as diffusers' checkpoints name them: ResnetBlock2D,
 * Downsample2D, Upsample2D, CrossAttnDownBlock2D / DownBlock2D, UNetMidBlock2DCrossAttn,
 * CrossAttnUpBlock2D / UpBlock2D.
 */
import type { Tensor } from "../tensor/tensor.ts";
import { tidy } from "../tensor/scope.ts";
import { checkpoint } from "../tensor/checkpoint.ts";
import { type Init, Module } from "../nn/module.ts";
import { Conv2d, GroupNorm, Linear } from "../nn/layers.ts";
import { Transformer2DModel, type TransformerOpts } from "../nn/transformer.ts";
import * as ops from "../ops.ts";

/** Runs a block in its own memory scope, checkpointed when asked. */
export function runBlock(ckpt: boolean, fn: (...xs: Tensor[]) => Tensor, xs: Tensor[]): Tensor {
  return tidy(() => (ckpt ? checkpoint(fn, xs) : fn(...xs)));
}

export class ResnetBlock2D extends Module {
  norm1: GroupNorm;
  conv1: Conv2d;
  time_emb_proj: Linear | null;
  norm2: GroupNorm;
  conv2: Conv2d;
  conv_shortcut: Conv2d | null;
  constructor(
    init: Init,
    inC: number,
    outC: number,
    tembC: number,
    groups: number,
    eps: number,
    readonly outputScale: number,
  ) {
    super();
    this.norm1 = new GroupNorm(init, groups, inC, eps);
    this.conv1 = new Conv2d(init, inC, outC, 3, 1, 1);
    // The VAE's resnets have no time embedding (tembC = 0).
    this.time_emb_proj = tembC > 0 ? new Linear(init, tembC, outC) : null;
    this.norm2 = new GroupNorm(init, groups, outC, eps);
    this.conv2 = new Conv2d(init, outC, outC, 3, 1, 1);
    this.conv_shortcut = inC !== outC ? new Conv2d(init, inC, outC, 1) : null;
  }
  /**
   * `temb` is the time embedding after SiLU: diffusers applies the same SiLU in every resnet, the
   * UNet here once per forward (one dispatch instead of one per resnet).
   */
  forward(x: Tensor, temb: Tensor | null): Tensor {
    let h = this.conv1.forward(this.norm1.forward(x, true));
    if (this.time_emb_proj && temb) {
      const t = this.time_emb_proj.forward(temb);
      h = ops.add(h, ops.reshape(t, [t.shape[0], t.shape[1], 1, 1]));
    }
    h = this.conv2.forward(this.norm2.forward(h, true));
    const skip = this.conv_shortcut ? this.conv_shortcut.forward(x) : x;
    const sum = ops.add(skip, h);
    return this.outputScale === 1 ? sum : ops.scale(sum, 1 / this.outputScale);
  }
}

export class Downsample2D extends Module {
  conv: Conv2d;
  constructor(init: Init, ch: number, padding: number) {
    super();
    this.conv = new Conv2d(init, ch, ch, 3, 2, padding);
  }
  forward(x: Tensor): Tensor {
    return this.conv.forward(x);
  }
}

export class Upsample2D extends Module {
  conv: Conv2d;
  constructor(init: Init, ch: number) {
    super();
    this.conv = new Conv2d(init, ch, ch, 3, 1, 1);
  }
  forward(x: Tensor, size?: [number, number]): Tensor {
    const [, , H, W] = x.shape;
    const up = ops.interpolateNearest(x, size?.[0] ?? 2 * H, size?.[1] ?? 2 * W);
    return this.conv.forward(up);
  }
}

/** Settings shared by every block of one UNet. */
export interface BlockCommon {
  tembC: number;
  groups: number;
  eps: number;
  crossDim: number;
  linearProjection: boolean;
  onlyCross: boolean;
  transformerLayers: number;
  /** Recompute block activations in backward (gradient checkpointing). */
  checkpointing: { on: boolean };
}

function transformerOpts(c: BlockCommon, ch: number, heads: number): TransformerOpts {
  return {
    heads,
    dimHead: Math.floor(ch / heads),
    inChannels: ch,
    layers: c.transformerLayers,
    crossDim: c.crossDim,
    groups: c.groups,
    linearProjection: c.linearProjection,
    onlyCross: c.onlyCross,
  };
}

export class DownBlock extends Module {
  resnets: ResnetBlock2D[];
  attentions: Transformer2DModel[] | null;
  downsamplers: Downsample2D[] | null;
  constructor(
    init: Init,
    private readonly c: BlockCommon,
    inC: number,
    outC: number,
    layers: number,
    heads: number | null,
    addDownsample: boolean,
    downsamplePadding: number,
  ) {
    super();
    this.resnets = Array.from(
      { length: layers },
      (_, j) => new ResnetBlock2D(init, j === 0 ? inC : outC, outC, c.tembC, c.groups, c.eps, 1),
    );
    this.attentions = heads === null ? null : Array.from(
      { length: layers },
      () => new Transformer2DModel(init, transformerOpts(c, outC, heads)),
    );
    this.downsamplers = addDownsample ? [new Downsample2D(init, outC, downsamplePadding)] : null;
  }
  /** Returns the block output and the skip states it adds. */
  forward(h: Tensor, temb: Tensor, ctx: Tensor): { h: Tensor; skips: Tensor[] } {
    const ck = this.c.checkpointing.on;
    const skips: Tensor[] = [];
    this.resnets.forEach((r, j) => {
      h = runBlock(ck, (x, t) => r.forward(x, t), [h, temb]);
      const attn = this.attentions?.[j];
      if (attn) h = runBlock(ck, (x, c) => attn.forward(x, c), [h, ctx]);
      skips.push(h);
    });
    if (this.downsamplers) {
      const d = this.downsamplers[0];
      h = runBlock(false, (x) => d.forward(x), [h]);
      skips.push(h);
    }
    return { h, skips };
  }
}

export class MidBlock extends Module {
  resnets: ResnetBlock2D[];
  attentions: Transformer2DModel[];
  constructor(
    init: Init,
    private readonly c: BlockCommon,
    ch: number,
    heads: number,
    scale: number,
  ) {
    super();
    this.resnets = [0, 1].map(() =>
      new ResnetBlock2D(init, ch, ch, c.tembC, c.groups, c.eps, scale)
    );
    this.attentions = [new Transformer2DModel(init, transformerOpts(c, ch, heads))];
  }
  forward(h: Tensor, temb: Tensor, ctx: Tensor): Tensor {
    const ck = this.c.checkpointing.on;
    h = runBlock(ck, (x, t) => this.resnets[0].forward(x, t), [h, temb]);
    h = runBlock(ck, (x, c) => this.attentions[0].forward(x, c), [h, ctx]);
    return runBlock(ck, (x, t) => this.resnets[1].forward(x, t), [h, temb]);
  }
}

export class UpBlock extends Module {
  resnets: ResnetBlock2D[];
  attentions: Transformer2DModel[] | null;
  upsamplers: Upsample2D[] | null;
  constructor(
    init: Init,
    private readonly c: BlockCommon,
    inC: number,
    outC: number,
    prevOutC: number,
    layers: number,
    heads: number | null,
    addUpsample: boolean,
  ) {
    super();
    this.resnets = Array.from({ length: layers }, (_, j) => {
      const skipC = j === layers - 1 ? inC : outC;
      const resIn = j === 0 ? prevOutC : outC;
      return new ResnetBlock2D(init, resIn + skipC, outC, c.tembC, c.groups, c.eps, 1);
    });
    this.attentions = heads === null ? null : Array.from(
      { length: layers },
      () => new Transformer2DModel(init, transformerOpts(c, outC, heads)),
    );
    this.upsamplers = addUpsample ? [new Upsample2D(init, outC)] : null;
  }
  /** `skips` are consumed from the end, as diffusers pops res_hidden_states_tuple. */
  forward(
    h: Tensor,
    temb: Tensor,
    ctx: Tensor,
    skips: Tensor[],
    upSize?: [number, number],
  ): Tensor {
    const ck = this.c.checkpointing.on;
    this.resnets.forEach((r, j) => {
      const skip = skips.pop()!;
      h = runBlock(ck, (x, s, t) => r.forward(ops.concat([x, s], 1), t), [h, skip, temb]);
      const attn = this.attentions?.[j];
      if (attn) h = runBlock(ck, (x, c) => attn.forward(x, c), [h, ctx]);
    });
    if (this.upsamplers) {
      const u = this.upsamplers[0];
      h = runBlock(false, (x) => u.forward(x, upSize), [h]);
    }
    return h;
  }
}
