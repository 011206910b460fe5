/**
 * Embedding lookup: out[..., d] = weight[ids[...], d] for i32 ids and a [V, D] table. The backward to
 * the table is a deterministic gather (WGSL has no float atomics): one thread per (row v, column d)
 * sums the output gradient over every position whose id is v, in position order, so repeated ids
 * accumulate the same way on every adapter.
 */
import { GpuError } from "../gpu/errors.ts";
import { record, save } from "../tensor/autograd.ts";
import { Tensor } from "../tensor/tensor.ts";
import {
  checkArgs,
  grid1d,
  GRID_ARGS,
  header,
  linearIndex,
  packUniforms,
  wgslType,
} from "./common.ts";
import { bindings, uniformBinding } from "./bindings.ts";

const WG = 256;

function gatherRaw(ids: Tensor, weight: Tensor): Tensor {
  const gpu = weight.gpu;
  const [V, D] = weight.shape;
  const n = ids.size * D;
  const out = Tensor.empty(gpu, [...ids.shape, D], weight.dtype);
  const T = wgslType(weight.dtype);
  const k = gpu.kernel("embedding", T, () =>
    `${header(weight.dtype)}
struct U { n: u32, d: u32, v: u32 };
${uniformBinding()}
${bindings([["ids", "read", "i32"], ["w", "read", T], ["y", "read_write", T]])}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${linearIndex(WG)};
  if (i >= u.n) { return; }
  let id = ids[i / u.d];
  // Out-of-range ids (checked on the host where ids come from host data) read as zeros.
  if (id < 0 || u32(id) >= u.v) { y[i] = ${T}(0.0); return; }
  y[i] = w[u32(id) * u.d + i % u.d];
}`);
  gpu.dispatch(
    k,
    [ids.buffer, weight.buffer, out.buffer],
    packUniforms([n, D, V]),
    grid1d(gpu, n, WG),
  );
  return out;
}

function scatterGrad(ids: Tensor, g: Tensor, V: number, D: number): Tensor {
  const gpu = g.gpu;
  const out = Tensor.empty(gpu, [V, D], g.dtype);
  const T = wgslType(g.dtype);
  const k = gpu.kernel("embedding_backward", T, () =>
    `${header(g.dtype)}
struct U { n: u32, d: u32, m: u32 };
${uniformBinding()}
${bindings([["ids", "read", "i32"], ["g", "read", T], ["gw", "read_write", T]])}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}, @builtin(workgroup_id) wid: vec3<u32>) {
  let i = ${linearIndex(WG)};
  if (i >= u.n) { return; }
  let v = i32(i / u.d);
  let d = i % u.d;
  var acc = 0.0;
  // Positions counted from a per-workgroup base, not the constant 0: lavapipe (Mesa 22)
  // specialises the uniform bound of a constant-start loop at each dispatch and can end up
  // recompiling per dispatch.
  let pBase = wid.x;
  for (var pPos = pBase; pPos < pBase + u.m; pPos++) {
    let p = pPos - pBase;
    if (ids[p] == v) { acc += f32(g[p * u.d + d]); }
  }
  gw[i] = ${T}(acc);
}`);
  gpu.dispatch(
    k,
    [ids.buffer, g.buffer, out.buffer],
    packUniforms([V * D, D, ids.size]),
    grid1d(gpu, V * D, WG),
  );
  return out;
}

/**
 * Looks up rows of `weight` [V, D] for i32 `ids` of any shape; returns [...ids.shape, D]. Ids outside
 * [0, V) give zero rows (validate host ids with {@link embeddingFromHost}).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Gpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 *
 * const gpu = await Gpu.open();
 * const tokenEmbeddingWeight = Tensor.from(gpu, [0, 0, 1, 1, 2, 2], [3, 2]); // [V, D]
 * const tokenIds = Tensor.from(gpu, [2, 0, 1], [1, 3], "i32"); // [B, L]
 * const h = embedding(tokenIds, tokenEmbeddingWeight); // [1, 3] -> [1, 3, 2]
 * assert.deepEqual([...await h.toF32()], [2, 2, 0, 0, 1, 1]);
 * ```
 */
export function embedding(ids: Tensor, weight: Tensor): Tensor {
  checkArgs("embedding", [ids], ["i32"]);
  checkArgs("embedding", [ids, weight]);
  checkArgs("embedding", [weight], ["f32", "f16"]);
  if (weight.shape.length !== 2) {
    throw new GpuError(`embedding: weight must be [V, D], got [${weight.shape}]`);
  }
  const [V, D] = weight.shape;
  const out = gatherRaw(ids, weight);
  const sIds = save(ids);
  return record("embedding", out, [null, weight], (g) => [
    null,
    scatterGrad(sIds, g.alias([sIds.size, D]), V, D),
  ], [sIds]);
}

/**
 * {@link embedding} for ids held on the host: checks every id against the vocabulary size first, so
 * a bad token id fails with a message instead of silently reading zeros.
 */
export function embeddingFromHost(
  ids: Int32Array,
  shape: readonly number[],
  weight: Tensor,
): Tensor {
  checkArgs("embedding", [weight], ["f32", "f16"]);
  const V = weight.shape[0];
  for (let i = 0; i < ids.length; i++) {
    if (ids[i] < 0 || ids[i] >= V) {
      throw new GpuError(
        `embedding: id ${ids[i]} at position ${i} is out of range for vocabulary size ${V}`,
      );
    }
  }
  const t = Tensor.from(weight.gpu, ids, shape, "i32");
  const out = embedding(t, weight);
  // The op saved its own alias of the ids for backward.
  t.dispose();
  return out;
}
