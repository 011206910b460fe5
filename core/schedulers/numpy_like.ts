/**
 * Tiny re-creations of the numpy behaviours that decide diffusers' integer timesteps:
 * `np.linspace`, `np.arange` with a float step, and `np.round` (round half to even).
 * Getting these bit-exact matters because a timestep that rounds differently changes the schedule.
 *
 * @module
 */

/** numpy's `round`: nearest integer, ties to even. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x); // ties go up here
  if (Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0) return r - 1;
  return r;
}

/** numpy's `linspace(start, stop, num)` (endpoint included): start + i * step, last = stop. */
export function linspace(start: number, stop: number, num: number): number[] {
  if (num <= 0) return [];
  if (num === 1) return [start];
  const step = (stop - start) / (num - 1);
  const out = new Array<number>(num);
  for (let i = 0; i < num; i++) out[i] = i * step + start;
  out[num - 1] = stop;
  return out;
}

/** numpy's `arange(start, stop, step)` for float arguments: length ceil((stop - start) / step). */
export function arange(start: number, stop: number, step: number): number[] {
  const n = Math.max(0, Math.ceil((stop - start) / step));
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) out[i] = start + i * step;
  return out;
}
