/**
 * The tiny text-to-image teacher shipped in `models/tiny_teacher/` (diffusers folder layout, pixel
 * space: no `vae/`, the identity codec): a CLIP BPE tokenizer whose vocabulary is the shapes data
 * set's words, a frozen random 2-layer CLIP text encoder of width 32, a two-level UNet on 3x12x12
 * pixels (attention at the low level only), and Stable Diffusion's noise schedule for
 * DPM-Solver++. Its UNet is trained by the train job's diffusion objective on the shapes data set
 * (shapes.ts); `scripts/teacher.ts` does all of it.
 *
 * @module
 */

import { join } from "node:path";
import type { Gpu } from "../gpu/device.ts";
import { UNet2DConditionModel } from "../models/unet2d_condition.ts";
import { CLIPTextModel } from "../models/text_encoders.ts";
import { saveModule } from "../models/load.ts";
import { writeFileAtomic } from "../data/atomic_write.ts";
import { writeCaptions } from "../data/captions.ts";
import { pairPaths, writePairNpy } from "../data/pair_store.ts";
import { f32ToF16Bits } from "../io/half.ts";
import { philoxNormal } from "../tensor/philox.ts";
import { BYTE_TO_UNICODE } from "../models/tokenizers/byte_unicode.ts";
import { ClipTokenizer } from "../models/tokenizers/clip.ts";
import { readFolderConfig } from "../models/tokenizers/config.ts";
import { folderFiles } from "../models/tokenizers/folder_files.ts";
import { getConfig as getTrainConfig, type TrainConfig } from "../../configs/train.ts";
import { allCaptions, CHANNELS, IMAGE_SIZE, shapeSample } from "./shapes.ts";

/** Longest caption ("a magenta triangle on the right") plus bos and eos. */
export const MAX_TOKENS = 8;

/** unet/config.json of the tiny teacher. */
export const TEACHER_UNET_CONFIG = {
  _class_name: "UNet2DConditionModel",
  _diffusers_version: "0.26.3",
  sample_size: IMAGE_SIZE,
  in_channels: CHANNELS,
  out_channels: CHANNELS,
  center_input_sample: false,
  flip_sin_to_cos: true,
  freq_shift: 0,
  down_block_types: ["DownBlock2D", "CrossAttnDownBlock2D"],
  mid_block_type: "UNetMidBlock2DCrossAttn",
  up_block_types: ["CrossAttnUpBlock2D", "UpBlock2D"],
  only_cross_attention: false,
  block_out_channels: [16, 32],
  layers_per_block: 1,
  downsample_padding: 1,
  mid_block_scale_factor: 1,
  act_fn: "silu",
  norm_num_groups: 8,
  norm_eps: 1e-5,
  cross_attention_dim: 32,
  attention_head_dim: 4,
  use_linear_projection: false,
  upcast_attention: false,
};

/** text_encoder/config.json (vocab_size is filled in from the tokenizer). */
export function teacherTextConfig(vocabSize: number, bos: number, eos: number) {
  return {
    architectures: ["CLIPTextModel"],
    model_type: "clip_text_model",
    vocab_size: vocabSize,
    hidden_size: 32,
    intermediate_size: 64,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    max_position_embeddings: MAX_TOKENS,
    hidden_act: "quick_gelu",
    layer_norm_eps: 1e-5,
    bos_token_id: bos,
    eos_token_id: eos,
    pad_token_id: eos,
    projection_dim: 32,
    // The train and sample jobs pass the padding mask; generate passes it when this is set, so
    // the teacher sees the same hidden states in all three.
    use_attention_mask: true,
    torch_dtype: "float32",
  };
}

/** Stable Diffusion 1.x's noise schedule, as a DPM-Solver++ scheduler config. */
export const TEACHER_SCHEDULER_CONFIG = {
  _class_name: "DPMSolverMultistepScheduler",
  _diffusers_version: "0.26.3",
  beta_end: 0.012,
  beta_schedule: "scaled_linear",
  beta_start: 0.00085,
  num_train_timesteps: 1000,
  prediction_type: "epsilon",
  algorithm_type: "dpmsolver++",
  solver_order: 2,
  solver_type: "midpoint",
  lower_order_final: true,
  steps_offset: 1,
  timestep_spacing: "leading",
  trained_betas: null,
  thresholding: false,
};

