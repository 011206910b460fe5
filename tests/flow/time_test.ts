/** The one flow-time rules: eps and the UNet timestep of flow time t in both orientations. */
import assert from "node:assert/strict";
import {
  FLOW_EPS,
  TIMESTEP_ORIENTATIONS,
  type TimestepOrientation,
  unetTimestep,
} from "../../core/flow/time.ts";
import { REFLOW_EPS, unetTimestep as lossTimestep } from "../../core/train/reflow_loss.ts";
import { FLOW_EPS as SAMPLER_EPS } from "../../core/schedulers/flow_samplers.ts";

/** Float32 arithmetic as torch does it on a float32 t, step by step through a Float32Array. */
function reference(t: number, orientation: TimestepOrientation): number {
  const f = new Float32Array(3);
  f[0] = t; // t as float32
  if (orientation === "original") {
    f[1] = 999 * f[0];
    return Math.floor(f[1]);
  }
  f[1] = 1 - f[0];
  f[2] = 999 * f[1];
  return f[2];
}

Deno.test("unetTimestep: original = floor(999 t), pretrained = 999 (1 - t), in float32", () => {
  const ts = [
    ...Array.from({ length: 2000 }, () => Math.random()),
    ...Array.from({ length: 999 }, (_, k) => k / 999),
    ...Array.from({ length: 200 }, () => FLOW_EPS + Math.random() * 1e-3),
    0,
    FLOW_EPS,
    1,
  ];
  for (const t of ts) {
    for (const o of TIMESTEP_ORIENTATIONS) {
      assert.equal(unetTimestep(t, o), reference(t, o), `t = ${t}, ${o}`);
    }
  }
  assert.equal(unetTimestep(0.5, "original"), 499);
  assert.equal(unetTimestep(1, "original"), 999);
  assert.equal(unetTimestep(0, "pretrained"), 999);
  assert.equal(unetTimestep(1, "pretrained"), 0);
  assert.equal(unetTimestep(0.25, "pretrained"), Math.fround(999 * 0.75));
  assert.throws(
    () => unetTimestep(0.5, "sideways" as TimestepOrientation),
    /"sideways" is not original or pretrained/,
  );
});

Deno.test("unetTimestep: rounding t to float32 first changes the original timestep", () => {
  // t just below k/999 in float64 whose float32 rounds up: the float64 floor would give k - 1.
  let differs = 0;
  for (let k = 1; k < 999; k++) {
    const t = k / 999 - 1e-12;
    if (Math.floor(999 * t) !== unetTimestep(t, "original")) differs++;
    assert.equal(unetTimestep(t, "original"), reference(t, "original"));
  }
  assert.ok(differs > 0, "float32 rounding never mattered: the test lost its point");
});

Deno.test("one eps and one timestep mapping: the loss and the samplers use flow/time.ts", () => {
  assert.equal(FLOW_EPS, 1e-3);
  assert.equal(REFLOW_EPS, FLOW_EPS);
  assert.equal(SAMPLER_EPS, FLOW_EPS);
  assert.equal(lossTimestep, unetTimestep);
});
