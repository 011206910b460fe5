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
