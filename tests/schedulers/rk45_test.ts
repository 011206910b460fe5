/** solveRK45 / rk45Sample against scipy 1.10 solve_ivp(method="RK45") runs (make_rk45_refs.py). */
import assert from "node:assert/strict";
import { solveRK45 } from "../../core/schedulers/dormand_prince.ts";
import { rk45Sample } from "../../core/schedulers/flow_samplers.ts";
import { relativeL2 } from "../../core/schedulers/vec.ts";
import { readFixtureJson } from "./_npy.ts";

interface RefCase {
  name: string;
  kind: "linear" | "cubic_sin" | "stiff" | "affine";
  params: { M?: number[][]; W?: number[][]; b?: number[]; c?: number[]; k?: number };
  t_span: [number, number];
  y0: number[];
  tol: number;
  t: number[];
  nfev: number;
  y_final: number[];
}

const refs = readFixtureJson<{ cases: RefCase[] }>("rk45_refs.json").cases;

function matVec(m: number[][], y: ArrayLike<number>): Float64Array {
  return Float64Array.from(m, (row) => row.reduce((s, a, j) => s + a * y[j], 0));
}

function rhsFor(c: RefCase): (t: number, y: Float64Array) => Float64Array {
  const p = c.params;
  switch (c.kind) {
    case "linear":
      return (_t, y) => matVec(p.M!, y);
    case "cubic_sin":
      return (t, y) => Float64Array.from(y, (v) => -(v ** 3) + Math.sin(t));
    case "stiff":
      return (t, y) => Float64Array.from(y, (v) => -p.k! * (v - Math.cos(t)));
    case "affine":
      return (t, y) => {
        const out = matVec(p.W!, y);
        for (let i = 0; i < out.length; i++) out[i] += p.b![i] * t + (p.c?.[i] ?? 0);
        return out;
      };
  }
}

for (const c of refs) {
  Deno.test(`rk45 vs scipy: ${c.name} (same accepted steps, nfev, final state)`, async () => {
    const sol = await solveRK45(rhsFor(c), c.t_span[0], c.t_span[1], Float64Array.from(c.y0), {
      rtol: c.tol,
      atol: c.tol,
    });
    assert.equal(sol.status, "finished");
    assert.equal(sol.nfev, c.nfev, "nfev");
    assert.equal(sol.t.length, c.t.length, "number of accepted steps");
    const worstT = Math.max(...sol.t.map((t, i) => Math.abs(t - c.t[i])));
    // Same steps; times agree to rounding (the embedded error estimate is a cancelling difference,
    // so summation order alone moves the step sizes by ~1e-12).
    assert.ok(worstT <= 1e-10, `accepted times differ by ${worstT}`);
    const err = relativeL2(sol.y, Float64Array.from(c.y_final));
    assert.ok(err <= 1e-6, `final state rel err ${err}`);
    assert.equal(sol.nfev, 2 + 6 * (sol.accepted + sol.rejected), "nfev accounting");
    console.log(
      `${c.name}: ${sol.accepted} steps, ${sol.rejected} rejected, nfev ${sol.nfev}, ` +
        `max |dt| ${worstT.toExponential(1)}, final rel ${err.toExponential(1)}`,
    );
  });
}

Deno.test("rk45Sample: float32 model on the 50-dim case matches scipy's step sequence", async () => {
  const c = refs.find((r) => r.name === "linear50")!;
  const f = rhsFor(c);
  const res = await rk45Sample(
    (x, t) => Promise.resolve(Float32Array.from(f(t, Float64Array.from(x)))),
    Float64Array.from(c.y0),
    { tol: c.tol, eps: c.t_span[0], returnTrajectory: true },
  );
  // The model sees float32 states, so only agreement to float32 accuracy is expected.
  assert.equal(res.nfe, c.nfev);
  assert.equal(res.acceptedTimes.length, c.t.length);
  assert.equal(res.trajectory!.length, c.t.length);
  const err = relativeL2(res.x, Float64Array.from(c.y_final));
  assert.ok(err <= 1e-5, `rel err ${err}`);
});

Deno.test("rk45: bad tolerance names the setting", async () => {
  await assert.rejects(
    () => solveRK45((_t, y) => y, 0, 1, new Float64Array(1), { rtol: 0 }),
    /rtol=0/,
  );
});
