// Sum and maximum over a workgroup, through workgroup memory: the half of the reduction
// kernels (norms, softmax) that every adapter runs. Not a kernel: `src/kernels/mod.rs` puts
// it (or workgroup_reduce_subgroups.wgsl where the device has subgroups) in front of
// each kernel that reduces. The kernel declares WG (its 1-D workgroup size, a power of
// two) and takes a `Lanes` among its entry point's inputs.

struct Lanes {
    @builtin(local_invocation_index) li: u32,
}

var<workgroup> partial: array<f32, WG>;

// A tree over workgroup memory: log2(WG) barriers.
fn workgroup_reduce(v: f32, lanes: Lanes, is_max: bool) -> f32 {
    let li = lanes.li;
    partial[li] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            let other = partial[li + s];
            partial[li] = select(partial[li] + other, max(partial[li], other), is_max);
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

fn workgroup_sum(v: f32, lanes: Lanes) -> f32 { return workgroup_reduce(v, lanes, false); }
fn workgroup_max(v: f32, lanes: Lanes) -> f32 { return workgroup_reduce(v, lanes, true); }
