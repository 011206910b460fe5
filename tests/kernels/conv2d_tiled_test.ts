/**
 * The workgroup-memory tiled convolutions (core/kernels/conv2d_tiled.ts), forced with
 * `path: "tiled"`: forward against a float64 reference, dx and dW (the tiled backward GEMMs) against
 * central differences of the reference, over 3x3 / 1x1 / strided / padded shapes, vec4 weight loads
 * (C*KH*KW a multiple of 4) and scalar ones, and f16 storage.
 */
import { checkOp, lacks } from "../helpers/gpu.ts";
import { conv2d } from "../../core/kernels/conv2d.ts";
import { refConv } from "./_reference.ts";

const cases: {
  x: number[];
  w: number[];
  s: number;
  p: number;
  bias: boolean;
  dtype?: "f32" | "f16";
}[] = [
  { x: [1, 1, 1, 1], w: [1, 1, 1, 1], s: 1, p: 0, bias: false },
  { x: [2, 3, 7, 6], w: [5, 3, 3, 3], s: 1, p: 1, bias: true }, // K = 27: scalar weight loads
  { x: [2, 4, 9, 9], w: [6, 4, 3, 3], s: 2, p: 1, bias: true }, // K = 36: vec4, stride 2
  { x: [1, 8, 5, 7], w: [70, 8, 1, 1], s: 1, p: 0, bias: true }, // 1x1, two row blocks
  { x: [2, 5, 6, 5], w: [3, 5, 3, 3], s: 2, p: 0, bias: false }, // no padding, dx gaps
  { x: [2, 4, 6, 6], w: [8, 4, 3, 3], s: 1, p: 1, bias: true, dtype: "f16" },
];

for (const c of cases) {
  const dtype = c.dtype ?? "f32";
  const name = `conv2d (tiled, ${dtype}) x [${c.x}] w [${c.w}] s${c.s} p${c.p}${
    c.bias ? " +bias" : ""
  }`;
  Deno.test(name, { ignore: lacks({ dtype }) }, async () => {
    await checkOp({
      shapes: c.bias ? [c.x, c.w, [c.w[0]]] : [c.x, c.w],
      gpu: ([x, w, b]) => conv2d(x, w, b, { stride: c.s, padding: c.p, path: "tiled" }),
      ref: ([x, w, b]) => refConv(x, c.x, w, c.w, c.s, c.p, b),
      tol: dtype === "f16" ? 2e-3 : 1e-5,
      gradTol: dtype === "f16" ? 0 : 1e-3,
      dtype,
    });
  });
}
