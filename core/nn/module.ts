/**
 * Modules and parameters. A module's field names are the checkpoint's key segments (diffusers style:
 * `down_blocks.0.resnets.1.conv1.weight`), so loading and saving are walks over the fields.
 */
import type { Gpu } from "../gpu/device.ts";
import { keep } from "../tensor/scope.ts";
import { noGrad } from "../tensor/autograd.ts";
import { cast } from "../ops.ts";
import { Tensor } from "../tensor/tensor.ts";

const PARAM = Symbol("parameter");

/** Creates a trainable parameter (kept outside every scope) from host values. */
export function parameter(gpu: Gpu, shape: number[], values: Float32Array): Tensor {
  const t = keep(Tensor.from(gpu, values, shape, "f32"));
  t.requiresGrad = true;
  (t as unknown as Record<symbol, boolean>)[PARAM] = true;
  return t;
}

/** Marks a tensor as a module parameter (e.g. an f16 working copy swapped in for a step). */
export function markParameter(t: Tensor): Tensor {
  (t as unknown as Record<symbol, boolean>)[PARAM] = true;
  return t;
}

export function isParameter(v: unknown): v is Tensor {
  return v instanceof Tensor && (v as unknown as Record<symbol, boolean>)[PARAM] === true;
}

/** Base class: walks fields for parameters and sub-modules. */
export abstract class Module {
  /** Parameters keyed by their dotted checkpoint names. */
  namedParameters(prefix = ""): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    const walk = (v: unknown, name: string) => {
      if (v === null || v === undefined) return;
      if (isParameter(v)) out.push([name, v]);
      else if (v instanceof Module) out.push(...v.namedParameters(name));
      else if (Array.isArray(v)) v.forEach((x, i) => walk(x, `${name}.${i}`));
    };
    for (const [k, v] of Object.entries(this)) {
      walk(v, prefix ? `${prefix}.${k}` : k);
    }
    return out;
  }

  /** Replaces every parameter by `fn(name, p)` in place (e.g. a cast to f16 for inference). */
  mapParameters(fn: (name: string, p: Tensor) => Tensor, prefix = ""): void {
    const visit = (
      holder: Record<string | number, unknown>,
      key: string | number,
      name: string,
    ) => {
      const v = holder[key];
      if (v === null || v === undefined) return;
      if (isParameter(v)) holder[key] = fn(name, v);
      else if (v instanceof Module) v.mapParameters(fn, name);
      else if (Array.isArray(v)) {
        v.forEach((_, i) => visit(v as unknown[] as Record<number, unknown>, i, `${name}.${i}`));
      }
    };
    const self = this as unknown as Record<string, unknown>;
    for (const k of Object.keys(self)) visit(self, k, prefix ? `${prefix}.${k}` : k);
  }

  /** The storage dtype of the parameters (the first parameter's). */
  get dtype(): "f32" | "f16" {
    return (this.parameters()[0]?.dtype as "f32" | "f16" | undefined) ?? "f32";
  }

  /**
   * Converts every parameter to `dtype` storage for inference (f16 halves memory and bandwidth;
   * kernels still accumulate in f32). The converted parameters do not require grad.
   */
  toDtype(dtype: "f32" | "f16"): this {
    this.mapParameters((_, p) => {
      if (p.dtype === dtype) return p;
      const gpu = p.gpu;
      if (dtype === "f16" && !gpu.hasF16) {
        throw new Error("toDtype: f16 storage needs the adapter feature 'shader-f16'");
      }
      const c = noGrad(() => cast(p, dtype));
      p.dispose();
      const q = keep(c);
      (q as unknown as Record<symbol, boolean>)[PARAM] = true;
      return q;
    });
    return this;
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  /** Number of scalar parameters. */
  numParameters(): number {
    return this.parameters().reduce((s, t) => s + t.size, 0);
  }

  /** Turns gradients on or off for every parameter (frozen text encoder, VAE). */
  requiresGrad(on: boolean): this {
    for (const p of this.parameters()) p.requiresGrad = on;
    return this;
  }

  /** Releases every parameter and gradient. */
  dispose(): void {
    for (const p of this.parameters()) {
      p.grad?.dispose();
      p.grad = null;
      p.dispose();
    }
  }
}

/** Deterministic host RNG for weight initialisation (xorshift128+ seeded by splitmix64-like mix). */
export class InitRng {
  private s: number;
  constructor(seed: number) {
    this.s = (seed >>> 0) || 0x9e3779b9;
  }
  /** Uniform in [0, 1). */
  next(): number {
    // mulberry32: small and good enough for initial weights.
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  uniform(n: number, bound: number): Float32Array {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = (this.next() * 2 - 1) * bound;
    return a;
  }
  normal(n: number, std = 1): Float32Array {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const u1 = Math.max(this.next(), 1e-12), u2 = this.next();
      a[i] = std * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
    }
    return a;
  }
}

/** Context for building modules: the device and the initialiser. */
export interface Init {
  gpu: Gpu;
  rng: InitRng;
}

export function newInit(gpu: Gpu, seed = 0): Init {
  return { gpu, rng: new InitRng(seed) };
}
