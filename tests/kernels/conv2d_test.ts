import assert from "node:assert/strict";
import {
  assertClose,
  checkOp,
  lacks,
  NEEDS_F16,
  NEEDS_TEXTURE,
  PATHS_HERE,
  rand,
  testGpu,
} from "../helpers/gpu.ts";
import {
  conv2d,
  conv2dBackward,
  conv2dBackwardInput,
  conv2dBackwardWeight,
  convOutSize,
} from "../../core/kernels/conv2d.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { refConv } from "./_reference.ts";

const cases = [
  { x: [1, 1, 1, 1], w: [1, 1, 1, 1], s: 1, p: 0, bias: false },
  { x: [2, 3, 7, 6], w: [5, 3, 3, 3], s: 1, p: 1, bias: true },
  { x: [2, 4, 7, 9], w: [3, 4, 3, 3], s: 2, p: 1, bias: true },
  { x: [1, 6, 8, 8], w: [4, 6, 3, 3], s: 2, p: 1, bias: false },
  { x: [3, 5, 4, 3], w: [7, 5, 1, 1], s: 1, p: 0, bias: true },
  { x: [1, 9, 5, 5], w: [17, 9, 3, 3], s: 1, p: 1, bias: true },
];

for (const path of ["storage", "texture"] as const) {
  for (const c of cases) {
    Deno.test(
      `conv2d (${path}) x [${c.x}] w [${c.w}] stride ${c.s} pad ${c.p}${c.bias ? " +bias" : ""}`,
      { ignore: lacks({ path }) },
      async () => {
        await checkOp({
          shapes: c.bias ? [c.x, c.w, [c.w[0]]] : [c.x, c.w],
          gpu: ([x, w, b]) => conv2d(x, w, b, { stride: c.s, padding: c.p, path }),
          ref: ([x, w, b]) => refConv(x, c.x, w, c.w, c.s, c.p, b),
          tol: 1e-5,
          gradTol: 2e-3,
        });
      },
    );
  }
}

Deno.test("conv2d f16 storage", NEEDS_F16, async () => {
  for (const path of PATHS_HERE) {
    await checkOp({
      shapes: [[2, 8, 6, 6], [6, 8, 3, 3], [6]],
      dtype: "f16",
      gpu: ([x, w, b]) => conv2d(x, w, b, { padding: 1, path }),
      ref: ([x, w, b]) => refConv(x, [2, 8, 6, 6], w, [6, 8, 3, 3], 1, 1, b),
      tol: 3e-3,
      gradTol: 0,
    });
  }
});

// The texture forward packs x with the backward's activation pack: an f32 x with H*W a multiple of 4
// through a staging texture (when its buffer holds whole staging rows), else vec4 storage loads, or
// one texel per invocation when H*W is not a multiple of 4. Channel counts leave padded quads.
const forwardPackCases = [
  { what: "through a staging texture", x: [2, 5, 16, 16], staged: true },
  { what: "by vec4 loads (buffer too small to stage)", x: [2, 5, 6, 6], staged: false },
  { what: "per texel (H*W odd)", x: [3, 6, 5, 5], staged: false },
  { what: "single image, 1 channel, staged", x: [1, 1, 32, 32], staged: true },
];
for (const c of forwardPackCases) {
  Deno.test(`conv2d texture forward, x packed ${c.what}`, NEEDS_TEXTURE, async () => {
    const gpu = await testGpu();
    const ws = [3, c.x[1], 3, 3];
    const numel = (s: number[]) => s.reduce((a, b) => a * b, 1);
    const x = Tensor.from(gpu, Float32Array.from(rand(numel(c.x), 41)), c.x);
    const w = Tensor.from(gpu, Float32Array.from(rand(numel(ws), 42)), ws);
    const xv = Float64Array.from(await x.toF32()), wv = Float64Array.from(await w.toF32());
    let copies = 0;
    const orig = gpu.copyToTexture;
    gpu.copyToTexture = function (...args) {
      copies++;
      return orig.apply(this, args);
    };
    try {
      for (const s of [1, 2]) {
        const y = conv2d(x, w, undefined, { stride: s, padding: 1, path: "texture" });
        assertClose(await y.toF32(), refConv(xv, c.x, wv, ws, s, 1), 1e-5, `stride ${s}`);
        y.dispose();
      }
    } finally {
      gpu.copyToTexture = orig;
    }
    assert.equal(copies > 0, c.staged, `staging copies: ${copies}`);
    x.dispose();
    w.dispose();
  });
}

