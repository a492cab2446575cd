// What group_norm.wgsl and group_norm_stats.wgsl share: not a kernel, src/shaders.rs
// adds it to both. Their Params (src/ops/group_norm.rs's), the input, and where
// the workgroup's (batch, group) lies: the grid is (groups, batch, chunks), a group's
// (C / groups) H W values are contiguous, and its chunks' statistics follow each other.

struct Params {
    batch: u32, c: u32, hw: u32, groups: u32, eps: f32, has_affine: u32, silu: u32,
    chunk: u32, chunks: u32, _a: u32, _b: u32, _c: u32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;

struct Group {
    n: u32,             // values in the group
    base: u32,          // its first value in x (and y)
    first_channel: u32, // its first channel
    first_chunk: u32,   // its first chunk's statistics
}

fn group_of(wid: vec3<u32>) -> Group {
    let cg = p.c / p.groups;
    return Group(cg * p.hw, (wid.y * p.c + wid.x * cg) * p.hw, wid.x * cg, (wid.y * p.groups + wid.x) * p.chunks);
}
