/**
 * The MPI exchange on 3 local ranks (mpirun): f32 all-reduce against a float64 mean, the f16
 * ring (f16-representable, identical on every rank, within f16 rounding of the mean), broadcast,
 * and local ranks. Ignored, saying why, where MPI is not installed.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { mpirun, mpiTest } from "./_mpi.ts";

const MAIN = fileURLToPath(new URL("./_mpi_exchange_main.ts", import.meta.url));

Deno.test({
  ...mpiTest("MPI exchange: 3 ranks, f32 and f16 all-reduce, broadcast"),
  async fn() {
    const o = await mpirun(3, MAIN, ["100003"]).output();
    const out = new TextDecoder().decode(o.stdout);
    assert.equal(o.code, 0, out + new TextDecoder().decode(o.stderr));
    const res = out.split("\n").filter((l) => l.startsWith("result ")).map((l) =>
      JSON.parse(l.slice(7))
    ).sort((a, b) => a.rank - b.rank);
    assert.deepEqual(res.map((r) => r.rank), [0, 1, 2]);
    for (const r of res) {
      assert.equal(r.size, 3);
      assert.equal(r.localRank, r.rank, "one machine: local rank = rank");
      assert.equal(r.localSize, 3);
      assert.ok(r.worstF32 < 1e-6, `f32 mean off by ${r.worstF32}`);
      // f16 has 11 significant bits; partial sums are rounded once per hop.
      assert.ok(r.worstF16 < 4e-3, `f16 mean off by ${r.worstF16}`);
      assert.ok(r.worstF16 > 0, "f16 transport did round");
      assert.ok(r.representable, "f16 result is f16-representable");
      assert.ok(r.sameF16, "every rank holds the same f16 result");
      assert.deepEqual(r.broadcast, [0, 1, 2, 3, 4], "rank 0's values everywhere");
      assert.match(r.version, /Open MPI/);
    }
  },
});
