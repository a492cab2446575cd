// The convolution of conv2d.wgsl with f16 weights (the same Params, bindings, gathers
// of a concatenation and a nearest 2x upsampling, dispatch in parts and epilogue; the
// weights are always f16 packed two per u32, the bias f32 or f16 by the BIAS_F16 flag)
// on cooperative matrices, as matmul_coop.wgsl computes products: the implicit GEMM of
// output channels (rows) by output pixels (columns) over K = cin kh kw, the im2col
// operand gathered from the image while filling workgroup memory, never stored. The
// image is rounded to f16 on its way in; sums are f32. The tiling, the register fetch of
// the next step and the staged output are matmul_coop.wgsl's (with its SG_* and ACC_*
// overrides); each invocation gathers one fixed pixel of the tile (BN divides THREADS),
// so where its window starts is worked out once. The epilogue is applied in the staged pass, all steps at once.
//
// The aliases below are for S = 16; for S = 8 the module is built with coop_mat8x8 in
// their place (`Kernel::source`), and the S override is set to the same size.
enable f16;
enable wgpu_cooperative_matrix;

alias CoopA = coop_mat16x16<f16, A>;
alias CoopB = coop_mat16x16<f16, B>;
alias CoopC = coop_mat16x16<f32, C>;

struct Params {
    cin: u32, h: u32, w: u32, cout: u32,
    ho: u32, wo: u32, kh: u32, kw: u32,
    stride: u32, pad: u32, has_bias: u32,
    first_group: u32,
    row: u32,
    split: u32,
    up: u32,
    flags: u32,
    first_cout: u32,
    // Always 1 here: only conv2d.wgsl splits K.
    k_slices: u32,
    _pad1: u32, _pad2: u32,
}

const BIAS_F16: u32 = 1u;
const SCALE_SHIFT: u32 = 2u;
const SILU: u32 = 4u;
const RESIDUAL: u32 = 8u;
const RESIDUAL2: u32 = 16u;

fn has(flag: u32) -> bool { return (p.flags & flag) != 0u; }

override S: u32 = 16u;
override SUBGROUP_SIZE: u32 = 32u;
override SG_ROWS: u32 = 2u;
override SG_COLS: u32 = 2u;
override ACC_ROWS: u32 = 2u;
override ACC_COLS: u32 = 2u;

override THREADS: u32 = SG_ROWS * SG_COLS * SUBGROUP_SIZE;
override BM: u32 = ACC_ROWS * S * SG_ROWS; // output channels
override BN: u32 = ACC_COLS * S * SG_COLS; // output pixels
override BK: u32 = 2u * S;
override A_STRIDE: u32 = BK + 8u;
override B_STRIDE: u32 = BN + 8u;
override A_FETCH: u32 = (BM * BK + THREADS - 1u) / THREADS;
override B_FETCH: u32 = (BK * BN + THREADS - 1u) / THREADS;
const MAX_FETCH: u32 = 32u;
const MAX_ACC: u32 = 16u;
const MAX_FRAGMENTS: u32 = 4u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> x2: array<f32>;
@group(0) @binding(3) var<storage, read> wt: array<u32>;
@group(0) @binding(4) var<storage, read> bias: array<u32>;
@group(0) @binding(5) var<storage, read> t: array<f32>;
@group(0) @binding(6) var<storage, read> residual: array<f32>;
@group(0) @binding(7) var<storage, read> residual2: array<f32>;
@group(0) @binding(8) var<storage, read_write> y: array<f32>;

var<workgroup> a_tile: array<f16, BM * A_STRIDE>; // [output channel][k]
var<workgroup> b_tile: array<f16, BK * B_STRIDE>; // [k][pixel]
var<workgroup> c_stage: array<f32, SG_ROWS * SG_COLS * S * S>; // one S x S tile per subgroup

fn load_bias(i: u32) -> f32 {
    if (has(BIAS_F16)) {
        return unpack2x16float(bias[i >> 1u])[i & 1u];
    }
    return bitcast<f32>(bias[i]);
}

// The stored image's height and width.
fn stored_size() -> vec2<u32> {
    return vec2<u32>(p.h >> p.up, p.w >> p.up);
}

// Weights: consecutive invocations take consecutive k of one output channel.
fn fetch_w(e: u32, m0: u32, k0: u32, kdim: u32) -> f32 {
    let gm = m0 + e / BK;
    let gk = k0 + e % BK;
    if (e < BM * BK && gm < p.cout && gk < kdim) {
        let i = (p.first_cout + gm) * kdim + gk;
        return unpack2x16float(wt[i >> 1u])[i & 1u];
    }
    return 0.0;
}

// The image at row gk of im2col for this invocation's pixel, whose window starts at
// (iy0, ix0) (far out of range for pixels past the end); `bases`: where this image
// starts in x and in x2.
fn fetch_x(gk: u32, kdim: u32, bases: vec2<u32>, iy0: i32, ix0: i32) -> f32 {
    if (gk >= kdim) { return 0.0; }
    let taps = p.kh * p.kw;
    let ci = gk / taps;
    let tap = gk % taps;
    let iy = iy0 + i32(tap / p.kw);
    let ix = ix0 + i32(tap % p.kw);
    if (iy < 0 || iy >= i32(p.h) || ix < 0 || ix >= i32(p.w)) { return 0.0; }
    let size = stored_size();
    let at = (u32(iy) >> p.up) * size.y + (u32(ix) >> p.up);
    if (ci >= p.split) { return x2[bases.y + (ci - p.split) * size.x * size.y + at]; }
    return x[bases.x + ci * size.x * size.y + at];
}