Deno.test("conv2d shape errors name the op and shapes", async () => {
  const gpu = await testGpu();
  const x = Tensor.from(gpu, new Float32Array(2 * 3 * 4 * 4), [2, 3, 4, 4]);
  const w = Tensor.from(gpu, new Float32Array(5 * 4 * 9), [5, 4, 3, 3]);
  const b = Tensor.from(gpu, new Float32Array(4), [4]);
  assert.throws(() => conv2d(x, w), /conv2d: x has 3 channels but weight expects 4.*\[2,3,4,4\]/);
  const w2 = Tensor.from(gpu, new Float32Array(5 * 3 * 9), [5, 3, 3, 3]);
  assert.throws(() => conv2d(x, w2, b), /conv2d: bias must have shape \[5\]/);
  for (const t of [x, w, b, w2]) t.dispose();
});

/** float64 references of conv2d's gradients: dx [N, C, H, W] and dW [O, C, kh, kw] given dy. */
function refConvBackward(
  x: Float64Array,
  [n, c, h, w]: number[],
  wt: Float64Array,
  [o, , kh, kw]: number[],
  dy: Float64Array,
  s: number,
  p: number,
): { dx: Float64Array; dw: Float64Array } {
  const oh = convOutSize(h, kh, s, p), ow = convOutSize(w, kw, s, p);
  const dx = new Float64Array(n * c * h * w), dw = new Float64Array(o * c * kh * kw);
  for (let b = 0; b < n; b++) {
    for (let oc = 0; oc < o; oc++) {
      for (let y = 0; y < oh; y++) {
        for (let xx = 0; xx < ow; xx++) {
          const g = dy[((b * o + oc) * oh + y) * ow + xx];
          for (let ic = 0; ic < c; ic++) {
            for (let ky = 0; ky < kh; ky++) {
              const iy = y * s - p + ky;
              if (iy < 0 || iy >= h) continue;
              for (let kx = 0; kx < kw; kx++) {
                const ix = xx * s - p + kx;
                if (ix < 0 || ix >= w) continue;
                const xi = ((b * c + ic) * h + iy) * w + ix,
                  wi = ((oc * c + ic) * kh + ky) * kw + kx;
                dx[xi] += g * wt[wi];
                dw[wi] += g * x[xi];
              }
            }
          }
        }
      }
    }
  }
  return { dx, dw };
}

const backwardCases = [
  { what: "3x3 pad 1 stride 1, 5 -> 3 channels", x: [2, 5, 7, 6], w: [3, 5, 3, 3], s: 1, p: 1 },
  {
    what: "3x3 pad 1 stride 2 (UNet downsampler)",
    x: [3, 16, 12, 12],
    w: [16, 16, 3, 3],
    s: 2,
    p: 1,
  },
  { what: "3x3 pad 1 stride 2, odd sizes", x: [2, 3, 7, 9], w: [5, 3, 3, 3], s: 2, p: 1 },
  { what: "3x3 pad 0 stride 1", x: [2, 4, 6, 5], w: [6, 4, 3, 3], s: 1, p: 0 },
  { what: "1x1, 48 -> 32 channels", x: [2, 48, 6, 6], w: [32, 48, 1, 1], s: 1, p: 0 },
  { what: "1x1, 5 -> 7, H*W not a multiple of 4", x: [3, 5, 5, 3], w: [7, 5, 1, 1], s: 1, p: 0 },
  {
    what: "1x1 stride 2 (taps missing whole phases)",
    x: [2, 4, 5, 6],
    w: [3, 4, 1, 1],
    s: 2,
    p: 0,
  },
  { what: "5x3 kernel pad 2 stride 3", x: [2, 3, 8, 7], w: [4, 3, 5, 3], s: 3, p: 2 },
  {
    what: "64 -> 16 channels (dW without a K split)",
    x: [2, 64, 5, 5],
    w: [16, 64, 3, 3],
    s: 1,
    p: 1,
  },
  { what: "single pixel", x: [1, 1, 1, 1], w: [1, 1, 1, 1], s: 1, p: 0 },
  { what: "2x2 image (packed without staging)", x: [1, 3, 2, 2], w: [2, 3, 3, 3], s: 1, p: 1 },
];

