/**
 * A rectified-flow teacher: a trained student UNet (a velocity model) sampled with Euler or RK45
 * from z0, so that reflow can be iterated (1-rectified flow generates the data of the 2-rectified
 * flow, and so on). The UNet gets the caption's hidden states and the timestep floor(999 t), or
 * 999 (1 - t) for a model trained with the "pretrained" timestep orientation.
 *
 * Every sample is integrated on its own (RK45 picks its own step sizes per sample), while the
 * velocity evaluations of the samples that are still running are batched into one UNet pass:
 * z1 of a sample does not depend on which other samples share its batch.
 *
 * @module
 */

import type { Gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { keep, tidy } from "../tensor/scope.ts";
import { noGrad } from "../tensor/autograd.ts";
import * as ops from "../ops.ts";
import type { TextTokenizer } from "../models/tokenizers/types.ts";
import { eulerSample, type FlowSampleResult, rk45Sample } from "../schedulers/flow_samplers.ts";
import { FLOW_EPS, type TimestepOrientation, unetTimestep } from "../flow/time.ts";
import { checkNoise, latentShapeOf, type NoiseModel, type Teacher } from "./teacher.ts";
import { encodeCaptions, type PromptEncoder } from "../flow/captions.ts";

/** Settings of {@link FlowTeacher}. */
export interface FlowTeacherOptions {
  gpu: Gpu;
  tokenizer: TextTokenizer;
  textEncoder: PromptEncoder;
  /** The student UNet (predicts the velocity z1 - z0). */
  unet: NoiseModel;
  /** "euler" (sampleN steps) or "rk45" (adaptive, rtol = atol = odeTol). */
  sampler: "euler" | "rk45";
  /** Euler steps (the original's `sample_N`). */
  sampleN?: number;
  /** RK45 tolerance (the original's 1e-5). */
  odeTol?: number;
  /** Start time (1e-3). */
  eps?: number;
  timestepOrientation?: TimestepOrientation;
  latentShape?: readonly [number, number, number];
  /** Models the teacher owns and releases in dispose(). */
  owned?: { dispose(): void }[];
}

interface Request {
  row: number;
  x: Float32Array;
  t: number;
  resolve: (v: Float32Array) => void;
  reject: (e: unknown) => void;
}

/**
 * Gathers the velocity requests of concurrently running per-sample solvers and evaluates them in
 * one batch once every solver still running has asked.
 */
class LockstepBatcher {
  private pending: Request[] = [];
  constructor(
    private active: number,
    private readonly evaluate: (reqs: Request[]) => Promise<Float32Array[]>,
  ) {}

  call(row: number, x: Float32Array, t: number): Promise<Float32Array> {
    return new Promise((resolve, reject) => {
      this.pending.push({ row, x, t, resolve, reject });
      this.maybeRun();
    });
  }

  /** A solver is done (or failed): the others no longer wait for it. */
  finish(): void {
    this.active--;
    this.maybeRun();
  }

  private maybeRun(): void {
    if (this.pending.length === 0 || this.pending.length < this.active) return;
    const batch = this.pending.splice(0).sort((a, b) => a.row - b.row);
    this.evaluate(batch).then(
      (outs) => batch.forEach((r, i) => r.resolve(outs[i])),
      (err) => batch.forEach((r) => r.reject(err)),
    );
  }
}

/** A student velocity model sampled with Euler or RK45, as a teacher for the next reflow round. */
export class FlowTeacher implements Teacher {
  readonly latentShape: readonly [number, number, number];
  readonly sampler: "euler" | "rk45";
  readonly sampleN: number;
  readonly odeTol: number;
  readonly eps: number;
  readonly orientation: TimestepOrientation;

  constructor(private readonly opts: FlowTeacherOptions) {
    this.sampler = opts.sampler;
    if (this.sampler !== "euler" && this.sampler !== "rk45") {
      throw new Error(`flow teacher: sampler must be "euler" or "rk45", got "${opts.sampler}"`);
    }
    this.sampleN = opts.sampleN ?? 1;
    if (!Number.isInteger(this.sampleN) || this.sampleN <= 0) {
      throw new Error(`flow teacher: sample_N must be a positive integer, got ${opts.sampleN}`);
    }
    this.odeTol = opts.odeTol ?? 1e-5;
    if (!(this.odeTol > 0)) {
      throw new Error(`flow teacher: ode_tol must be > 0, got ${opts.odeTol}`);
    }
    this.eps = opts.eps ?? FLOW_EPS;
    this.orientation = opts.timestepOrientation ?? "original";
    if (this.orientation !== "original" && this.orientation !== "pretrained") {
      throw new Error(
        `flow teacher: timestep_orientation must be "original" or "pretrained", got "${this.orientation}"`,
      );
    }
    this.latentShape = opts.latentShape ?? latentShapeOf(opts.unet);
  }

  describe(): Record<string, unknown> {
    return {
      teacher: "flow",
      scheduler: this.sampler === "euler" ? "euler" : "rk45",
      sample_N: this.sampler === "euler" ? this.sampleN : null,
      ode_tol: this.sampler === "rk45" ? this.odeTol : null,
      eps: this.eps,
      timestep_orientation: this.orientation,
    };
  }

  async sample(captions: readonly string[], z0: Float32Array): Promise<Float32Array> {
    const B = captions.length;
    const [C, H, W] = this.latentShape;
    const n = C * H * W;
    if (B === 0) return new Float32Array(0);
    checkNoise(z0, B, this.latentShape);
    const { gpu, unet, tokenizer, textEncoder } = this.opts;
    const ctx = keep(encodeCaptions(tokenizer, textEncoder, captions));
    const rowsCtx = tidy(() => captions.map((_, b) => keep(ops.slice(ctx, 0, b, 1))));
    const evaluate = async (reqs: Request[]): Promise<Float32Array[]> => {
      const m = reqs.length;
      const x = new Float32Array(m * n);
      reqs.forEach((r, i) => x.set(r.x, i * n));
      const ts = Float32Array.from(reqs, (r) => unetTimestep(r.t, this.orientation));
      const out = noGrad(() =>
        tidy(() => {
          const c = m === B ? ctx : ops.concat(reqs.map((r) => rowsCtx[r.row]), 0);
          return unet.forward(Tensor.from(gpu, x, [m, C, H, W]), Tensor.from(gpu, ts, [m]), c);
        })
      );
      let v: Float32Array;
      try {
        v = await out.toF32();
      } finally {
        out.dispose();
      }
      return reqs.map((_, i) => v.subarray(i * n, (i + 1) * n));
    };
    const batcher = new LockstepBatcher(B, evaluate);
    const solveOne = async (b: number): Promise<FlowSampleResult> => {
      try {
        const model = (x: Float32Array, t: number) => batcher.call(b, x, t);
        const start = z0.subarray(b * n, (b + 1) * n);
        return this.sampler === "euler"
          ? await eulerSample(model, start, { steps: this.sampleN, eps: this.eps })
          : await rk45Sample(model, start, { tol: this.odeTol, eps: this.eps });
      } finally {
        batcher.finish();
      }
    };
    try {
      // allSettled: no solver may still be running when the context is released.
      const settled = await Promise.allSettled(captions.map((_, b) => solveOne(b)));
      const z1 = new Float32Array(B * n);
      settled.forEach((r, b) => {
        if (r.status === "rejected") throw r.reason;
        z1.set(r.value.x, b * n);
      });
      return z1;
    } finally {
      for (const r of rowsCtx) r.dispose();
      ctx.dispose();
    }
  }

  dispose(): void {
    for (const m of this.opts.owned ?? []) m.dispose();
  }
}
