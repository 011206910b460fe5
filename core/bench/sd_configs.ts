/**
 * Model configs of the pipelines the tool is for, as their diffusers folders' config.json files
 * give them (values written here from runwayml/stable-diffusion-v1-5, stabilityai/
 * stable-diffusion-2-1 and BAAI/AltDiffusion; the benchmarks build random weights from them, so only
 * the shapes matter), and the `small` scale that shrinks them for a CPU smoke test while keeping
 * every block type, level count and layer count.
 *
 * Note diffusers' naming: SD 1.x's `attention_head_dim: 8` is the number of heads (head dim
 * 320/8 = 40 at the first level); SD 2.1's [5, 10, 20, 20] gives 64-dim heads everywhere.
 */

/** SD 1.x UNet block types (SD 2.1 and AltDiffusion use the same). */
const DOWN = [
  "CrossAttnDownBlock2D",
  "CrossAttnDownBlock2D",
  "CrossAttnDownBlock2D",
  "DownBlock2D",
];
const UP = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"];

const UNET_COMMON = {
  act_fn: "silu",
  block_out_channels: [320, 640, 1280, 1280],
  center_input_sample: false,
  down_block_types: DOWN,
  downsample_padding: 1,
  flip_sin_to_cos: true,
  freq_shift: 0,
  in_channels: 4,
  layers_per_block: 2,
  mid_block_scale_factor: 1,
  norm_eps: 1e-5,
  norm_num_groups: 32,
  out_channels: 4,
  up_block_types: UP,
};

/** runwayml/stable-diffusion-v1-5 unet/config.json (860 M parameters). */
export const SD15_UNET: Record<string, unknown> = {
  ...UNET_COMMON,
  attention_head_dim: 8,
  cross_attention_dim: 768,
  sample_size: 64,
};

/** stabilityai/stable-diffusion-2-1 unet/config.json (865 M parameters; 768 px, v-prediction). */
export const SD21_UNET: Record<string, unknown> = {
  ...UNET_COMMON,
  attention_head_dim: [5, 10, 20, 20],
  cross_attention_dim: 1024,
  dual_cross_attention: false,
  num_class_embeds: null,
  only_cross_attention: false,
  sample_size: 96,
  use_linear_projection: true,
  upcast_attention: true,
};

/** BAAI/AltDiffusion unet/config.json (SD 1.4's UNet under an XLM-R text encoder). */
export const ALT_UNET: Record<string, unknown> = {
  ...UNET_COMMON,
  attention_head_dim: 8,
  cross_attention_dim: 768,
  sample_size: 64,
};

/** The SD 1.x / 2.x VAE (vae/config.json; 83 M parameters, 8x upsampling). */
export const SD_VAE: Record<string, unknown> = {
  act_fn: "silu",
  block_out_channels: [128, 256, 512, 512],
  down_block_types: Array(4).fill("DownEncoderBlock2D"),
  in_channels: 3,
  latent_channels: 4,
  layers_per_block: 2,
  norm_num_groups: 32,
  out_channels: 3,
  sample_size: 512,
  scaling_factor: 0.18215,
  up_block_types: Array(4).fill("UpDecoderBlock2D"),
};

/** SD 1.5's text encoder: CLIP ViT-L/14's text tower (123 M parameters). */
export const SD15_TEXT: Record<string, unknown> = {
  architectures: ["CLIPTextModel"],
  hidden_act: "quick_gelu",
  hidden_size: 768,
  intermediate_size: 3072,
  layer_norm_eps: 1e-5,
  max_position_embeddings: 77,
  num_attention_heads: 12,
  num_hidden_layers: 12,
  vocab_size: 49408,
};

/** SD 2.1's text encoder: OpenCLIP ViT-H/14's text tower, 23 of its 24 layers (340 M). */
export const SD21_TEXT: Record<string, unknown> = {
  architectures: ["CLIPTextModel"],
  hidden_act: "gelu",
  hidden_size: 1024,
  intermediate_size: 4096,
  layer_norm_eps: 1e-5,
  max_position_embeddings: 77,
  num_attention_heads: 16,
  num_hidden_layers: 23,
  vocab_size: 49408,
};

