// Batched matrix product with general strides: C[b] = alpha * A[b] B[b] (+ bias).
//
// A (f32) is M x K, B is K x N read through strides, so transposed operands (the
// `x W^T` of a Linear, `K^T V` of linear attention) need no copy. B and the bias may be
// f32 or f16 packed two per u32 (weights), chosen by the B_F16 / BIAS_F16 overrides.
// With RESIDUAL, a tensor read at the output's own indices is added last (a
// transformer's x + f(x) without a pass of its own).
//
// Tiling: a workgroup of WG_X x WG_Y invocations computes a (4 WG_Y) x (4 WG_X) tile of C,
// each invocation a 4 x 4 block held in four vec4 registers (rows 4 ty.., columns
// 4 tx..). K is walked in steps of TILE_K through workgroup memory holding vec4s of A
// (4 rows) and of B (4 columns), so the inner loop is 2 vec4 loads per 16 multiply-adds.
// Batch is the z dimension of the grid.

struct Params {
    m: u32, n: u32, k: u32, has_bias: u32,
    a_off: u32, a_sb: u32, a_sm: u32, a_sk: u32,
    b_off: u32, b_sb: u32, b_sk: u32, b_sn: u32,
    c_off: u32, c_sb: u32, c_sm: u32, alpha: f32,
}

override WG_X: u32 = 16u;
override WG_Y: u32 = 16u;
override TILE_K: u32 = 16u;
override B_F16: bool = false;
override BIAS_F16: bool = false;
override RESIDUAL: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<u32>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;

var<workgroup> a_tile: array<vec4<f32>, TILE_K * WG_Y>; // [k][4 rows]
var<workgroup> b_tile: array<vec4<f32>, TILE_K * WG_X>; // [k][4 columns]

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

@compute @workgroup_size(WG_X, WG_Y, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let threads = WG_X * WG_Y;
    let li = lid.y * WG_X + lid.x;
    let m0 = wid.y * WG_Y * 4u;
    let n0 = wid.x * WG_X * 4u;
    let batch = wid.z;
    let a_base = p.a_off + batch * p.a_sb;
    let b_base = p.b_off + batch * p.b_sb;

    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) { acc[i] = vec4<f32>(0.0); }

    for (var k0 = 0u; k0 < p.k; k0 += TILE_K) {
        // A tile: consecutive invocations take consecutive k (A is usually row-major).
        for (var e = li; e < WG_Y * TILE_K; e += threads) {
            let mq = e / TILE_K;
            let kk = e % TILE_K;
            let gk = k0 + kk;
            var v = vec4<f32>(0.0);
            for (var r = 0u; r < 4u; r++) {
                let gm = m0 + 4u * mq + r;
                if (gm < p.m && gk < p.k) { v[r] = a[a_base + gm * p.a_sm + gk * p.a_sk]; }
            }
            a_tile[kk * WG_Y + mq] = v;
        }
        // B tile: walk the operand's contiguous direction with consecutive invocations.
        for (var e = li; e < WG_X * TILE_K; e += threads) {
            var kk: u32;
            var nq: u32;
            if (p.b_sk == 1u) { kk = e % TILE_K; nq = e / TILE_K; } else { nq = e % WG_X; kk = e / WG_X; }
            let gk = k0 + kk;
            var v = vec4<f32>(0.0);
            for (var r = 0u; r < 4u; r++) {
                let gn = n0 + 4u * nq + r;
                if (gn < p.n && gk < p.k) { v[r] = load_b(b_base + gk * p.b_sk + gn * p.b_sn); }
            }
            b_tile[kk * WG_X + nq] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            let av = a_tile[kk * WG_Y + lid.y];
            let bv = b_tile[kk * WG_X + lid.x];
            acc[0] = fma(vec4<f32>(av.x), bv, acc[0]);
            acc[1] = fma(vec4<f32>(av.y), bv, acc[1]);
            acc[2] = fma(vec4<f32>(av.z), bv, acc[2]);
            acc[3] = fma(vec4<f32>(av.w), bv, acc[3]);
        }
        workgroupBarrier();
    }

    let c_base = p.c_off + batch * p.c_sb;
    for (var i = 0u; i < 4u; i++) {
        let gm = m0 + 4u * lid.y + i;
        if (gm >= p.m) { continue; }
        for (var j = 0u; j < 4u; j++) {
            let gn = n0 + 4u * lid.x + j;
            if (gn >= p.n) { continue; }
            var v = p.alpha * acc[i][j];
            if (p.has_bias != 0u) { v += load_bias(gn); }
            let at = c_base + gm * p.c_sm + gn;
            if (RESIDUAL) { v += residual[at]; }
            c[at] = v;
        }
    }
}
