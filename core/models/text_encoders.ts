/**
 * Text encoders of the pipelines: CLIPTextModel (Stable Diffusion; pre-LN, causal mask, final layer
 * norm) and RobertaSeriesModelWithTransformation (AltDiffusion's XLM-R; post-LN, padding-aware
 * positions, a linear projection). Names follow the transformers/diffusers checkpoints.
 * Attention here is explicit (77 tokens: the score matrix is tiny) so masks are simple to apply.
 */
import type { Gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { tidy } from "../tensor/scope.ts";
import { noGrad } from "../tensor/autograd.ts";
import { type Init, Module, newInit, parameter } from "../nn/module.ts";
import { LayerNorm, Linear } from "../nn/layers.ts";
import * as ops from "../ops.ts";
import { ConfigError } from "./unet2d_condition.ts";

/** A token embedding table [vocab, dim] (PyTorch init N(0, 1)). */
class Embedding extends Module {
  weight: Tensor;
  constructor(init: Init, n: number, d: number) {
    super();
    this.weight = parameter(init.gpu, [n, d], init.rng.normal(n * d));
  }
  forward(ids: Tensor): Tensor {
    return ops.embedding(ids, this.weight);
  }
}

/**
 * Additive attention bias [B, 1, L, L]: -inf-like where a key is padding (mask 0) or, when causal,
 * in the future. Built on the host: it depends only on the token mask.
 */
function attentionBias(
  gpu: Gpu,
  mask: Int32Array | null,
  B: number,
  L: number,
  causal: boolean,
): Tensor | null {
  if (!mask && !causal) return null;
  const NEG = -3.4028234663852886e38 / 2; // finite, so rows that are fully masked stay finite
  const bias = new Float32Array(B * L * L);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < L; i++) {
      for (let j = 0; j < L; j++) {
        let v = 0;
        if (causal && j > i) v = NEG;
        if (mask && mask[b * L + j] === 0) v = NEG;
        bias[(b * L + i) * L + j] = v;
      }
    }
  }
  return Tensor.from(gpu, bias, [B, 1, L, L]);
}

/** Multi-head attention over [B, L, D] with an additive bias, heads split explicitly. */
function maskedAttention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  heads: number,
  bias: Tensor | null,
): Tensor {
  const [B, L, D] = q.shape;
  const hd = D / heads;
  const split = (t: Tensor) => ops.permute(ops.reshape(t, [B, L, heads, hd]), [0, 2, 1, 3]);
  let s = ops.scale(ops.matmul(split(q), split(k), { transB: true }), 1 / Math.sqrt(hd));
  if (bias) s = ops.add(s, bias);
  const o = ops.matmul(ops.softmax(s), split(v));
  return ops.reshape(ops.permute(o, [0, 2, 1, 3]), [B, L, D]);
}

// ---------------------------------------------------------------- CLIP

export interface ClipTextConfig {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  max_position_embeddings: number;
  hidden_act: string;
  layer_norm_eps: number;
  [k: string]: unknown;
}

class ClipAttention extends Module {
  q_proj: Linear;
  k_proj: Linear;
  v_proj: Linear;
  out_proj: Linear;
  constructor(init: Init, d: number, readonly heads: number) {
    super();
    this.q_proj = new Linear(init, d, d);
    this.k_proj = new Linear(init, d, d);
    this.v_proj = new Linear(init, d, d);
    this.out_proj = new Linear(init, d, d);
  }
  forward(x: Tensor, bias: Tensor | null): Tensor {
    const a = maskedAttention(
      this.q_proj.forward(x),
      this.k_proj.forward(x),
      this.v_proj.forward(x),
      this.heads,
      bias,
    );
    return this.out_proj.forward(a);
  }
}

function activation(name: string, x: Tensor): Tensor {
  switch (name) {
    case "quick_gelu":
      return ops.mul(x, ops.sigmoid(ops.scale(x, 1.702)));
    case "gelu":
      return ops.gelu(x);
    case "gelu_new":
    case "gelu_pytorch_tanh":
      return ops.geluTanh(x);
    case "relu":
      return ops.relu(x);
    default:
      throw new ConfigError(`text encoder: unsupported hidden_act "${name}"`);
  }
}

