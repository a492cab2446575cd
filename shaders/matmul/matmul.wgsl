// Batched matrix product with general strides: C[b] = alpha * A[b] B[b] (+ bias); with
// GROUPED the batch is groups of per_group matrices, C[g, b] = alpha * A[g, b] B[g, b],
// each index with a stride of its own (such as heads by chunks of pixels). An override,
// so that ungrouped products do not pay for the division (on lavapipe it made every
// product about 20% slower).
//
// A (f32) is M x K, B is K x N read through strides, so transposed operands (the
// `x W^T` of a Linear, `K^T V` of linear attention) need no copy. B and the bias may be
// f32 or f16 packed two per u32 (weights), chosen by the B_F16 / BIAS_F16 overrides.
// With the RESIDUAL flag, a tensor read at the output's own indices is added last (a
// transformer's x + f(x) without a pass of its own): a flag in Params, not an override,
// since every override set is a pipeline of its own to compile (see conv2d.wgsl).
//
// Tiling: a workgroup of WG_X x WG_Y invocations computes a (4 MR WG_Y) x (4 NR WG_X)
// tile of C, each invocation (4 MR) x (4 NR) outputs in vec4 registers: rows
// 4 (ty + r WG_Y) + 0..3 for r < MR, columns 4 (tx + c WG_X) + 0..3 for c < NR, so
// neighbouring invocations read neighbouring vec4s of workgroup memory and write
// neighbouring vec4s of C. K is walked in steps of TILE_K through workgroup memory holding
// vec4s of A (4 rows) and of B (4 columns): per k, MR + NR vec4 loads feed 16 MR NR
// multiply-adds (MR = NR = 2, the large tiles for large products: 4 loads per 64).
// The next step's global values are fetched into registers before the current step is
// computed, so their latency hides behind the arithmetic. The batch (group * per_group +
// index) is the grid's z.
//
// Split K (k_slices > 1: a product with too few workgroups to fill a large GPU, such as
// the transformers' at the UNet's lowest levels): the grid's z is batch * k_slices +
// slice, each slice sums its own run of K (whole TILE_K steps) and writes alpha times
// those partial sums, without bias or residual, to dense plane z of C (c_off 0, c_sm n).
// A second dispatch with the PARTIALS flag and K = 0 binds them as A, computes no
// products, and adds the k_slices partials to the bias before the residual.
//
// f16 tiles (the module Kernel::MatmulHalf builds for WebGPU's shader-f16, for products
// with f16 weights): the workgroup tiles hold vec4<f16>, half the workgroup memory and
// half the bytes of its reads per multiply-add, with the activations rounded to f16 on
// their way in (as on cooperative matrices); the sums stay f32. f16 sums would take twice
// the multiply-adds per instruction on some GPUs, but measured against the f64 reference
// (2026-12-06, lavapipe) their rounding left 2-6e-3 of the output's rms (2e-2 after a
// ResBlock's time conditioning and SiLU) where f32 sums of the same f16 inputs leave
// 1e-6: too far from the original's outputs.

struct Params {
    m: u32, n: u32, k: u32, has_bias: u32,
    a_off: u32, a_sb: u32, a_sm: u32, a_sk: u32,
    b_off: u32, b_sb: u32, b_sk: u32, b_sn: u32,
    c_off: u32, c_sb: u32, c_sm: u32, alpha: f32,
    per_group: u32, a_sg: u32, b_sg: u32, c_sg: u32,
    flags: u32,
    // The slices K is split into (1: not split).
    k_slices: u32,
}

// The workgroup tiles' type; Kernel::source swaps this line for f16's.
alias Tile = vec4<f32>;

const RESIDUAL: u32 = 1u;
const PARTIALS: u32 = 2u;

fn has(flag: u32) -> bool { return (p.flags & flag) != 0u; }

override WG_X: u32 = 16u;
override WG_Y: u32 = 16u;
override TILE_K: u32 = 16u;
// vec4 row groups (MR) and column groups (NR) per invocation: 1 or 2.
override MR: u32 = 1u;
override NR: u32 = 1u;
override B_F16: bool = false;
override BIAS_F16: bool = false;
override GROUPED: bool = false;

override THREADS: u32 = WG_X * WG_Y;
override A_GROUPS: u32 = MR * WG_Y; // vec4 row groups in the tile
override B_GROUPS: u32 = NR * WG_X; // vec4 column groups in the tile
// vec4s of the next step each invocation fetches (at most MAX_FETCH).
override A_FETCH: u32 = (A_GROUPS * TILE_K + THREADS - 1u) / THREADS;
override B_FETCH: u32 = (B_GROUPS * TILE_K + THREADS - 1u) / THREADS;
const MAX_FETCH: u32 = 4u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<u32>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;

