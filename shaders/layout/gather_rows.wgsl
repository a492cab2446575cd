// Row gather: y[i, :] = table[index[i], :] for a [rows, C] table of f32 or packed f16
// (TABLE_F16). Embedding lookups (token ids) and picking tokens out of a sequence (the
// class token, the end-of-text token) are both this.

struct Params { n: u32, c: u32, table_rows: u32, _pad: u32 }

override WG: u32 = 256u;
override TABLE_F16: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<u32>;
@group(0) @binding(2) var<storage, read> index: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

fn load(i: u32) -> f32 {
    if (TABLE_F16) {
        return unpack2x16float(table[i >> 1u])[i & 1u];
    }
    return bitcast<f32>(table[i]);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if (i >= p.n) { return; }
    let row = i / p.c;
    // Indices were checked on the CPU; min() keeps a bad one from reading out of bounds.
    let src = min(index[row], p.table_rows - 1u);
    y[i] = load(src * p.c + i % p.c);
}