class ClipMlp extends Module {
  fc1: Linear;
  fc2: Linear;
  constructor(init: Init, d: number, inner: number, readonly act: string) {
    super();
    this.fc1 = new Linear(init, d, inner);
    this.fc2 = new Linear(init, inner, d);
  }
  forward(x: Tensor): Tensor {
    return this.fc2.forward(activation(this.act, this.fc1.forward(x)));
  }
}

class ClipLayer extends Module {
  self_attn: ClipAttention;
  layer_norm1: LayerNorm;
  mlp: ClipMlp;
  layer_norm2: LayerNorm;
  constructor(init: Init, c: ClipTextConfig) {
    super();
    this.self_attn = new ClipAttention(init, c.hidden_size, c.num_attention_heads);
    this.layer_norm1 = new LayerNorm(init, c.hidden_size, c.layer_norm_eps);
    this.mlp = new ClipMlp(init, c.hidden_size, c.intermediate_size, c.hidden_act);
    this.layer_norm2 = new LayerNorm(init, c.hidden_size, c.layer_norm_eps);
  }
  forward(h: Tensor, bias: Tensor | null): Tensor {
    const h1 = ops.add(h, this.self_attn.forward(this.layer_norm1.forward(h), bias));
    return ops.add(h1, this.mlp.forward(this.layer_norm2.forward(h1)));
  }
}

class ClipEmbeddings extends Module {
  token_embedding: Embedding;
  position_embedding: Embedding;
  constructor(init: Init, c: ClipTextConfig) {
    super();
    this.token_embedding = new Embedding(init, c.vocab_size, c.hidden_size);
    this.position_embedding = new Embedding(init, c.max_position_embeddings, c.hidden_size);
  }
}

class ClipTransformer extends Module {
  embeddings: ClipEmbeddings;
  encoder: { layers: ClipLayer[] } & Module;
  final_layer_norm: LayerNorm;
  constructor(init: Init, c: ClipTextConfig) {
    super();
    this.embeddings = new ClipEmbeddings(init, c);
    const enc = new (class extends Module {
      layers = Array.from({ length: c.num_hidden_layers }, () => new ClipLayer(init, c));
    })();
    this.encoder = enc;
    this.final_layer_norm = new LayerNorm(init, c.hidden_size, c.layer_norm_eps);
  }
}

/** A text encoder: token ids (and mask) -> hidden states [B, L, D] for cross-attention. */
export interface TextEncoder extends Module {
  readonly hiddenSize: number;
  /** ids [B*L] (row-major), optional mask [B*L] (1 = token); returns [B, L, hiddenSize]. */
  encode(ids: Int32Array, mask: Int32Array | null, B: number, L: number): Tensor;
}

export class CLIPTextModel extends Module implements TextEncoder {
  text_model: ClipTransformer;
  constructor(readonly config: ClipTextConfig, init: Init) {
    super();
    this.text_model = new ClipTransformer(init, config);
  }
  static create(gpu: Gpu, raw: Record<string, unknown>, seed = 0): CLIPTextModel {
    const c = {
      vocab_size: 49408,
      hidden_size: 512,
      intermediate_size: 2048,
      num_hidden_layers: 12,
      num_attention_heads: 8,
      max_position_embeddings: 77,
      hidden_act: "quick_gelu",
      layer_norm_eps: 1e-5,
      ...raw,
    } as ClipTextConfig;
    return new CLIPTextModel(c, newInit(gpu, seed));
  }
  get hiddenSize(): number {
    return this.config.hidden_size;
  }
  encode(ids: Int32Array, mask: Int32Array | null, B: number, L: number): Tensor {
    const gpu = this.text_model.final_layer_norm.weight.gpu;
    checkIds(ids, B, L, this.config.vocab_size, this.config.max_position_embeddings);
    return tidy(() => {
      const tm = this.text_model;
      const idT = Tensor.from(gpu, ids, [B, L], "i32");
      const pos = Tensor.from(gpu, Int32Array.from({ length: L }, (_, i) => i), [1, L], "i32");
      let h = ops.add(
        tm.embeddings.token_embedding.forward(idT),
        tm.embeddings.position_embedding.forward(pos),
      );
      const bias = attentionBias(gpu, mask, B, L, true);
      for (const layer of tm.encoder.layers) h = tidy(() => layer.forward(h, bias));
      return tm.final_layer_norm.forward(h);
    });
  }
}

// ---------------------------------------------------------------- XLM-R (AltDiffusion)

