/** Test helpers: one shared GPU, seeded random inputs, float64 references and gradient checks. */
import assert from "node:assert/strict";
import { Gpu } from "../../core/gpu/device.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { tidy } from "../../core/tensor/scope.ts";
import { backward } from "../../core/tensor/autograd.ts";
// Loading the kernel layer registers the gradient accumulator that backward() sums with.
import "../../core/ops.ts";

let shared: Promise<Gpu> | null = null;
/** The GPU shared by all tests of a process. */
export function testGpu(): Promise<Gpu> {
  shared ??= Gpu.open();
  return shared;
}

/**
 * What the shared GPU can do, known when a test file is loaded so that tests needing a path are
 * declared `ignore` (and reported as ignored) where the adapter lacks it, rather than passing
 * without running.
 */
export const CAPS: { f16: boolean; texture: boolean } = await testGpu().then((g) => ({
  f16: g.hasF16,
  texture: g.caps.textureOperands,
}));

/** `Deno.test` options of a test that needs shader-f16. */
export const NEEDS_F16 = { ignore: !CAPS.f16 };
/** `Deno.test` options of a test that needs the texture-operand kernels. */
export const NEEDS_TEXTURE = { ignore: !CAPS.texture };

/** The kernel paths this adapter runs, for tests that loop over paths inside one test. */
export const PATHS_HERE: ("storage" | "texture")[] = CAPS.texture
  ? ["storage", "texture"]
  : ["storage"];

/** Whether a test of `dtype` on kernel `path` must be ignored on this adapter. */
export function lacks(o: { dtype?: string; path?: string }): boolean {
  return (o.dtype === "f16" && !CAPS.f16) || (o.path === "texture" && !CAPS.texture);
}

/** Deterministic uniform(-1, 1) numbers (mulberry32). */
export function rand(n: number, seed = 1, lo = -1, hi = 1): Float64Array {
  let s = seed >>> 0;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const r = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    out[i] = lo + (hi - lo) * r;
  }
  return out;
}

/** Relative L2 error |a - b| / max(|b|, tiny). */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, `length ${a.length} vs ${b.length}`);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30);
}

export function assertClose(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: number,
  what = "",
): void {
  for (let i = 0; i < got.length; i++) {
    if (!Number.isFinite(got[i])) assert.fail(`${what}: non-finite value at ${i}: ${got[i]}`);
  }
  const e = relErr(got, want);
  assert.ok(e <= tol, `${what}: relative L2 error ${e.toExponential(3)} > ${tol}`);
}

export interface OpCase {
  /** Input shapes (f32 inputs, fresh random values). */
  shapes: number[][];
  /** The GPU op. */
  gpu: (xs: Tensor[]) => Tensor;
  /** A float64 reference of the same op on flat arrays; returns the flat output. */
  ref: (xs: Float64Array[]) => Float64Array;
  /** Forward tolerance (relative L2). */
  tol?: number;
  /** Gradient tolerance (relative L2) against central differences of the reference. */
  gradTol?: number;
  /** Which inputs get a gradient check (default all). */
  gradInputs?: number[];
  seed?: number;
  /** Custom input generator. */
  init?: (i: number, n: number) => Float64Array;
  dtype?: "f32" | "f16";
}

/**
 * Checks an op forward against its float64 reference, and its gradients (of L = sum(out * R) for a
 * random R) against central finite differences of the reference.
 */
export async function checkOp(c: OpCase): Promise<void> {
  const gpu = await testGpu();
  const seed = c.seed ?? 7;
  const inputs = c.shapes.map((s, i) => {
    const n = s.reduce((a, b) => a * b, 1);
    return c.init ? c.init(i, n) : rand(n, seed + 31 * i);
  });
  const dtype = c.dtype ?? "f32";
  const want = c.ref(inputs);
  const R = rand(want.length, seed + 999);
  const xs = inputs.map((d, i) => {
    const t = Tensor.from(gpu, Float32Array.from(d), c.shapes[i], dtype);
    t.requiresGrad = true;
    return t;
  });
  const out = tidy(() => c.gpu(xs));
  const got = await out.toF32();
  assertClose(got, want, c.tol ?? 1e-5, "forward");
  const which = c.gradInputs ?? c.shapes.map((_, i) => i);
  if (c.gradTol !== 0 && which.length) {
    const gOut = Tensor.from(gpu, Float32Array.from(R), out.shape, dtype);
    backward([out], [gOut]);
    gOut.dispose();
    for (const i of which) {
      const x = inputs[i];
      const num = new Float64Array(x.length);
      const h = 1e-4;
      const loss = (arr: Float64Array[]) => {
        const y = c.ref(arr);
        let s = 0;
        for (let j = 0; j < y.length; j++) s += y[j] * R[j];
        return s;
      };
      // Sample at most 64 coordinates to keep large cases fast.
      const step = Math.max(1, Math.floor(x.length / 64));
      const idx: number[] = [];
      for (let j = 0; j < x.length; j += step) idx.push(j);
      for (const j of idx) {
        const orig = x[j];
        x[j] = orig + h;
        const lp = loss(inputs);
        x[j] = orig - h;
        const lm = loss(inputs);
        x[j] = orig;
        num[j] = (lp - lm) / (2 * h);
      }
      assert.ok(xs[i].grad, `input ${i} has no gradient`);
      const g = await xs[i].grad!.toF32();
      assertClose(
        idx.map((j) => g[j]),
        idx.map((j) => num[j]),
        c.gradTol ?? 1e-3,
        `grad of input ${i}`,
      );
    }
  }
  out.dispose();
  for (const x of xs) {
    x.grad?.dispose();
    x.dispose();
  }
}
