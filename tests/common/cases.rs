//! One async function per kernel: random odd-sized inputs, the GPU result against the
//! f64 CPU reference, the error printed and bounded.

use super::{check, f16_rounded, reference as cpu, Rng};
use daclip_webgpu::nn::{linear_attention, Qkv};
use daclip_webgpu::ops::{self, Conv2dArgs, Heads};
use daclip_webgpu::{Device, Tensor};

/// f32 results of sums over up to a few thousand terms stay within this of the f64
/// reference (relative to the output's rms).
const TOL: f64 = 1e-5;
/// For longer sums (K of several thousand, softmax averages over 4096 keys whose output
/// rms shrinks as 1/sqrt(N)): the parity fixtures' float32 bound.
const TOL_LONG: f64 = 1e-4;

async fn read(dev: &Device, t: &Tensor) -> Vec<f32> {
    dev.read(t).await.expect("GPU read failed")
}

fn up(dev: &Device, shape: &[usize], v: &[f32]) -> Tensor {
    dev.upload(shape, v).expect("upload")
}

fn up16(dev: &Device, shape: &[usize], v: &[f32]) -> Tensor {
    dev.upload_f16(shape, v).expect("upload f16")
}

/// A product's or convolution's activations as the device computes with them: rounded to
/// f16 where it runs on cooperative matrices or f16 tiles (the reference then checks the
/// f32 sums as tightly as elsewhere).
fn activations_as_computed(dev: &Device, rows: usize, weights_f16: bool, a: Vec<f32>) -> Vec<f32> {
    if ops::rounds_activations_to_f16(dev, rows, weights_f16) { f16_rounded(&a) } else { a }
}

/// Which products of the cases run: all, or only those with f16 weights (what the f16
/// kernels take; the others would repeat the f32 kernels' cases).
#[derive(Clone, Copy, PartialEq)]
pub enum Weights {
    Any,
    F16,
}

pub async fn matmul(dev: &Device) {
    matmul_with(dev, Weights::Any).await
}

pub async fn matmul_with(dev: &Device, weights: Weights) {
    let mut rng = Rng::new(1);
    // (1, 70, 4608, 33) has a long K: 288 tiles, more loop iterations than llvmpipe allows
    // one invocation unless the inner loops are unrolled. The last two are large enough for
    // the large tiles (8 x 8 outputs per invocation; 4 x 8 for 48 rows), with ragged edges.
    for &(batch, m, k, n, shared) in &[(3, 67, 131, 45, false), (2, 1, 300, 129, true), (1, 64, 64, 64, false), (1, 130, 17, 3, true), (1, 70, 4608, 33, true), (1, 200, 37, 20013, true), (2, 48, 70, 16389, false)] {
        let a = rng.normals(batch * m * k, 1.0);
        let bb = rng.normals(if shared { k * n } else { batch * k * n }, 1.0);
        if weights == Weights::F16 {
            break;
        }
        let bshape: Vec<usize> = if shared { vec![k, n] } else { vec![batch, k, n] };
        let got = ops::matmul(dev, &up(dev, &[batch, m, k], &a), &up(dev, &bshape, &bb)).unwrap();
        assert_eq!(got.shape(), &[batch, m, n]);
        let want = cpu::matmul(&a, &bb, batch, m, k, n, !shared);
        let tol = if k > 1000 { TOL_LONG } else { TOL };
        check(&format!("matmul [{batch}, {m}, {k}] x {bshape:?}"), &read(dev, &got).await, &want, tol);
    }
    // f16 weights read along N (a Linear's are read along K), the cooperative-matrix
    // kernel's other B layout where the device has it; ragged edges, K not a multiple of
    // any tile.
    for &(m, k, n) in &[(67, 131, 45), (200, 77, 300)] {
        let (a, bb) = (rng.normals(m * k, 1.0), f16_rounded(&rng.normals(k * n, 1.0)));
        let got = ops::matmul(dev, &up(dev, &[m, k], &a), &up16(dev, &[k, n], &bb)).unwrap();
        let want = cpu::matmul(&activations_as_computed(dev, m, true, a), &bb, 1, m, k, n, false);
        check(&format!("matmul [{m}, {k}] x [{k}, {n}] f16"), &read(dev, &got).await, &want, TOL);
    }
}

pub async fn linear(dev: &Device) {
    linear_with(dev, Weights::Any).await
}

