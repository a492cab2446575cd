//! The sampler kernel's arithmetic on the host (`shaders/sde/update.wgsl`): its seeded
//! normals and its update of a run of elements, written once for the CPU backend's twin of
//! the kernel and for the tiled sampler, which updates the whole image in host memory.

/// The sampler's seeded standard normals on the CPU, the same generator as the
/// kernel's in `shaders/sde/update.wgsl` (a PCG hash of seed, stream and pair index, then Box-Muller):
/// elements `2 pair` and `2 pair + 1` of the stream. The GPU's `log`/`cos` may differ in
/// the last bits; the values are otherwise the same.
pub fn seeded_normal_pair(seed: u64, stream: u32, pair: u32) -> (f32, f32) {
    fn pcg(v: u32) -> u32 {
        let state = v.wrapping_mul(747796405).wrapping_add(2891336453);
        let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277803737);
        (word >> 22) ^ word
    }
    // Uniform in (0, 1]: 24 random bits, never 0.
    let unit = |h: u32| ((h >> 8) + 1) as f32 * (1.0 / 16777216.0);
    let h1 = pcg(pcg(pcg(seed as u32 ^ pcg(stream)) ^ (seed >> 32) as u32) ^ pair);
    let h2 = pcg(h1 ^ 0x9E3779B9);
    let r = (-2.0 * unit(h1).ln()).sqrt();
    let angle = std::f32::consts::TAU * unit(h2);
    (r * angle.cos(), r * angle.sin())
}

/// The `z` of an update, as [`update_slice`] reads it.
#[derive(Clone, Copy)]
pub(crate) enum ZTerm<'a> {
    None,
    /// Given standard normals, indexed like the image.
    Given(&'a [f32]),
    /// The kernel's generator: element `i` is half `i & 1` of pair `i >> 1`.
    Seeded { seed: u64, stream: u32 },
}

/// The coefficients and the other terms of `mu + a (x - mu) + b noise + d (prev - mu) + c z`;
/// a term whose coefficient is 0 is not read (its slice may be empty).
#[derive(Clone, Copy)]
pub(crate) struct UpdateTerms<'a> {
    pub(crate) a: f32,
    pub(crate) b: f32,
    pub(crate) c: f32,
    pub(crate) d: f32,
    pub(crate) noise: &'a [f32],
    pub(crate) prev: &'a [f32],
    pub(crate) z: ZTerm<'a>,
}

/// Elements `i0..i0 + out.len()` of the update into `out`, element `i` as the kernel
/// computes element `i`: `mu(i)` gives its mu, `x` its x (None: `out` holds x, and each
/// element is read before it is written). Each seeded pair is drawn once.
pub(crate) fn update_slice(out: &mut [f32], i0: usize, mu: impl Fn(usize) -> f32, x: Option<&[f32]>, t: &UpdateTerms) {
    let mut pair = (u32::MAX, (0.0, 0.0));
    for (j, o) in out.iter_mut().enumerate() {
        let i = i0 + j;
        let m = mu(i);
        let mut v = m + t.a * (x.map_or(*o, |x| x[i]) - m);
        if t.b != 0.0 {
            v += t.b * t.noise[i];
        }
        if t.d != 0.0 {
            v += t.d * (t.prev[i] - m);
        }
        match t.z {
            ZTerm::None => {}
            ZTerm::Given(z) => v += t.c * z[i],
            ZTerm::Seeded { seed, stream } => {
                let p = (i >> 1) as u32;
                if pair.0 != p {
                    pair = (p, seeded_normal_pair(seed, stream, p));
                }
                v += t.c * if i & 1 == 1 { pair.1 .1 } else { pair.1 .0 };
            }
        }
        *o = v;
    }
}
