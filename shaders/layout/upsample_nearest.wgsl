// Nearest-neighbour 2x upsampling of [planes, H, W] to [planes, 2H, 2W].

struct Params { n: u32, h: u32, w: u32, _pad: u32 }

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if (i >= p.n) { return; }
    let wo = 2u * p.w;
    let ox = i % wo;
    let oy = (i / wo) % (2u * p.h);
    let plane = i / (wo * 2u * p.h);
    y[i] = x[(plane * p.h + oy / 2u) * p.w + ox / 2u];
}