pub async fn linear_with(dev: &Device, weights: Weights) {
    let mut rng = Rng::new(2);
    // The last one takes the large tiles with B read along K (x W^T).
    for &(m, k, n, f16, bias) in &[(50, 768, 97, false, true), (50, 77, 130, true, true), (7, 33, 5, false, false), (3, 512, 256, true, false), (130, 45, 16400, true, true)] {
        let x = rng.normals(m * k, 1.0);
        let w = rng.normals(n * k, 0.05);
        let b = rng.normals(n, 0.5);
        if weights == Weights::F16 && !f16 {
            continue;
        }
        let (wt, bt) = if f16 { (up16(dev, &[n, k], &w), up16(dev, &[n], &b)) } else { (up(dev, &[n, k], &w), up(dev, &[n], &b)) };
        let got = ops::linear(dev, &up(dev, &[m, k], &x), &wt, bias.then_some(&bt)).unwrap();
        let (w, b) = if f16 { (f16_rounded(&w), f16_rounded(&b)) } else { (w, b) };
        let want = cpu::linear(&activations_as_computed(dev, m, f16, x), &w, bias.then_some(&b[..]), m, k, n);
        let name = format!("linear {m}x{k} -> {n} ({} weights{})", if f16 { "f16" } else { "f32" }, if bias { ", bias" } else { "" });
        check(&name, &read(dev, &got).await, &want, TOL);
    }
    // With a residual added in the kernel (a transformer's x + f(x)).
    let (m, k, n) = (37, 96, 70);
    let (x, w, b, r) = (rng.normals(m * k, 1.0), f16_rounded(&rng.normals(n * k, 0.05)), rng.normals(n, 0.5), rng.normals(m * n, 1.0));
    let got = ops::linear_with(dev, &up(dev, &[m, k], &x), &up16(dev, &[n, k], &w), Some(&up(dev, &[n], &b)), Some(&up(dev, &[m, n], &r))).unwrap();
    let x = activations_as_computed(dev, m, true, x);
    let want: Vec<f64> = cpu::linear(&x, &w, Some(&b[..]), m, k, n).iter().zip(&r).map(|(v, &r)| v + r as f64).collect();
    check(&format!("linear {m}x{k} -> {n} (f16 weights, f32 bias) + residual"), &read(dev, &got).await, &want, TOL);
    assert!(ops::linear_with(dev, &up(dev, &[m, k], &x), &up16(dev, &[n, k], &w), None, Some(&up(dev, &[m, n + 1], &vec![0.0; m * (n + 1)]))).is_err(), "a residual of another size must be refused");
}

pub async fn conv2d(dev: &Device) {
    conv2d_with(dev, Weights::Any).await
}

