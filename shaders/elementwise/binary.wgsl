// y[i] = a[i] (op) b[j] with j = (i / b_inner) % b_len, so b may be a full tensor
// (b_inner 1, b_len n), a per-channel vector of an NCHW tensor (b_inner H*W, b_len C) or
// a per-column vector of a matrix (b_inner 1, b_len columns). OP: 0 add, 1 multiply,
// 2 subtract.

struct Params { n: u32, b_len: u32, b_inner: u32, _pad: u32 }

override WG: u32 = 256u;
override OP: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if (i >= p.n) { return; }
    let bv = b[(i / p.b_inner) % p.b_len];
    if (OP == 0u) {
        y[i] = a[i] + bv;
    } else if (OP == 1u) {
        y[i] = a[i] * bv;
    } else {
        y[i] = a[i] - bv;
    }
}
