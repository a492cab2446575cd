// Softmax along one dimension of up to two blocks of rows in one dispatch, each block a
// tensor seen as [outer, dim, inner] (elements of a row are `inner` apart) from element
// `*_in` of its input, written contiguous as [outer, dim, inner] into y from element
// `*_out`.
//
// The two blocks map their rows in the two ways softmax needs:
//   block a: one invocation per row, a plain loop: for many short rows whose elements
//            are strided (softmax over channels at every pixel), where neighbouring
//            invocations read neighbouring addresses and no workgroup has to
//            synchronise. It takes the first `a_groups` workgroups.
//   block b: one workgroup per row, max and sum by workgroup reductions (workgroup_max
//            and workgroup_sum of workgroup_reduce*.wgsl, which src/kernels/mod.rs puts in
//            front of this file): for few, long rows (softmax over the pixels of an
//            image). It takes the workgroups after those.
// LinearAttention needs one of each (q over channels, k over pixels): one dispatch, and
// one pipeline for every softmax. A block without rows has outer = 0.

struct Params {
    a_outer: u32, a_dim: u32, a_inner: u32, a_in: u32, a_out: u32,
    b_outer: u32, b_dim: u32, b_inner: u32, b_in: u32, b_out: u32,
    a_groups: u32, _pad: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> xa: array<f32>;
@group(0) @binding(2) var<storage, read> xb: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

fn row_softmax_serial(src: u32, dst: u32) {
    var m = -3.4e38;
    for (var j = 0u; j < p.a_dim; j++) { m = max(m, xa[src + j * p.a_inner]); }
    var sum = 0.0;
    for (var j = 0u; j < p.a_dim; j++) { sum += exp(xa[src + j * p.a_inner] - m); }
    let inv = 1.0 / sum;
    for (var j = 0u; j < p.a_dim; j++) { y[dst + j * p.a_inner] = exp(xa[src + j * p.a_inner] - m) * inv; }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        lanes: Lanes) {
    let li = lanes.li;
    let group = wid.x + wid.y * nwg.x;
    if (group < p.a_groups) {
        let row = group * WG + li;
        if (row < p.a_outer * p.a_inner) {
            let o = row / p.a_inner;
            let i = row % p.a_inner;
            row_softmax_serial(p.a_in + o * p.a_dim * p.a_inner + i, p.a_out + o * p.a_dim * p.a_inner + i);
        }
        return;
    }
    // The branch above depends on the workgroup only, so the reductions below stay in
    // uniform control flow.
    let row = group - p.a_groups;
    if (row >= p.b_outer * p.b_inner) { return; }
    let o = row / p.b_inner;
    let i = row % p.b_inner;
    let src = p.b_in + o * p.b_dim * p.b_inner + i;
    let dst = p.b_out + o * p.b_dim * p.b_inner + i;

    var m = -3.4e38;
    for (var j = li; j < p.b_dim; j += WG) { m = max(m, xb[src + j * p.b_inner]); }
    m = workgroup_max(m, lanes);
    var sum = 0.0;
    for (var j = li; j < p.b_dim; j += WG) { sum += exp(xb[src + j * p.b_inner] - m); }
    let inv = 1.0 / workgroup_sum(sum, lanes);
    for (var j = li; j < p.b_dim; j += WG) { y[dst + j * p.b_inner] = exp(xb[src + j * p.b_inner] - m) * inv; }
}
