// GroupNorm on NCHW (population variance, eps inside the root), optional per-channel
// affine (f32 or packed f16) and optional fused SiLU. One workgroup per (batch, group):
// the group's (C / groups) * H * W values are contiguous; mean then variance by
// workgroup reductions in f32 (the workgroup_sum of shaders/reduce/, which src/shaders.rs
// puts in front of this file).

struct Params { batch: u32, c: u32, hw: u32, groups: u32, eps: f32, has_affine: u32, silu: u32, _pad: u32 }

override WG: u32 = 256u;
override AFFINE_F16: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<u32>;
@group(0) @binding(3) var<storage, read> beta: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

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
    var s = 0.0;
    for (var i = li; i < n; i += WG) { s += x[base + i]; }
    let mean = workgroup_sum(s, lanes) / f32(n);
    var v = 0.0;
    for (var i = li; i < n; i += WG) { let d = x[base + i] - mean; v += d * d; }
    let inv = inverseSqrt(workgroup_sum(v, lanes) / f32(n) + p.eps);
    for (var i = li; i < n; i += WG) {
        var o = (x[base + i] - mean) * inv;
        if (p.has_affine != 0u) {
            let ch = wid.x * cg + i / p.hw;
            o = o * load_param(ch, true) + load_param(ch, false);
        }
        if (p.silu != 0u) { o = o / (1.0 + exp(-o)); }
        y[base + i] = o;
    }
}