var<workgroup> a_tile: array<Tile, TILE_K * A_GROUPS>; // [k][4 rows]
var<workgroup> b_tile: array<Tile, TILE_K * B_GROUPS>; // [k][4 columns]

fn load_b(i: u32) -> f32 {
    if (B_F16) {
        return unpack2x16float(b[i >> 1u])[i & 1u];
    }
    return bitcast<f32>(b[i]);
}

fn load_bias(i: u32) -> f32 {
    if (BIAS_F16) {
        return unpack2x16float(bias[i >> 1u])[i & 1u];
    }
    return bitcast<f32>(bias[i]);
}

// Where fetched vec4 `e` of a step goes: consecutive invocations take consecutive k
// (A is usually row-major).
fn a_slot(e: u32) -> vec2<u32> { return vec2<u32>(e / TILE_K, e % TILE_K); } // (group, k)

// `inside`: the whole step of the tile lies within A (or B), so no load of the tile
// needs a check (the same for every invocation of the workgroup: no divergence); `e`
// past the tile (the last fetch of some tile shapes) still takes the checked path.
fn fetch_a(e: u32, m0: u32, k0: u32, base: u32, inside: bool) -> vec4<f32> {
    let s = a_slot(e);
    let gk = k0 + s.y;
    let at = base + (m0 + 4u * s.x) * p.a_sm + gk * p.a_sk;
    var v = vec4<f32>(0.0);
    if (inside && e < A_GROUPS * TILE_K) {
        for (var r = 0u; r < 4u; r++) { v[r] = a[at + r * p.a_sm]; }
        return v;
    }
    for (var r = 0u; r < 4u; r++) {
        let gm = m0 + 4u * s.x + r;
        if (gm < p.m && gk < p.k) { v[r] = a[at + r * p.a_sm]; }
    }
    return v;
}

// B is walked along its contiguous direction by consecutive invocations.
fn b_slot(e: u32) -> vec2<u32> { // (group, k)
    if (p.b_sk == 1u) { return vec2<u32>(e / TILE_K, e % TILE_K); }
    return vec2<u32>(e % B_GROUPS, e / B_GROUPS);
}

