/**
 * Basic layers with PyTorch's parameter layouts and default initialisation: Linear, Conv2d, GroupNorm,
 * LayerNorm. Forward calls the core's kernels.
 */
import type { Tensor } from "../tensor/tensor.ts";
import { type Init, Module, parameter } from "./module.ts";
import { conv2d, groupNorm, layerNorm, linear } from "../ops.ts";

/** y = x W^T + b; weight [out, in]. PyTorch init: U(-1/sqrt(in), 1/sqrt(in)) for both. */
export class Linear extends Module {
  weight: Tensor;
  bias: Tensor | null;
  constructor(init: Init, readonly inF: number, readonly outF: number, bias = true) {
    super();
    const bound = 1 / Math.sqrt(inF);
    this.weight = parameter(init.gpu, [outF, inF], init.rng.uniform(outF * inF, bound));
    this.bias = bias ? parameter(init.gpu, [outF], init.rng.uniform(outF, bound)) : null;
  }
  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias ?? undefined);
  }
}

/** 2-D convolution, weight [out, in, k, k]. PyTorch init: U(+-1/sqrt(in*k*k)). */
export class Conv2d extends Module {
  weight: Tensor;
  bias: Tensor | null;
  constructor(
    init: Init,
    readonly inC: number,
    readonly outC: number,
    readonly kernel: number,
    readonly stride = 1,
    readonly padding = 0,
    bias = true,
  ) {
    super();
    const fanIn = inC * kernel * kernel;
    const bound = 1 / Math.sqrt(fanIn);
    this.weight = parameter(
      init.gpu,
      [outC, inC, kernel, kernel],
      init.rng.uniform(outC * fanIn, bound),
    );
    this.bias = bias ? parameter(init.gpu, [outC], init.rng.uniform(outC, bound)) : null;
  }
  forward(x: Tensor): Tensor {
    return conv2d(x, this.weight, this.bias ?? undefined, {
      stride: this.stride,
      padding: this.padding,
    });
  }
}

/** GroupNorm with per-channel affine (weight 1, bias 0 at init); `silu` fuses the activation. */
export class GroupNorm extends Module {
  weight: Tensor;
  bias: Tensor;
  constructor(init: Init, readonly groups: number, readonly channels: number, readonly eps = 1e-5) {
    super();
    this.weight = parameter(init.gpu, [channels], new Float32Array(channels).fill(1));
    this.bias = parameter(init.gpu, [channels], new Float32Array(channels));
  }
  forward(x: Tensor, silu = false): Tensor {
    return groupNorm(x, this.groups, this.weight, this.bias, this.eps, { silu });
  }
}

/** LayerNorm over the last axis (weight 1, bias 0 at init). */
export class LayerNorm extends Module {
  weight: Tensor;
  bias: Tensor;
  constructor(init: Init, readonly dim: number, readonly eps = 1e-5) {
    super();
    this.weight = parameter(init.gpu, [dim], new Float32Array(dim).fill(1));
    this.bias = parameter(init.gpu, [dim], new Float32Array(dim));
  }
  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight, this.bias, this.eps);
  }
}
