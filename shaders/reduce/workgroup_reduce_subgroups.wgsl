// Sum and maximum over a workgroup with subgroup operations (wgpu's SUBGROUP feature):
// each subgroup reduces in registers, its first invocation leaves the result in
// workgroup memory, and every subgroup then reduces those results the same way: two
// barriers, where the tree of workgroup_reduce.wgsl takes log2(WG). Every subgroup sums
// the per-subgroup results in the same order, so all get the same total, whatever the
// subgroup size (4 on SwiftShader, 32 on NVIDIA, up to 128) and however the adapter
// groups invocations into subgroups.
//
// No directives here: naga 30 (native) rejects `enable subgroups;` and `requires
// subgroup_id;`, which a browser requires; in wasm `Kernel::source` puts them first.

struct Lanes {
    @builtin(local_invocation_index) li: u32,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(num_subgroups) subgroups: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) lanes: u32,
}

var<workgroup> partial: array<f32, WG>;

// Leaves each subgroup's own result where every invocation can read it.
fn publish(own: f32, lanes: Lanes) {
    if (lanes.lane == 0u) { partial[lanes.subgroup] = own; }
    workgroupBarrier();
}

fn workgroup_sum(v: f32, lanes: Lanes) -> f32 {
    publish(subgroupAdd(v), lanes);
    var acc = 0.0;
    for (var i = lanes.lane; i < lanes.subgroups; i += lanes.lanes) { acc += partial[i]; }
    let total = subgroupAdd(acc);
    workgroupBarrier(); // before the next reduction writes `partial`
    return total;
}

fn workgroup_max(v: f32, lanes: Lanes) -> f32 {
    publish(subgroupMax(v), lanes);
    var acc = -3.4e38;
    for (var i = lanes.lane; i < lanes.subgroups; i += lanes.lanes) { acc = max(acc, partial[i]); }
    let total = subgroupMax(acc);
    workgroupBarrier();
    return total;
}
