// Batched transpose of the last two dimensions: x [B, R, C] -> y [B, C, R], through a
// 16 x 16 tile in workgroup memory (padded by one column) so that both the reads and the
// writes of neighbouring invocations are neighbouring addresses.

struct Params { rows: u32, cols: u32, _a: u32, _b: u32 }

const TILE: u32 = 16u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

var<workgroup> tile: array<f32, 272>; // TILE * (TILE + 1)

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let base = wid.z * p.rows * p.cols;
    let r = wid.y * TILE + lid.y;
    let c = wid.x * TILE + lid.x;
    if (r < p.rows && c < p.cols) {
        tile[lid.y * (TILE + 1u) + lid.x] = x[base + r * p.cols + c];
    }
    workgroupBarrier();
    // Write column block wid.x as rows of the output.
    let orow = wid.x * TILE + lid.y; // a column of x
    let ocol = wid.y * TILE + lid.x; // a row of x
    if (orow < p.cols && ocol < p.rows) {
        y[base + orow * p.rows + ocol] = tile[lid.x * (TILE + 1u) + lid.y];
    }
}
