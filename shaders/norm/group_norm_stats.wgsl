// The statistics of a large GroupNorm (see group_norm.wgsl): one workgroup per chunk of
// `chunk` values of a (batch, group), its mean and its sum of squared deviations from it
// (two passes over the chunk, workgroup reductions in f32), for group_norm.wgsl to merge.
// The grid is (groups, batch, chunks); Params and input in group_norm_params.wgsl.

@group(0) @binding(2) var<storage, read_write> stats: array<vec2<f32>>; // [batch, groups, chunks]

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, lanes: Lanes) {
    let li = lanes.li;
    let g = group_of(wid);
    let n = g.n;
    let base = g.base;
    let lo = wid.z * p.chunk;
    let hi = min(lo + p.chunk, n);
    var s = 0.0;
    for (var i = lo + li; i < hi; i += WG) { s += x[base + i]; }
    let mean = workgroup_sum(s, lanes) / f32(hi - lo);
    var v = 0.0;
    for (var i = lo + li; i < hi; i += WG) { let d = x[base + i] - mean; v += d * d; }
    let m2 = workgroup_sum(v, lanes);
    if (li == 0u) { stats[g.first_chunk + wid.z] = vec2<f32>(mean, m2); }
}
