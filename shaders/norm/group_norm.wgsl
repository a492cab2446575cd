// GroupNorm on NCHW (population variance, eps inside the root), optional per-channel
// affine (f32 or packed f16) and optional fused SiLU. A (batch, group)'s (C / groups) H W
// values are contiguous. A small group is one workgroup: mean then variance by workgroup
// reductions in f32 (the workgroup_sum of shaders/reduce/, which src/kernels/mod.rs puts in
// front of this file). A large one (chunks > 1) is `chunks` workgroups, one per chunk of
// `chunk` values, so that a big image's 32 groups still spread over a whole GPU:
// group_norm_stats.wgsl has left every chunk's mean and sum of squared deviations in
// `stats`, and each workgroup merges its group's (in the same order in every workgroup of
// the group, so all get the same statistics) and normalises its chunk.

struct Params {
    batch: u32, c: u32, hw: u32, groups: u32, eps: f32, has_affine: u32, silu: u32,
    chunk: u32, chunks: u32, _a: u32, _b: u32, _c: u32,
}

override WG: u32 = 256u;
override AFFINE_F16: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<u32>;
@group(0) @binding(3) var<storage, read> beta: array<u32>;
@group(0) @binding(4) var<storage, read> stats: array<vec2<f32>>; // [batch, groups, chunks] (mean, M2)
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

fn load_param(i: u32, is_gamma: bool) -> f32 {
    var word: u32;
    let j = select(i, i >> 1u, AFFINE_F16);
    if (is_gamma) { word = gamma[j]; } else { word = beta[j]; }
    if (AFFINE_F16) { return unpack2x16float(word)[i & 1u]; }
    return bitcast<f32>(word);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, lanes: Lanes) {
    let li = lanes.li;
    let cg = p.c / p.groups;
    let n = cg * p.hw;
    let base = (wid.y * p.c + wid.x * cg) * p.hw;
    var mean = 0.0;
    var inv = 0.0;
    var lo = 0u;
    var hi = n;
    if (p.chunks > 1u) {
        // The group's mean is the chunks' means weighted by their sizes, and its M2 the
        // chunks' M2 plus each chunk's size times its mean's squared deviation from the
        // group's: two workgroup sums over the chunks.
        let first = (wid.y * p.groups + wid.x) * p.chunks;
        var s = 0.0;
        for (var j = li; j < p.chunks; j += WG) { s += f32(min(p.chunk, n - j * p.chunk)) * stats[first + j].x; }
        mean = workgroup_sum(s, lanes) / f32(n);
        var m2 = 0.0;
        for (var j = li; j < p.chunks; j += WG) {
            let st = stats[first + j];
            let d = st.x - mean;
            m2 += st.y + f32(min(p.chunk, n - j * p.chunk)) * d * d;
        }
        m2 = workgroup_sum(m2, lanes);
        inv = inverseSqrt(m2 / f32(n) + p.eps);
        lo = wid.z * p.chunk;
        hi = min(lo + p.chunk, n);
    } else {
        var s = 0.0;
        for (var i = li; i < n; i += WG) { s += x[base + i]; }
        mean = workgroup_sum(s, lanes) / f32(n);
        var v = 0.0;
        for (var i = li; i < n; i += WG) { let d = x[base + i] - mean; v += d * d; }
        inv = inverseSqrt(workgroup_sum(v, lanes) / f32(n) + p.eps);
    }
    for (var i = lo + li; i < hi; i += WG) {
        var o = (x[base + i] - mean) * inv;
        if (p.has_affine != 0u) {
            let ch = wid.x * cg + i / p.hw;
            o = o * load_param(ch, true) + load_param(ch, false);
        }
        if (p.silu != 0u) { o = o / (1.0 + exp(-o)); }
        y[base + i] = o;
    }
}
