import assert from "node:assert/strict";
import { checkOp, lacks, NEEDS_F16, NEEDS_TEXTURE, rand, testGpu } from "../helpers/gpu.ts";
import * as ops from "../../core/ops.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { planSum, type SumOptions, sumTo } from "../../core/kernels/reduce.ts";

/** float64 sum of x (shape) over axes, keeping reduced axes as size 1. */
function refSum(x: Float64Array, shape: number[], axes: number[], scale = 1): Float64Array {
  const out = shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const n = out.reduce((a, b) => a * b, 1);
  const y = new Float64Array(n);
  const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
  const ostr = out.map((_, i) => out.slice(i + 1).reduce((a, b) => a * b, 1));
  for (let i = 0; i < x.length; i++) {
    let o = 0;
    shape.forEach((d, k) => {
      const c = Math.floor(i / strides[k]) % d;
      if (!axes.includes(k)) o += c * ostr[k];
    });
    y[o] += x[i] * scale;
  }
  return y;
}

for (
  const [shape, axes] of [
    [[7], [0]],
    [[3, 5], [1]],
    [[3, 5], [0]],
    [[2, 3, 4, 5], [1, 3]],
    [[2, 300, 3], [1]], // long reductions take the workgroup-per-output kernel
    [[4, 6], [0, 1]],
  ] as [number[], number[]][]
) {
  Deno.test(`sum and mean over [${axes}] of [${shape}]`, async () => {
    await checkOp({
      shapes: [shape],
      gpu: ([x]) => ops.sum(x, axes),
      ref: ([x]) => refSum(x, shape, axes),
      tol: 1e-5,
    });
    const count = axes.reduce((a, k) => a * shape[k], 1);
    await checkOp({
      shapes: [shape],
      gpu: ([x]) => ops.mean(x, axes, true),
      ref: ([x]) => refSum(x, shape, axes, 1 / count),
      tol: 1e-5,
    });
  });
}

Deno.test("sum: a bad axis names the op", async () => {
  const gpu = await testGpu();
  const x = Tensor.from(gpu, [1, 2, 3], [3]);
  assert.throws(() => ops.sum(x, 2), /sum: axis 2 out of range/);
  x.dispose();
});

// ---- Simplified views, split passes and read paths against a float64 reference ----

/** Fresh inputs every run; the seed is in every failure message. */
const runSeed = (Date.now() ^ Math.floor(Math.random() * 2 ** 30)) >>> 0;

/** float64 sum of x (shape) over axes, flat over the kept dims (row-major), times scale. */
function refSumFast(x: Float64Array, shape: number[], axes: number[], scale = 1): Float64Array {
  const r = shape.length;
  const ostr = new Array(r).fill(0);
  let n = 1;
  for (let k = r - 1; k >= 0; k--) {
    if (!axes.includes(k)) {
      ostr[k] = n;
      n *= shape[k];
    }
  }
  const y = new Float64Array(n);
  const idx = new Array(r).fill(0);
  let o = 0;
  for (let i = 0; i < x.length; i++) {
    y[o] += x[i];
    // Odometer step over the input's indices, keeping the output offset in step.
    for (let k = r - 1; k >= 0; k--) {
      idx[k]++;
      o += ostr[k];
      if (idx[k] < shape[k]) break;
      o -= ostr[k] * shape[k];
      idx[k] = 0;
    }
  }
  return y.map((v) => v * scale);
}

const OPTS: [string, SumOptions][] = [
  ["gpu tuning, storage", { tuning: "gpu", path: "storage" }],
  ["cpu tuning, storage", { tuning: "cpu", path: "storage" }],
  ["cpu tuning, texture", { tuning: "cpu", path: "texture" }],
  ["gpu tuning, texture", { tuning: "gpu", path: "texture" }],
  ["adapter default", {}],
].filter(([, o]) => !lacks(o as SumOptions)) as [string, SumOptions][]; // texture ones need the path

type Op = "sum" | "mean" | "sumTo";

