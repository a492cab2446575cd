// 2-D convolution (NCHW, zero padding, any kernel size and stride) as an implicit GEMM:
// out[co, pixel] = sum over (ci, ky, kx) of w[co, ci, ky, kx] * x[ci, iy, ix], i.e. a
// (Cout x Cin*kh*kw) by (Cin*kh*kw x Ho*Wo) product whose right operand (im2col) is
// gathered from the image while filling workgroup memory, never stored.
//
// Weights may be f32 or f16 packed two per u32 (the W_F16 override: it is read in the
// inner loop), the bias too (the BIAS_F16 flag).
//
// The input may be gathered from more than one place: channels `split..cin` from a
// second tensor x2 (the convolution of torch.cat([x, x2], 1), as the UNet's up levels
// take their skips, without the concatenation's copy; split = cin reads x alone), and
// the image nearest-upsampled 2x (up = 1: h, w are then the upsampled size, twice the
// stored one; the UNet's Upsample is upsampling then this convolution).
//
// Epilogue, each step chosen by a flag in Params: after the bias, the ResBlock's time
// conditioning v * (s + 1) + b with s, b the two halves of row `row + batch` of the
// table t (SCALE_SHIFT), then SiLU (SILU), then a residual tensor of the output's shape
// added (RESIDUAL), then a second one (RESIDUAL2: a SpatialTransformer level's inner and
// outer residual). A ResBlock is then three convolutions and nothing else.
//
// The gathers and the epilogue are values in Params, not overrides: every distinct
// override set is a pipeline of its own to compile, which dominates a short restore on
// SwiftShader. They cost a shift and a compare per fetched value, and the epilogue a
// second pass over this invocation's outputs (see the end of main).
// Tiling as in matmul.wgsl: WG_X x WG_Y invocations, (4 MR) output channels x (4 NR)
// pixels each in vec4 registers, K in steps of TILE_K through workgroup memory holding
// vec4s, the next step fetched into registers while the current one is computed; the
// batch is the z dimension of the grid.
//
// Split K (k_slices > 1: a convolution with too few workgroups to fill a large GPU, such
// as the UNet's lowest levels, 8 to 64 of them for a 64x64 image): the grid's z is
// batch * k_slices + slice, each slice sums its own run of K (whole TILE_K steps) and
// writes those partial sums, without bias or epilogue, to plane z of y. A second dispatch
// with the PARTIALS flag binds them as x, computes no products, and adds the k_slices
// partials to the bias before its epilogue.
//
// f16 tiles (Kernel::Conv2dHalf, for WebGPU's shader-f16, f16 weights only): f16
// workgroup tiles, f32 sums, as in matmul.wgsl.

struct Params {
    cin: u32, h: u32, w: u32, cout: u32,
    ho: u32, wo: u32, kh: u32, kw: u32,
    stride: u32, pad: u32, has_bias: u32,
    // The first pixel block of this dispatch: a large convolution is dispatched in parts.
    first_group: u32,
    row: u32,
    // Channels read from x; the rest from x2. cin when there is no x2.
    split: u32,
    // The upsampling's log2: 0 or 1 (2x nearest).
    up: u32,
    // The epilogue's steps and the bias's format: the flags below.
    flags: u32,
    // Output channel o is the weight's (and bias's) first_cout + o: one part of a
    // stacked projection.
    first_cout: u32,
    // The slices K is split into (1: not split).
    k_slices: u32,
    _pad1: u32, _pad2: u32,
}

// The workgroup tiles' type; Kernel::source swaps this line for f16's.
alias Tile = vec4<f32>;

const BIAS_F16: u32 = 1u;
const SCALE_SHIFT: u32 = 2u;
const SILU: u32 = 4u;
const RESIDUAL: u32 = 8u;
const RESIDUAL2: u32 = 16u;
const PARTIALS: u32 = 32u;
const EPILOGUE: u32 = PARTIALS | SCALE_SHIFT | SILU | RESIDUAL | RESIDUAL2;

fn has(flag: u32) -> bool { return (p.flags & flag) != 0u; }

override WG_X: u32 = 16u;
override WG_Y: u32 = 16u;
override TILE_K: u32 = 16u;
override MR: u32 = 1u;
override NR: u32 = 1u;
override W_F16: bool = false;

override THREADS: u32 = WG_X * WG_Y;
override W_GROUPS: u32 = MR * WG_Y; // vec4 output-channel groups in the tile
override X_GROUPS: u32 = NR * WG_X; // vec4 pixel groups in the tile
override W_FETCH: u32 = (W_GROUPS * TILE_K + THREADS - 1u) / THREADS;
override X_FETCH: u32 = (X_GROUPS * TILE_K + THREADS - 1u) / THREADS;
const MAX_FETCH: u32 = 4u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> x2: array<f32>;
@group(0) @binding(3) var<storage, read> wt: array<u32>;
@group(0) @binding(4) var<storage, read> bias: array<u32>;
@group(0) @binding(5) var<storage, read> t: array<f32>;
@group(0) @binding(6) var<storage, read> residual: array<f32>;
@group(0) @binding(7) var<storage, read> residual2: array<f32>;
@group(0) @binding(8) var<storage, read_write> y: array<f32>;