pub async fn conv2d_with(dev: &Device, weights: Weights) {
    let mut rng = Rng::new(3);
    // (batch, cin, h, w, cout, k, stride, pad, bias, f16)
    let cases = [
        (1, 6, 19, 23, 13, 7, 1, 3, false, false), // init_conv: 7x7, 6 channels in
        (2, 5, 13, 11, 7, 3, 1, 1, true, false),
        (1, 16, 20, 18, 24, 4, 2, 1, true, true), // Downsample: 4x4 stride 2 with bias
        (1, 9, 10, 7, 65, 1, 1, 0, false, true),  // 1x1, res_conv
        (1, 3, 64, 64, 20, 32, 32, 0, false, false), // the ViT patch embedding
        (1, 520, 6, 5, 8, 3, 1, 1, true, true),  // K = 4680: a long reduction
        (1, 32, 21, 19, 24, 3, 1, 1, true, true), // the UNet's 3x3 convs, odd sides
        (2, 20, 35, 33, 19, 3, 1, 1, true, true), // 306 tiles of 2x2: the CPU's Winograd path, no full panel of channels
        (2, 64, 16, 16, 64, 3, 1, 1, false, false),
        (1, 64, 17, 19, 48, 3, 1, 1, true, true), // K = 576 to 48 channels: many K steps of the cooperative tiles
        // Large enough for the large tiles: 8 x 8 outputs per invocation, then 4 x 8.
        (1, 5, 129, 129, 130, 3, 1, 1, true, true),
        (2, 8, 259, 255, 64, 4, 2, 1, true, false),
    ];
    for &(b, cin, h, w, cout, k, stride, pad, bias, f16) in &cases {
        let x = rng.normals(b * cin * h * w, 1.0);
        let wv = rng.normals(cout * cin * k * k, 0.2);
        let bv = rng.normals(cout, 0.5);
        if weights == Weights::F16 && !f16 {
            continue;
        }
        let (wt, bt) = if f16 { (up16(dev, &[cout, cin, k, k], &wv), up16(dev, &[cout], &bv)) } else { (up(dev, &[cout, cin, k, k], &wv), up(dev, &[cout], &bv)) };
        let got = ops::conv2d(dev, &up(dev, &[b, cin, h, w], &x), &wt, bias.then_some(&bt), Conv2dArgs { stride, padding: pad }).unwrap();
        let (wv, bv) = if f16 { (f16_rounded(&wv), f16_rounded(&bv)) } else { (wv, bv) };
        let x = activations_as_computed(dev, cout, f16, x);
        let (want, [ho, wo]) = cpu::conv2d(&x, &wv, bias.then_some(&bv[..]), [b, cin, h, w], [cout, k, k], stride, pad);
        assert_eq!(got.shape(), &[b, cout, ho, wo]);
        let name = format!("conv2d [{b},{cin},{h},{w}] -> {cout} k{k} s{stride} p{pad}{}{}", if bias { " bias" } else { "" }, if f16 { " f16" } else { "" });
        let tol = if cin * k * k > 1000 { TOL_LONG } else { TOL };
        check(&name, &read(dev, &got).await, &want, tol);
    }

    // Some output channels of a stacked weight (LinearAttention's q, k, v where the stack
    // does not fit a buffer): the rows of the whole convolution.
    for (cin, h, w, cout, k, range, f16) in [(9, 10, 7, 65, 1, 20..45, true), (20, 33, 31, 48, 3, 16..40, false)] {
        let x = rng.normals(cin * h * w, 1.0);
        let wv = rng.normals(cout * cin * k * k, 0.2);
        let bv = rng.normals(cout, 0.5);
        let (wt, bt) = if f16 { (up16(dev, &[cout, cin, k, k], &wv), up16(dev, &[cout], &bv)) } else { (up(dev, &[cout, cin, k, k], &wv), up(dev, &[cout], &bv)) };
        let got = ops::conv2d_channels(dev, &up(dev, &[1, cin, h, w], &x), &wt, Some(&bt), Conv2dArgs::same(k), ops::Epilogue::default(), range.clone()).unwrap();
        let (wv, bv) = if f16 { (f16_rounded(&wv), f16_rounded(&bv)) } else { (wv, bv) };
        let x = activations_as_computed(dev, range.len(), f16, x);
        let (whole, _) = cpu::conv2d(&x, &wv, Some(&bv), [1, cin, h, w], [cout, k, k], 1, k / 2);
        assert_eq!(got.shape(), &[1, range.len(), h, w]);
        check(&format!("conv2d [1,{cin},{h},{w}] -> channels {range:?} of {cout} k{k}"), &read(dev, &got).await, &whole[range.start * h * w..range.end * h * w], TOL);
        assert!(ops::conv2d_channels(dev, &up(dev, &[1, cin, h, w], &x), &wt, None, Conv2dArgs::same(k), ops::Epilogue::default(), 0..cout + 1).is_err(), "channels past the weight's must be refused");
    }

    // The epilogue (a ResBlock's block1 and block2): time conditioning from rows 3 and 4
    // of a 6-row table (one row per sampling step, batch 2 from row 3), SiLU, one residual
    // or two (a SpatialTransformer's proj_out); on the small tiles and on the large ones.
    for (b, cin, h, w, cout) in [(2, 4, 91, 91, 130), (2, 12, 9, 11, 20)] {
        let x = rng.normals(b * cin * h * w, 1.0);
        let wv = f16_rounded(&rng.normals(cout * cin * 9, 0.2));
        let bv = f16_rounded(&rng.normals(cout, 0.5));
        let t = rng.normals(6 * 2 * cout, 1.0);
        let res = rng.normals(b * cout * h * w, 1.0);
        let res2 = rng.normals(b * cout * h * w, 1.0);
        let (conv, _) = cpu::conv2d(&activations_as_computed(dev, cout, true, x.clone()), &wv, Some(&bv), [b, cin, h, w], [cout, 3, 3], 1, 1);
        let (xt, wt, bt, tt, rt) = (up(dev, &[b, cin, h, w], &x), up16(dev, &[cout, cin, 3, 3], &wv), up16(dev, &[cout], &bv), up(dev, &[6, 2 * cout], &t), up(dev, &[b, cout, h, w], &res));
        let rt2 = up(dev, &[b, cout, h, w], &res2);
        for (scale_shift, silu, residuals) in [(true, true, 0), (false, true, 1), (false, false, 1), (true, false, 0), (false, false, 2), (true, true, 2)] {
            let epilogue = ops::Epilogue { scale_shift: scale_shift.then_some((&tt, 3)), silu, residual: (residuals > 0).then_some(&rt), second_residual: (residuals > 1).then_some(&rt2) };
            let got = ops::conv2d_with(dev, &xt, &wt, Some(&bt), Conv2dArgs::same(3), epilogue).unwrap();
            let want: Vec<f64> = (0..conv.len()).map(|i| {
                let (r, ch) = (3 + i / (cout * h * w), (i / (h * w)) % cout);
                let mut v = conv[i];
                if scale_shift { v = v * (t[r * 2 * cout + ch] as f64 + 1.0) + t[r * 2 * cout + cout + ch] as f64; }
                if silu { v = cpu::silu(v); }
                if residuals > 0 { v += res[i] as f64; }
                if residuals > 1 { v += res2[i] as f64; }
                v
            }).collect();
            let name = format!("conv2d 3x3 {cin} -> {cout}, batch 2{}{}{}", if scale_shift { " + time conditioning" } else { "" }, if silu { " + silu" } else { "" }, [""," + residual", " + 2 residuals"][residuals]);
            check(&name, &read(dev, &got).await, &want, TOL);
        }
        let wrong = up(dev, &[b, cout, h, w + 1], &vec![0.0; b * cout * h * (w + 1)]);
        assert!(ops::conv2d_with(dev, &xt, &wt, None, Conv2dArgs::same(3), ops::Epilogue { residual: Some(&wrong), ..Default::default() }).is_err(), "a residual of another shape must be refused");
        assert!(ops::conv2d_with(dev, &xt, &wt, None, Conv2dArgs::same(3), ops::Epilogue { residual: Some(&rt), second_residual: Some(&wrong), ..Default::default() }).is_err(), "a second residual of another shape must be refused");
        assert!(ops::conv2d_with(dev, &xt, &wt, None, Conv2dArgs::same(3), ops::Epilogue { second_residual: Some(&rt), ..Default::default() }).is_err(), "a second residual without a first must be refused");
        assert!(ops::conv2d_with(dev, &xt, &wt, None, Conv2dArgs::same(3), ops::Epilogue { scale_shift: Some((&tt, 5)), ..Default::default() }).is_err(), "table rows past its end must be refused");
    }

    // Inputs gathered by the kernel: a concatenation (the up levels' ResBlocks: 3x3 and
    // the 1x1 res_conv), a nearest 2x upsampling (Upsample's conv), both; on the small
    // tiles and on the large ones.
    // (batch, channels of x, of the second input (0: none), stored h, w, cout, k, upsample)
    let gathered = [
        (2, 5, 7, 9, 11, 13, 3, false),
        (2, 9, 8, 10, 7, 65, 1, false),
        (1, 6, 3, 67, 65, 130, 3, false),
        (2, 6, 0, 7, 9, 11, 3, true),
        (1, 4, 0, 33, 34, 130, 3, true),
        (1, 3, 4, 6, 5, 9, 3, true),
        // The CPU's Winograd path (at least 256 tiles of 2x2 and 16 channels), which reads
        // the input a row at a time: a concatenation, and one upsampled.
        (2, 9, 8, 33, 35, 17, 3, false),
        (1, 16, 5, 17, 17, 16, 3, true),
    ];
    for &(b, c1, c2, h, w, cout, k, upsample) in &gathered {
        let (cin, f) = (c1 + c2, if upsample { 2 } else { 1 });
        let (x1, x2) = (rng.normals(b * c1 * h * w, 1.0), rng.normals(b * c2 * h * w, 1.0));
        let wv = f16_rounded(&rng.normals(cout * cin * k * k, 0.2));
        let bv = f16_rounded(&rng.normals(cout, 0.5));
        // The input the convolution sees, built here.
        let (sh, sw) = (f * h, f * w);
        let seen: Vec<f32> = (0..b * cin * sh * sw).map(|i| {
            let (bi, c, y, xx) = (i / (cin * sh * sw), (i / (sh * sw)) % cin, (i / sw) % sh, i % sw);
            let at = (y / f) * w + xx / f;
            if c < c1 { x1[(bi * c1 + c) * h * w + at] } else { x2[(bi * c2 + c - c1) * h * w + at] }
        }).collect();
        let seen = activations_as_computed(dev, cout, true, seen);
        let (want, [ho, wo]) = cpu::conv2d(&seen, &wv, Some(&bv), [b, cin, sh, sw], [cout, k, k], 1, k / 2);
        let (t1, t2) = (up(dev, &[b, c1, h, w], &x1), up(dev, &[b, c2, h, w], &x2));
        let input = ops::ConvInput { x: &t1, second: (c2 > 0).then_some(&t2), upsample };
        let got = ops::conv2d_with(dev, input, &up16(dev, &[cout, cin, k, k], &wv), Some(&up16(dev, &[cout], &bv)), Conv2dArgs::same(k), ops::Epilogue::default()).unwrap();
        assert_eq!(got.shape(), &[b, cout, ho, wo]);
        let name = format!("conv2d k{k} of [{b},{c1},{h},{w}]{}{} -> {cout}", if c2 > 0 { format!(" ++ [{b},{c2},{h},{w}]") } else { String::new() }, if upsample { " upsampled 2x" } else { "" });
        check(&name, &read(dev, &got).await, &want, TOL);
    }
    let (a, other) = (up(dev, &[1, 2, 5, 5], &[0.0; 50]), up(dev, &[1, 2, 5, 6], &[0.0; 60]));
    let wt = up(dev, &[3, 4, 3, 3], &[0.0; 108]);
    assert!(ops::conv2d_with(dev, ops::ConvInput::concat(&a, &other), &wt, None, Conv2dArgs::same(3), ops::Epilogue::default()).is_err(), "a concatenation of different sizes must be refused");
}