@compute @workgroup_size(THREADS, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let m0 = wid.y * BM;
    let n0 = (wid.x + p.first_group) * BN;
    let batch = wid.z;
    let kdim = p.cin * p.kh * p.kw;
    let npix = p.ho * p.wo;
    let size = stored_size();
    let bases = vec2<u32>(batch * p.split, batch * (p.cin - p.split)) * (size.x * size.y);
    let row0 = (sg / SG_COLS) * ACC_ROWS * S;
    let col0 = (sg % SG_COLS) * ACC_COLS * S;

    // This invocation's pixel of the tile and the first im2col row it gathers; the
    // others are BK / (THREADS / BN) rows apart.
    let pixel = li % BN;
    let k_first = li / BN;
    let k_step = THREADS / BN;
    var iy0 = -(1 << 30);
    var ix0 = -(1 << 30);
    if (n0 + pixel < npix) {
        iy0 = i32(((n0 + pixel) / p.wo) * p.stride) - i32(p.pad);
        ix0 = i32(((n0 + pixel) % p.wo) * p.stride) - i32(p.pad);
    }

    var acc: array<CoopC, MAX_ACC>; // zeros
    var af: array<CoopA, MAX_FRAGMENTS>;
    var bf: array<CoopB, MAX_FRAGMENTS>;
    var a_next: array<f32, MAX_FETCH>;
    var b_next: array<f32, MAX_FETCH>;
    for (var s = 0u; s < A_FETCH; s++) { a_next[s] = fetch_w(li + s * THREADS, m0, 0u, kdim); }
    for (var s = 0u; s < B_FETCH; s++) { b_next[s] = fetch_x(k_first + s * k_step, kdim, bases, iy0, ix0); }

    for (var k0 = 0u; k0 < kdim; k0 += BK) {
        for (var s = 0u; s < A_FETCH; s++) {
            let e = li + s * THREADS;
            if (e < BM * BK) { a_tile[(e / BK) * A_STRIDE + e % BK] = f16(a_next[s]); }
        }
        for (var s = 0u; s < B_FETCH; s++) {
            let k = k_first + s * k_step;
            if (k < BK) { b_tile[k * B_STRIDE + pixel] = f16(b_next[s]); }
        }
        workgroupBarrier();
        let k1 = k0 + BK;
        if (k1 < kdim) {
            for (var s = 0u; s < A_FETCH; s++) { a_next[s] = fetch_w(li + s * THREADS, m0, k1, kdim); }
            for (var s = 0u; s < B_FETCH; s++) { b_next[s] = fetch_x(k1 + k_first + s * k_step, kdim, bases, iy0, ix0); }
        }
        for (var kk = 0u; kk < BK; kk += S) {
            for (var r = 0u; r < ACC_ROWS; r++) { af[r] = coopLoadT<CoopA>(&a_tile[(row0 + r * S) * A_STRIDE + kk], A_STRIDE); }
            for (var j = 0u; j < ACC_COLS; j++) { bf[j] = coopLoadT<CoopB>(&b_tile[kk * B_STRIDE + col0 + j * S], B_STRIDE); }
            for (var r = 0u; r < ACC_ROWS; r++) {
                for (var j = 0u; j < ACC_COLS; j++) {
                    acc[r * ACC_COLS + j] = coopMultiplyAdd(af[r], bf[j], acc[r * ACC_COLS + j]);
                }
            }
        }
        workgroupBarrier();
    }

    let y_base = batch * p.cout * npix;
    let stage = sg * S * S;
    for (var q = 0u; q < ACC_ROWS * ACC_COLS; q++) {
        coopStoreT(acc[q], &c_stage[stage], S);
        workgroupBarrier();
        let tile_row = m0 + row0 + (q / ACC_COLS) * S;
        let tile_col = n0 + col0 + (q % ACC_COLS) * S;
        for (var e = lane; e < S * S; e += SUBGROUP_SIZE) {
            let gm = tile_row + e / S;
            let gn = tile_col + e % S;
            if (gm < p.cout && gn < npix) {
                let at = y_base + gm * npix + gn;
                var v = c_stage[stage + e];
                if (p.has_bias != 0u) { v += load_bias(p.first_cout + gm); }
                if (has(SCALE_SHIFT)) {
                    let row = (p.row + batch) * 2u * p.cout;
                    v = v * (t[row + gm] + 1.0) + t[row + p.cout + gm];
                }
                if (has(SILU)) { v = v / (1.0 + exp(-v)); }
                if (has(RESIDUAL)) { v += residual[at]; }
                if (has(RESIDUAL2)) { v += residual2[at]; }
                y[at] = v;
            }
        }
        workgroupBarrier();
    }
}
