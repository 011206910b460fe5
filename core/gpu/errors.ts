/** An error raised by the GPU layer: adapter, device, kernel compilation, limits or validation. */
export class GpuError extends Error {
  override name = "GpuError";
}