fn fetch_b(e: u32, n0: u32, k0: u32, base: u32, inside: bool) -> vec4<f32> {
    let s = b_slot(e);
    let gk = k0 + s.y;
    let at = base + gk * p.b_sk + (n0 + 4u * s.x) * p.b_sn;
    var v = vec4<f32>(0.0);
    if (inside && e < B_GROUPS * TILE_K) {
        for (var r = 0u; r < 4u; r++) { v[r] = load_b(at + r * p.b_sn); }
        return v;
    }
    for (var r = 0u; r < 4u; r++) {
        let gn = n0 + 4u * s.x + r;
        if (gn < p.n && gk < p.k) { v[r] = load_b(at + r * p.b_sn); }
    }
    return v;
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let li = lid.y * WG_X + lid.x;
    let m0 = wid.y * A_GROUPS * 4u;
    let n0 = wid.x * B_GROUPS * 4u;
    // This slice's run of K (all of it unsplit; the dispatch adding partials has K = 0).
    let slices = select(p.k_slices, 1u, has(PARTIALS));
    let z = wid.z / slices;
    let slice_len = ((p.k + slices - 1u) / slices + TILE_K - 1u) / TILE_K * TILE_K;
    let k_begin = (wid.z % slices) * slice_len;
    let k_end = min(p.k, k_begin + slice_len);
    var group = 0u;
    var batch = z;
    if (GROUPED) {
        group = z / p.per_group;
        batch = z % p.per_group;
    }
    let a_base = p.a_off + group * p.a_sg + batch * p.a_sb;
    let b_base = p.b_off + group * p.b_sg + batch * p.b_sb;

    // acc[(4 r + i) * 2 + c]: row 4 (ty + r WG_Y) + i, columns 4 (tx + c WG_X) + 0..3.
    var acc: array<vec4<f32>, 16>;
    for (var i = 0u; i < 16u; i++) { acc[i] = vec4<f32>(0.0); }
    var a_next: array<vec4<f32>, MAX_FETCH>;
    var b_next: array<vec4<f32>, MAX_FETCH>;
    // Whether the tile's rows of A and columns of B are all inside (then only the steps
    // past the end of K need checks).
    let rows_inside = m0 + 4u * A_GROUPS <= p.m;
    let cols_inside = n0 + 4u * B_GROUPS <= p.n;
    var step_inside = k_begin + TILE_K <= p.k;
    for (var s = 0u; s < A_FETCH; s++) { a_next[s] = fetch_a(li + s * THREADS, m0, k_begin, a_base, rows_inside && step_inside); }
    for (var s = 0u; s < B_FETCH; s++) { b_next[s] = fetch_b(li + s * THREADS, n0, k_begin, b_base, cols_inside && step_inside); }

    for (var k0 = k_begin; k0 < k_end; k0 += TILE_K) {
        for (var s = 0u; s < A_FETCH; s++) {
            let e = li + s * THREADS;
            if (e < A_GROUPS * TILE_K) { let at = a_slot(e); a_tile[at.y * A_GROUPS + at.x] = Tile(a_next[s]); }
        }
        for (var s = 0u; s < B_FETCH; s++) {
            let e = li + s * THREADS;
            if (e < B_GROUPS * TILE_K) { let at = b_slot(e); b_tile[at.y * B_GROUPS + at.x] = Tile(b_next[s]); }
        }
        workgroupBarrier();
        let k1 = k0 + TILE_K;
        if (k1 < k_end) {
            step_inside = k1 + TILE_K <= p.k;
            for (var s = 0u; s < A_FETCH; s++) { a_next[s] = fetch_a(li + s * THREADS, m0, k1, a_base, rows_inside && step_inside); }
            for (var s = 0u; s < B_FETCH; s++) { b_next[s] = fetch_b(li + s * THREADS, n0, k1, b_base, cols_inside && step_inside); }
        }
        for (var kk = 0u; kk < TILE_K; kk++) {
            var av: array<Tile, 2>;
            var bv: array<Tile, 2>;
            for (var r = 0u; r < MR; r++) { av[r] = a_tile[kk * A_GROUPS + lid.y + r * WG_Y]; }
            for (var q = 0u; q < NR; q++) { bv[q] = b_tile[kk * B_GROUPS + lid.x + q * WG_X]; }
            for (var r = 0u; r < MR; r++) {
                for (var q = 0u; q < NR; q++) {
                    let o = 8u * r + q;
                    // f32 sums of f16 tiles (conversions only in the f16 module).
                    let bq = vec4<f32>(bv[q]);
                    acc[o] = fma(vec4<f32>(f32(av[r].x)), bq, acc[o]);
                    acc[o + 2u] = fma(vec4<f32>(f32(av[r].y)), bq, acc[o + 2u]);
                    acc[o + 4u] = fma(vec4<f32>(f32(av[r].z)), bq, acc[o + 4u]);
                    acc[o + 6u] = fma(vec4<f32>(f32(av[r].w)), bq, acc[o + 6u]);
                }
            }
        }
        workgroupBarrier();
    }

    // A slice's partial sums go to plane wid.z; otherwise the output's own place.
    let c_base = select(p.c_off + group * p.c_sg + batch * p.c_sb, wid.z * p.m * p.c_sm, slices > 1u);
    for (var r = 0u; r < MR; r++) {
        for (var i = 0u; i < 4u; i++) {
            let gm = m0 + 4u * (lid.y + r * WG_Y) + i;
            if (gm >= p.m) { continue; }
            for (var q = 0u; q < NR; q++) {
                for (var j = 0u; j < 4u; j++) {
                    let gn = n0 + 4u * (lid.x + q * WG_X) + j;
                    if (gn >= p.n) { continue; }
                    var v = p.alpha * acc[(4u * r + i) * 2u + q][j];
                    if (p.has_bias != 0u) { v += load_bias(gn); }
                    c[c_base + gm * p.c_sm + gn] = v;
                }
            }
        }
    }
    if ((p.flags & (RESIDUAL | PARTIALS)) == 0u) { return; }
    // The partial sums and the residual are added to the outputs this invocation has just
    // written (its own writes, so no barrier), not in the loop over acc: that loop keeps
    // the same small body whatever the flags, so the compiler still unrolls it and acc
    // stays in registers (conv2d.wgsl measured the difference).
    for (var r = 0u; r < MR; r++) {
        for (var i = 0u; i < 4u; i++) {
            let gm = m0 + 4u * (lid.y + r * WG_Y) + i;
            if (gm >= p.m) { continue; }
            for (var n = 0u; n < 4u * NR; n++) {
                let gn = n0 + 4u * (lid.x + (n / 4u) * WG_X) + n % 4u;
                if (gn >= p.n) { continue; }
                let at = c_base + gm * p.c_sm + gn;
                var v = c[at];
                if (has(PARTIALS)) {
                    for (var s = 0u; s < p.k_slices; s++) { v += a[((z * p.k_slices + s) * p.m + gm) * p.n + gn]; }
                }
                if (has(RESIDUAL)) { v += residual[at]; }
                c[at] = v;
            }
        }
    }
}
