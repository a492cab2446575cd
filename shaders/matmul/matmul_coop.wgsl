// The product of matmul.wgsl with f16 weights (the same Params, bindings, strides, bias,
// RESIDUAL flag and GROUPED batches; B is always f16 packed two per u32) on cooperative
// matrices: tensor cores where the adapter offers wgpu's EXPERIMENTAL_COOPERATIVE_MATRIX
// with an S x S x S f16 -> f32 configuration (NVIDIA: 16, lavapipe in Mesa 26 and Apple
// GPUs: 8). Native only: WebGPU has no cooperative matrices. A is rounded to f16 on its
// way into workgroup memory; products accumulate in f32. Products with f32 weights keep
// matmul.wgsl, so that f32 weights keep f32 parity.
//
// The aliases below are for S = 16; for S = 8 the module is built with coop_mat8x8 in
// their place (`Kernel::source`), and the S override is set to the same size.
//
// Tiling: SG_ROWS x SG_COLS subgroups of SUBGROUP_SIZE invocations; each subgroup owns
// ACC_ROWS x ACC_COLS accumulator matrices, an (ACC_ROWS S) x (ACC_COLS S) block of C, so
// a workgroup computes (ACC_ROWS S SG_ROWS) x (ACC_COLS S SG_COLS) outputs (the host's
// `device::CooperativeTile`, chosen by `ops::cooperative_tile`). K is walked 2 S at a time through workgroup
// memory (the A tile row-major, the B tile k-major, rows padded by 8 halves against bank
// conflicts, which keeps every row start 16-byte aligned), fetching the next step into
// registers while the current one is multiplied, as matmul.wgsl does. The accumulators
// leave through a per-subgroup staging tile, where alpha, bias and residual are applied
// and the edges of C are masked.
enable f16;
enable wgpu_cooperative_matrix;

alias CoopA = coop_mat16x16<f16, A>;
alias CoopB = coop_mat16x16<f16, B>;
alias CoopC = coop_mat16x16<f32, C>;

struct Params {
    m: u32, n: u32, k: u32, has_bias: u32,
    a_off: u32, a_sb: u32, a_sm: u32, a_sk: u32,
    b_off: u32, b_sb: u32, b_sk: u32, b_sn: u32,
    c_off: u32, c_sb: u32, c_sm: u32, alpha: f32,
    per_group: u32, a_sg: u32, b_sg: u32, c_sg: u32,
    flags: u32,
    // Always 1: only matmul.wgsl splits K.
    k_slices: u32,
}

const RESIDUAL: u32 = 1u;

override S: u32 = 16u;
override SUBGROUP_SIZE: u32 = 32u;
override SG_ROWS: u32 = 2u;
override SG_COLS: u32 = 2u;
override ACC_ROWS: u32 = 2u;
override ACC_COLS: u32 = 2u;
override BIAS_F16: bool = false;
override GROUPED: bool = false;

override THREADS: u32 = SG_ROWS * SG_COLS * SUBGROUP_SIZE;
override BM: u32 = ACC_ROWS * S * SG_ROWS;
override BN: u32 = ACC_COLS * S * SG_COLS;
override BK: u32 = 2u * S;
override A_STRIDE: u32 = BK + 8u;
override B_STRIDE: u32 = BN + 8u;
// Values of the next step each invocation fetches (at most MAX_FETCH, and at most
// MAX_ACC accumulators and MAX_FRAGMENTS rows or columns of them: the host's tiles
// keep to these).
override A_FETCH: u32 = (BM * BK + THREADS - 1u) / THREADS;
override B_FETCH: u32 = (BK * BN + THREADS - 1u) / THREADS;
const MAX_FETCH: u32 = 32u;
const MAX_ACC: u32 = 16u;
const MAX_FRAGMENTS: u32 = 4u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<u32>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;

var<workgroup> a_tile: array<f16, BM * A_STRIDE>; // [row][k]
var<workgroup> b_tile: array<f16, BK * B_STRIDE>; // [k][column]
var<workgroup> c_stage: array<f32, SG_ROWS * SG_COLS * S * S>; // one S x S tile per subgroup

fn load_b(i: u32) -> f32 {
    return unpack2x16float(b[i >> 1u])[i & 1u];
}

fn load_bias(i: u32) -> f32 {
    if (BIAS_F16) {
        return unpack2x16float(bias[i >> 1u])[i & 1u];
    }
    return bitcast<f32>(bias[i]);
}