var<workgroup> w_tile: array<Tile, TILE_K * W_GROUPS>; // [k][4 output channels]
var<workgroup> x_tile: array<Tile, TILE_K * X_GROUPS>; // [k][4 pixels]

fn load_w(i: u32) -> f32 {
    if (W_F16) {
        return unpack2x16float(wt[i >> 1u])[i & 1u];
    }
    return bitcast<f32>(wt[i]);
}

// Branch-free: it sits in the loop over acc, whose body must stay small (see the end of
// main).
fn load_bias(i: u32) -> f32 {
    let f16 = has(BIAS_F16);
    let word = bias[select(i, i >> 1u, f16)];
    return select(bitcast<f32>(word), unpack2x16float(word)[i & 1u], f16);
}

// The stored image's height and width.
fn stored_size() -> vec2<u32> {
    return vec2<u32>(p.h >> p.up, p.w >> p.up);
}

// Weights: consecutive invocations take consecutive k of one output channel group; k
// from k_end on reads as 0.
fn fetch_w(e: u32, m0: u32, k0: u32, k_end: u32, kdim: u32) -> vec4<f32> {
    let gk = k0 + e % TILE_K;
    var v = vec4<f32>(0.0);
    for (var r = 0u; r < 4u; r++) {
        let gm = m0 + 4u * (e / TILE_K) + r;
        if (gm < p.cout && gk < k_end) { v[r] = load_w((p.first_cout + gm) * kdim + gk); }
    }
    return v;
}

