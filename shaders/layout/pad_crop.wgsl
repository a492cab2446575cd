// Resizes each [H, W] plane to [HO, WO] anchored at the top-left: rows and columns past
// the input are filled by reflection (PyTorch's F.pad mode "reflect" on the right and
// bottom: index H + k reads H - 2 - k), rows and columns past the output are dropped.
// Padding and cropping are the same gather, so one kernel does both.

struct Params { n: u32, h: u32, w: u32, ho: u32, wo: u32, _a: u32, _b: u32, _c: u32 }

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if (i >= p.n) { return; }
    let ox = i % p.wo;
    let oy = (i / p.wo) % p.ho;
    let plane = i / (p.wo * p.ho);
    let sx = select(ox, 2u * (p.w - 1u) - ox, ox >= p.w);
    let sy = select(oy, 2u * (p.h - 1u) - oy, oy >= p.h);
    y[i] = x[(plane * p.h + sy) * p.w + sx];
}
