/**
 * The configs of the tiny test pipeline (core/generate/tiny_pipeline.ts writes them with random
 * weights); data only, so config-level tests need no model code.
 *
 * @module
 */

/** The tiny UNet's config.json. */
export const TINY_UNET_CONFIG = {
  _class_name: "UNet2DConditionModel",
  _diffusers_version: "0.26.3",
  sample_size: 16,
  in_channels: 4,
  out_channels: 4,
  center_input_sample: false,
  flip_sin_to_cos: true,
  freq_shift: 0,
  down_block_types: ["CrossAttnDownBlock2D", "DownBlock2D"],
  mid_block_type: "UNetMidBlock2DCrossAttn",
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D"],
  only_cross_attention: false,
  block_out_channels: [32, 64],
  layers_per_block: 1,
  downsample_padding: 1,
  mid_block_scale_factor: 1,
  act_fn: "silu",
  norm_num_groups: 32,
  norm_eps: 1e-5,
  cross_attention_dim: 32,
  attention_head_dim: 8,
  use_linear_projection: false,
  upcast_attention: false,
};

/** The tiny CLIP text encoder's config.json (vocabulary of the CLIP tokenizer fixture). */
export const TINY_TEXT_CONFIG = {
  architectures: ["CLIPTextModel"],
  model_type: "clip_text_model",
  vocab_size: 1049,
  hidden_size: 32,
  intermediate_size: 64,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  max_position_embeddings: 77,
  hidden_act: "quick_gelu",
  layer_norm_eps: 1e-5,
  bos_token_id: 1047,
  eos_token_id: 1048,
  pad_token_id: 1048,
  projection_dim: 32,
  torch_dtype: "float32",
};

/** Stable Diffusion 1.x's scheduler_config.json (PNDM; DPM-Solver reads the same fields). */
export const SD_SCHEDULER_CONFIG = {
  _class_name: "PNDMScheduler",
  _diffusers_version: "0.6.0",
  beta_end: 0.012,
  beta_schedule: "scaled_linear",
  beta_start: 0.00085,
  num_train_timesteps: 1000,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  trained_betas: null,
  clip_sample: false,
};

export const TINY_MODEL_INDEX = {
  _class_name: "StableDiffusionPipeline",
  _diffusers_version: "0.26.3",
  feature_extractor: [null, null],
  requires_safety_checker: false,
  safety_checker: [null, null],
  scheduler: ["diffusers", "PNDMScheduler"],
  text_encoder: ["transformers", "CLIPTextModel"],
  tokenizer: ["transformers", "CLIPTokenizer"],
  unet: ["diffusers", "UNet2DConditionModel"],
  vae: [null, null],
};
