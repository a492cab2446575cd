//! Straightforward CPU versions of every kernel, accumulating in f64.

/// erf in f64 to about 1e-14: Taylor series near 0, a continued fraction for erfc beyond.
pub fn erf(x: f64) -> f64 {
    let a = x.abs();
    let r = if a < 2.0 {
        let (mut term, mut sum, x2) = (a, a, a * a);
        for n in 1..80 {
            term *= -x2 / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(a) = exp(-a^2)/sqrt(pi) / (a + (1/2)/(a + 1/(a + (3/2)/(a + 2/(a + ...)))))
        let mut f = a;
        for k in (1..200).rev() {
            f = a + (k as f64 / 2.0) / f;
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / f
    };
    r.copysign(x)
}

pub fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

pub fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// C[b] = A[b] (m x k) B[b] (k x n); `b_batched` false shares B.
pub fn matmul(a: &[f32], b: &[f32], batch: usize, m: usize, k: usize, n: usize, b_batched: bool) -> Vec<f64> {
    let mut c = vec![0.0; batch * m * n];
    for bt in 0..batch {
        let bo = if b_batched { bt * k * n } else { 0 };
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for kk in 0..k {
                    s += a[bt * m * k + i * k + kk] as f64 * b[bo + kk * n + j] as f64;
                }
                c[bt * m * n + i * n + j] = s;
            }
        }
    }
    c
}

/// y = x W^T + b, x [m, k], W [n, k].
pub fn linear(x: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut y = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = bias.map_or(0.0, |b| b[j] as f64);
            for kk in 0..k {
                s += x[i * k + kk] as f64 * w[j * k + kk] as f64;
            }
            y[i * n + j] = s;
        }
    }
    y
}

#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    [b, cin, h, wd]: [usize; 4],
    [cout, kh, kw]: [usize; 3],
    stride: usize,
    pad: usize,
) -> (Vec<f64>, [usize; 2]) {
    let ho = (h + 2 * pad - kh) / stride + 1;
    let wo = (wd + 2 * pad - kw) / stride + 1;
    let mut y = vec![0.0; b * cout * ho * wo];
    for bt in 0..b {
        for co in 0..cout {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut s = bias.map_or(0.0, |bb| bb[co] as f64);
                    for ci in 0..cin {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * stride + ky) as isize - pad as isize;
                                let ix = (ox * stride + kx) as isize - pad as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xv = x[((bt * cin + ci) * h + iy as usize) * wd + ix as usize] as f64;
                                s += xv * w[((co * cin + ci) * kh + ky) * kw + kx] as f64;
                            }
                        }
                    }
                    y[((bt * cout + co) * ho + oy) * wo + ox] = s;
                }
            }
        }
    }
    (y, [ho, wo])
}

/// Normalises `vals` (mean 0, population variance 1 with eps).
fn normalise(vals: &[f64], eps: f64) -> Vec<f64> {
    let n = vals.len() as f64;
    let mean = vals.iter().sum::<f64>() / n;
    let var = vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    vals.iter().map(|v| (v - mean) / (var + eps).sqrt()).collect()
}

pub fn layer_norm(x: &[f32], c: usize, affine: Option<(&[f32], &[f32])>, eps: f64) -> Vec<f64> {
    x.chunks(c)
        .flat_map(|row| {
            let r: Vec<f64> = row.iter().map(|&v| v as f64).collect();
            normalise(&r, eps)
                .into_iter()
                .enumerate()
                .map(move |(i, v)| affine.map_or(v, |(g, b)| v * g[i] as f64 + b[i] as f64))
                .collect::<Vec<_>>()
        })
        .collect()
}

pub fn channel_layer_norm(x: &[f32], [b, c, hw]: [usize; 3], g: &[f32], eps: f64) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for bt in 0..b {
        for p in 0..hw {
            let vals: Vec<f64> = (0..c).map(|ch| x[(bt * c + ch) * hw + p] as f64).collect();
            for (ch, v) in normalise(&vals, eps).into_iter().enumerate() {
                y[(bt * c + ch) * hw + p] = v * g[ch] as f64;
            }
        }
    }
    y
}