export interface RobertaSeriesConfig {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  max_position_embeddings: number;
  type_vocab_size: number;
  hidden_act: string;
  layer_norm_eps: number;
  pad_token_id: number;
  project_dim: number;
  has_pre_transformation: boolean;
  [k: string]: unknown;
}

class RobertaSelfAttention extends Module {
  query: Linear;
  key: Linear;
  value: Linear;
  constructor(init: Init, d: number) {
    super();
    this.query = new Linear(init, d, d);
    this.key = new Linear(init, d, d);
    this.value = new Linear(init, d, d);
  }
}

class RobertaDenseNorm extends Module {
  dense: Linear;
  LayerNorm: LayerNorm;
  constructor(init: Init, inD: number, d: number, eps: number) {
    super();
    this.dense = new Linear(init, inD, d);
    this.LayerNorm = new LayerNorm(init, d, eps);
  }
  /** LayerNorm(dense(x) + residual): the post-LN sublayer output. */
  forward(x: Tensor, residual: Tensor): Tensor {
    return this.LayerNorm.forward(ops.add(this.dense.forward(x), residual));
  }
}

class RobertaLayer extends Module {
  attention: { self: RobertaSelfAttention; output: RobertaDenseNorm } & Module;
  intermediate: { dense: Linear } & Module;
  output: RobertaDenseNorm;
  constructor(init: Init, private readonly c: RobertaSeriesConfig) {
    super();
    const d = c.hidden_size;
    this.attention = new (class extends Module {
      self = new RobertaSelfAttention(init, d);
      output = new RobertaDenseNorm(init, d, d, c.layer_norm_eps);
    })();
    this.intermediate = new (class extends Module {
      dense = new Linear(init, d, c.intermediate_size);
    })();
    this.output = new RobertaDenseNorm(init, c.intermediate_size, d, c.layer_norm_eps);
  }
  forward(h: Tensor, bias: Tensor | null): Tensor {
    const s = this.attention.self;
    const a = maskedAttention(
      s.query.forward(h),
      s.key.forward(h),
      s.value.forward(h),
      this.c.num_attention_heads,
      bias,
    );
    const h1 = this.attention.output.forward(a, h);
    const inter = activation(this.c.hidden_act, this.intermediate.dense.forward(h1));
    return this.output.forward(inter, h1);
  }
}

class RobertaEmbeddings extends Module {
  word_embeddings: Embedding;
  position_embeddings: Embedding;
  token_type_embeddings: Embedding;
  LayerNorm: LayerNorm;
  constructor(init: Init, c: RobertaSeriesConfig) {
    super();
    this.word_embeddings = new Embedding(init, c.vocab_size, c.hidden_size);
    this.position_embeddings = new Embedding(init, c.max_position_embeddings, c.hidden_size);
    this.token_type_embeddings = new Embedding(init, c.type_vocab_size, c.hidden_size);
    this.LayerNorm = new LayerNorm(init, c.hidden_size, c.layer_norm_eps);
  }
}

class RobertaModel extends Module {
  embeddings: RobertaEmbeddings;
  encoder: { layer: RobertaLayer[] } & Module;
  constructor(init: Init, c: RobertaSeriesConfig) {
    super();
    this.embeddings = new RobertaEmbeddings(init, c);
    this.encoder = new (class extends Module {
      layer = Array.from({ length: c.num_hidden_layers }, () => new RobertaLayer(init, c));
    })();
  }
}

