/**
 * WGSL math snippets whose accuracy we control instead of trusting the driver's builtins (lavapipe's
 * and some GPUs' sin/cos/log lose accuracy for large arguments or near 1):
 *
 * - `philox4x32_10(ctr, key)`: the Philox-4x32-10 block, u32 arithmetic only (WGSL has no 64-bit
 *   integers, so the 32x32->64 high word comes from 16-bit halves).
 * - `sincos_acc(x)`: (sin x, cos x) with Cody-Waite range reduction in three parts of pi/2, absolute
 *   error about 1e-7 for |x| up to ~12800 (k * P2 stays exact while k < 2^13).
 * - `sincos_turns(u)`: (sin 2 pi u, cos 2 pi u) for u in [0, 1) with an exact quarter-turn reduction.
 * - `log_acc(x)`: ln x for positive normal x, relative error ~1e-7 even near x = 1.
 * - `erf_acc(x)`: erf with |error| < 2e-7, and `gelu_(x)` / `dgelu_(x)`, the exact (erf) GELU and its
 *   derivative, shared by unary.ts and geglu.ts so both GELUs agree.
 */

/** Philox-4x32-10 in WGSL; see core/tensor/philox.ts for the host twin. */
export const PHILOX_WGSL = `
fn mulhi32_(a: u32, b: u32) -> u32 {
  let al = a & 0xffffu; let ah = a >> 16u; let bl = b & 0xffffu; let bh = b >> 16u;
  let ll = al * bl; let lh = al * bh; let hl = ah * bl; let hh = ah * bh;
  let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
  return hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
}
fn philox4x32_10(ctr: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
  var c = ctr;
  var k = key;
  for (var r = 0u; r < 10u; r++) {
    if (r > 0u) { k = k + vec2<u32>(0x9e3779b9u, 0xbb67ae85u); }
    let hi0 = mulhi32_(0xd2511f53u, c.x); let lo0 = 0xd2511f53u * c.x;
    let hi1 = mulhi32_(0xcd9e8d57u, c.z); let lo1 = 0xcd9e8d57u * c.z;
    c = vec4<u32>(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
  }
  return c;
}
`;

/** Accurate sin/cos and log in f32 (Taylor polynomials on reduced ranges). */
export const MATH_WGSL = `
// (sin r, cos r) for |r| <= pi/4, rotated by quadrant q (0..3).
fn sincos_quad_(r: f32, q: u32) -> vec2<f32> {
  let r2 = r * r;
  let s = r + r * r2 * (-0.16666666666666666 + r2 * (0.008333333333333333 + r2 * (-0.0001984126984126984
    + r2 * (2.7557319223985893e-06 + r2 * -2.505210838544172e-08))));
  let c = 1.0 + r2 * (-0.5 + r2 * (0.041666666666666664 + r2 * (-0.001388888888888889
    + r2 * (2.48015873015873e-05 + r2 * (-2.755731922398589e-07 + r2 * 2.08767569878681e-09)))));
  switch (q & 3u) {
    case 0u: { return vec2<f32>(s, c); }
    case 1u: { return vec2<f32>(c, -s); }
    case 2u: { return vec2<f32>(-s, -c); }
    default: { return vec2<f32>(-c, s); }
  }
}
fn sincos_acc(x: f32) -> vec2<f32> {
  let k = round(x * 0.6366197723675814);
  // pi/2 = P1 + P2 + P3; P1 (8 bits) and P2 (11 bits) make k * P exact for |k| < 2^13.
  var r = x - k * 1.5703125;
  r = r - k * 4.837512969970703125e-4;
  r = r - k * 7.549789954891882e-8;
  return sincos_quad_(r, u32(i32(k) & 3));
}
fn sincos_turns(u: f32) -> vec2<f32> {
  // u * 4 and the subtraction are exact, so only r's rounding (~1 ulp) remains.
  let q = u * 4.0;
  let k = round(q);
  return sincos_quad_((q - k) * 1.5707963267948966, u32(i32(k) & 3));
}
fn log_acc(x: f32) -> f32 {
  let bits = bitcast<u32>(x);
  var e = i32((bits >> 23u) & 0xffu) - 127;
  var m = bitcast<f32>((bits & 0x007fffffu) | 0x3f800000u);
  if (m > 1.4142135623730951) { m = m * 0.5; e = e + 1; }
  // ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172; m - 1 is exact.
  let s = (m - 1.0) / (m + 1.0);
  let s2 = s * s;
  let lm = 2.0 * s * (1.0 + s2 * (0.3333333333333333 + s2 * (0.2 + s2 * (0.14285714285714285
    + s2 * (0.1111111111111111 + s2 * 0.09090909090909091)))));
  let fe = f32(e);
  // ln 2 split so fe * hi is exact.
  return fe * 0.693145751953125 + (lm + fe * 1.4286068203094172e-06);
}
`;

/**
 * erf in f32: `erf_` is Abramowitz-Stegun 7.1.26 refined (|error| < 2e-7); `erf_acc` takes a series
 * near zero, where the rational form loses relative accuracy.
 */
export const ERF_WGSL = `
fn erf_(x: f32) -> f32 {
  let s = sign(x);
  let a = abs(x);
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let p = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return s * (1.0 - p * exp(-a * a));
}
fn erf_acc(x: f32) -> f32 {
  if (abs(x) < 0.5) {
    let x2 = x * x;
    return 1.1283791671 * x * (1.0 + x2 * (-0.3333333333 + x2 * (0.1 + x2 * (-0.0238095238 + x2 * 0.0046296296))));
  }
  return erf_(x);
}
`;

/** The exact GELU x Phi(x) and its derivative, on {@link ERF_WGSL} (include both). */
export const GELU_WGSL = `
fn gelu_(x: f32) -> f32 { return 0.5 * x * (1.0 + erf_acc(x * 0.7071067811865476)); }
fn dgelu_(x: f32) -> f32 {
  return 0.5 * (1.0 + erf_acc(x * 0.7071067811865476)) + x * 0.3989422804014327 * exp(-0.5 * x * x);
}
`;