pub fn group_norm(x: &[f32], [b, c, hw]: [usize; 3], groups: usize, affine: Option<(&[f32], &[f32])>, eps: f64, act: bool) -> Vec<f64> {
    let cg = c / groups;
    let mut y = vec![0.0; x.len()];
    for bt in 0..b {
        for g in 0..groups {
            let base = (bt * c + g * cg) * hw;
            let vals: Vec<f64> = x[base..base + cg * hw].iter().map(|&v| v as f64).collect();
            for (i, v) in normalise(&vals, eps).into_iter().enumerate() {
                let ch = g * cg + i / hw;
                let v = affine.map_or(v, |(w, bb)| v * w[ch] as f64 + bb[ch] as f64);
                y[base + i] = if act { silu(v) } else { v };
            }
        }
    }
    y
}

pub fn softmax(x: &[f32], [outer, dim, inner]: [usize; 3]) -> Vec<f64> {
    let mut y = vec![0.0; outer * dim * inner];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| o * dim * inner + j * inner + i;
            let m = (0..dim).map(|j| x[at(j)] as f64).fold(f64::MIN, f64::max);
            let s: f64 = (0..dim).map(|j| (x[at(j)] as f64 - m).exp()).sum();
            for j in 0..dim {
                y[at(j)] = (x[at(j)] as f64 - m).exp() / s;
            }
        }
    }
    y
}

/// Multi-head attention on [B, N, H*D] tensors, optional causal mask (aligned at the end).
pub fn attention(q: &[f32], k: &[f32], v: &[f32], [b, nq, nk]: [usize; 3], heads: usize, d: usize, causal: bool) -> Vec<f64> {
    let c = heads * d;
    let mut o = vec![0.0; b * nq * c];
    let scale = 1.0 / (d as f64).sqrt();
    for bt in 0..b {
        for h in 0..heads {
            for i in 0..nq {
                let visible = if causal { i + nk - nq + 1 } else { nk };
                let scores: Vec<f64> = (0..visible)
                    .map(|j| (0..d).map(|e| q[(bt * nq + i) * c + h * d + e] as f64 * k[(bt * nk + j) * c + h * d + e] as f64).sum::<f64>() * scale)
                    .collect();
                let m = scores.iter().cloned().fold(f64::MIN, f64::max);
                let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = w.iter().sum();
                for e in 0..d {
                    o[(bt * nq + i) * c + h * d + e] = (0..visible).map(|j| w[j] * v[(bt * nk + j) * c + h * d + e] as f64).sum::<f64>() / z;
                }
            }
        }
    }
    o
}

/// LinearAttention core of the spec on qkv [B, 3 heads dh, N].
pub fn linear_attention(qkv: &[f32], b: usize, heads: usize, dh: usize, n: usize) -> Vec<f64> {
    let hidden = heads * dh;
    let mut out = vec![0.0; b * hidden * n];
    for bt in 0..b {
        let at = |part: usize, h: usize, d: usize, p: usize| qkv[((bt * 3 + part) * hidden + h * dh + d) * n + p] as f64;
        for h in 0..heads {
            // q: softmax over d per pixel, scaled.
            let mut q = vec![vec![0.0; n]; dh];
            for p in 0..n {
                let m = (0..dh).map(|d| at(0, h, d, p)).fold(f64::MIN, f64::max);
                let z: f64 = (0..dh).map(|d| (at(0, h, d, p) - m).exp()).sum();
                for (d, row) in q.iter_mut().enumerate() {
                    row[p] = (at(0, h, d, p) - m).exp() / z / (dh as f64).sqrt();
                }
            }
            // k: softmax over pixels per channel.
            let mut k = vec![vec![0.0; n]; dh];
            for (d, row) in k.iter_mut().enumerate() {
                let m = (0..n).map(|p| at(1, h, d, p)).fold(f64::MIN, f64::max);
                let z: f64 = (0..n).map(|p| (at(1, h, d, p) - m).exp()).sum();
                for (p, kv) in row.iter_mut().enumerate() {
                    *kv = (at(1, h, d, p) - m).exp() / z;
                }
            }
            for e in 0..dh {
                let ctx: Vec<f64> = (0..dh).map(|d| (0..n).map(|p| k[d][p] * at(2, h, e, p) / n as f64).sum()).collect();
                for p in 0..n {
                    out[(bt * hidden + h * dh + e) * n + p] = (0..dh).map(|d| ctx[d] * q[d][p]).sum();
                }
            }
        }
    }
    out
}
