// The register-tiled product that matmul.wgsl and conv2d.wgsl share: not a kernel,
// src/shaders.rs adds it to both. The kernel says where the operands come from
// by defining
//   fetch_rows(e, m0, k0) / fetch_cols(e, n0, k0): vec4 `e` of the K step starting at k0
//     (4 rows of the left operand at one k, or 4 columns of the right one; zero outside
//     the product), for the tile whose first row is m0 / first column n0;
//   row_slot(e) / col_slot(e): where that vec4 goes in the tile, as (group, k);
// and calls multiply_tiles.
//
// A workgroup of WG_X x WG_Y invocations computes a (4 MR WG_Y) x (4 NR WG_X) tile of the
// output, each invocation (4 MR) x (4 NR) outputs in vec4 registers: rows
// 4 (ty + r WG_Y) + 0..3 for r < MR, columns 4 (tx + q WG_X) + 0..3 for q < NR (see
// tile_row, tile_col), so neighbouring invocations read neighbouring vec4s of workgroup
// memory and write neighbouring vec4s of the output. K is walked in steps of TILE_K
// through workgroup memory holding vec4s of 4 rows and of 4 columns: per k, MR + NR vec4
// loads feed 16 MR NR multiply-adds (MR = NR = 2, the large tiles for large products:
// 4 loads per 64). The next step's values are fetched into registers before the current
// step is computed, so their latency hides behind the arithmetic.

override WG_X: u32 = 16u;
override WG_Y: u32 = 16u;
override TILE_K: u32 = 16u;
// vec4 row groups (MR) and column groups (NR) per invocation: 1 or 2.
override MR: u32 = 1u;
override NR: u32 = 1u;

override THREADS: u32 = WG_X * WG_Y;
override ROW_GROUPS: u32 = MR * WG_Y; // vec4 row groups in the tile
override COL_GROUPS: u32 = NR * WG_X; // vec4 column groups in the tile
// vec4s of the next step each invocation fetches (at most MAX_FETCH).
override ROW_FETCH: u32 = (ROW_GROUPS * TILE_K + THREADS - 1u) / THREADS;
override COL_FETCH: u32 = (COL_GROUPS * TILE_K + THREADS - 1u) / THREADS;
const MAX_FETCH: u32 = 4u;

var<workgroup> row_tile: array<vec4<f32>, TILE_K * ROW_GROUPS>; // [k][4 rows]
var<workgroup> col_tile: array<vec4<f32>, TILE_K * COL_GROUPS>; // [k][4 columns]

// Row i of vec4 row group r, and column j of vec4 column group q, of the invocation at
// `lid` in the tile starting at row m0 / column n0.
fn tile_row(m0: u32, lid: vec3<u32>, r: u32, i: u32) -> u32 { return m0 + 4u * (lid.y + r * WG_Y) + i; }
fn tile_col(n0: u32, lid: vec3<u32>, q: u32, j: u32) -> u32 { return n0 + 4u * (lid.x + q * WG_X) + j; }

// The invocation's outputs of the product over k < kdim (uniform across the workgroup):
// acc[(4 r + i) * 2 + q][j] is (tile_row(r, i), tile_col(q, j)).
fn multiply_tiles(lid: vec3<u32>, m0: u32, n0: u32, kdim: u32) -> array<vec4<f32>, 16> {
    let li = lid.y * WG_X + lid.x;
    var acc: array<vec4<f32>, 16>;
    for (var i = 0u; i < 16u; i++) { acc[i] = vec4<f32>(0.0); }
    var rows_next: array<vec4<f32>, MAX_FETCH>;
    var cols_next: array<vec4<f32>, MAX_FETCH>;
    for (var s = 0u; s < ROW_FETCH; s++) { rows_next[s] = fetch_rows(li + s * THREADS, m0, 0u); }
    for (var s = 0u; s < COL_FETCH; s++) { cols_next[s] = fetch_cols(li + s * THREADS, n0, 0u); }

    for (var k0 = 0u; k0 < kdim; k0 += TILE_K) {
        for (var s = 0u; s < ROW_FETCH; s++) {
            let e = li + s * THREADS;
            if (e < ROW_GROUPS * TILE_K) { let at = row_slot(e); row_tile[at.y * ROW_GROUPS + at.x] = rows_next[s]; }
        }
        for (var s = 0u; s < COL_FETCH; s++) {
            let e = li + s * THREADS;
            if (e < COL_GROUPS * TILE_K) { let at = col_slot(e); col_tile[at.y * COL_GROUPS + at.x] = cols_next[s]; }
        }
        workgroupBarrier();
        let k1 = k0 + TILE_K;
        if (k1 < kdim) {
            for (var s = 0u; s < ROW_FETCH; s++) { rows_next[s] = fetch_rows(li + s * THREADS, m0, k1); }
            for (var s = 0u; s < COL_FETCH; s++) { cols_next[s] = fetch_cols(li + s * THREADS, n0, k1); }
        }
        for (var kk = 0u; kk < TILE_K; kk++) {
            var rv: array<vec4<f32>, 2>;
            var cv: array<vec4<f32>, 2>;
            for (var r = 0u; r < MR; r++) { rv[r] = row_tile[kk * ROW_GROUPS + lid.y + r * WG_Y]; }
            for (var q = 0u; q < NR; q++) { cv[q] = col_tile[kk * COL_GROUPS + lid.x + q * WG_X]; }
            for (var r = 0u; r < MR; r++) {
                for (var q = 0u; q < NR; q++) {
                    let o = 8u * r + q;
                    acc[o] = fma(vec4<f32>(rv[r].x), cv[q], acc[o]);
                    acc[o + 2u] = fma(vec4<f32>(rv[r].y), cv[q], acc[o + 2u]);
                    acc[o + 4u] = fma(vec4<f32>(rv[r].z), cv[q], acc[o + 4u]);
                    acc[o + 6u] = fma(vec4<f32>(rv[r].w), cv[q], acc[o + 6u]);
                }
            }
        }
        workgroupBarrier();
    }
    return acc;
}
