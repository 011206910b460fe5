/**
 * The UNet's attention parts, as diffusers names them: Attention (to_q/to_k/to_v/to_out.0),
 * FeedForward with GEGLU (ff.net.0.proj, ff.net.2), BasicTransformerBlock, Transformer2DModel.
 */
import type { Tensor } from "../tensor/tensor.ts";
import { type Init, Module } from "./module.ts";
import { Conv2d, GroupNorm, LayerNorm, Linear } from "./layers.ts";
import * as ops from "../ops.ts";

export class Attention extends Module {
  to_q: Linear;
  to_k: Linear;
  to_v: Linear;
  /** [Linear, Dropout]: index 1 has no parameters. */
  to_out: [Linear, null];
  constructor(
    init: Init,
    queryDim: number,
    readonly heads: number,
    readonly dimHead: number,
    crossDim: number | null,
  ) {
    super();
    const inner = heads * dimHead;
    this.to_q = new Linear(init, queryDim, inner, false);
    this.to_k = new Linear(init, crossDim ?? queryDim, inner, false);
    this.to_v = new Linear(init, crossDim ?? queryDim, inner, false);
    this.to_out = [new Linear(init, inner, queryDim, true), null];
  }
  /** x [B, L, query_dim]; context [B, Lk, cross_dim] or null for self-attention. */
  forward(x: Tensor, context: Tensor | null): Tensor {
    const ctx = context ?? x;
    const q = this.to_q.forward(x);
    const k = this.to_k.forward(ctx);
    const v = this.to_v.forward(ctx);
    const a = ops.attention(q, k, v, { heads: this.heads, scale: 1 / Math.sqrt(this.dimHead) });
    return this.to_out[0].forward(a);
  }
}

class GEGLUProj extends Module {
  proj: Linear;
  constructor(init: Init, dim: number, inner: number) {
    super();
    this.proj = new Linear(init, dim, inner * 2);
  }
  forward(x: Tensor): Tensor {
    return ops.geglu(this.proj.forward(x));
  }
}

export class FeedForward extends Module {
  net: [GEGLUProj, null, Linear];
  constructor(init: Init, dim: number, mult = 4) {
    super();
    const inner = dim * mult;
    this.net = [new GEGLUProj(init, dim, inner), null, new Linear(init, inner, dim)];
  }
  forward(x: Tensor): Tensor {
    return this.net[2].forward(this.net[0].forward(x));
  }
}

export class BasicTransformerBlock extends Module {
  norm1: LayerNorm;
  attn1: Attention;
  norm2: LayerNorm;
  attn2: Attention;
  norm3: LayerNorm;
  ff: FeedForward;
  constructor(
    init: Init,
    dim: number,
    heads: number,
    dimHead: number,
    crossDim: number,
    readonly onlyCross: boolean,
  ) {
    super();
    this.norm1 = new LayerNorm(init, dim);
    this.attn1 = new Attention(init, dim, heads, dimHead, onlyCross ? crossDim : null);
    this.norm2 = new LayerNorm(init, dim);
    this.attn2 = new Attention(init, dim, heads, dimHead, crossDim);
    this.norm3 = new LayerNorm(init, dim);
    this.ff = new FeedForward(init, dim);
  }
  forward(h: Tensor, context: Tensor): Tensor {
    const a1 = this.attn1.forward(this.norm1.forward(h), this.onlyCross ? context : null);
    const h1 = ops.add(a1, h);
    const h2 = ops.add(this.attn2.forward(this.norm2.forward(h1), context), h1);
    return ops.add(this.ff.forward(this.norm3.forward(h2)), h2);
  }
}

export interface TransformerOpts {
  heads: number;
  dimHead: number;
  inChannels: number;
  layers: number;
  crossDim: number;
  groups: number;
  linearProjection: boolean;
  onlyCross: boolean;
}

export class Transformer2DModel extends Module {
  norm: GroupNorm;
  proj_in: Conv2d | Linear;
  transformer_blocks: BasicTransformerBlock[];
  proj_out: Conv2d | Linear;
  constructor(init: Init, private readonly o: TransformerOpts) {
    super();
    const inner = o.heads * o.dimHead;
    this.norm = new GroupNorm(init, o.groups, o.inChannels, 1e-6);
    this.proj_in = o.linearProjection
      ? new Linear(init, o.inChannels, inner)
      : new Conv2d(init, o.inChannels, inner, 1);
    this.transformer_blocks = Array.from(
      { length: o.layers },
      () => new BasicTransformerBlock(init, inner, o.heads, o.dimHead, o.crossDim, o.onlyCross),
    );
    this.proj_out = o.linearProjection
      ? new Linear(init, inner, o.inChannels)
      : new Conv2d(init, inner, o.inChannels, 1);
  }
  /** x [B, C, H, W], context [B, L, cross_dim]. */
  forward(x: Tensor, context: Tensor): Tensor {
    const [B, C, H, W] = x.shape;
    const inner = this.o.heads * this.o.dimHead;
    const normed = ops.reshape(this.norm.forward(x), [B, C, H * W]);
    // proj_in (a Linear, or a 1x1 Conv2d: the same [inner, C] matrix) straight into token layout:
    // tokens[b] = normed[b]^T W^T, one GEMM instead of a permute and a projection.
    const w = this.proj_in.weight;
    let h = ops.matmul(normed, ops.reshape(w, [inner, C]), {
      transA: true,
      transB: true,
      bias: this.proj_in.bias ?? undefined,
    });
    for (const blk of this.transformer_blocks) h = blk.forward(h, context);
    let out: Tensor;
    const toImage = (t: Tensor, ch: number) =>
      ops.permute(ops.reshape(t, [B, H, W, ch]), [0, 3, 1, 2]);
    if (this.o.linearProjection) out = toImage(this.proj_out.forward(h), C);
    else out = this.proj_out.forward(toImage(h, inner));
    return ops.add(out, x);
  }
}
