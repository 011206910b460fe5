import { checkOp } from "../helpers/gpu.ts";
import * as ops from "../../core/ops.ts";

const bcast = (
  a: Float64Array,
  sa: number[],
  b: Float64Array,
  sb: number[],
  f: (x: number, y: number) => number,
): Float64Array => {
  const r = Math.max(sa.length, sb.length);
  const pa = [...Array(r - sa.length).fill(1), ...sa],
    pb = [...Array(r - sb.length).fill(1), ...sb];
  const so = pa.map((d, i) => Math.max(d, pb[i]));
  const n = so.reduce((x, y) => x * y, 1);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let rem = i, ia = 0, ib = 0, sta = 1, stb = 1;
    for (let k = r - 1; k >= 0; k--) {
      const c = rem % so[k];
      rem = Math.floor(rem / so[k]);
      ia += (pa[k] === 1 ? 0 : c) * sta;
      ib += (pb[k] === 1 ? 0 : c) * stb;
      sta *= pa[k];
      stb *= pb[k];
    }
    out[i] = f(a[ia], b[ib]);
  }
  return out;
};

for (
  const [sa, sb] of [[[3, 5], [3, 5]], [[2, 3, 4, 5], [3, 1, 1]], [[7], [2, 1, 7]], [[1], [33, 9]]]
) {
  for (
    const [name, f] of [
      ["add", (x: number, y: number) => x + y],
      ["sub", (x: number, y: number) => x - y],
      ["mul", (x: number, y: number) => x * y],
      ["div", (x: number, y: number) => x / y],
    ] as const
  ) {
    Deno.test(`${name} [${sa}] x [${sb}]`, async () => {
      await checkOp({
        shapes: [sa, sb],
        gpu: ([a, b]) => (ops as unknown as Record<string, typeof ops.add>)[name](a, b),
        ref: ([a, b]) => bcast(a, sa, b, sb, f),
        init: name === "div"
          ? (i, n) =>
            Float64Array.from(
              { length: n },
              (_, j) => (i === 1 ? 1.5 + Math.sin(j) * 0.5 : Math.cos(j * 1.3)),
            )
          : undefined,
        gradTol: 2e-3,
      });
    });
  }
}
