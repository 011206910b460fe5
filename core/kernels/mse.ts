/**
 * Mean squared error between two tensors of one shape, as the reflow L2 loss uses it:
 * - "mean": mean over every element -> [1] (`F.mse_loss`);
 * - "per_sample_mean": mean over all but the first axis -> [B] (score_sde's reduce_mean=True);
 * - "half_sum": 0.5 * sum over all but the first axis -> [B] (score_sde's reduce_mean=False).
 * The loss is f32 whatever the inputs' dtype; one workgroup reduces one row in f32.
 */
import { GpuError } from "../gpu/errors.ts";
import { record, save } from "../tensor/autograd.ts";
import { sameShape, Tensor } from "../tensor/tensor.ts";
import {
  checkArgs,
  f32u,
  grid1d,
  GRID_ARGS,
  header,
  linearIndex,
  packUniforms,
  sameDtype,
  wgslType,
} from "./common.ts";
import { bindings, uniformBinding } from "./bindings.ts";
import { ROW_ARGS, ROW_INDEX, ROW_WG, rowGrid, wgReduceWgsl } from "./row_reduce.ts";
import { scale } from "./unary.ts";

const WG = 256;

export type MseReduction = "mean" | "per_sample_mean" | "half_sum";

export interface MseOptions {
  /** Default "mean". */
  reduction?: MseReduction;
}

function forwardRaw(p: Tensor, t: Tensor, rows: number, alpha: number): Tensor {
  const gpu = p.gpu;
  const out = Tensor.empty(gpu, [rows], "f32");
  const T = wgslType(p.dtype);
  const k = gpu.kernel("mse", T, () =>
    `${header(p.dtype)}
struct U { cols: u32, rows: u32, alpha: f32 };
${uniformBinding()}
${bindings([["p", "read", T], ["t", "read", T], ["y", "read_write", "f32"]])}
${wgReduceWgsl(ROW_WG)}
@compute @workgroup_size(${ROW_WG})
fn main(${ROW_ARGS}) {
  let r = ${ROW_INDEX};
  // Rows past the end still join the barriers; they only skip the loads and the store.
  let live = r < u.rows;
  let base = r * u.cols;
  var acc = 0.0;
  if (live) {
    for (var j = li; j < u.cols; j += ${ROW_WG}u) {
      let d = f32(p[base + j]) - f32(t[base + j]);
      acc += d * d;
    }
  }
  let s = wgSum(acc, li);
  if (live && li == 0u) { y[r] = s * u.alpha; }
}`);
  gpu.dispatch(
    k,
    [p.buffer, t.buffer, out.buffer],
    packUniforms([p.size / rows, rows, f32u(alpha)]),
    rowGrid(gpu, rows),
  );
  return out;
}

/** d loss / d pred = g[row] * 2 * alpha * (p - t), in pred's dtype. */
function gradRaw(p: Tensor, t: Tensor, g: Tensor, rows: number, alpha: number): Tensor {
  const gpu = p.gpu;
  const out = Tensor.empty(gpu, p.shape, p.dtype);
  const T = wgslType(p.dtype);
  // The seed gradient is normally f32 like the loss, but accept an f16 one too.
  const G = wgslType(g.dtype);
  const k = gpu.kernel("mse_backward", `${T}|${G}`, () =>
    `${header(p.dtype, g.dtype)}
struct U { n: u32, cols: u32, alpha2: f32 };
${uniformBinding()}
${bindings([["p", "read", T], ["t", "read", T], ["g", "read", G], ["gp", "read_write", T]])}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${linearIndex(WG)};
  if (i >= u.n) { return; }
  gp[i] = ${T}(f32(g[i / u.cols]) * u.alpha2 * (f32(p[i]) - f32(t[i])));
}`);
  gpu.dispatch(
    k,
    [p.buffer, t.buffer, g.buffer, out.buffer],
    packUniforms([p.size, p.size / rows, f32u(2 * alpha)]),
    grid1d(gpu, p.size, WG),
  );
  return out;
}

/**
 * Squared-error loss of `pred` against `target` (same shape and dtype); f32 result, [1] for "mean",
 * [B] (B = first axis) for the per-sample reductions. Differentiable in both inputs.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Gpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { sub } from "./binary.ts";
 *
 * const gpu = await Gpu.open();
 * const z0 = Tensor.from(gpu, [0, 1, 0, 1], [2, 2]);
 * const z1 = Tensor.from(gpu, [1, 3, 3, 5], [2, 2]);
 * const pred = Tensor.from(gpu, [1, 2, 3, 2], [2, 2]); // the student's velocity
 * const loss = mse(pred, sub(z1, z0), { reduction: "mean" });
 * assert.deepEqual([...await loss.toF32()], [1]); // ((4 - 2)^2 + 0 + 0 + 0) / 4
 * const perSample = mse(pred, sub(z1, z0), { reduction: "per_sample_mean" });
 * assert.deepEqual([...await perSample.toF32()], [0, 2]);
 * ```
 */
export function mse(pred: Tensor, target: Tensor, opts: MseOptions = {}): Tensor {
  const reduction = opts.reduction ?? "mean";
  checkArgs("mse", [pred, target], ["f32", "f16"]);
  sameDtype("mse", [pred, target]);
  if (!sameShape(pred.shape, target.shape)) {
    throw new GpuError(`mse: pred [${pred.shape}] and target [${target.shape}] differ in shape`);
  }
  if (pred.size === 0) throw new GpuError(`mse: empty input [${pred.shape}]`);
  let rows: number, alpha: number;
  if (reduction === "mean") {
    rows = 1;
    alpha = 1 / pred.size;
  } else if (reduction === "per_sample_mean" || reduction === "half_sum") {
    if (pred.shape.length < 1) throw new GpuError(`mse: ${reduction} needs a batch axis`);
    rows = pred.shape[0];
    alpha = reduction === "half_sum" ? 0.5 : rows / pred.size;
  } else {
    throw new GpuError(`mse: unknown reduction '${reduction}'`);
  }
  const out = forwardRaw(pred, target, rows, alpha);
  const sp = save(pred), st = save(target);
  return record("mse", out, [pred, target], (g) => {
    const gp = gradRaw(sp, st, g, rows, alpha);
    const gt = target.requiresGrad ? scale(gp, -1) : null;
    return [pred.requiresGrad ? gp : null, gt];
  }, [sp, st]);
}
