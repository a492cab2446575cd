// LayerNorm over the last dimension (eps inside the square root, population variance),
// with optional affine weight and bias (f32 or packed f16). One workgroup per row: a
// workgroup reduction for the mean, then for the variance, in f32 (the workgroup_sum of
// shaders/reduce/, which src/kernels/mod.rs puts in front of this file).

struct Params { rows: u32, c: u32, eps: f32, has_affine: u32 }

override WG: u32 = 128u;
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
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        lanes: Lanes) {
    let li = lanes.li;
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) { return; }
    let base = row * p.c;
    var s = 0.0;
    for (var i = li; i < p.c; i += WG) { s += x[base + i]; }
    let mean = workgroup_sum(s, lanes) / f32(p.c);
    var v = 0.0;
    for (var i = li; i < p.c; i += WG) { let d = x[base + i] - mean; v += d * d; }
    let inv = inverseSqrt(workgroup_sum(v, lanes) / f32(p.c) + p.eps);
    for (var i = li; i < p.c; i += WG) {
        var o = (x[base + i] - mean) * inv;
        if (p.has_affine != 0u) { o = o * load_param(i, true) + load_param(i, false); }
        y[base + i] = o;
    }
}