export class RobertaSeriesModelWithTransformation extends Module implements TextEncoder {
  roberta: RobertaModel;
  /** Always present in checkpoints, used only without pre-transformation. */
  transformation: Linear;
  transformation_pre: Linear | null;
  pre_LN: LayerNorm | null;
  constructor(readonly config: RobertaSeriesConfig, init: Init) {
    super();
    this.roberta = new RobertaModel(init, config);
    const pre = config.has_pre_transformation;
    this.transformation = new Linear(init, config.hidden_size, config.project_dim);
    this.transformation_pre = pre ? new Linear(init, config.hidden_size, config.project_dim) : null;
    this.pre_LN = pre ? new LayerNorm(init, config.hidden_size, config.layer_norm_eps) : null;
  }
  static create(
    gpu: Gpu,
    raw: Record<string, unknown>,
    seed = 0,
  ): RobertaSeriesModelWithTransformation {
    const c = {
      vocab_size: 250002,
      hidden_size: 1024,
      intermediate_size: 4096,
      num_hidden_layers: 24,
      num_attention_heads: 16,
      max_position_embeddings: 514,
      type_vocab_size: 1,
      hidden_act: "gelu",
      layer_norm_eps: 1e-5,
      pad_token_id: 1,
      project_dim: 768,
      has_pre_transformation: false,
      ...raw,
    } as RobertaSeriesConfig;
    return new RobertaSeriesModelWithTransformation(c, newInit(gpu, seed));
  }
  get hiddenSize(): number {
    return this.config.project_dim;
  }
  encode(ids: Int32Array, mask: Int32Array | null, B: number, L: number): Tensor {
    const c = this.config;
    const gpu = this.roberta.embeddings.LayerNorm.weight.gpu;
    checkIds(ids, B, L, c.vocab_size, Infinity);
    // RoBERTa positions count non-padding tokens from padding_idx + 1; padding keeps padding_idx.
    const pos = new Int32Array(B * L);
    for (let b = 0; b < B; b++) {
      let n = 0;
      for (let i = 0; i < L; i++) {
        const real = ids[b * L + i] !== c.pad_token_id;
        if (real) n++;
        pos[b * L + i] = real ? n + c.pad_token_id : c.pad_token_id;
      }
    }
    if (Math.max(...pos) >= c.max_position_embeddings) {
      throw new ConfigError(
        `text encoder: ${L} tokens exceed max_position_embeddings ${c.max_position_embeddings}`,
      );
    }
    return tidy(() => {
      const e = this.roberta.embeddings;
      const idT = Tensor.from(gpu, ids, [B, L], "i32");
      const posT = Tensor.from(gpu, pos, [B, L], "i32");
      const typ = Tensor.from(gpu, new Int32Array(B * L), [B, L], "i32");
      let h = ops.add(
        ops.add(e.word_embeddings.forward(idT), e.position_embeddings.forward(posT)),
        e.token_type_embeddings.forward(typ),
      );
      h = e.LayerNorm.forward(h);
      const bias = attentionBias(gpu, mask, B, L, false);
      const layers = this.roberta.encoder.layer;
      let penultimate: Tensor | null = null;
      layers.forEach((layer, i) => {
        if (i === layers.length - 1) penultimate = h;
        h = tidy(() => layer.forward(h, bias));
      });
      if (c.has_pre_transformation) {
        return this.transformation_pre!.forward(this.pre_LN!.forward(penultimate!));
      }
      return this.transformation.forward(h);
    });
  }
}

function checkIds(ids: Int32Array, B: number, L: number, vocab: number, maxPos: number): void {
  if (ids.length !== B * L) {
    throw new ConfigError(`text encoder: ${ids.length} ids do not fill [${B}, ${L}]`);
  }
  if (L > maxPos) {
    throw new ConfigError(`text encoder: ${L} tokens exceed max_position_embeddings ${maxPos}`);
  }
  for (const id of ids) {
    if (id < 0 || id >= vocab) {
      throw new ConfigError(`text encoder: token id ${id} outside the vocabulary (${vocab})`);
    }
  }
}

/** Keys that transformers checkpoints hold but that are buffers or unused heads, not parameters. */
export const IGNORED_TEXT_KEYS = (k: string): boolean =>
  k.endsWith("position_ids") || k.startsWith("roberta.pooler.") || k.startsWith("lm_head.");

/**
 * Builds the text encoder a `text_encoder/config.json` names (its `architectures` or
 * `model_type`): CLIPTextModel or RobertaSeriesModelWithTransformation; `where` names the config
 * in errors.
 */
export function createTextEncoder(
  gpu: Gpu,
  cfg: Record<string, unknown>,
  where: string,
): TextEncoder {
  const arch = String((cfg.architectures as string[] | undefined)?.[0] ?? cfg.model_type ?? "");
  if (/CLIPTextModel|clip_text_model/.test(arch)) return CLIPTextModel.create(gpu, cfg);
  if (/RobertaSeries|roberta/i.test(arch)) {
    return RobertaSeriesModelWithTransformation.create(gpu, cfg);
  }
  throw new Error(
    `${where}: unsupported text encoder architecture "${arch}" ` +
      `(CLIPTextModel or RobertaSeriesModelWithTransformation)`,
  );
}

export { noGrad };