export const TEACHER_MODEL_INDEX = {
  _class_name: "StableDiffusionPipeline",
  _diffusers_version: "0.26.3",
  feature_extractor: [null, null],
  requires_safety_checker: false,
  safety_checker: [null, null],
  scheduler: ["diffusers", "DPMSolverMultistepScheduler"],
  text_encoder: ["transformers", "CLIPTextModel"],
  tokenizer: ["transformers", "CLIPTokenizer"],
  unet: ["diffusers", "UNet2DConditionModel"],
  vae: [null, null],
};

const BOS = "<|startoftext|>";
const EOS = "<|endoftext|>";

/**
 * A CLIP BPE vocabulary and merge list in which every word of `words` is one token: merges are
 * added, lowest priority last, until BPE turns each word into a single piece.
 */
export function buildBpeVocab(words: readonly string[]): {
  vocab: Record<string, number>;
  merges: [string, string][];
} {
  const merges: [string, string][] = [];
  const tokens = new Set<string>();
  const mapped = words.map((w) => [...w].map((c) => BYTE_TO_UNICODE[c.charCodeAt(0)]).join(""));
  for (const w of mapped) {
    const chars = [...w];
    chars.forEach((c, i) => tokens.add(i === chars.length - 1 ? c + "</w>" : c));
  }
  const ranks = () => new Map(merges.map(([a, b], i) => [`${a} ${b}`, i]));
  const bpe = (w: string, r: Map<string, number>) => {
    const chars = [...w];
    let word = [...chars.slice(0, -1), chars[chars.length - 1] + "</w>"];
    while (word.length > 1) {
      let best = Infinity;
      let at = -1;
      for (let i = 0; i + 1 < word.length; i++) {
        const k = r.get(`${word[i]} ${word[i + 1]}`);
        if (k !== undefined && k < best) [best, at] = [k, i];
      }
      if (at < 0) break;
      const [a, b] = [word[at], word[at + 1]];
      const next: string[] = [];
      for (let i = 0; i < word.length; i++) {
        if (i + 1 < word.length && word[i] === a && word[i + 1] === b) {
          next.push(a + b);
          i++;
        } else next.push(word[i]);
      }
      word = next;
    }
    return word;
  };
  for (let guard = 0; guard < 10000; guard++) {
    const r = ranks();
    const pending = mapped.map((w) => bpe(w, r)).find((p) => p.length > 1);
    if (!pending) break;
    merges.push([pending[0], pending[1]]);
    tokens.add(pending[0] + pending[1]);
  }
  const vocab: Record<string, number> = {};
  [...tokens].sort().forEach((t, i) => vocab[t] = i);
  vocab[BOS] = Object.keys(vocab).length;
  vocab[EOS] = Object.keys(vocab).length;
  return { vocab, merges };
}

/** The words of the data set's captions. */
export function captionWords(): string[] {
  return [...new Set(allCaptions().flatMap((c) => c.split(" ")))].sort();
}

async function writeJson(path: string, v: unknown): Promise<void> {
  await writeFileAtomic(path, new TextEncoder().encode(JSON.stringify(v, null, 2) + "\n"));
}

/** Writes `<dir>/tokenizer/` (vocab.json, merges.txt, configs); returns bos/eos ids and size. */
export async function writeTeacherTokenizer(
  dir: string,
): Promise<{ vocabSize: number; bos: number; eos: number }> {
  const tdir = join(dir, "tokenizer");
  await Deno.mkdir(tdir, { recursive: true });
  const { vocab, merges } = buildBpeVocab(captionWords());
  await writeJson(join(tdir, "vocab.json"), vocab);
  await writeFileAtomic(
    join(tdir, "merges.txt"),
    new TextEncoder().encode(
      "#version: 0.2\n" + merges.map(([a, b]) => `${a} ${b}`).join("\n") + "\n",
    ),
  );
  const special = { bos_token: BOS, eos_token: EOS, unk_token: EOS, pad_token: EOS };
  await writeJson(join(tdir, "special_tokens_map.json"), special);
  await writeJson(join(tdir, "tokenizer_config.json"), {
    tokenizer_class: "CLIPTokenizer",
    model_max_length: MAX_TOKENS,
    do_lower_case: true,
    errors: "replace",
    ...special,
  });
  // Every caption word must be one token, and the longest caption must fit.
  const tok = new ClipTokenizer(
    new Map(Object.entries(vocab)),
    merges,
    await readFolderConfig(folderFiles(tdir), {}),
    tdir,
  );
  for (const w of captionWords()) {
    const ids = tok.tokenize(w);
    if (ids.length !== 1) throw new Error(`tokenizer: "${w}" became ${ids.length} tokens`);
  }
  for (const c of allCaptions()) {
    if (tok.tokenize(c).length + 2 > MAX_TOKENS) {
      throw new Error(`tokenizer: "${c}" does not fit ${MAX_TOKENS} tokens`);
    }
  }
  return { vocabSize: Object.keys(vocab).length, bos: vocab[BOS], eos: vocab[EOS] };
}

