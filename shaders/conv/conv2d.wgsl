// 2-D convolution (NCHW, zero padding, any kernel size and stride) as an implicit GEMM:
// out[co, pixel] = sum over (ci, ky, kx) of w[co, ci, ky, kx] * x[ci, iy, ix], i.e. a
// (Cout x Cin*kh*kw) by (Cin*kh*kw x Ho*Wo) product whose right operand (im2col) is
// gathered from the image while filling workgroup memory, never stored.
//
// Weights and bias may be f32 or f16 packed two per u32 (W_F16 / BIAS_F16 overrides).
// Tiling as in matmul.wgsl: WG_X x WG_Y invocations, 4 x 4 outputs each, K in steps of
// TILE_K; the batch is the z dimension of the grid.

struct Params {
    cin: u32, h: u32, w: u32, cout: u32,
    ho: u32, wo: u32, kh: u32, kw: u32,
    stride: u32, pad: u32, has_bias: u32, _pad: u32,
}

override WG_X: u32 = 16u;
override WG_Y: u32 = 16u;
override TILE_K: u32 = 16u;
override W_F16: bool = false;
override BIAS_F16: bool = false;

const RM: u32 = 4u;
const RN: u32 = 4u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

var<workgroup> w_tile: array<f32, TILE_K * WG_Y * RM>; // [k][cout]
var<workgroup> x_tile: array<f32, TILE_K * WG_X * RN>; // [k][pixel]

fn load_w(i: u32) -> f32 {
    if (W_F16) {
        return unpack2x16float(wt[i >> 1u])[i & 1u];
    }
    return bitcast<f32>(wt[i]);
}

fn load_bias(i: u32) -> f32 {
    if (BIAS_F16) {
        return unpack2x16float(bias[i >> 1u])[i & 1u];
    }
    return bitcast<f32>(bias[i]);
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let tile_m = WG_Y * RM;
    let tile_n = WG_X * RN;
    let threads = WG_X * WG_Y;
    let li = lid.y * WG_X + lid.x;
    let m0 = wid.y * tile_m;
    let n0 = wid.x * tile_n;
    let batch = wid.z;
    let taps = p.kh * p.kw;
    let kdim = p.cin * taps;
    let npix = p.ho * p.wo;
    let x_base = batch * p.cin * p.h * p.w;

    var acc: array<f32, 16>;
    for (var i = 0u; i < RM * RN; i++) { acc[i] = 0.0; }

    for (var k0 = 0u; k0 < kdim; k0 += TILE_K) {
        for (var e = li; e < tile_m * TILE_K; e += threads) {
            let mm = e / TILE_K;
            let kk = e % TILE_K;
            let gm = m0 + mm;
            let gk = k0 + kk;
            var v = 0.0;
            if (gm < p.cout && gk < kdim) { v = load_w(gm * kdim + gk); }
            w_tile[kk * tile_m + mm] = v;
        }
        // Consecutive invocations take consecutive output pixels: contiguous input rows.
        for (var e = li; e < tile_n * TILE_K; e += threads) {
            let nn = e % tile_n;
            let kk = e / tile_n;
            let gn = n0 + nn;
            let gk = k0 + kk;
            var v = 0.0;
            if (gn < npix && gk < kdim) {
                let ci = gk / taps;
                let tap = gk % taps;
                let iy = i32((gn / p.wo) * p.stride + tap / p.kw) - i32(p.pad);
                let ix = i32((gn % p.wo) * p.stride + tap % p.kw) - i32(p.pad);
                if (iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w)) {
                    v = x[x_base + (ci * p.h + u32(iy)) * p.w + u32(ix)];
                }
            }
            x_tile[kk * tile_n + nn] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            var wv: array<f32, 4>;
            var xv: array<f32, 4>;
            for (var i = 0u; i < RM; i++) { wv[i] = w_tile[kk * tile_m + lid.y + i * WG_Y]; }
            for (var j = 0u; j < RN; j++) { xv[j] = x_tile[kk * tile_n + lid.x + j * WG_X]; }
            for (var i = 0u; i < RM; i++) {
                for (var j = 0u; j < RN; j++) {
                    acc[i * RN + j] = fma(wv[i], xv[j], acc[i * RN + j]);
                }
            }
        }
        workgroupBarrier();
    }

    let y_base = batch * p.cout * npix;
    for (var i = 0u; i < RM; i++) {
        let gm = m0 + lid.y + i * WG_Y;
        if (gm >= p.cout) { continue; }
        var b = 0.0;
        if (p.has_bias != 0u) { b = load_bias(gm); }
        for (var j = 0u; j < RN; j++) {
            let gn = n0 + lid.x + j * WG_X;
            if (gn >= npix) { continue; }
            y[y_base + gm * npix + gn] = acc[i * RN + j] + b;
        }
    }
}
