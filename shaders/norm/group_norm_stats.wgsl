// The statistics of a large GroupNorm (see group_norm.wgsl): one workgroup per chunk of
// `chunk` values of a (batch, group), its mean and its sum of squared deviations from it
// (two passes over the chunk, workgroup reductions in f32), for group_norm.wgsl to merge.
// The grid is (groups, batch, chunks).

struct Params {
    batch: u32, c: u32, hw: u32, groups: u32, eps: f32, has_affine: u32, silu: u32,
    chunk: u32, chunks: u32, _a: u32, _b: u32, _c: u32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> stats: array<vec2<f32>>; // [batch, groups, chunks]

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, lanes: Lanes) {
    let li = lanes.li;
    let cg = p.c / p.groups;
    let n = cg * p.hw;
    let base = (wid.y * p.c + wid.x * cg) * p.hw;
    let lo = wid.z * p.chunk;
    let hi = min(lo + p.chunk, n);
    var s = 0.0;
    for (var i = lo + li; i < hi; i += WG) { s += x[base + i]; }
    let mean = workgroup_sum(s, lanes) / f32(hi - lo);
    var v = 0.0;
    for (var i = lo + li; i < hi; i += WG) { let d = x[base + i] - mean; v += d * d; }
    let m2 = workgroup_sum(v, lanes);
    if (li == 0u) { stats[(wid.y * p.groups + wid.x) * p.chunks + wid.z] = vec2<f32>(mean, m2); }
}
