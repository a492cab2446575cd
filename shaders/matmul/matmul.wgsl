// Batched matrix product with general strides: C[b] = alpha * A[b] B[b] (+ bias).
//
// A (f32) is M x K, B is K x N read through strides, so transposed operands (the
// `x W^T` of a Linear, `K^T V` of linear attention) need no copy. B and the bias may be
// f32 or f16 packed two per u32 (weights), chosen by the B_F16 / BIAS_F16 overrides.
// With RESIDUAL, a tensor read at the output's own indices is added last (a
// transformer's x + f(x) without a pass of its own).
//
// Tiling: the register tile of register_tile.wgsl (added to this file), rows of A by
// columns of B; batch is the grid's z.

struct Params {
    m: u32, n: u32, k: u32, has_bias: u32,
    a_off: u32, a_sb: u32, a_sm: u32, a_sk: u32,
    b_off: u32, b_sb: u32, b_sk: u32, b_sn: u32,
    c_off: u32, c_sb: u32, c_sm: u32, alpha: f32,
    // The batch in groups of per_group (a product per head and chunk): entry z is entry
    // z % per_group of group z / per_group, which starts a_sg, b_sg, c_sg after the last.
    per_group: u32, a_sg: u32, b_sg: u32, c_sg: u32,
}

override B_F16: bool = false;
override BIAS_F16: bool = false;
override RESIDUAL: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<u32>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;

// Where this invocation's batch starts in A and B.
var<private> a_base: u32;
var<private> b_base: u32;

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

// A: consecutive invocations take consecutive k (A is usually row-major).
fn row_slot(e: u32) -> vec2<u32> { return vec2<u32>(e / TILE_K, e % TILE_K); }

fn fetch_rows(e: u32, m0: u32, k0: u32) -> vec4<f32> {
    let s = row_slot(e);
    let gk = k0 + s.y;
    var v = vec4<f32>(0.0);
    for (var r = 0u; r < 4u; r++) {
        let gm = m0 + 4u * s.x + r;
        if (gm < p.m && gk < p.k) { v[r] = a[a_base + gm * p.a_sm + gk * p.a_sk]; }
    }
    return v;
}

// B is walked along its contiguous direction by consecutive invocations.
fn col_slot(e: u32) -> vec2<u32> {
    if (p.b_sk == 1u) { return vec2<u32>(e / TILE_K, e % TILE_K); }
    return vec2<u32>(e % COL_GROUPS, e / COL_GROUPS);
}

fn fetch_cols(e: u32, n0: u32, k0: u32) -> vec4<f32> {
    let s = col_slot(e);
    let gk = k0 + s.y;
    var v = vec4<f32>(0.0);
    for (var r = 0u; r < 4u; r++) {
        let gn = n0 + 4u * s.x + r;
        if (gn < p.n && gk < p.k) { v[r] = load_b(b_base + gk * p.b_sk + gn * p.b_sn); }
    }
    return v;
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m0 = wid.y * ROW_GROUPS * 4u;
    let n0 = wid.x * COL_GROUPS * 4u;
    let group = wid.z / p.per_group;
    let batch = wid.z % p.per_group;
    a_base = p.a_off + group * p.a_sg + batch * p.a_sb;
    b_base = p.b_off + group * p.b_sg + batch * p.b_sb;
    let acc = multiply_tiles(lid, m0, n0, p.k);

    let c_base = p.c_off + group * p.c_sg + batch * p.c_sb;
    for (var r = 0u; r < MR; r++) {
        for (var i = 0u; i < 4u; i++) {
            let gm = tile_row(m0, lid, r, i);
            if (gm >= p.m) { continue; }
            for (var q = 0u; q < NR; q++) {
                for (var j = 0u; j < 4u; j++) {
                    let gn = tile_col(n0, lid, q, j);
                    if (gn >= p.n) { continue; }
                    var v = p.alpha * acc[(4u * r + i) * 2u + q][j];
                    if (p.has_bias != 0u) { v += load_bias(gn); }
                    let at = c_base + gm * p.c_sm + gn;
                    if (RESIDUAL) { v += residual[at]; }
                    c[at] = v;
                }
            }
        }
    }
}