pub async fn norms(dev: &Device) {
    let mut rng = Rng::new(4);
    for &(rows, c, f16) in &[(50, 768, false), (7, 77, true), (3, 1000, false)] {
        let x: Vec<f32> = rng.normals(rows * c, 2.0).iter().map(|v| v + 0.7).collect();
        let g = rng.normals(c, 1.0);
        let b = rng.normals(c, 1.0);
        let (gt, bt) = if f16 { (up16(dev, &[c], &g), up16(dev, &[c], &b)) } else { (up(dev, &[c], &g), up(dev, &[c], &b)) };
        let got = ops::layer_norm(dev, &up(dev, &[rows, c], &x), Some((&gt, &bt)), 1e-5).unwrap();
        let (g, b) = if f16 { (f16_rounded(&g), f16_rounded(&b)) } else { (g, b) };
        check(&format!("layer_norm [{rows}, {c}]{}", if f16 { " f16" } else { "" }), &read(dev, &got).await, &cpu::layer_norm(&x, c, Some((&g, &b)), 1e-5), TOL);
    }
    let x = rng.normals(5 * 3, 1.0);
    let got = ops::layer_norm(dev, &up(dev, &[5, 3], &x), None, 1e-5).unwrap();
    check("layer_norm [5, 3] without affine", &read(dev, &got).await, &cpu::layer_norm(&x, 3, None, 1e-5), TOL);

    for &(b, c, h, w) in &[(1, 64, 9, 13), (2, 3, 5, 5)] {
        let x: Vec<f32> = rng.normals(b * c * h * w, 1.5).iter().map(|v| v - 0.3).collect();
        let g = rng.normals(c, 1.0);
        let got = ops::channel_layer_norm(dev, &up(dev, &[b, c, h, w], &x), &up(dev, &[1, c, 1, 1], &g), 1e-5).unwrap();
        check(&format!("channel_layer_norm [{b}, {c}, {h}, {w}]"), &read(dev, &got).await, &cpu::channel_layer_norm(&x, [b, c, h * w], &g, 1e-5), TOL);
    }
    // With a residual added in the kernel (the LinearAttention level's x + attention(x)).
    let (b, c, h, w) = (2, 40, 7, 9);
    let (x, g, r) = (rng.normals(b * c * h * w, 1.5), f16_rounded(&rng.normals(c, 1.0)), rng.normals(b * c * h * w, 1.0));
    let (xt, gt) = (up(dev, &[b, c, h, w], &x), up16(dev, &[1, c, 1, 1], &g));
    let got = ops::channel_layer_norm_with(dev, &xt, &gt, 1e-5, Some(&up(dev, &[b, c, h, w], &r))).unwrap();
    let want: Vec<f64> = cpu::channel_layer_norm(&x, [b, c, h * w], &g, 1e-5).iter().zip(&r).map(|(v, &r)| v + r as f64).collect();
    check(&format!("channel_layer_norm [{b}, {c}, {h}, {w}] f16 gain + residual"), &read(dev, &got).await, &want, TOL);
    assert!(ops::channel_layer_norm_with(dev, &xt, &gt, 1e-5, Some(&up(dev, &[b, c, h, w - 1], &r[..b * c * h * (w - 1)]))).is_err(), "a residual of another shape must be refused");

    // The last two have groups of over 16384 values: a statistics pass, then one
    // workgroup per chunk of 4096 (the last chunk partial).
    for &(b, c, h, w, groups, affine, act) in &[(1, 64, 9, 13, 32, true, false), (2, 96, 7, 5, 32, true, true), (1, 6, 3, 3, 3, false, true), (1, 64, 97, 91, 32, true, true), (2, 32, 50, 90, 8, false, false)] {
        let x: Vec<f32> = rng.normals(b * c * h * w, 1.5).iter().map(|v| v + 0.4).collect();
        let g = rng.normals(c, 1.0);
        let bb = rng.normals(c, 1.0);
        let (gt, bt) = (up(dev, &[c], &g), up(dev, &[c], &bb));
        let xt = up(dev, &[b, c, h, w], &x);
        let before = dev.dispatch_count();
        let got = ops::group_norm(dev, &xt, groups, affine.then_some((&gt, &bt)), 1e-6, act).unwrap();
        let chunked = c / groups * h * w >= 16384;
        assert_eq!(dev.dispatch_count() - before, 1 + chunked as u64, "a statistics pass exactly for the large groups");
        let want = cpu::group_norm(&x, [b, c, h * w], groups, affine.then_some((&g[..], &bb[..])), 1e-6, act);
        check(&format!("group_norm [{b}, {c}, {h}, {w}] / {groups}{}{}", if affine { " affine" } else { "" }, if act { " + silu" } else { "" }), &read(dev, &got).await, &want, TOL);
    }
}