async function checkSum(
  shape: number[],
  axes: number[],
  o: SumOptions,
  dtype: "f32" | "f16",
  op: Op,
): Promise<void> {
  const gpu = await testGpu();
  const n = shape.reduce((a, b) => a * b, 1);
  const seed = (runSeed + n * 7919 + 31 * axes.length) >>> 0;
  const x = Tensor.from(gpu, Float32Array.from(rand(n, seed)), shape, dtype);
  // The reference sums the values as stored (f16 inputs were rounded on upload).
  const xs = Float64Array.from(await x.toF32());
  const count = axes.reduce((a, k) => a * shape[k], 1);
  const want = refSumFast(xs, shape, axes, op === "mean" ? 1 / count : 1);
  const kept = shape.map((d, i) => (axes.includes(i) ? 1 : d));
  // sumTo drops the leading reduced dims, as a broadcast from the lower-rank shape would.
  let lead = 0;
  while (lead < shape.length && axes.includes(lead)) lead++;
  const y = op === "sum"
    ? ops.sum(x, axes, false, o)
    : op === "mean"
    ? ops.mean(x, axes, true, o)
    : sumTo(x, kept.slice(lead), o);
  assert.deepEqual(
    y.shape,
    op === "sum"
      ? shape.filter((_, i) => !axes.includes(i))
      : op === "mean"
      ? kept
      : kept.slice(lead),
  );
  assert.equal(y.dtype, dtype);
  const got = await y.toF32();
  // f32 accumulation (error grows with the summed extent); f16 outputs round to 11 bits.
  const tol = dtype === "f16" ? 1e-3 : 2e-7 * Math.max(8, Math.sqrt(count));
  // Relative to the larger of the result and the typical size of a sum of `count` random-sign
  // terms: a full sum that cancels to near zero by chance has no meaningful relative error.
  let ss = 0;
  for (const v of xs) ss += v * v;
  const scale = (op === "mean" ? 1 / count : 1) * Math.sqrt(count * (ss / xs.length));
  const floor = scale * Math.sqrt(want.length);
  let num = 0, den = 0;
  for (let i = 0; i < want.length; i++) {
    assert.ok(Number.isFinite(got[i]), `non-finite output at ${i}`);
    num += (got[i] - want[i]) ** 2;
    den += want[i] ** 2;
  }
  const err = Math.sqrt(num) / Math.max(Math.sqrt(den), floor, 1e-30);
  assert.ok(
    err <= tol,
    `${op} [${shape}] over [${axes}] ${dtype} (seed ${seed}): relative error ${err} > ${tol}`,
  );
  x.dispose();
  y.dispose();
}

const CASES: [string, number[], number[], Op][] = [
  // Contiguous inner reductions [K, R] and full sums [R].
  ["inner, odd", [37, 1001], [1], "sum"],
  ["inner, texel-aligned", [8, 4096], [1], "mean"],
  ["inner, tiny", [3, 5], [1], "sum"],
  ["inner, many short rows", [5000, 12], [1], "sum"],
  ["full, long", [1 << 18], [0], "sum"],
  ["full, long and odd", [300007], [0], "mean"],
  ["full, tiny", [7], [0], "sum"],
  ["full over all dims", [4, 6, 8, 16], [0, 1, 2, 3], "sum"],
  // Column reductions [R, K].
  ["column, linear bias", [128, 64], [0], "sumTo"],
  ["column, long", [2, 4096, 320], [0, 1], "sumTo"],
  ["column, odd", [1000, 3], [0], "sum"],
  ["column, long and narrow", [20000, 4], [0], "sum"],
  ["column, tiny", [5, 12], [0], "mean"],
  // Outer and inner [R1, K, R2] (conv bias gradients).
  ["outer+inner, conv bias", [16, 32, 6, 6], [0, 2, 3], "sumTo"],
  ["outer+inner, conv bias 2", [16, 16, 12, 12], [0, 2, 3], "sumTo"],
  ["outer+inner, long", [2, 40, 64, 64], [0, 2, 3], "sumTo"],
  ["outer+inner, odd", [3, 5, 7, 9], [0, 2, 3], "mean"],
  ["outer+inner, short runs", [3000, 7, 2], [0, 2], "sum"],
  // Kept outer and inner [K1, R, K2] (channel sums), and [K1, R1, K2, R2].
  ["batched column, channel sum", [4, 32, 12, 12], [1], "mean"],
  ["batched column, odd", [3, 7, 5], [1], "sum"],
  ["batched column, long", [2, 5000, 8], [1], "sum"],
  ["K R K R", [4, 6, 8, 16], [1, 3], "sum"],
  ["K R K R, odd", [3, 70, 5, 3], [1, 3], "mean"],
  // More alternations: reduced one group at a time.
  ["generic, R K R K", [5, 4, 3, 2], [0, 2], "sum"],
  ["generic, R K R K R", [2, 3, 4, 5, 6], [0, 2, 4], "mean"],
  ["generic, K R K R K R", [3, 4, 5, 6, 7, 8], [1, 3, 5], "sum"],
  ["generic, long", [64, 3, 64, 5, 16], [0, 2, 4], "sum"],
  // Size-1 dims and nothing left to reduce.
  ["size-1 reduced dim (a copy)", [4, 1, 5], [1], "mean"],
  ["size-1 everywhere", [1, 1], [0, 1], "sum"],
  ["size-1 dims merged away", [2, 1, 3, 1, 4], [0, 1, 4], "sum"],
];

for (const [name, shape, axes, op] of CASES) {
  Deno.test(`${op} ${name}: [${shape}] over [${axes}], every tuning and path`, async () => {
    for (const [, o] of OPTS) await checkSum(shape, axes, o, "f32", op);
  });
}

