/**
 * Per-sample measures of a sampled flow path, gathered while the sampler runs (no extra model
 * calls, O(state) memory); the one straightness of the project (sample job, trainer grids,
 * `flow_samplers.straightness`, demo, web page):
 *
 * - straightness S = mean over the velocity evaluations k of mean_j ((x_1 - x_0)_j - v_k,j)²
 *   (Liu et al. 2022): zero when the path is a straight line travelled at constant speed. It is
 *   accumulated as K|d|² - 2 d·Σv_k + Σ|v_k|² once d = x_1 - x_0 is known. With one Euler step
 *   it is 0 by construction (x_1 - x_0 = v). For RK45 every evaluation counts, stage and
 *   rejected-step evaluations included.
 * - the mean squared distance of the sample to a reference latent (the teacher's z1).
 *
 * @module
 */
/** Accumulates the velocities of a batch of samples (sample-major state vectors). */
export class PathStats {
  readonly #sumV: Float64Array;
  readonly #sumSq: Float64Array;
  #count = 0;

  /**
   * @param batch number of samples in the state
   * @param size values per sample (C·H·W)
   */
  constructor(readonly batch: number, readonly size: number) {
    this.#sumV = new Float64Array(batch * size);
    this.#sumSq = new Float64Array(batch);
  }

  /** Number of velocity evaluations recorded. */
  get evaluations(): number {
    return this.#count;
  }

  /** Records one evaluation v (batch·size values). */
  add(v: ArrayLike<number>): void {
    const { batch, size } = this;
    if (v.length !== batch * size) {
      throw new Error(`PathStats: velocity has ${v.length} values, expected ${batch} x ${size}`);
    }
    for (let b = 0; b < batch; b++) {
      let sq = 0;
      for (let j = b * size; j < (b + 1) * size; j++) {
        const x = v[j];
        this.#sumV[j] += x;
        sq += x * x;
      }
      this.#sumSq[b] += sq;
    }
    this.#count++;
  }

  /** Straightness of each sample given the start x0 and end x1 states (batch·size each). */
  straightness(x0: ArrayLike<number>, x1: ArrayLike<number>): number[] {
    const { batch, size } = this;
    const K = this.#count;
    if (K === 0) throw new Error("PathStats: no velocity recorded");
    const out: number[] = [];
    for (let b = 0; b < batch; b++) {
      let dd = 0;
      let dv = 0;
      for (let j = b * size; j < (b + 1) * size; j++) {
        const d = x1[j] - x0[j];
        dd += d * d;
        dv += d * this.#sumV[j];
      }
      // Rounding can leave a tiny negative value for an exactly straight path.
      out.push(Math.max(0, (K * dd - 2 * dv + this.#sumSq[b]) / (K * size)));
    }
    return out;
  }
}

/** Mean squared difference of each sample of `a` and `b` (batch·size values each). */
export function perSampleMse(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  batch: number,
  size: number,
): number[] {
  if (a.length !== batch * size || b.length !== batch * size) {
    throw new Error(
      `perSampleMse: expected ${batch} x ${size} values, got ${a.length} and ${b.length}`,
    );
  }
  const out: number[] = [];
  for (let s = 0; s < batch; s++) {
    let acc = 0;
    for (let j = s * size; j < (s + 1) * size; j++) {
      const d = a[j] - b[j];
      acc += d * d;
    }
    out.push(acc / size);
  }
  return out;
}
