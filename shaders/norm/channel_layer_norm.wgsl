// The UNet's channel LayerNorm: for every pixel of an NCHW tensor, normalise across the
// C channels (population variance, eps inside the root) and multiply by a per-channel
// gain g (no bias); with RESIDUAL, a tensor of the same shape is added last (the
// LinearAttention level's x + attention(x) without a pass of its own). One invocation per
// pixel, so neighbouring invocations read neighbouring addresses for every channel.

struct Params { batch: u32, c: u32, hw: u32, eps: f32 }

override WG: u32 = 256u;
override G_F16: bool = false;
override RESIDUAL: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<u32>;
@group(0) @binding(3) var<storage, read> residual: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

fn load_g(i: u32) -> f32 {
    if (G_F16) { return unpack2x16float(g[i >> 1u])[i & 1u]; }
    return bitcast<f32>(g[i]);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let idx = (wid.x + wid.y * nwg.x) * WG + li;
    if (idx >= p.batch * p.hw) { return; }
    let b = idx / p.hw;
    let pix = idx % p.hw;
    let base = b * p.c * p.hw + pix;
    var s = 0.0;
    for (var ch = 0u; ch < p.c; ch++) { s += x[base + ch * p.hw]; }
    let mean = s / f32(p.c);
    var v = 0.0;
    for (var ch = 0u; ch < p.c; ch++) { let d = x[base + ch * p.hw] - mean; v += d * d; }
    let inv = inverseSqrt(v / f32(p.c) + p.eps);
    for (var ch = 0u; ch < p.c; ch++) {
        let at = base + ch * p.hw;
        var o = (x[at] - mean) * inv * load_g(ch);
        if (RESIDUAL) { o += residual[at]; }
        y[at] = o;
    }
}
