/**
 * `deno run -A --no-lock scripts/bench_tfjs.ts [--quick]`: the same matmul / conv2d shapes as
 * scripts/bench.ts on TensorFlow.js's WebGPU backend, for comparison on the same adapter. Not part
 * of the toolkit (tfjs is no dependency of reflow): the packages are imported dynamically by
 * specifier, so `deno check` and the lockfile never pull them in. Timing as in core/bench/run.ts:
 * warm up, then a batch of launches and one read-back.
 */

import { parseCommand } from "../core/config/cli.ts";

/** The slice of the tfjs API this script uses. */
interface TfTensor {
  data(): Promise<unknown>;
  dispose(): void;
}
interface Tf {
  setBackend(name: string): Promise<boolean>;
  ready(): Promise<void>;
  getBackend(): string;
  version_core: string;
  randomUniform(shape: number[], lo: number, hi: number): TfTensor;
  matMul(a: TfTensor, b: TfTensor): TfTensor;
  conv2d(x: TfTensor, w: TfTensor, stride: number, pad: "same"): TfTensor;
}
const CORE = "npm:@tensorflow/tfjs-core@4.22.0";
const WEBGPU = "npm:@tensorflow/tfjs-backend-webgpu@4.22.0";

const { quick } = parseCommand<{ quick: boolean }>(Deno.args, {
  name: "bench_tfjs",
  usage: "deno run -A --no-lock scripts/bench_tfjs.ts [--quick]",
  description: "scripts/bench.ts's matmul and conv2d shapes on TensorFlow.js's WebGPU backend.",
  options: [{ flags: "--quick", description: "fewer shapes and repetitions", default: false }],
});

let tf: Tf;

async function time(name: string, shape: string, flops: number, fn: () => TfTensor) {
  let t0 = performance.now();
  const w = fn();
  await w.data();
  w.dispose();
  const warm = performance.now() - t0;
  const reps = Math.max(1, Math.min(quick ? 3 : 10, Math.floor(1500 / warm)));
  t0 = performance.now();
  let last: TfTensor | null = null;
  for (let i = 0; i < reps; i++) {
    last?.dispose();
    last = fn();
  }
  await last!.data();
  last!.dispose();
  const ms = (performance.now() - t0) / reps;
  console.log(
    `| ${name} | ${shape} | f32 | ${ms.toFixed(2)} | ${(flops / (ms * 1e6)).toFixed(2)} |`,
  );
}

async function main(): Promise<void> {
  tf = (await import(CORE)) as Tf;
  await import(WEBGPU);
  const ok = await tf.setBackend("webgpu");
  if (!ok) throw new Error("tfjs: the webgpu backend did not initialise");
  await tf.ready();
  console.log(`tfjs ${tf.version_core} backend ${tf.getBackend()}`);
  console.log("| op | shape | dtype | ms | GFLOP/s |\n| --- | --- | --- | ---: | ---: |");
  for (const n of quick ? [512, 1024] : [512, 1024, 2048]) {
    const a = tf.randomUniform([n, n], -1, 1), b = tf.randomUniform([n, n], -1, 1);
    await time("matmul", `${n}x${n}x${n}`, 2 * n ** 3, () => tf.matMul(a, b));
    a.dispose();
    b.dispose();
  }
  const convs = quick ? [[2, 64, 64, 64]] : [[2, 64, 64, 64], [2, 320, 320, 32], [2, 640, 640, 16]];
  for (const [n, c, o, hw] of convs) {
    // tfjs convolutions are NHWC with HWIO filters; the FLOP count is the same.
    const x = tf.randomUniform([n, hw, hw, c], -1, 1);
    const w = tf.randomUniform([3, 3, c, o], -1, 1);
    await time(
      "conv2d_3x3",
      `N${n} C${c} O${o} ${hw}x${hw}`,
      2 * n * o * hw * hw * c * 9,
      () => tf.conv2d(x, w, 1, "same"),
    );
    x.dispose();
    w.dispose();
  }
}

if (import.meta.main) await main();