pub async fn softmax(dev: &Device) {
    let mut rng = Rng::new(5);
    let shape = [3, 37, 29];
    let x = rng.normals(3 * 37 * 29, 3.0);
    let t = up(dev, &shape, &x);
    for dim in [2isize, 1, 0] {
        let d = dim as usize;
        let outer: usize = shape[..d].iter().product();
        let inner: usize = shape[d + 1..].iter().product();
        let got = ops::softmax(dev, &t, dim).unwrap();
        check(&format!("softmax {shape:?} along dim {dim}"), &read(dev, &got).await, &cpu::softmax(&x, [outer, shape[d], inner]), TOL);
    }
    let long = rng.normals(2 * 5000, 2.0);
    let got = ops::softmax(dev, &up(dev, &[2, 5000], &long), -1).unwrap();
    check("softmax [2, 5000] along dim -1", &read(dev, &got).await, &cpu::softmax(&long, [2, 5000, 1]), TOL);
}

pub async fn activations(dev: &Device) {
    let mut rng = Rng::new(6);
    // GELU over a dense grid of [-10, 10] plus random values: absolute error < 1e-6.
    let mut x: Vec<f32> = (0..20001).map(|i| -10.0 + i as f32 * 0.001).collect();
    x.extend(rng.normals(5000, 3.0));
    let got = read(dev, &ops::gelu(dev, &up(dev, &[x.len()], &x)).unwrap()).await;
    let max_abs = super::worst(got.iter().zip(&x).map(|(g, &v)| (*g as f64 - cpu::gelu(v as f64)).abs()));
    crate::report!("{:<52} max abs err {max_abs:.3e}   (tol 1e-6)", "gelu (erf) on [-10, 10] and N(0, 9)");
    assert!(max_abs < 1e-6, "gelu max abs error {max_abs:.3e}");

    let got = read(dev, &ops::silu(dev, &up(dev, &[x.len()], &x)).unwrap()).await;
    let want: Vec<f64> = x.iter().map(|&v| cpu::silu(v as f64)).collect();
    check("silu", &got, &want, TOL);

    let (rows, d) = (37, 45);
    let x = rng.normals(rows * 2 * d, 2.0);
    let got = ops::geglu(dev, &up(dev, &[rows, 2 * d], &x)).unwrap();
    assert_eq!(got.shape(), &[rows, d]);
    let want: Vec<f64> = (0..rows * d).map(|i| {
        let (r, j) = (i / d, i % d);
        x[r * 2 * d + j] as f64 * cpu::gelu(x[r * 2 * d + d + j] as f64)
    }).collect();
    check(&format!("geglu [{rows}, {}]", 2 * d), &read(dev, &got).await, &want, TOL);
}

