// Concatenation of two NCHW tensors along channels: [B, C1, HW] ++ [B, C2, HW].

struct Params { n: u32, c1: u32, c2: u32, hw: u32 }

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if (i >= p.n) { return; }
    let c = p.c1 + p.c2;
    let pix = i % p.hw;
    let ch = (i / p.hw) % c;
    let bt = i / (p.hw * c);
    if (ch < p.c1) {
        y[i] = a[(bt * p.c1 + ch) * p.hw + pix];
    } else {
        y[i] = b[(bt * p.c2 + ch - p.c1) * p.hw + pix];
    }
}
