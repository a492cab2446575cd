// 2-D convolution (NCHW, zero padding, any kernel size and stride) as an implicit GEMM:
// out[co, pixel] = sum over (ci, ky, kx) of w[co, ci, ky, kx] * x[ci, iy, ix], i.e. a
// (Cout x Cin*kh*kw) by (Cin*kh*kw x Ho*Wo) product whose right operand (im2col) is
// gathered from the image while filling workgroup memory, never stored.
//
// Weights and bias may be f32 or f16 packed two per u32 (W_F16 / BIAS_F16 overrides).
//
// Epilogue, each step chosen by an override so that an unused one costs nothing: after
// the bias, the ResBlock's time conditioning v * (s + 1) + b with s, b the two halves of
// row `row + batch` of the table t (SCALE_SHIFT), then SiLU (SILU), then a residual
// tensor of the output's shape added (RESIDUAL). A ResBlock is then three convolutions
// and nothing else, and no intermediate makes a round trip through memory.
// Tiling as in matmul.wgsl: WG_X x WG_Y invocations, a 4 (output channels) x 4 (pixels)
// block each in vec4 registers, K in steps of TILE_K through workgroup memory holding
// vec4s; the batch is the z dimension of the grid.

struct Params {
    cin: u32, h: u32, w: u32, cout: u32,
    ho: u32, wo: u32, kh: u32, kw: u32,
    stride: u32, pad: u32, has_bias: u32,
    // The first pixel block of this dispatch: a large convolution is dispatched in parts.
    first_group: u32,
    row: u32, _a: u32, _b: u32, _c: u32,
}

override WG_X: u32 = 16u;
override WG_Y: u32 = 16u;
override TILE_K: u32 = 16u;
override W_F16: bool = false;
override BIAS_F16: bool = false;
override SCALE_SHIFT: bool = false;
override SILU: bool = false;
override RESIDUAL: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<u32>;
@group(0) @binding(4) var<storage, read> t: array<f32>;
@group(0) @binding(5) var<storage, read> residual: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

var<workgroup> w_tile: array<vec4<f32>, TILE_K * WG_Y>; // [k][4 output channels]
var<workgroup> x_tile: array<vec4<f32>, TILE_K * WG_X>; // [k][4 pixels]

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
    let threads = WG_X * WG_Y;
    let li = lid.y * WG_X + lid.x;
    let m0 = wid.y * WG_Y * 4u;
    let n0 = (wid.x + p.first_group) * WG_X * 4u;
    let batch = wid.z;
    let taps = p.kh * p.kw;
    let kdim = p.cin * taps;
    let npix = p.ho * p.wo;
    let x_base = batch * p.cin * p.h * p.w;

    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) { acc[i] = vec4<f32>(0.0); }

    for (var k0 = 0u; k0 < kdim; k0 += TILE_K) {
        for (var e = li; e < WG_Y * TILE_K; e += threads) {
            let mq = e / TILE_K;
            let kk = e % TILE_K;
            let gk = k0 + kk;
            var v = vec4<f32>(0.0);
            for (var r = 0u; r < 4u; r++) {
                let gm = m0 + 4u * mq + r;
                if (gm < p.cout && gk < kdim) { v[r] = load_w(gm * kdim + gk); }
            }
            w_tile[kk * WG_Y + mq] = v;
        }
        // Consecutive invocations take consecutive groups of 4 output pixels.
        for (var e = li; e < WG_X * TILE_K; e += threads) {
            let nq = e % WG_X;
            let kk = e / WG_X;
            let gk = k0 + kk;
            var v = vec4<f32>(0.0);
            if (gk < kdim) {
                let ci = gk / taps;
                let tap = gk % taps;
                let ky = tap / p.kw;
                let kx = tap % p.kw;
                for (var r = 0u; r < 4u; r++) {
                    let gn = n0 + 4u * nq + r;
                    let iy = i32((gn / p.wo) * p.stride + ky) - i32(p.pad);
                    let ix = i32((gn % p.wo) * p.stride + kx) - i32(p.pad);
                    if (gn < npix && iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w)) {
                        v[r] = x[x_base + (ci * p.h + u32(iy)) * p.w + u32(ix)];
                    }
                }
            }
            x_tile[kk * WG_X + nq] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            let wv = w_tile[kk * WG_Y + lid.y];
            let xv = x_tile[kk * WG_X + lid.x];
            acc[0] = fma(vec4<f32>(wv.x), xv, acc[0]);
            acc[1] = fma(vec4<f32>(wv.y), xv, acc[1]);
            acc[2] = fma(vec4<f32>(wv.z), xv, acc[2]);
            acc[3] = fma(vec4<f32>(wv.w), xv, acc[3]);
        }
        workgroupBarrier();
    }

    let y_base = batch * p.cout * npix;
    for (var i = 0u; i < 4u; i++) {
        let gm = m0 + 4u * lid.y + i;
        if (gm >= p.cout) { continue; }
        var b = 0.0;
        if (p.has_bias != 0u) { b = load_bias(gm); }
        var scale = 1.0;
        var shift = 0.0;
        if (SCALE_SHIFT) {
            let r = (p.row + batch) * 2u * p.cout;
            scale = t[r + gm] + 1.0;
            shift = t[r + p.cout + gm];
        }
        for (var j = 0u; j < 4u; j++) {
            let gn = n0 + 4u * lid.x + j;
            if (gn >= npix) { continue; }
            let at = y_base + gm * npix + gn;
            var v = acc[i][j] + b;
            if (SCALE_SHIFT) { v = v * scale + shift; }
            if (SILU) { v = v / (1.0 + exp(-v)); }
            if (RESIDUAL) { v += residual[at]; }
            y[at] = v;
        }
    }
}
