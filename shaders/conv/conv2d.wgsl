// 2-D convolution (NCHW, zero padding, any kernel size and stride) as an implicit GEMM:
// out[co, pixel] = sum over (ci, ky, kx) of w[co, ci, ky, kx] * x[ci, iy, ix], i.e. a
// (Cout x Cin*kh*kw) by (Cin*kh*kw x Ho*Wo) product whose right operand (im2col) is
// gathered from the image while filling workgroup memory, never stored.
//
// Weights and bias may be f32 or f16 packed two per u32 (W_F16 / BIAS_F16 overrides).
//
// The input may be gathered from more than one place, each chosen by an override:
// channels `split..cin` from a second tensor x2 (CONCAT: the convolution of
// torch.cat([x, x2], 1), as the UNet's up levels take their skips, without the
// concatenation's copy), and the image nearest-upsampled 2x (UPSAMPLE: h, w are then the
// upsampled size, twice the stored one; the UNet's Upsample is upsampling then this
// convolution).
//
// Epilogue, each step chosen by an override so that an unused one costs nothing: after
// the bias, the ResBlock's time conditioning v * (s + 1) + b with s, b the two halves of
// row `row + batch` of the table t (SCALE_SHIFT), then SiLU (SILU), then a residual
// tensor of the output's shape added (RESIDUAL). A ResBlock is then three convolutions
// and nothing else, and no intermediate makes a round trip through memory.
// Tiling: the register tile of register_tile.wgsl (added to this file), output
// channels (rows of the weights) by output pixels; the batch is the grid's z.

struct Params {
    cin: u32, h: u32, w: u32, cout: u32,
    ho: u32, wo: u32, kh: u32, kw: u32,
    stride: u32, pad: u32, has_bias: u32,
    // The first pixel block of this dispatch: a large convolution is dispatched in parts.
    first_group: u32,
    row: u32,
    // Channels read from x; the rest from x2 (CONCAT). cin without CONCAT.
    split: u32,
    _a: u32, _b: u32,
}

override W_F16: bool = false;
override BIAS_F16: bool = false;
override SCALE_SHIFT: bool = false;
override SILU: bool = false;
override RESIDUAL: bool = false;
override CONCAT: bool = false;
override UPSAMPLE: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> x2: array<f32>;
@group(0) @binding(3) var<storage, read> wt: array<u32>;
@group(0) @binding(4) var<storage, read> bias: array<u32>;
@group(0) @binding(5) var<storage, read> t: array<f32>;
@group(0) @binding(6) var<storage, read> residual: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;

// This invocation's image in x and x2, and where the windows of its 4 output pixels
// start in the (upsampled) input (see fetch_cols).
var<private> x_base: u32;
var<private> x2_base: u32;
var<private> iy0: vec4<i32>;
var<private> ix0: vec4<i32>;

fn kdim() -> u32 { return p.cin * p.kh * p.kw; }

// The stored image's height and width.
fn stored_size() -> vec2<u32> {
    if (UPSAMPLE) { return vec2<u32>(p.h >> 1u, p.w >> 1u); }
    return vec2<u32>(p.h, p.w);
}

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

// Weights: consecutive invocations take consecutive k of one output channel group.
fn row_slot(e: u32) -> vec2<u32> { return vec2<u32>(e / TILE_K, e % TILE_K); }

fn fetch_rows(e: u32, m0: u32, k0: u32) -> vec4<f32> {
    let s = row_slot(e);
    let gk = k0 + s.y;
    let kd = kdim();
    var v = vec4<f32>(0.0);
    for (var r = 0u; r < 4u; r++) {
        let gm = m0 + 4u * s.x + r;
        if (gm < p.cout && gk < kd) { v[r] = load_w(gm * kd + gk); }
    }
    return v;
}

// The image (im2col gathered on the fly): consecutive invocations take consecutive
// groups of 4 output pixels. An invocation always fetches the same pixel group
// (COL_GROUPS divides THREADS), so where the 4 pixels' windows start in the input (`iy0`,
// `ix0`; far out of range for pixels past the end) is worked out once, not at every K
// step; `n0` is therefore unused here.
fn col_slot(e: u32) -> vec2<u32> { return vec2<u32>(e % COL_GROUPS, e / COL_GROUPS); }

fn fetch_cols(e: u32, n0: u32, k0: u32) -> vec4<f32> {
    let gk = k0 + col_slot(e).y;
    var v = vec4<f32>(0.0);
    if (gk < kdim()) {
        let taps = p.kh * p.kw;
        let ci = gk / taps;
        let tap = gk % taps;
        let iy = iy0 + vec4<i32>(i32(tap / p.kw));
        let ix = ix0 + vec4<i32>(i32(tap % p.kw));
        let size = stored_size();
        let second = CONCAT && ci >= p.split;
        let plane = select(x_base + ci * size.x * size.y, x2_base + (ci - p.split) * size.x * size.y, second);
        for (var r = 0u; r < 4u; r++) {
            if (iy[r] >= 0 && iy[r] < i32(p.h) && ix[r] >= 0 && ix[r] < i32(p.w)) {
                var at = plane + u32(iy[r]) * size.y + u32(ix[r]);
                if (UPSAMPLE) { at = plane + (u32(iy[r]) >> 1u) * size.y + (u32(ix[r]) >> 1u); }
                if (second) { v[r] = x2[at]; } else { v[r] = x[at]; }
            }
        }
    }
    return v;
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let li = lid.y * WG_X + lid.x;
    let m0 = wid.y * ROW_GROUPS * 4u;
    let n0 = (wid.x + p.first_group) * COL_GROUPS * 4u;
    let batch = wid.z;
    let npix = p.ho * p.wo;
    let size = stored_size();
    x_base = batch * p.split * size.x * size.y;
    x2_base = batch * (p.cin - p.split) * size.x * size.y;
    iy0 = vec4<i32>(-(1 << 30));
    ix0 = vec4<i32>(-(1 << 30));
    for (var r = 0u; r < 4u; r++) {
        let gn = n0 + 4u * col_slot(li).x + r;
        if (gn < npix) {
            iy0[r] = i32((gn / p.wo) * p.stride) - i32(p.pad);
            ix0[r] = i32((gn % p.wo) * p.stride) - i32(p.pad);
        }
    }
    let acc = multiply_tiles(lid, m0, n0, kdim());

    let y_base = batch * p.cout * npix;
    for (var r = 0u; r < MR; r++) {
        for (var i = 0u; i < 4u; i++) {
            let gm = tile_row(m0, lid, r, i);
            if (gm >= p.cout) { continue; }
            var b = 0.0;
            if (p.has_bias != 0u) { b = load_bias(gm); }
            var scale = 1.0;
            var shift = 0.0;
            if (SCALE_SHIFT) {
                let row = (p.row + batch) * 2u * p.cout;
                scale = t[row + gm] + 1.0;
                shift = t[row + p.cout + gm];
            }
            for (var q = 0u; q < NR; q++) {
                for (var j = 0u; j < 4u; j++) {
                    let gn = tile_col(n0, lid, q, j);
                    if (gn >= npix) { continue; }
                    let at = y_base + gm * npix + gn;
                    var v = acc[(4u * r + i) * 2u + q][j] + b;
                    if (SCALE_SHIFT) { v = v * scale + shift; }
                    if (SILU) { v = v / (1.0 + exp(-v)); }
                    if (RESIDUAL) { v += residual[at]; }
                    y[at] = v;
                }
            }
        }
    }
}