for (const [name, shape, axes, op] of CASES.filter((_, i) => i % 3 === 0 || i < 2)) {
  Deno.test(`${op} ${name}: [${shape}] over [${axes}], f16 storage`, NEEDS_F16, async () => {
    for (const [, o] of OPTS) await checkSum(shape, axes, o, "f16", op);
  });
}

Deno.test("sum: f16 texel-aligned cases take the texture path", {
  ignore: lacks({ dtype: "f16", path: "texture" }),
}, async () => {
  const gpu = await testGpu();
  for (
    const [shape, axes] of [[[16, 32, 8, 8], [0, 2, 3]], [[64, 64], [0]], [[1 << 16], [0]]] as [
      number[],
      number[],
    ][]
  ) {
    const steps = planSum(gpu, shape, axes, "f16", 1, { tuning: "cpu" });
    assert.notEqual(steps[0].mode, "s", `[${shape}] over [${axes}]`);
    await checkSum(shape, axes, { tuning: "cpu" }, "f16", "sum");
  }
});

Deno.test("sum: plans simplify the shape and split long reductions", NEEDS_TEXTURE, async () => {
  const gpu = await testGpu();
  const plan = (shape: number[], axes: number[], o: SumOptions) =>
    planSum(gpu, shape, axes, "f32", 1, o).map((s) => ({
      mode: s.mode,
      view: [s.view.k1, s.view.r1, s.view.k2, s.view.r2],
      parts: s.p1 * s.p2,
      coop: s.coop,
    }));
  const cpu: SumOptions = { tuning: "cpu" }, gpuT: SumOptions = { tuning: "gpu" };
  // Conv bias gradient [N, O, H, W] -> [O]: one pass on a CPU adapter, reading texels along HW.
  assert.deepEqual(plan([16, 32, 6, 6], [0, 2, 3], cpu), [
    { mode: "ti", view: [1, 16, 32, 9], parts: 1, coop: false },
  ]);
  // Linear bias [rows, n] -> [n]: a column sum, 4 columns per texel.
  assert.deepEqual(plan([128, 64], [0], cpu), [
    { mode: "tc", view: [1, 128, 16, 1], parts: 1, coop: false },
  ]);
  // Unaligned extents read the storage buffer.
  assert.deepEqual(plan([1000, 3], [0], cpu), [
    { mode: "s", view: [1, 1000, 3, 1], parts: 1, coop: false },
  ]);
  // A long full sum on a CPU adapter: 512 partials (8 workgroups), then their sum.
  assert.deepEqual(plan([1 << 20], [0], cpu), [
    { mode: "ti", view: [1, 1, 1, 1 << 18], parts: 512, coop: false },
    { mode: "s", view: [1, 512, 1, 1], parts: 1, coop: false },
  ]);
  // On a GPU the bias gradients split over a workgroup each (interleaved slots; adjacent columns).
  assert.deepEqual(plan([16, 32, 6, 6], [0, 2, 3], gpuT), [
    { mode: "s", view: [1, 16, 32, 36], parts: 32, coop: true },
  ]);
  assert.deepEqual(plan([128, 64], [0], gpuT), [
    { mode: "s", view: [1, 128, 64, 1], parts: 8, coop: true },
  ]);
  // Long columns: row blocks to partials, then a workgroup sum of each column's partials.
  assert.deepEqual(plan([2, 4096, 320], [0, 1], gpuT), [
    { mode: "s", view: [1, 8192, 320, 1], parts: 64, coop: false },
    { mode: "s", view: [1, 64, 320, 1], parts: 4, coop: true },
  ]);
  // A long full sum takes three passes on a GPU.
  assert.deepEqual(plan([1 << 20], [0], gpuT).map((s) => [s.parts, s.coop]), [
    [16384, false],
    [1024, false],
    [64, true],
  ]);
  // Size-1 dims vanish; neighbouring dims of a kind merge.
  assert.deepEqual(plan([2, 1, 3, 1, 4], [0, 1, 4], { tuning: "gpu", path: "storage" }), [
    { mode: "s", view: [1, 2, 3, 4], parts: 1, coop: false },
  ]);
  // Five alternating groups: the first reduced group alone (a column sum), then [K1, R1, K2, R2].
  assert.deepEqual(plan([2, 3, 4, 5, 6], [0, 2, 4], { tuning: "gpu", path: "storage" }), [
    { mode: "s", view: [1, 2, 3 * 4 * 5 * 6, 1], parts: 1, coop: false },
    { mode: "s", view: [3, 4, 5, 6], parts: 1, coop: false },
  ]);
});

Deno.test("sum: backward of the new paths broadcasts the gradient", async () => {
  for (const [, o] of OPTS.slice(0, 3)) {
    await checkOp({
      shapes: [[4, 8, 4, 4]],
      gpu: ([x]) => ops.mean(x, [0, 2, 3], false, o),
      ref: ([x]) => refSumFast(x, [4, 8, 4, 4], [0, 2, 3], 1 / 64),
      tol: 1e-5,
    });
  }
});
