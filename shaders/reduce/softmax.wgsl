// Softmax along one dimension of a tensor seen as [outer, dim, inner] (elements of a row
// are `inner` apart), starting at element `in_off` of the input; the output is written
// contiguous as [outer, dim, inner]. One workgroup per row: max, then sum of exp, by
// workgroup-memory reductions, so rows of any length work.

struct Params { outer: u32, dim: u32, inner: u32, in_off: u32 }

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.outer * p.inner) { return; }
    let o = row / p.inner;
    let i = row % p.inner;
    let src = p.in_off + o * p.dim * p.inner + i;
    let dst = o * p.dim * p.inner + i;

    var m = -3.4e38;
    for (var j = li; j < p.dim; j += WG) { m = max(m, x[src + j * p.inner]); }
    partial[li] = m;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) { partial[li] = max(partial[li], partial[li + s]); }
        workgroupBarrier();
    }
    m = partial[0];
    workgroupBarrier();

    var sum = 0.0;
    for (var j = li; j < p.dim; j += WG) { sum += exp(x[src + j * p.inner] - m); }
    partial[li] = sum;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) { partial[li] += partial[li + s]; }
        workgroupBarrier();
    }
    let inv = 1.0 / partial[0];
    for (var j = li; j < p.dim; j += WG) { y[dst + j * p.inner] = exp(x[src + j * p.inner] - m) * inv; }
}
