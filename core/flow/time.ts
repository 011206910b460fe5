/**
 * Flow time and the UNet's timestep input: the one definition that train, sample, generate's flow
 * teacher, the demo and the web page share. Flow time t runs from 0 (noise z0) to 1 (data z1).
 *
 * @module
 */

/** Where a flow model's time t in [0, 1] is mapped onto the UNet's timestep input. */
export type TimestepOrientation = "original" | "pretrained";

/** The orientations, for settings checks and help texts. */
export const TIMESTEP_ORIENTATIONS: readonly TimestepOrientation[] = ["original", "pretrained"];

/** The smallest flow time drawn in training and the sampler's end margin (the original's eps). */
export const FLOW_EPS = 1e-3;

/**
 * The UNet timestep of flow time t, in float32 as torch computes it from a float32 t:
 * "original" = floor(999 t) (the original tool), "pretrained" = 999 (1 - t) (a diffusion teacher's
 * convention, where timestep 999 is pure noise).
 */
export function unetTimestep(t: number, orientation: TimestepOrientation): number {
  const tf = Math.fround(t);
  if (orientation === "original") return Math.floor(Math.fround(999 * tf));
  if (orientation === "pretrained") return Math.fround(999 * Math.fround(1 - tf));
  throw new Error(
    `timestep_orientation: "${orientation}" is not ${TIMESTEP_ORIENTATIONS.join(" or ")}`,
  );
}