/** Uploads random x, w, dy of a case; returns the tensors and their (dtype-rounded) values. */
async function backwardInputs(
  c: { x: number[]; w: number[]; s: number; p: number },
  dtype: "f32" | "f16",
  seed: number,
) {
  const gpu = await testGpu();
  const dyShape = [
    c.x[0],
    c.w[0],
    convOutSize(c.x[2], c.w[2], c.s, c.p),
    convOutSize(c.x[3], c.w[3], c.s, c.p),
  ];
  const shapes = [c.x, c.w, dyShape];
  const ts = shapes.map((s, i) => {
    const n = s.reduce((a, b) => a * b, 1);
    return Tensor.from(gpu, Float32Array.from(rand(n, seed + 17 * i)), s, dtype);
  });
  const vals = await Promise.all(ts.map(async (t) => Float64Array.from(await t.toF32())));
  return { ts, vals };
}

for (const c of backwardCases) {
  Deno.test(`conv2d texture backward vs float64: ${c.what}`, NEEDS_TEXTURE, async () => {
    const { ts: [x, w, dy], vals: [xv, wv, dyv] } = await backwardInputs(c, "f32", 101);
    const want = refConvBackward(xv, c.x, wv, c.w, dyv, c.s, c.p);
    const o = { stride: c.s, padding: c.p, path: "texture" as const };
    const dx = conv2dBackwardInput(dy, w, c.x, o);
    const dw = conv2dBackwardWeight(dy, x, c.w, o);
    const [dx2, dw2] = conv2dBackward(dy, x, w, o);
    assertClose(await dx.toF32(), want.dx, 1e-5, "dx");
    assertClose(await dw.toF32(), want.dw, 1e-5, "dW");
    assertClose(await dx2.toF32(), want.dx, 1e-5, "dx (both at once)");
    assertClose(await dw2.toF32(), want.dw, 1e-5, "dW (both at once)");
    // The storage path agrees with the texture path.
    const so = { ...o, path: "storage" as const };
    const sdx = conv2dBackwardInput(dy, w, c.x, so), sdw = conv2dBackwardWeight(dy, x, c.w, so);
    assertClose(await sdx.toF32(), await dx.toF32(), 1e-5, "dx storage vs texture");
    assertClose(await sdw.toF32(), await dw.toF32(), 1e-5, "dW storage vs texture");
    for (const t of [x, w, dy, dx, dw, dx2, dw2, sdx, sdw]) t.dispose();
  });
}

Deno.test("conv2d texture backward f16 storage", {
  ignore: lacks({ dtype: "f16", path: "texture" }),
}, async () => {
  for (const c of [backwardCases[0], backwardCases[1], backwardCases[5], backwardCases[8]]) {
    const { ts: [x, w, dy], vals: [xv, wv, dyv] } = await backwardInputs(c, "f16", 202);
    const want = refConvBackward(xv, c.x, wv, c.w, dyv, c.s, c.p);
    const [dx, dw] = conv2dBackward(dy, x, w, { stride: c.s, padding: c.p, path: "texture" });
    assert.equal(dx.dtype, "f16");
    assert.equal(dw.dtype, "f16");
    // f32 accumulation; only the final rounding to f16 (~5e-4 relative) remains.
    assertClose(await dx.toF32(), want.dx, 2e-3, `dx f16 (${c.what})`);
    assertClose(await dw.toF32(), want.dw, 2e-3, `dW f16 (${c.what})`);
    for (const t of [x, w, dy, dx, dw]) t.dispose();
  }
});

Deno.test(
  "conv2d backward takes the texture path by default, storage on request",
  NEEDS_TEXTURE,
  async () => {
    const gpu = await testGpu();
    const c = backwardCases[0];
    const { ts: [x, w, dy] } = await backwardInputs(c, "f32", 303);
    const names: string[] = [];
    const orig = gpu.dispatch;
    gpu.dispatch = function (k, ...rest) {
      names.push(k.name);
      return orig.call(this, k, ...rest);
    };
    try {
      for (const path of [undefined, "storage"] as const) {
        names.length = 0;
        const [dx, dw] = conv2dBackward(dy, x, w, { stride: c.s, padding: c.p, path });
        await gpu.sync();
        if (path) assert.deepEqual(names.sort(), ["conv2d_dw", "conv2d_dx"]);
        else {
          assert.ok(names.includes("conv2d_tex_dx") && names.includes("conv2d_tex_dw"), `${names}`);
          assert.ok(!names.includes("conv2d_dx") && !names.includes("conv2d_dw"), `${names}`);
        }
        dx.dispose();
        dw.dispose();
      }
    } finally {
      gpu.dispatch = orig;
    }
    for (const t of [x, w, dy]) t.dispose();
  },
);