pub async fn elementwise(dev: &Device) {
    let mut rng = Rng::new(7);
    let (b, c, h, w) = (2, 5, 7, 3);
    let n = b * c * h * w;
    let a = rng.normals(n, 1.0);
    let at = up(dev, &[b, c, h, w], &a);
    // (name, the operand's shape, which of its elements output element i reads)
    type Broadcast<'a> = (&'a str, Vec<usize>, Box<dyn Fn(usize) -> usize>);
    let forms: [Broadcast; 4] = [
        ("full", vec![b, c, h, w], Box::new(|i| i)),
        ("per channel [C, 1, 1]", vec![c, 1, 1], Box::new(move |i| (i / (h * w)) % c)),
        ("per (batch, channel) [B, C, 1, 1]", vec![b, c, 1, 1], Box::new(move |i| i / (h * w))),
        ("per column [W]", vec![w], Box::new(move |i| i % w)),
    ];
    for (name, shape, index) in &forms {
        let bv = rng.normals(shape.iter().product(), 1.0);
        let bt = up(dev, shape, &bv);
        let sum: Vec<f64> = (0..n).map(|i| a[i] as f64 + bv[index(i)] as f64).collect();
        let prod: Vec<f64> = (0..n).map(|i| a[i] as f64 * bv[index(i)] as f64).collect();
        check(&format!("add {name}"), &read(dev, &ops::add(dev, &at, &bt).unwrap()).await, &sum, TOL);
        check(&format!("mul {name}"), &read(dev, &ops::mul(dev, &at, &bt).unwrap()).await, &prod, TOL);
    }
    assert!(ops::add(dev, &at, &up(dev, &[b], &[1.0, 2.0])).is_err(), "a shape that does not broadcast must be refused");

}