/** AltDiffusion's text encoder: XLM-R large with a projection to 768 (560 M). */
export const ALT_TEXT: Record<string, unknown> = {
  architectures: ["RobertaSeriesModelWithTransformation"],
  hidden_act: "gelu",
  hidden_size: 1024,
  intermediate_size: 4096,
  layer_norm_eps: 1e-5,
  max_position_embeddings: 514,
  model_type: "roberta",
  num_attention_heads: 16,
  num_hidden_layers: 24,
  pad_token_id: 1,
  project_dim: 768,
  type_vocab_size: 1,
  vocab_size: 250002,
};

/** scheduler/scheduler_config.json fields DPM-Solver reads (SD 1.5; SD 2.1 predicts v). */
export const SD15_SCHEDULER: Record<string, unknown> = {
  beta_end: 0.012,
  beta_schedule: "scaled_linear",
  beta_start: 0.00085,
  num_train_timesteps: 1000,
  prediction_type: "epsilon",
  steps_offset: 1,
};

/** One pipeline's components. */
export interface SdModel {
  /** Short name used in benchmark rows ("sd15", "sd21", "alt"). */
  name: string;
  unet: Record<string, unknown>;
  vae: Record<string, unknown>;
  text: Record<string, unknown>;
  scheduler: Record<string, unknown>;
  /** Latent side the benchmarks run at (64: 512x512 images) and caption tokens. */
  latent: number;
  tokens: number;
}

/** The three pipelines at full size, all benchmarked at 64x64 latents (512x512 images). */
export const SD_MODELS: readonly SdModel[] = [
  {
    name: "sd15",
    unet: SD15_UNET,
    vae: SD_VAE,
    text: SD15_TEXT,
    scheduler: SD15_SCHEDULER,
    latent: 64,
    tokens: 77,
  },
  {
    name: "sd21",
    unet: SD21_UNET,
    vae: SD_VAE,
    text: SD21_TEXT,
    scheduler: { ...SD15_SCHEDULER, prediction_type: "v_prediction" },
    latent: 64,
    tokens: 77,
  },
  {
    name: "alt",
    unet: ALT_UNET,
    vae: SD_VAE,
    text: ALT_TEXT,
    scheduler: SD15_SCHEDULER,
    latent: 64,
    tokens: 77,
  },
];

/** Benchmark scales: the models as published, or shrunk for a CPU smoke test. */
export type SdScale = "full" | "small";

/**
 * The smoke-test version of a pipeline: channels divided down (UNet 32/64/64/64 with 8 groups, so
 * 4- and 8-dim heads; VAE 32/32/64/64 keeping its single-head mid attention; text encoders of width
 * 32 and 2 layers with a 1000-token vocabulary) and 8x8 latents (64x64 images). Block types,
 * levels, layers per block, head counts, the 77-token context and the cross-attention structure
 * are kept, so the same code paths run, with the same dispatch structure as at full size.
 */
export function scaleModel(m: SdModel, scale: SdScale): SdModel {
  if (scale === "full") return m;
  const heads = m.unet.attention_head_dim;
  const unet: Record<string, unknown> = {
    ...m.unet,
    block_out_channels: [32, 64, 64, 64],
    norm_num_groups: 8,
    cross_attention_dim: 32,
    // Keep the head count where it divides the narrow channels (SD 2.1's 5/10/20 heads do not).
    attention_head_dim: Array.isArray(heads) ? [4, 8, 8, 8] : heads,
    sample_size: 8,
  };
  const vae = {
    ...m.vae,
    block_out_channels: [32, 32, 64, 64],
    norm_num_groups: 8,
    sample_size: 64,
  };
  const text = {
    ...m.text,
    hidden_size: 32,
    intermediate_size: 64,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    vocab_size: 1000,
    ...(m.text.project_dim !== undefined ? { project_dim: 32 } : {}),
  };
  return { ...m, unet, vae, text, latent: 8 };
}
