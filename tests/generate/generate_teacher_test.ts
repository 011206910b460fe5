/**
 * The diffusion teacher's glue (pipe_main) against the diffusers golden case of
 * tests/fixtures/schedulers/dpmsolver_sd25: a stand-in UNet computes
 * eps = 0.3 x + 1e-5 t + field (field_cond for caption rows, field_uncond for the negative
 * prompt's), guidance 7.5, 25 DPM-Solver++ steps. The final latents must match diffusers'.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { readNpy } from "../../core/data/npy.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import * as ops from "../../core/ops.ts";
import type { TextTokenizer } from "../../core/models/tokenizers/types.ts";
import { DiffusionTeacher, type NoiseModel } from "../../core/generate/teacher.ts";
import { FlowTeacher } from "../../core/generate/flow_teacher.ts";
import { unetTimestep } from "../../core/flow/time.ts";
import { assertClose, testGpu } from "../helpers/gpu.ts";

const CASE = new URL("../fixtures/schedulers/dpmsolver_sd25/", import.meta.url).pathname;

async function f32Npy(name: string): Promise<{ shape: number[]; data: Float32Array }> {
  const a = await readNpy(join(CASE, name));
  return { shape: a.shape, data: Float32Array.from(a.data as Float64Array) };
}

/** Tokenizer stand-in: one id per caption, 1 for a real caption, 0 for the empty prompt. */
function fakeTokenizer(seen: string[]): TextTokenizer {
  return {
    kind: "clip",
    modelMaxLength: 1,
    padId: 0,
    encode(texts: string[]) {
      seen.push(...texts);
      return {
        ids: Int32Array.from(texts, (t) => (t === "" ? 0 : 1)),
        mask: new Int32Array(texts.length).fill(1),
        length: 1,
      };
    },
  };
}

Deno.test("diffusion teacher = diffusers' DPM-Solver++ with guidance 7.5 (golden case)", async () => {
  const gpu = await testGpu();
  const caseJson = JSON.parse(await Deno.readTextFile(join(CASE, "case.json")));
  const x = await f32Npy("x_init.npy");
  const fc = await f32Npy("field_cond.npy");
  const fu = await f32Npy("field_uncond.npy");
  const traj = await f32Npy("trajectory.npy");
  const [B, C, H, W] = x.shape;
  const n = C * H * W;
  const fcT = Tensor.from(gpu, fc.data, fc.shape);
  const fuT = Tensor.from(gpu, fu.data, fu.shape);
  const rowsSeen: number[] = [];
  const unet: NoiseModel = {
    config: { in_channels: C, sample_size: H },
    forward(sample, timesteps, context) {
      const R = sample.shape[0];
      rowsSeen.push(R);
      const reps = R / B;
      const tile = (f: Tensor) => reps === 1 ? ops.clone(f) : ops.concat([f, f], 0);
      const sel = ops.reshape(context, [R, 1, 1, 1]);
      const u = tile(fuT);
      const field = ops.add(u, ops.mul(sel, ops.sub(tile(fcT), u)));
      const tTerm = ops.scale(ops.reshape(timesteps, [R, 1, 1, 1]), 1e-5);
      return ops.add(ops.add(ops.scale(sample, 0.3), tTerm), field);
    },
  };
  const texts: string[] = [];
  const teacher = new DiffusionTeacher({
    gpu,
    tokenizer: fakeTokenizer(texts),
    textEncoder: {
      encode: (ids, _mask, b, _l) => Tensor.from(gpu, Float32Array.from(ids), [b, 1, 1]),
    },
    unet,
    schedulerConfig: caseJson.scheduler_config_given,
    inferSteps: caseJson.num_inference_steps,
    guidanceScale: 7.5,
  });
  const z1 = await teacher.sample(["a cat", "a dog"], x.data);
  const want = traj.data.subarray(25 * B * n, 26 * B * n);
  assertClose(z1, want, 1e-6, "final latents vs diffusers");
  assert.deepEqual(new Set(rowsSeen), new Set([2 * B]), "UNet batch = [uncond; cond]");
  assert.equal(rowsSeen.length, 25);
  assert.ok(texts.includes(""), "the empty negative prompt is encoded");
  const desc = teacher.describe();
  assert.equal(desc.scheduler, "DPMSolverMultistepScheduler");
  assert.equal(
    (desc.scheduler_config as Record<string, unknown>).lambda_min_clipped,
    -Infinity,
  );

  // guidance 1: no unconditional pass, no negative prompt.
  rowsSeen.length = 0;
  texts.length = 0;
  const plain = new DiffusionTeacher({
    gpu,
    tokenizer: fakeTokenizer(texts),
    textEncoder: {
      encode: (ids, _mask, b, _l) => Tensor.from(gpu, Float32Array.from(ids), [b, 1, 1]),
    },
    unet,
    schedulerConfig: caseJson.scheduler_config_given,
    inferSteps: 3,
    guidanceScale: 1,
  });
  const z = await plain.sample(["a cat", "a dog"], x.data);
  assert.equal(z.length, B * n);
  assert.deepEqual(rowsSeen, [B, B, B]);
  assert.ok(!texts.includes(""));
  teacher.dispose();
  plain.dispose();
  fcT.dispose();
  fuT.dispose();
});

Deno.test("flow teacher: Euler per sample, batched velocity calls, floor(999 t)", async () => {
  const gpu = await testGpu();
  const C = 1, H = 2, W = 2, n = C * H * W;
  const calls: number[][] = [];
  // v(x, t) = context value (per sample) + 0 x: z1 = z0 + c * (N steps * 1/N) = z0 + c.
  const unet: NoiseModel = {
    config: { in_channels: C, sample_size: H },
    forward(sample, timesteps, context) {
      const R = sample.shape[0];
      calls.push([R]);
      const c = ops.reshape(context, [R, 1, 1, 1]);
      return ops.add(
        ops.scale(sample, 0),
        ops.add(c, ops.scale(ops.reshape(timesteps, [R, 1, 1, 1]), 0)),
      );
    },
  };
  const teacher = new FlowTeacher({
    gpu,
    tokenizer: {
      kind: "clip",
      modelMaxLength: 1,
      padId: 0,
      encode: (texts: string[]) => ({
        ids: Int32Array.from(texts, (t) => t.length),
        mask: new Int32Array(texts.length).fill(1),
        length: 1,
      }),
    },
    textEncoder: {
      encode: (ids, _m, b) => Tensor.from(gpu, Float32Array.from(ids), [b, 1, 1]),
    },
    unet,
    sampler: "euler",
    sampleN: 4,
  });
  const z0 = Float32Array.from({ length: 3 * n }, (_, i) => i * 0.1);
  const z1 = await teacher.sample(["a", "bb", "ccc"], z0);
  const want = Float32Array.from(z0, (v, i) => v + [1, 2, 3][Math.floor(i / n)]);
  assertClose(z1, want, 1e-6, "z0 + v");
  assert.equal(calls.length, 4, "one batched UNet call per Euler step");
  assert.ok(calls.every(([r]) => r === 3));
  assert.equal(unetTimestep(0.5, "original"), 499);
  assert.equal(unetTimestep(0.25, "pretrained"), 999 * 0.75);
  teacher.dispose();
});