// Fetched value `e` of a step: consecutive invocations take consecutive k of A (usually
// row-major) and walk B along its contiguous direction.
fn a_slot(e: u32) -> vec2<u32> { return vec2<u32>(e / BK, e % BK); } // (row, k)

fn b_slot(e: u32) -> vec2<u32> { // (column, k)
    if (p.b_sk == 1u) { return vec2<u32>(e / BK, e % BK); }
    return vec2<u32>(e % BN, e / BN);
}

fn fetch_a(e: u32, m0: u32, k0: u32, base: u32) -> f32 {
    let s = a_slot(e);
    let gm = m0 + s.x;
    let gk = k0 + s.y;
    if (e < BM * BK && gm < p.m && gk < p.k) { return a[base + gm * p.a_sm + gk * p.a_sk]; }
    return 0.0;
}

fn fetch_b(e: u32, n0: u32, k0: u32, base: u32) -> f32 {
    let s = b_slot(e);
    let gn = n0 + s.x;
    let gk = k0 + s.y;
    if (e < BK * BN && gn < p.n && gk < p.k) { return load_b(base + gk * p.b_sk + gn * p.b_sn); }
    return 0.0;
}

@compute @workgroup_size(THREADS, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let m0 = wid.y * BM;
    let n0 = wid.x * BN;
    var group = 0u;
    var batch = wid.z;
    if (GROUPED) {
        group = wid.z / p.per_group;
        batch = wid.z % p.per_group;
    }
    let a_base = p.a_off + group * p.a_sg + batch * p.a_sb;
    let b_base = p.b_off + group * p.b_sg + batch * p.b_sb;
    // This subgroup's block of the workgroup tile.
    let row0 = (sg / SG_COLS) * ACC_ROWS * S;
    let col0 = (sg % SG_COLS) * ACC_COLS * S;

    var acc: array<CoopC, MAX_ACC>; // zeros
    var af: array<CoopA, MAX_FRAGMENTS>;
    var bf: array<CoopB, MAX_FRAGMENTS>;
    var a_next: array<f32, MAX_FETCH>;
    var b_next: array<f32, MAX_FETCH>;
    for (var s = 0u; s < A_FETCH; s++) { a_next[s] = fetch_a(li + s * THREADS, m0, 0u, a_base); }
    for (var s = 0u; s < B_FETCH; s++) { b_next[s] = fetch_b(li + s * THREADS, n0, 0u, b_base); }

    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var s = 0u; s < A_FETCH; s++) {
            let e = li + s * THREADS;
            if (e < BM * BK) { let at = a_slot(e); a_tile[at.x * A_STRIDE + at.y] = f16(a_next[s]); }
        }
        for (var s = 0u; s < B_FETCH; s++) {
            let e = li + s * THREADS;
            if (e < BK * BN) { let at = b_slot(e); b_tile[at.y * B_STRIDE + at.x] = f16(b_next[s]); }
        }
        workgroupBarrier();
        let k1 = k0 + BK;
        if (k1 < p.k) {
            for (var s = 0u; s < A_FETCH; s++) { a_next[s] = fetch_a(li + s * THREADS, m0, k1, a_base); }
            for (var s = 0u; s < B_FETCH; s++) { b_next[s] = fetch_b(li + s * THREADS, n0, k1, b_base); }
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

    let c_base = p.c_off + group * p.c_sg + batch * p.c_sb;
    let stage = sg * S * S;
    for (var t = 0u; t < ACC_ROWS * ACC_COLS; t++) {
        coopStoreT(acc[t], &c_stage[stage], S);
        workgroupBarrier();
        let tile_row = m0 + row0 + (t / ACC_COLS) * S;
        let tile_col = n0 + col0 + (t % ACC_COLS) * S;
        for (var e = lane; e < S * S; e += SUBGROUP_SIZE) {
            let gm = tile_row + e / S;
            let gn = tile_col + e % S;
            if (gm < p.m && gn < p.n) {
                let o = c_base + gm * p.c_sm + gn;
                var v = p.alpha * c_stage[stage + e];
                if (p.has_bias != 0u) { v += load_bias(gn); }
                if ((p.flags & RESIDUAL) != 0u) { v += residual[o]; }
                c[o] = v;
            }
        }
        workgroupBarrier();
    }
}
