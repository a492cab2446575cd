// One sampler update, element-wise on images: y = mu + a (x - mu) + b n + d (p - mu) + c z.
// Every step of every sampler has this form with per-step scalars computed on the CPU
// (in f64): the posterior step (a, b from the posterior mean, c its standard deviation),
// the Euler-Maruyama reverse SDE step, x0 prediction (c = 0), the start x = mu + c z, and
// the MR Sampler's steps, where p is the previous data prediction (order 2).
//
// Z (override): 0 no noise term; 1 z read from a buffer; 2 z generated here, a standard
// normal that depends only on (seed, stream, element index): a counter-based generator
// (PCG hash of the three, two uniforms, Box-Muller), so no noise buffer is needed and a
// seed reproduces the same noise on the same adapter.

struct Params { n: u32, seed_lo: u32, seed_hi: u32, stream: u32, a: f32, b: f32, c: f32, d: f32 }

override WG: u32 = 256u;
override Z: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> mu: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> noise: array<f32>;
@group(0) @binding(4) var<storage, read> z: array<f32>;
@group(0) @binding(5) var<storage, read> prev: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

// Uniform in (0, 1]: 24 random bits, never 0 (log below).
fn to_unit(h: u32) -> f32 {
    return f32((h >> 8u) + 1u) * (1.0 / 16777216.0);
}

fn normal(i: u32) -> f32 {
    let pair = i >> 1u;
    let h1 = pcg(pcg(pcg(p.seed_lo ^ pcg(p.stream)) ^ p.seed_hi) ^ pair);
    let h2 = pcg(h1 ^ 0x9E3779B9u);
    let r = sqrt(-2.0 * log(to_unit(h1)));
    let angle = 6.283185307179586 * to_unit(h2);
    // The two outputs of one Box-Muller pair go to neighbouring elements.
    return select(r * cos(angle), r * sin(angle), (i & 1u) == 1u);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if (i >= p.n) { return; }
    let m = mu[i];
    var v = m + p.a * (x[i] - m) + p.b * noise[i] + p.d * (prev[i] - m);
    if (Z == 1u) {
        v += p.c * z[i];
    } else if (Z == 2u) {
        v += p.c * normal(i);
    }
    y[i] = v;
}