// The image (im2col gathered on the fly): consecutive invocations take consecutive
// groups of 4 output pixels. An invocation always fetches the same pixel group (X_GROUPS
// divides THREADS), so where the 4 pixels' windows start in the input (`iy0`, `ix0`;
// far out of range for pixels past the end) is worked out once, not at every K step.
// `bases`: where this image starts in x and in x2. k from k_end on reads as 0.
fn fetch_x(e: u32, k0: u32, k_end: u32, bases: vec2<u32>, iy0: vec4<i32>, ix0: vec4<i32>) -> vec4<f32> {
    let gk = k0 + e / X_GROUPS;
    var v = vec4<f32>(0.0);
    if (gk < k_end) {
        let taps = p.kh * p.kw;
        let ci = gk / taps;
        let tap = gk % taps;
        let iy = iy0 + vec4<i32>(i32(tap / p.kw));
        let ix = ix0 + vec4<i32>(i32(tap % p.kw));
        let size = stored_size();
        // The channel's plane in x2 or x: one branch per fetch, not per value.
        let second = ci >= p.split;
        let plane = select(bases.x + ci * size.x * size.y, bases.y + (ci - p.split) * size.x * size.y, second);
        // Without x2 (split = cin, the same for the whole dispatch) x alone is read: a
        // branch every invocation takes the same way, so none pays for the other side.
        let concat = p.split < p.cin;
        for (var r = 0u; r < 4u; r++) {
            if (iy[r] >= 0 && iy[r] < i32(p.h) && ix[r] >= 0 && ix[r] < i32(p.w)) {
                let at = plane + (u32(iy[r]) >> p.up) * size.y + (u32(ix[r]) >> p.up);
                if (!concat) { v[r] = x[at]; } else if (second) { v[r] = x2[at]; } else { v[r] = x[at]; }
            }
        }
    }
    return v;
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let li = lid.y * WG_X + lid.x;
    let m0 = wid.y * W_GROUPS * 4u;
    let n0 = (wid.x + p.first_group) * X_GROUPS * 4u;
    let kdim = p.cin * p.kh * p.kw;
    // This slice's run of K: all of it unsplit, none in the dispatch adding partials.
    let slices = select(p.k_slices, 1u, has(PARTIALS));
    let batch = wid.z / slices;
    let slice_len = ((kdim + slices - 1u) / slices + TILE_K - 1u) / TILE_K * TILE_K;
    let k_begin = (wid.z % slices) * slice_len;
    let k_end = select(min(kdim, k_begin + slice_len), k_begin, has(PARTIALS));
    let npix = p.ho * p.wo;
    let size = stored_size();
    let bases = vec2<u32>(batch * p.split, batch * (p.cin - p.split)) * (size.x * size.y);

    var iy0 = vec4<i32>(-(1 << 30));
    var ix0 = vec4<i32>(-(1 << 30));
    for (var r = 0u; r < 4u; r++) {
        let gn = n0 + 4u * (li % X_GROUPS) + r;
        if (gn < npix) {
            iy0[r] = i32((gn / p.wo) * p.stride) - i32(p.pad);
            ix0[r] = i32((gn % p.wo) * p.stride) - i32(p.pad);
        }
    }

    // acc[(4 r + i) * 2 + q]: channel 4 (ty + r WG_Y) + i, pixels 4 (tx + q WG_X) + 0..3.
    var acc: array<vec4<f32>, 16>;
    for (var i = 0u; i < 16u; i++) { acc[i] = vec4<f32>(0.0); }
    var w_next: array<vec4<f32>, MAX_FETCH>;
    var x_next: array<vec4<f32>, MAX_FETCH>;
    for (var s = 0u; s < W_FETCH; s++) { w_next[s] = fetch_w(li + s * THREADS, m0, k_begin, k_end, kdim); }
    for (var s = 0u; s < X_FETCH; s++) { x_next[s] = fetch_x(li + s * THREADS, k_begin, k_end, bases, iy0, ix0); }

    for (var k0 = k_begin; k0 < k_end; k0 += TILE_K) {
        for (var s = 0u; s < W_FETCH; s++) {
            let e = li + s * THREADS;
            if (e < W_GROUPS * TILE_K) { w_tile[(e % TILE_K) * W_GROUPS + e / TILE_K] = Tile(w_next[s]); }
        }
        for (var s = 0u; s < X_FETCH; s++) {
            let e = li + s * THREADS;
            if (e < X_GROUPS * TILE_K) { x_tile[e] = Tile(x_next[s]); } // [k][pixel group] already
        }
        workgroupBarrier();
        let k1 = k0 + TILE_K;
        if (k1 < k_end) {
            for (var s = 0u; s < W_FETCH; s++) { w_next[s] = fetch_w(li + s * THREADS, m0, k1, k_end, kdim); }
            for (var s = 0u; s < X_FETCH; s++) { x_next[s] = fetch_x(li + s * THREADS, k1, k_end, bases, iy0, ix0); }
        }
        for (var kk = 0u; kk < TILE_K; kk++) {
            var wv: array<Tile, 2>;
            var xv: array<Tile, 2>;
            for (var r = 0u; r < MR; r++) { wv[r] = w_tile[kk * W_GROUPS + lid.y + r * WG_Y]; }
            for (var q = 0u; q < NR; q++) { xv[q] = x_tile[kk * X_GROUPS + lid.x + q * WG_X]; }
            for (var r = 0u; r < MR; r++) {
                for (var q = 0u; q < NR; q++) {
                    let o = 8u * r + q;
                    // f32 sums of f16 tiles (conversions only in the f16 module).
                    let xq = vec4<f32>(xv[q]);
                    acc[o] = fma(vec4<f32>(f32(wv[r].x)), xq, acc[o]);
                    acc[o + 2u] = fma(vec4<f32>(f32(wv[r].y)), xq, acc[o + 2u]);
                    acc[o + 4u] = fma(vec4<f32>(f32(wv[r].z)), xq, acc[o + 4u]);
                    acc[o + 6u] = fma(vec4<f32>(f32(wv[r].w)), xq, acc[o + 6u]);
                }
            }
        }
        workgroupBarrier();
    }

    // Plane z of y: the image's output, or one slice's partial sums of it.
    let y_base = wid.z * p.cout * npix;
    for (var r = 0u; r < MR; r++) {
        for (var i = 0u; i < 4u; i++) {
            let gm = m0 + 4u * (lid.y + r * WG_Y) + i;
            if (gm >= p.cout) { continue; }
            var b = 0.0;
            if (p.has_bias != 0u) { b = load_bias(p.first_cout + gm); }
            for (var q = 0u; q < NR; q++) {
                for (var j = 0u; j < 4u; j++) {
                    let gn = n0 + 4u * (lid.x + q * WG_X) + j;
                    if (gn < npix) { y[y_base + gm * npix + gn] = acc[(4u * r + i) * 2u + q][j] + b; }
                }
            }
        }
    }
    if ((p.flags & EPILOGUE) == 0u) { return; }
    // The epilogue re-reads the outputs this invocation has just written (its own
    // writes, so no barrier) rather than taking them from acc: the loops above keep the
    // same small body whatever the flags, so the compiler still unrolls them and acc
    // stays in registers (with the flags' branches in that loop lavapipe ran the UNet's
    // convolutions 40-55% slower).
    for (var r = 0u; r < MR; r++) {
        for (var i = 0u; i < 4u; i++) {
            let gm = m0 + 4u * (lid.y + r * WG_Y) + i;
            if (gm >= p.cout) { continue; }
            var scale = 1.0;
            var shift = 0.0;
            if (has(SCALE_SHIFT)) {
                let row = (p.row + batch) * 2u * p.cout;
                scale = t[row + gm] + 1.0;
                shift = t[row + p.cout + gm];
            }
            for (var n = 0u; n < 4u * NR; n++) {
                let gn = n0 + 4u * (lid.x + (n / 4u) * WG_X) + n % 4u;
                if (gn >= npix) { continue; }
                let at = y_base + gm * npix + gn;
                var v = y[at];
                if (has(PARTIALS)) {
                    for (var s = 0u; s < p.k_slices; s++) { v += x[((batch * p.k_slices + s) * p.cout + gm) * npix + gn]; }
                }
                if (has(SCALE_SHIFT)) { v = v * scale + shift; }
                if (has(SILU)) { v = v / (1.0 + exp(-v)); }
                if (has(RESIDUAL)) { v += residual[at]; }
                if (has(RESIDUAL2)) { v += residual2[at]; }
                y[at] = v;
            }
        }
    }
}
