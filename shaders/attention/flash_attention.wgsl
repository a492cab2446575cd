// Multi-head attention softmax(q k^T * scale) v with an online ("flash") softmax: keys
// are visited once, in tiles held in workgroup memory, and the Nq x Nk score matrix
// never exists. Nq may differ from Nk (cross-attention); CAUSAL masks key j > query i
// (aligned at the end when Nq < Nk).
//
// Layout: token-major rows with the heads side by side, as a Linear produces them, read
// as vec4s: q vec4 (b, i, h, c) is at q_off + b q_sb + i q_row + h D4 + c (offsets and
// strides in vec4s); k and v likewise. Output o is [B, Nq, H*D] contiguous. One
// invocation per query row keeps its q vector and running output in registers
// (D <= 64, a multiple of 4); the grid is (query blocks, heads, batch).

struct Params {
    // first_group: the first query block of this dispatch (long attention goes in parts).
    nq: u32, nk: u32, first_group: u32, causal: u32,
    q_off: u32, q_sb: u32, q_row: u32, scale: f32,
    k_off: u32, k_sb: u32, k_row: u32, heads: u32,
    v_off: u32, v_sb: u32, v_row: u32, _pad: u32,
}

override BLOCK_Q: u32 = 64u;
override BLOCK_K: u32 = 16u;
// Head dimension in vec4s (D / 4). A pipeline constant rather than a uniform so that the
// loops over it have a fixed trip count and are unrolled: besides being faster, software
// rasterisers such as llvmpipe cap the total loop iterations of one invocation (about
// 65535), which long key loops with dynamic inner loops exceed.
override D4: u32 = 16u;

const MAX_D4: u32 = 16u; // head dimension up to 64
const MAX_BLOCK_K: u32 = 32u; // BLOCK_K may not exceed this (size of the score buffer)

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> o: array<vec4<f32>>;

var<workgroup> k_tile: array<vec4<f32>, BLOCK_K * D4>;
var<workgroup> v_tile: array<vec4<f32>, BLOCK_K * D4>;

@compute @workgroup_size(BLOCK_Q)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let head = wid.y;
    let batch = wid.z;
    let block = wid.x + p.first_group;
    let qi = block * BLOCK_Q + li;
    let live = qi < p.nq;

    var qv: array<vec4<f32>, MAX_D4>;
    var acc: array<vec4<f32>, MAX_D4>;
    if (live) {
        let qb = p.q_off + batch * p.q_sb + qi * p.q_row + head * D4;
        for (var e = 0u; e < D4; e++) { qv[e] = q[qb + e] * p.scale; acc[e] = vec4<f32>(0.0); }
    }
    var m = -3.4e38;
    var l = 0.0;
    // With a causal mask, query i sees keys 0 ..= i + (nk - nq).
    let last_key = qi + p.nk - p.nq;
    // Keys beyond the last query of this block are masked for all of it: stop there.
    var nk_block = p.nk;
    if (p.causal != 0u) { nk_block = min(p.nk, (block + 1u) * BLOCK_Q + p.nk - p.nq); }

    for (var j0 = 0u; j0 < nk_block; j0 += BLOCK_K) {
        for (var e = li; e < BLOCK_K * D4; e += BLOCK_Q) {
            let j = j0 + e / D4;
            let c = e % D4;
            var kv = vec4<f32>(0.0);
            var vv = vec4<f32>(0.0);
            if (j < p.nk) {
                kv = k[p.k_off + batch * p.k_sb + j * p.k_row + head * D4 + c];
                vv = v[p.v_off + batch * p.v_sb + j * p.v_row + head * D4 + c];
            }
            k_tile[e] = kv;
            v_tile[e] = vv;
        }
        workgroupBarrier();
        if (live) {
            var s: array<f32, MAX_BLOCK_K>;
            var tile_max = m;
            for (var jj = 0u; jj < BLOCK_K; jj++) {
                let j = j0 + jj;
                var score = -3.4e38;
                if (j < p.nk && (p.causal == 0u || j <= last_key)) {
                    var dv = vec4<f32>(0.0);
                    for (var e = 0u; e < D4; e++) { dv = fma(qv[e], k_tile[jj * D4 + e], dv); }
                    score = dv.x + dv.y + dv.z + dv.w;
                    tile_max = max(tile_max, score);
                }
                s[jj] = score;
            }
            let correction = exp(m - tile_max);
            l *= correction;
            for (var e = 0u; e < D4; e++) { acc[e] *= correction; }
            for (var jj = 0u; jj < BLOCK_K; jj++) {
                let j = j0 + jj;
                if (j < p.nk && (p.causal == 0u || j <= last_key)) {
                    let w = exp(s[jj] - tile_max);
                    l += w;
                    for (var e = 0u; e < D4; e++) { acc[e] = fma(vec4<f32>(w), v_tile[jj * D4 + e], acc[e]); }
                }
            }
            m = tile_max;
        }
        workgroupBarrier();
    }
    if (live) {
        let ob = (batch * p.nq + qi) * p.heads * D4 + head * D4;
        let inv = 1.0 / l;
        for (var e = 0u; e < D4; e++) { o[ob + e] = acc[e] * inv; }
    }
}
