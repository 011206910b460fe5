/** Every tensor op, in one namespace: `import * as ops from "./core/ops.ts"`. */
export { add, addInPlace, binaryRaw, div, mul, sub } from "./kernels/binary.ts";
export {
  clamp,
  exp,
  gelu,
  geluTanh,
  neg,
  relu,
  scale,
  sigmoid,
  silu,
  sqrt,
  square,
  tanh,
} from "./kernels/unary.ts";
export { mean, sum, sumTo } from "./kernels/reduce.ts";
export { broadcastShape, broadcastTo } from "./kernels/broadcast.ts";
export {
  clone,
  concat,
  fillZero,
  flip,
  pad2d,
  padRightBottom,
  permute,
  reshape,
  slice,
  split,
  transpose,
  zerosLike,
} from "./kernels/strided_copy.ts";
export { fill } from "./kernels/fill.ts";
export { softmax } from "./kernels/softmax.ts";
export { layerNorm } from "./kernels/layer_norm.ts";
export { groupNorm, type GroupNormOptions } from "./kernels/group_norm.ts";
export { attention, type AttentionOptions } from "./kernels/attention.ts";
export { randomNormal, type RandomOptions, randomUniform } from "./kernels/random.ts";
export { timestepEmbedding } from "./kernels/timestep_embedding.ts";
export { embedding, embeddingFromHost } from "./kernels/embedding.ts";
export { interpolateNearest, upsampleNearest2x } from "./kernels/upsample.ts";
export { geglu } from "./kernels/geglu.ts";
export { mse, type MseReduction } from "./kernels/mse.ts";
export { cast } from "./kernels/cast.ts";
export { linear, matmul, matmulRaw } from "./kernels/matmul.ts";
export { conv2d, conv2dRaw } from "./kernels/conv2d.ts";
export { maxPool2x2 } from "./kernels/max_pool.ts";
export { type AdamWStep, adamwUpdate, emaUpdate, globalGradNorm } from "./kernels/optim.ts";
