/**
 * The UNet as the velocity model of the rectified-flow ODE dx/dt = v(x, t) on host float32 states:
 * flow time t becomes the UNet timestep (time.ts) for every sample of the batch, the captions'
 * hidden states are the context, and the UNet runs without the autograd tape inside a `tidy`
 * scope with one read-back per evaluation, so GPU memory is flat across steps.
 *
 * @module
 */

import type { Gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { tidy } from "../tensor/scope.ts";
import { noGrad } from "../tensor/autograd.ts";
import type { VelocityModel } from "../schedulers/flow_samplers.ts";
import { type TimestepOrientation, unetTimestep } from "./time.ts";

/** What a velocity model needs of a UNet. */
export interface VelocityNet {
  /** sample [B, C, H, W], timesteps f32 [B], context [B, L, D] -> [B, C, H, W]. */
  forward(sample: Tensor, timesteps: Tensor, context: Tensor): Tensor;
}

/**
 * v(x, t) of `unet` for a batch of B = context.shape[0] latents of `shape` [C, H, W]: the UNet
 * sees x as [B, C, H, W], the timestep `unetTimestep(t, orientation)` for every sample, and
 * `context`. `onVelocity` sees each velocity read back (path statistics).
 */
export function unetVelocity(
  gpu: Gpu,
  unet: VelocityNet,
  context: Tensor,
  shape: readonly [number, number, number],
  orientation: TimestepOrientation,
  onVelocity?: (v: Float32Array) => void,
): VelocityModel {
  const [C, H, W] = shape;
  const B = context.shape[0];
  return async (x, t) => {
    if (x.length !== B * C * H * W) {
      throw new Error(`velocity: state of ${x.length} values is not ${B} x ${C}x${H}x${W}`);
    }
    const ts = new Float32Array(B).fill(unetTimestep(t, orientation));
    const out = noGrad(() =>
      tidy(() =>
        unet.forward(Tensor.from(gpu, x, [B, C, H, W]), Tensor.from(gpu, ts, [B]), context)
      )
    );
    let v: Float32Array;
    try {
      v = await out.toF32();
    } finally {
      out.dispose();
    }
    onVelocity?.(v);
    return v;
  };
}
