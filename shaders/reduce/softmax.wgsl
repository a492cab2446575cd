// Softmax along one dimension of a tensor seen as [outer, dim, inner] (elements of a row
// are `inner` apart), starting at element `in_off` of the input; the output is written
// contiguous as [outer, dim, inner].
//
// Two ways to map rows, chosen by ROW_PER_INVOCATION:
//   false: one workgroup per row, max and sum by workgroup reductions (workgroup_max and
//          workgroup_sum of workgroup_reduce*.wgsl, which src/shaders.rs puts in front of
//          this file): for few, long rows (softmax over the pixels of an image);
//   true:  one invocation per row, a plain loop: for many short rows whose elements are
//          strided (softmax over channels at every pixel), where neighbouring invocations
//          read neighbouring addresses and no workgroup has to synchronise.

struct Params { outer: u32, dim: u32, inner: u32, in_off: u32 }

override WG: u32 = 64u;
override ROW_PER_INVOCATION: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

fn row_softmax_serial(src: u32, dst: u32) {
    var m = -3.4e38;
    for (var j = 0u; j < p.dim; j++) { m = max(m, x[src + j * p.inner]); }
    var sum = 0.0;
    for (var j = 0u; j < p.dim; j++) { sum += exp(x[src + j * p.inner] - m); }
    let inv = 1.0 / sum;
    for (var j = 0u; j < p.dim; j++) { y[dst + j * p.inner] = exp(x[src + j * p.inner] - m) * inv; }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        lanes: Lanes) {
    let li = lanes.li;
    let rows = p.outer * p.inner;
    if (ROW_PER_INVOCATION) {
        let row = (wid.x + wid.y * nwg.x) * WG + li;
        if (row < rows) {
            let o = row / p.inner;
            let i = row % p.inner;
            row_softmax_serial(p.in_off + o * p.dim * p.inner + i, o * p.dim * p.inner + i);
        }
        return;
    }
    let row = wid.x + wid.y * nwg.x;
    if (row >= rows) { return; }
    let o = row / p.inner;
    let i = row % p.inner;
    let src = p.in_off + o * p.dim * p.inner + i;
    let dst = o * p.dim * p.inner + i;

    var m = -3.4e38;
    for (var j = li; j < p.dim; j += WG) { m = max(m, x[src + j * p.inner]); }
    m = workgroup_max(m, lanes);
    var sum = 0.0;
    for (var j = li; j < p.dim; j += WG) { sum += exp(x[src + j * p.inner] - m); }
    let inv = 1.0 / workgroup_sum(sum, lanes);
    for (var j = li; j < p.dim; j += WG) { y[dst + j * p.inner] = exp(x[src + j * p.inner] - m) * inv; }
}
