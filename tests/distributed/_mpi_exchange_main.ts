/**
 * One rank of mpi_exchange_test.ts (started by mpirun): checks the MPI exchange against values
 * every rank can compute, prints one `result {...}` line, and exits non-zero on a mismatch.
 * Arguments: <length>.
 */
import { MpiExchange } from "../../core/distributed/mpi_exchange.ts";
import { f16BitsToF32, f32ToF16Bits } from "../../core/io/half.ts";
import { philoxNormal } from "../../core/tensor/philox.ts";

const L = Number(Deno.args[0] ?? 1000);
const ex = MpiExchange.open({ timeoutSecs: 60 });
const N = ex.worldSize;
const mine = (r: number) => philoxNormal(1234 + r, 0, L);
const exact = new Float64Array(L);
for (let r = 0; r < N; r++) mine(r).forEach((v, i) => (exact[i] += v / N));

let worstF32 = 0;
const a = await ex.allReduceMean(mine(ex.rank));
a.forEach((v, i) => (worstF32 = Math.max(worstF32, Math.abs(v - exact[i]))));

// f16: the result is f16-representable and near the exact mean.
let worstF16 = 0;
let representable = true;
const b = await ex.allReduceMean(mine(ex.rank), { transport: "f16" });
const round = f16BitsToF32(f32ToF16Bits(b));
b.forEach((v, i) => {
  worstF16 = Math.max(worstF16, Math.abs(v - exact[i]));
  if (round[i] !== v) representable = false;
});
// Every rank must hold the same f16 result: compare through an f32 all-reduce of differences.
const diff = await ex.allReduceMean(b.map((v) => v * (ex.rank === 0 ? N - 1 : -1)));
const sameF16 = diff.every((v) => Math.abs(v) < 1e-7);

const bc = await ex.broadcast(Float32Array.from({ length: 5 }, (_, i) => ex.rank * 10 + i));
console.log(
  "result " + JSON.stringify({
    rank: ex.rank,
    size: N,
    localRank: ex.localRank,
    localSize: ex.localSize,
    worstF32,
    worstF16,
    representable,
    sameF16,
    broadcast: [...bc],
    version: ex.version,
  }),
);
ex.close();
