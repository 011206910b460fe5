/**
 * Settings of the `generate` job (the original's `prepare_args` in `reflow_generate_data.py`):
 * the teacher draws (z0, z1) pairs for captions. A flat group, as the original's Namespace, plus
 * the DPM-Solver settings group.
 *
 * @module
 */

import type { ConfigSchema } from "../core/config/overrides.ts";
import type { DPMSolverOverrides } from "../core/schedulers/dpm_solver_config.ts";

/** All settings of the generate job. */
export interface GenerateConfig {
  /** The teacher: a diffusers-layout model folder (AltDiffusion or Stable Diffusion 1.x/2.x). */
  model_dir: string;
  /** DPM-Solver multistep steps per sample. */
  infer_steps: number;
  /** Random seed; a numbered part adds its number. */
  seed: number;
  /** Root of the output: `<save_dir>/index.json` and `<save_dir>/content/{captions.txt,images/}`. */
  save_dir: string;
  /** COCO 2014 caption split: "train" or "val". */
  split: "train" | "val";
  /** COCO root holding `annotations/captions_{split}2014.json`. */
  coco_root: string;
  /** Plain-text captions (one per line) used instead of COCO when not "". */
  captions_file: string;
  /**
   * The workers' adapters, by index (core/gpu/adapter_binding.ts; `--devices` also takes PCI bus
   * ids): one worker each, on a contiguous group of the caption list. Listing one adapter twice
   * needs `--share_adapter`.
   */
  devices: number[];
  /** Number of pairs to produce. */
  total_nums: number;
  /** Captions per teacher batch. */
  bs: number;
  /** Part number for runs made in parts (`part{n}` folders); null = a single run. */
  part: number | null;
  /** Classifier-free guidance scale (no guidance at <= 1). */
  guidance_scale: number;
  /** The unconditional prompt of classifier-free guidance. */
  negative_prompt: string;
  /** Teacher compute storage: "fp16" (the original) or "fp32". */
  dtype: "fp16" | "fp32";
  /** Replace pairs already present in `images/` (false: keep them and resume after them). */
  overwrite: boolean;
  /**
   * DPM-Solver settings that replace those of the teacher's `scheduler/scheduler_config.json`
   * (diffusion teachers only): `preset` "teacher" keeps the file as diffusers 0.26 reads it,
   * "diffusers-0.12" gives the original tool's diffusers (0.12): the last step ends at sigma_min
   * (final_sigmas_type "sigma_min"), linspace timesteps, no euler_at_final, no Karras or Lu
   * sigmas, no lambda clipping. Each other key, when not null, then sets that field.
   */
  dpm_solver: DPMSolverOverrides;
}

/** Integer settings and fixed choices of the generate config. */
export const schema: ConfigSchema = {
  integers: ["infer_steps", "seed", "devices", "total_nums", "bs", "part"],
  choices: {
    split: ["train", "val"],
    dtype: ["fp16", "fp32"],
    "dpm_solver.preset": ["teacher", "diffusers-0.12"],
    "dpm_solver.final_sigmas_type": ["zero", "sigma_min"],
    "dpm_solver.timestep_spacing": ["linspace", "leading", "trailing"],
  },
  nullable: {
    part: "number",
    "dpm_solver.final_sigmas_type": "string",
    "dpm_solver.timestep_spacing": "string",
    "dpm_solver.lower_order_final": "boolean",
    "dpm_solver.euler_at_final": "boolean",
  },
  ranges: {
    infer_steps: { min: 1 },
    seed: {},
    devices: { min: 0 },
    total_nums: { min: 1 },
    bs: { min: 1 },
    part: { min: 0 },
    guidance_scale: {},
  },
};

/** A fresh copy of the generate settings. */
export function getConfig(): GenerateConfig {
  return {
    model_dir: "checkpoints/AltDiffusion",
    infer_steps: 25,
    seed: 2333,
    save_dir: "data/coco2014_reflow/train5M",
    split: "train",
    coco_root: "data/coco2014",
    captions_file: "",
    devices: [0],
    total_nums: 1_000_000,
    bs: 50,
    part: null,
    guidance_scale: 7.5,
    negative_prompt: "",
    dtype: "fp16",
    overwrite: false,
    dpm_solver: {
      preset: "teacher",
      final_sigmas_type: null,
      timestep_spacing: null,
      lower_order_final: null,
      euler_at_final: null,
    },
  };
}
