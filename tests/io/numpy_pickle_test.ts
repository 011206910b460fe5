import assert from "node:assert/strict";
import { f16BitsToF32 } from "../../core/io/half.ts";
import { decodeNumpyPickle, type NdArray, toNdArray } from "../../core/io/numpy_pickle.ts";
import { PyObject, unpickle } from "../../core/io/pickle.ts";
import { EXPECTED, fixture } from "./_fixtures.ts";

const read = (name: string) => Deno.readFileSync(fixture(name));

function valuesOf(a: NdArray): number[] {
  if (a.dtype === "float16") return [...f16BitsToF32(a.data as Uint16Array)];
  if (a.data instanceof BigInt64Array) return [...a.data].map(Number);
  return [...(a.data as Float32Array)];
}

Deno.test("numpy pickles of float16/float32/int64 at protocols 2, 4, 5 decode exactly", () => {
  const types: Record<string, string> = { f16: "float16", f32: "float32", i64: "int64" };
  for (const [name, dtype] of Object.entries(types)) {
    const want = EXPECTED.numpy[name];
    for (const proto of [2, 4, 5]) {
      const a = decodeNumpyPickle(read(`np_${name}_p${proto}.pkl`), {
        source: `${name} p${proto}`,
      });
      assert.equal(a.dtype, dtype);
      assert.deepEqual(a.shape, want.shape);
      assert.deepEqual(valuesOf(a), want.values, `${name} protocol ${proto}`);
    }
  }
});

Deno.test("numpy scalars decode to 0-d arrays", () => {
  for (const proto of [2, 4]) {
    const a = decodeNumpyPickle(read(`np_scalar_p${proto}.pkl`));
    assert.deepEqual(a, { dtype: "float32", shape: [], data: new Float32Array([-1.75]) });
  }
});

Deno.test("the original tool's LMDB_ndarray values decode to the pair array", () => {
  const want = EXPECTED.lmdb_pair;
  for (const proto of [2, 4]) {
    const a = decodeNumpyPickle(read(`lmdb_ndarray_p${proto}.pkl`));
    assert.equal(a.dtype, "float16");
    assert.deepEqual(a.shape, want.shape);
    assert.ok(a.data instanceof Uint16Array);
    assert.deepEqual(valuesOf(a), want.values);
    // The wrapper class is only accepted when allowed.
    assert.throws(
      () => decodeNumpyPickle(read(`lmdb_ndarray_p${proto}.pkl`), { allowClasses: [] }),
      /global __main__\.LMDB_ndarray is not allowed/,
    );
  }
  const keys = unpickle(read("lmdb_keys_p4.pkl")) as Uint8Array[];
  assert.deepEqual(keys.map((k) => new TextDecoder().decode(k)), ["0", "1", "2"]);
});

Deno.test("Fortran-order, big-endian and inconsistent arrays are refused", () => {
  assert.throws(() => decodeNumpyPickle(read("np_fortran_p4.pkl")), /Fortran-order/);
  assert.throws(() => decodeNumpyPickle(read("np_bigendian_p4.pkl")), /big-endian dtype ">f4"/);
  const dtype = new PyObject("numpy.dtype", ["f4", false, true]);
  dtype.state = [3, "<", null, null, null, -1, -1, 0];
  const wrapper = new PyObject("x.LMDB_ndarray", []);
  const attrs = new Map<string, unknown>([
    ["shape", [2, 2]],
    ["dtype", dtype],
    ["array", new Uint8Array(12)],
  ]);
  wrapper.state = attrs;
  assert.throws(
    () => toNdArray(wrapper, "key 5"),
    /key 5: shape \[2,2\] of float32 needs 16 bytes/,
  );
  attrs.set("array", new Uint8Array(16));
  assert.deepEqual(toNdArray(wrapper).data, new Float32Array(4));
  assert.throws(() => toNdArray("text", "key 6"), /key 6: not a pickled numpy array/);
});