pub async fn layout(dev: &Device) {
    let mut rng = Rng::new(8);
    let (b, c1, c2, h, w) = (2, 3, 5, 7, 9);
    let a = rng.normals(b * c1 * h * w, 1.0);
    let bb = rng.normals(b * c2 * h * w, 1.0);
    let got = ops::concat_channels(dev, &up(dev, &[b, c1, h, w], &a), &up(dev, &[b, c2, h, w], &bb)).unwrap();
    let hw = h * w;
    let want: Vec<f64> = (0..b).flat_map(|bt| {
        let a = &a;
        let bb = &bb;
        a[bt * c1 * hw..(bt + 1) * c1 * hw].iter().chain(&bb[bt * c2 * hw..(bt + 1) * c2 * hw]).map(|&v| v as f64).collect::<Vec<_>>()
    }).collect();
    check("concat channels [2,3,7,9] ++ [2,5,7,9]", &read(dev, &got).await, &want, 0.0);

    let x = rng.normals(2 * 3 * 5 * 7, 1.0);
    let xt = up(dev, &[2, 3, 5, 7], &x);
    let got = ops::reflect_pad(dev, &xt, 8, 12).unwrap();
    let refl = |i: usize, n: usize| if i < n { i } else { 2 * (n - 1) - i };
    let want: Vec<f64> = (0..6 * 8 * 12).map(|i| {
        let (p, y, xx) = (i / 96, (i / 12) % 8, i % 12);
        x[(p * 5 + refl(y, 5)) * 7 + refl(xx, 7)] as f64
    }).collect();
    check("reflect pad [2,3,5,7] -> 8x12", &read(dev, &got).await, &want, 0.0);
    assert!(ops::reflect_pad(dev, &xt, 10, 7).is_err(), "a pad as large as the size must be refused");

    let got = ops::crop(dev, &xt, 4, 3).unwrap();
    let want: Vec<f64> = (0..6 * 4 * 3).map(|i| {
        let (p, y, xx) = (i / 12, (i / 3) % 4, i % 3);
        x[(p * 5 + y) * 7 + xx] as f64
    }).collect();
    check("crop [2,3,5,7] -> 4x3", &read(dev, &got).await, &want, 0.0);

    let (b, r, c) = (3, 37, 50);
    let x = rng.normals(b * r * c, 1.0);
    let got = ops::transpose(dev, &up(dev, &[b, r, c], &x)).unwrap();
    assert_eq!(got.shape(), &[b, c, r]);
    let want: Vec<f64> = (0..b * c * r).map(|i| {
        let (bt, j, k) = (i / (c * r), (i / r) % c, i % r);
        x[(bt * r + k) * c + j] as f64
    }).collect();
    check("transpose [3, 37, 50]", &read(dev, &got).await, &want, 0.0);

    let (rows, c) = (1000, 24);
    let table = rng.normals(rows * c, 1.0);
    let ids: Vec<u32> = vec![0, 999, 17, 17, 500, 3];
    for f16 in [false, true] {
        let t = if f16 { up16(dev, &[rows, c], &table) } else { up(dev, &[rows, c], &table) };
        let got = ops::gather_rows(dev, &t, &dev.upload_u32(&[ids.len()], &ids).unwrap()).unwrap();
        let src = if f16 { f16_rounded(&table) } else { table.clone() };
        let want: Vec<f64> = ids.iter().flat_map(|&i| src[i as usize * c..(i as usize + 1) * c].iter().map(|&v| v as f64)).collect();
        check(&format!("gather_rows {} of [1000, 24]{}", ids.len(), if f16 { " f16" } else { "" }), &read(dev, &got).await, &want, 0.0);
    }
}

