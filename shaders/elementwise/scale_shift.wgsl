// The ResBlock's time conditioning on NCHW x: y = x * (s + 1) + b per channel, where
// s = t[r, 0..C] and b = t[r, C..2C] are the two halves of a time MLP output row
// (PyTorch's `scale, shift = t.chunk(2, dim=1)`), optionally followed by SiLU. The row r
// is `row + batch index`: t may hold the rows of every sampling step, computed at once.

struct Params { n: u32, c: u32, hw: u32, silu: u32, row: u32, _a: u32, _b: u32, _c: u32 }

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> t: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if (i >= p.n) { return; }
    let bc = i / p.hw;
    let b = bc / p.c + p.row;
    let ch = bc % p.c;
    let scale = t[b * 2u * p.c + ch];
    let shift = t[b * 2u * p.c + p.c + ch];
    var v = x[i] * (scale + 1.0) + shift;
    if (p.silu != 0u) { v = v / (1.0 + exp(-v)); }
    y[i] = v;
}