/**
 * Writes the teacher folder with fresh weights: model_index.json, scheduler/, tokenizer/,
 * text_encoder/ (frozen random CLIP) and unet/ (random weights, to be trained).
 */
export async function writeTeacherFolder(gpu: Gpu, dir: string, seed: number): Promise<void> {
  for (const sub of ["unet", "text_encoder", "scheduler"]) {
    await Deno.mkdir(join(dir, sub), { recursive: true });
  }
  await writeJson(join(dir, "model_index.json"), TEACHER_MODEL_INDEX);
  await writeJson(join(dir, "scheduler", "scheduler_config.json"), TEACHER_SCHEDULER_CONFIG);
  const { vocabSize, bos, eos } = await writeTeacherTokenizer(dir);
  const textCfg = teacherTextConfig(vocabSize, bos, eos);
  const text = CLIPTextModel.create(gpu, textCfg, seed + 1);
  await writeJson(join(dir, "text_encoder", "config.json"), textCfg);
  await saveModule(text, join(dir, "text_encoder", "model.safetensors"));
  text.dispose();
  const unet = UNet2DConditionModel.create(gpu, TEACHER_UNET_CONFIG, seed);
  await writeJson(join(dir, "unet", "config.json"), TEACHER_UNET_CONFIG);
  await saveModule(unet, join(dir, "unet", "diffusion_pytorch_model.safetensors"));
  unet.dispose();
}

/**
 * Writes `count` samples of the shapes data set of `seed` as a pair folder (`index.json`,
 * `content/captions.txt`, `content/images/{i}.npy`): z1 = the picture, z0 = seeded noise (the
 * diffusion objective with randz0 = "random" draws fresh noise instead).
 */
export async function writeShapesPairs(root: string, seed: number, count: number): Promise<void> {
  const paths = pairPaths(root);
  await Deno.mkdir(paths.images, { recursive: true });
  const shape = [CHANNELS, IMAGE_SIZE, IMAGE_SIZE] as const;
  const n = CHANNELS * IMAGE_SIZE * IMAGE_SIZE;
  const captions: string[] = [];
  for (let i = 0; i < count; i++) {
    const s = shapeSample(seed, i);
    captions.push(s.caption);
    const z0 = philoxNormal(seed, i * n, n);
    await writePairNpy(paths.images, i, shape, f32ToF16Bits(z0), f32ToF16Bits(s.pixels));
  }
  await writeCaptions(paths.captions, captions);
  await writeJson(paths.index, {
    dataset: "shapes",
    seed,
    total_nums: count,
    latent_shape: shape,
    note: "z1 = picture in [-1, 1], z0 = seeded noise (core/demo/shapes.ts)",
  });
}

/** Settings of a teacher training run. */
export interface TeacherTrainSettings {
  modelDir: string;
  trainRoot: string;
  evalRoot: string;
  steps: number;
  batchSize: number;
  lr: number;
  seed: number;
  ckptPath: string | null;
}

/** The train job's config for the teacher: diffusion objective, fresh UNet, fresh noise. */
export function teacherTrainConfig(s: TeacherTrainSettings): TrainConfig {
  const c = getTrainConfig();
  c.diffusers.ckpt_path = s.modelDir;
  c.diffusers.tokenizer = "clip_tokenizer";
  c.diffusers.text_encoder = "clip_text_model";
  c.diffusers.load_score_model = true;
  c.diffusers.gradient_checkpointing = false;
  c.training.objective = "diffusion";
  c.training.randz0 = "random";
  c.training.num_steps = s.steps;
  c.training.batch_size = s.batchSize;
  c.training.ckpt_path = s.ckptPath;
  c.training.log_freq = 25;
  c.training.eval_freq = 100;
  c.training.snapshot_freq = 250;
  c.training.sampling_freq = 500;
  c.data.train_root = s.trainRoot;
  c.data.eval_root = s.evalRoot;
  c.data.image_size = IMAGE_SIZE;
  c.data.num_channels = CHANNELS;
  c.data.random_flip = false; // captions say left and right
  c.optim.lr = s.lr;
  c.optim.warmup = 100;
  c.optim.lr_scheduler = "constant_with_warmup";
  c.ema.decay = 0.995;
  c.seed = s.seed;
  return c;
}