/// Attention on [b, nq/nk, heads*d] data, q/k/v either separate or (self-attention) one
/// fused [b, n, 3C] tensor as CLIP's in_proj produces.
#[allow(clippy::too_many_arguments)] // the case's dimensions and flags
pub async fn attention_case(dev: &Device, b: usize, nq: usize, nk: usize, heads: usize, d: usize, causal: bool, fused: bool) {
    let mut rng = Rng::new((b * 1000 + nq * 7 + nk * 3 + heads + d) as u64);
    let c = heads * d;
    let q = rng.normals(b * nq * c, 1.0);
    let k = rng.normals(b * nk * c, 1.0);
    let v = rng.normals(b * nk * c, 1.0);
    let got = if fused {
        assert_eq!(nq, nk);
        let mut qkv = Vec::with_capacity(3 * q.len());
        for row in 0..b * nq {
            for part in [&q, &k, &v] {
                qkv.extend_from_slice(&part[row * c..(row + 1) * c]);
            }
        }
        let t = up(dev, &[b, nq, 3 * c], &qkv);
        let h = |i: usize| Heads { tensor: &t, start: i * c, width: c };
        ops::attention(dev, h(0), h(1), h(2), heads, causal).unwrap()
    } else {
        let (qt, kt, vt) = (up(dev, &[b, nq, c], &q), up(dev, &[b, nk, c], &k), up(dev, &[b, nk, c], &v));
        ops::attention(dev, Heads::all(&qt), Heads::all(&kt), Heads::all(&vt), heads, causal).unwrap()
    };
    let want = cpu::attention(&q, &k, &v, [b, nq, nk], heads, d, causal);
    let name = format!("attention b{b} q{nq} k{nk} {heads}x{d}{}{}", if causal { " causal" } else { "" }, if fused { " fused qkv" } else { "" });
    check(&name, &read(dev, &got).await, &want, if nk > 1000 { TOL_LONG } else { TOL });
}

pub async fn attention(dev: &Device) {
    attention_case(dev, 1, 50, 50, 4, 64, false, true).await; // ViT: 50 tokens, fused in_proj
    attention_case(dev, 2, 77, 77, 2, 32, true, true).await; // text tower: causal
    attention_case(dev, 1, 100, 1, 4, 32, false, false).await; // cross-attention on one context token
    attention_case(dev, 1, 37, 130, 3, 16, false, false).await;
    attention_case(dev, 1, 20, 45, 2, 24, true, false).await;
    attention_case(dev, 1, 4096, 4096, 2, 32, false, false).await; // long sequences: no N x N
    attention_case(dev, 1, 300, 4096, 1, 64, true, false).await;
}

pub async fn linear_attn(dev: &Device) {
    let mut rng = Rng::new(9);
    // 575 pixels: two full chunks of the context sum and a shorter one, for every head.
    for &(b, heads, dh, h, w) in &[(1, 4, 32, 9, 13), (2, 2, 8, 5, 3), (2, 4, 8, 23, 25)] {
        let n = h * w;
        let qkv = rng.normals(b * 3 * heads * dh * n, 2.0);
        let want = cpu::linear_attention(&qkv, b, heads, dh, n);
        // As to_qkv makes them: stacked per image, or apart.
        let stacked = up(dev, &[b, 3 * heads * dh, h, w], &qkv);
        let part = |i: usize| -> Vec<f32> { (0..b).flat_map(|bt| qkv[(bt * 3 + i) * heads * dh * n..(bt * 3 + i + 1) * heads * dh * n].to_vec()).collect() };
        let shape = [b, heads * dh, h, w];
        let [q, k, v] = [0, 1, 2].map(|i| up(dev, &shape, &part(i)));
        for (qkv, name) in [(Qkv::Stacked(&stacked), "stacked"), (Qkv::Apart([&q, &k, &v]), "apart")] {
            let before = dev.dispatch_count();
            let got = linear_attention(dev, qkv, heads, dh).unwrap();
            // Per image: the softmaxes (one dispatch when stacked), the partial context
            // sums (two lengths of chunk where 256 does not divide the pixels), their sum
            // and the output product.
            let softmaxes = if name == "stacked" { 1 } else { 2 };
            let sums = 1 + (n > 256 && n % 256 != 0) as u64;
            assert_eq!(dev.dispatch_count() - before, b as u64 * (softmaxes + sums + 2), "linear_attention {name} dispatches");
            assert_eq!(got.shape(), &[b, heads * dh, h, w]);
            check(&format!("linear_attention {name} b{b} {heads}x{dh} on {h}x{w}"), &read(dev, &got).await, &want, TOL);
        }
    }
}
