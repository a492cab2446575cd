//! Every kernel against its f64 reference: the WGSL kernels on the native adapter
//! (lavapipe in CI) and their twins on the CPU backend, the same cases and tolerances.
//! Run with `cargo test --release --test kernels -- --nocapture` to see the errors.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{gpu_with, COOPERATIVE, F16_TILES, F32_KERNELS};
use daclip_webgpu::device::{block_on, GpuOptions};
use daclip_webgpu::Device;

/// The GPU as a user gets it (the default options).
fn gpu() -> Device {
    gpu_with(GpuOptions::default())
}

/// The GPU with the reduction kernels' workgroup-memory variant, which the browser runs
/// (`gpu()` takes subgroups where the adapter offers them, as lavapipe does).
fn gpu_without_subgroups() -> Device {
    let dev = block_on(Device::new_with(GpuOptions { subgroups: false, ..GpuOptions::default() })).expect("no GPU adapter");
    assert!(!dev.subgroups());
    dev
}

fn cpu() -> Device {
    let dev = Device::cpu();
    println!("device: {}", dev.info());
    dev
}

macro_rules! kernel_tests {
    ($($name:ident),* $(,)?) => {
        mod gpu {$(
            #[test]
            fn $name() {
                super::block_on(crate::common::cases::$name(&super::gpu()));
            }
        )*}
        mod cpu {$(
            #[test]
            fn $name() {
                super::block_on(crate::common::cases::$name(&super::cpu()));
            }
        )*}
    };
}

kernel_tests!(matmul, linear, conv2d, norms, softmax, activations, elementwise, layout, attention, linear_attn);

mod gpu_without_subgroups {
    #[test]
    fn norms() {
        super::block_on(crate::common::cases::norms(&super::gpu_without_subgroups()));
    }

    #[test]
    fn softmax() {
        super::block_on(crate::common::cases::softmax(&super::gpu_without_subgroups()));
    }
}

/// The products and convolutions with f16 weights on cooperative matrices where the
/// adapter offers them (Mesa 26's lavapipe does; elsewhere counted as skipped), and on
/// the f32 kernels with every tile.
mod products {
    use crate::common::{gpu_with, gpu_with_cooperative_matrices, F32_KERNELS};

    #[test]
    fn matmul_on_cooperative_matrices() {
        if let Some(dev) = gpu_with_cooperative_matrices("matmul on cooperative matrices") {
            super::block_on(crate::common::cases::matmul_with(&dev, crate::common::cases::Weights::F16));
        }
    }

    #[test]
    fn linear_on_cooperative_matrices() {
        if let Some(dev) = gpu_with_cooperative_matrices("linear on cooperative matrices") {
            super::block_on(crate::common::cases::linear_with(&dev, crate::common::cases::Weights::F16));
        }
    }

    #[test]
    fn conv2d_on_cooperative_matrices() {
        if let Some(dev) = gpu_with_cooperative_matrices("conv2d on cooperative matrices") {
            super::block_on(crate::common::cases::conv2d_with(&dev, crate::common::cases::Weights::F16));
        }
    }

    /// Every tile bench may time, forced on every product and convolution of the cases,
    /// where it fits the device; the large tile must fit wherever there are matrices.
    #[test]
    fn products_on_every_cooperative_tile() {
        use daclip_webgpu::device::CooperativeTile;
        let Some(dev) = gpu_with_cooperative_matrices("every cooperative tile") else {
            assert!(!crate::common::tune(&gpu_with(crate::common::COOPERATIVE), |t| t.cooperative_tile = Some(CooperativeTile::SMALL)));
            return;
        };
        let coop = dev.cooperative_matrix().unwrap();
        assert!(dev.cooperative_tile_fits(CooperativeTile::SMALL) && dev.cooperative_tile_fits(CooperativeTile::LARGE));
        // The rule: the large tile for products with enough workgroups of it.
        let large = CooperativeTile::LARGE.rows(coop) as usize;
        assert_eq!(daclip_webgpu::ops::cooperative_tile(&dev, 16 * large, 16 * large, 1), CooperativeTile::LARGE);
        assert_eq!(daclip_webgpu::ops::cooperative_tile(&dev, 64, 16 * large, 1), CooperativeTile::SMALL);
        assert_eq!(daclip_webgpu::ops::cooperative_tile(&dev, large, large, 1), CooperativeTile::SMALL);
        for tile in CooperativeTile::CANDIDATES {
            if !crate::common::tune(&dev, |t| t.cooperative_tile = Some(tile)) {
                println!("tile {tile}: does not fit {}", dev.info());
                continue;
            }
            println!("tile {tile}: {} x {} outputs", tile.rows(coop), tile.cols(coop));
            super::block_on(crate::common::cases::matmul_with(&dev, crate::common::cases::Weights::F16));
            super::block_on(crate::common::cases::linear_with(&dev, crate::common::cases::Weights::F16));
            super::block_on(crate::common::cases::conv2d_with(&dev, crate::common::cases::Weights::F16));
        }
        assert!(crate::common::tune(&dev, |t| t.cooperative_tile = None));
    }

    /// Every f32 tile, split along K too; all of them fit WebGPU's default limits. (The
    /// default tile choice on the f32 kernels is `gpu::matmul` and the others' on an
    /// adapter without f16 products, lavapipe in CI.)
    #[test]
    fn products_on_every_f32_tile() {
        use daclip_webgpu::device::F32Tile;
        let dev = gpu_with(F32_KERNELS);
        assert_eq!(daclip_webgpu::ops::f32_tile(&dev, 4096, 4096, 1), F32Tile::LARGE);
        super::products_on_every_f32_tile(&dev, crate::common::cases::Weights::Any);
        assert_eq!(daclip_webgpu::ops::f32_tile(&dev, 4096, 4096, 1), F32Tile::LARGE);
    }
}

/// The products and convolutions with f16 weights on f16 workgroup tiles where the
/// adapter has f16 shaders (Debian 12's lavapipe does, so CI runs them; SwiftShader does
/// not), against the reference on f16-rounded activations at the f32 tolerance: on every
/// f32 tile, and split along K once per K step.
mod f16_tiles {
    use crate::common::gpu_with_f16_tiles;

    #[test]
    fn matmul() {
        if let Some(dev) = gpu_with_f16_tiles("matmul on f16 tiles") {
            super::block_on(crate::common::cases::matmul_with(&dev, crate::common::cases::Weights::F16));
        }
    }

    #[test]
    fn linear() {
        if let Some(dev) = gpu_with_f16_tiles("linear on f16 tiles") {
            super::block_on(crate::common::cases::linear_with(&dev, crate::common::cases::Weights::F16));
        }
    }

    #[test]
    fn conv2d() {
        if let Some(dev) = gpu_with_f16_tiles("conv2d on f16 tiles") {
            super::block_on(crate::common::cases::conv2d_with(&dev, crate::common::cases::Weights::F16));
        }
    }

    #[test]
    fn products_on_every_f32_tile() {
        if let Some(dev) = gpu_with_f16_tiles("every f32 tile with f16 tiles") {
            super::products_on_every_f32_tile(&dev, crate::common::cases::Weights::F16);
        }
    }
}

/// f16 tiles are taken exactly where the adapter has f16 shaders and the options allow
/// them (by default hardware adapters only), for products with f16 weights off
/// cooperative matrices.
#[test]
fn f16_tiles_where_the_adapter_has_f16_shaders() {
    let any = gpu_with(F16_TILES);
    let info = any.info();
    let offered = info.features.iter().any(|f| f == "SHADER_F16");
    println!("f16 shaders offered: {offered}, used: {}", any.shader_f16());
    assert_eq!(any.shader_f16(), offered);
    assert_eq!(gpu().shader_f16(), offered && !info.is_software);
    assert!(!gpu_with(F32_KERNELS).shader_f16());
    assert!(!Device::cpu().shader_f16());
    if offered {
        assert!(daclip_webgpu::ops::runs_on_f16_tiles(&any, 64, true));
        assert!(!daclip_webgpu::ops::runs_on_f16_tiles(&any, 64, false), "f32 weights stay f32");
        assert!(!daclip_webgpu::ops::runs_on_f16_tiles(&any, 32, true), "32 rows or fewer stay f32");
    }
}

/// Every f32 tile bench may time, forced on every product and convolution of the cases
/// (small ones too, whose partial tiles take the kernels' checked loads), and with every
/// product and convolution long enough split along K, slices being whole K steps: once
/// per K step.
fn products_on_every_f32_tile(dev: &Device, weights: common::cases::Weights) {
    use daclip_webgpu::device::F32Tile;
    let mut split_k_steps = std::collections::BTreeSet::new();
    for tile in F32Tile::CANDIDATES {
        assert!(crate::common::tune(dev, |t| t.f32_tile = Some(tile)), "{tile} does not fit {}", dev.info());
        assert_eq!(daclip_webgpu::ops::f32_tile(dev, 1, 1, 1), tile);
        println!("tile {tile}: {} x {} outputs", tile.rows(), tile.cols());
        for split in [false, true] {
            if split && !split_k_steps.insert(tile.tile_k) {
                continue;
            }
            assert!(crate::common::tune(dev, |t| t.split_k_below = split.then_some(1 << 20)));
            block_on(common::cases::matmul_with(dev, weights));
            // Split along K, linear layers take matmul's code (their weight read along K
            // is checked on every tile unsplit).
            if !split {
                block_on(common::cases::linear_with(dev, weights));
            }
            block_on(common::cases::conv2d_with(dev, weights));
        }
        crate::common::tune(dev, |t| t.split_k_below = None);
    }
    assert!(crate::common::tune(dev, |t| t.f32_tile = None));
}

/// Cooperative matrices are taken exactly where the adapter offers a configuration the
/// kernel takes (16 x 16 x 16 or 8 x 8 x 8 f16 -> f32, with the features it needs: none on
/// Debian 12's lavapipe, 8 x 8 x 8 on Mesa 26's), by default only on hardware adapters.
#[test]
fn the_products_use_cooperative_matrices_where_the_adapter_offers_them() {
    let any = gpu_with(COOPERATIVE);
    let info = any.info();
    let needed = ["EXPERIMENTAL_COOPERATIVE_MATRIX", "SHADER_F16", "SUBGROUP"];
    let featured = needed.iter().all(|n| info.features.iter().any(|f| f == n));
    let offered = featured && ["16x16x16 F16->F32", "8x8x8 F16->F32"].iter().any(|c| info.cooperative_matrix.iter().any(|o| o == c));
    println!("cooperative matrix configurations offered: {:?}; used: {:?}", info.cooperative_matrix, any.cooperative_matrix());
    assert_eq!(any.cooperative_matrix().is_some(), offered);
    assert_eq!(gpu().cooperative_matrix().is_some(), offered && !info.is_software);
    assert!(gpu_with(F32_KERNELS).cooperative_matrix().is_none());
}

/// Where the adapter offers subgroups the reduction kernels use them, so that `gpu::norms`
/// and `gpu::softmax` test that variant and `gpu_without_subgroups` the other.
#[test]
fn the_reductions_use_subgroups_where_the_adapter_offers_them() {
    let dev = gpu();
    let offered = dev.info().features.iter().any(|f| f == "SUBGROUP");
    println!("subgroups offered: {offered}, used: {}", dev.subgroups());
    assert_eq!(dev.subgroups(), offered);
}

/// `op` on `gpu` and on the CPU backend: the GPU's dispatches, and the largest
/// difference between the two outputs.
fn gpu_against_cpu(gpu: &Device, op: impl Fn(&Device) -> daclip_webgpu::Tensor) -> (u64, f64) {
    let run = |dev: &Device| {
        let before = dev.dispatch_count();
        let y = op(dev);
        let dispatches = dev.dispatch_count() - before;
        (dev.read_blocking(&y).unwrap(), dispatches)
    };
    let ((got, parts), (want, _)) = (run(gpu), run(&cpu()));
    let worst = common::max_abs_diff(&got, &want);
    println!("{parts} dispatches; max |gpu - cpu| = {worst:.2e}");
    (parts, worst)
}

/// A convolution larger than one dispatch's share (2^30 multiply-adds unless the device
/// was given another) goes to the GPU in parts, each a block of output pixels, and gives
/// what the CPU backend computes whole.
#[test]
fn a_large_convolution_is_dispatched_in_parts() {
    use daclip_webgpu::device::MAX_MACS_PER_DISPATCH;
    use daclip_webgpu::ops::{conv2d, Conv2dArgs};
    let mut rng = common::Rng::new(11);
    // 256 x 256 pixels, 64 to 64 channels, 3 x 3: 2.4e9 multiply-adds, three parts.
    let (x, w, b) = (rng.normals(64 * 256 * 256, 1.0), rng.normals(64 * 64 * 9, 0.04), rng.normals(64, 0.1));
    let op = |dev: &Device| {
        let (xt, wt, bt) = (dev.upload(&[1, 64, 256, 256], &x).unwrap(), dev.upload(&[64, 64, 3, 3], &w).unwrap(), dev.upload(&[64], &b).unwrap());
        conv2d(dev, &xt, &wt, Some(&bt), Conv2dArgs::same(3)).unwrap()
    };
    let dev = gpu();
    assert_eq!(dev.tuning().max_macs_per_dispatch, MAX_MACS_PER_DISPATCH);
    assert!(!crate::common::tune(&cpu(), |t| t.max_macs_per_dispatch = 1 << 20), "the CPU backend computes each kernel whole");
    // The default's three parts, then larger and smaller parts.
    for (macs, want_parts) in [(MAX_MACS_PER_DISPATCH, 3), (1 << 32, 1), (1 << 28, 10)] {
        assert!(crate::common::tune(&dev, |t| t.max_macs_per_dispatch = macs));
        let (parts, worst) = gpu_against_cpu(&dev, op);
        assert_eq!(parts, want_parts, "parts of at most {macs} multiply-adds");
        assert!(worst < 1e-3, "parts differ from the whole: {worst}");
    }
}

/// A convolution whose sums are split along K (`Tuning::split_k_below`): the slices'
/// partial sums, then the dispatch adding them to the bias with every epilogue step, on
/// a gathered input (a concatenation), f16 weights and a batch of two, give what the CPU
/// backend computes unsplit; nothing splits unless asked.
#[test]
fn a_convolution_split_along_k_sums_its_slices() {
    use daclip_webgpu::ops::{conv2d_with, k_slices, Conv2dArgs, ConvInput, Epilogue};
    let plain = gpu_with(F32_KERNELS);
    assert_eq!(plain.tuning().split_k_below, None, "splitting is off by default");
    assert_eq!(k_slices(&plain, [8, 1, 1], 1 << 16, 4608), 1);
    assert!(!crate::common::tune(&cpu(), |t| t.split_k_below = Some(1024)), "the CPU backend has no split");
    assert!(crate::common::tune(&plain, |t| t.split_k_below = Some(1024)));
    // Enough slices to reach the workgroups asked for, each slice at least 128 long, at
    // most 16, their partial sums within one binding, the grid's z (batch by slice) within
    // the device's limit; none for a convolution with enough workgroups.
    let slices = |workgroups, outputs, kdim| k_slices(&plain, [workgroups, 1, 1], outputs, kdim);
    let binding = plain.max_tensor_bytes() / 4;
    assert_eq!([slices(8, 1 << 16, 4608), slices(64, 1 << 16, 4608), slices(256, 1 << 16, 4608), slices(8, 1 << 16, 300), slices(2048, 1 << 16, 4608)], [16, 16, 4, 2, 1]);
    assert_eq!([slices(8, binding / 3, 4608), slices(8, binding / 2 + 1, 4608)], [3, 1]);
    assert!(crate::common::tune(&plain, |t| t.split_k_below = Some(1 << 20)));
    let z_max = plain.limits().max_compute_workgroups_per_dimension;
    assert_eq!([k_slices(&plain, [1, 1, z_max / 3], 1 << 10, 4608), k_slices(&plain, [1, 1, z_max / 2 + 1], 1 << 10, 4608)], [3, 1]);
    crate::common::tune(&plain, |t| t.split_k_below = None);

    let mut rng = common::Rng::new(13);
    // K = (70 + 60) channels x 9 taps = 1170: 9 slices of 144 (the last 18 long).
    let (b, c1, c2, cout, h, w) = (2, 70, 60, 24, 9, 7);
    let (x1, x2) = (rng.normals(b * c1 * h * w, 1.0), rng.normals(b * c2 * h * w, 1.0));
    let (wv, bv) = (rng.normals(cout * (c1 + c2) * 9, 0.03), rng.normals(cout, 0.1));
    let (table, res, res2) = (rng.normals(3 * 2 * cout, 0.5), rng.normals(b * cout * h * w, 1.0), rng.normals(b * cout * h * w, 1.0));
    let run = |dev: &Device| {
        let up = |shape: &[usize], v: &[f32]| dev.upload(shape, v).unwrap();
        let (a, second) = (up(&[b, c1, h, w], &x1), up(&[b, c2, h, w], &x2));
        let (wt, bt) = (dev.upload_f16(&[cout, c1 + c2, 3, 3], &wv).unwrap(), dev.upload_f16(&[cout], &bv).unwrap());
        let (tt, rt, rt2) = (up(&[3, 2 * cout], &table), up(&[b, cout, h, w], &res), up(&[b, cout, h, w], &res2));
        let epilogue = Epilogue { scale_shift: Some((&tt, 1)), silu: true, residual: Some(&rt), second_residual: Some(&rt2) };
        let before = dev.dispatch_count();
        let y = conv2d_with(dev, ConvInput::concat(&a, &second), &wt, Some(&bt), Conv2dArgs::same(3), epilogue).unwrap();
        (dev.read_blocking(&y).unwrap(), dev.dispatch_count() - before)
    };
    let split = gpu_with(F32_KERNELS);
    assert!(crate::common::tune(&split, |t| t.split_k_below = Some(1 << 20)));
    let ((got, dispatches), (unsplit, _), (want, _)) = (run(&split), run(&plain), run(&cpu()));
    let worst = |a: &[f32]| common::max_abs_diff(a, &want);
    println!("split along K: {dispatches} dispatches, max |gpu - cpu| = {:.2e} (unsplit {:.2e})", worst(&got), worst(&unsplit));
    assert_eq!(dispatches, 2, "the slices, then their sum");
    assert!(worst(&got) < 1e-4 && worst(&unsplit) < 1e-4);
}

/// Products whose sums are split along K (`Tuning::split_k_below`) give what the CPU
/// backend computes unsplit: a Linear with f16 weights, an f16 bias and a residual (the
/// slices, then one dispatch adding them up: two), a batch of products with K not a
/// multiple of the slices, and linear attention, whose per-head context products are
/// grouped (heads by chunks of pixels) and split there into two slices of 128.
#[test]
fn a_product_split_along_k_sums_its_slices() {
    use daclip_webgpu::nn::{linear_attention, Qkv};
    use daclip_webgpu::ops::{linear_with, matmul};
    let mut rng = common::Rng::new(14);
    // K = 1000: 7 slices of 144 (the last 136 long) for 2 x 2 workgroups of 64 x 64.
    let (m, k, n) = (70, 1000, 90);
    let (x, wv, bv, res) = (rng.normals(m * k, 1.0), rng.normals(n * k, 0.03), rng.normals(n, 0.1), rng.normals(m * n, 1.0));
    // 3 products of 20 x 700 by 700 x 30 (one workgroup each): 5 slices of 144 (the last 124).
    let (batch, bm, bk, bn) = (3, 20, 700, 30);
    let (a, bb) = (rng.normals(batch * bm * bk, 1.0), rng.normals(batch * bk * bn, 0.05));
    // 4 heads of 32 on 600 pixels: chunks of 256, 256 and 88.
    let (heads, dh, h, w) = (4, 32, 20, 30);
    let qkv = rng.normals(3 * heads * dh * h * w, 2.0);
    let run = |dev: &Device| {
        let up = |shape: &[usize], v: &[f32]| dev.upload(shape, v).unwrap();
        let (wt, bt) = (dev.upload_f16(&[n, k], &wv).unwrap(), dev.upload_f16(&[n], &bv).unwrap());
        let before = dev.dispatch_count();
        let y = linear_with(dev, &up(&[m, k], &x), &wt, Some(&bt), Some(&up(&[m, n], &res))).unwrap();
        let dispatches = dev.dispatch_count() - before;
        let products = matmul(dev, &up(&[batch, bm, bk], &a), &up(&[batch, bk, bn], &bb)).unwrap();
        let attended = linear_attention(dev, Qkv::Stacked(&up(&[1, 3 * heads * dh, h, w], &qkv)), heads, dh).unwrap();
        ([&y, &products, &attended].map(|t| dev.read_blocking(t).unwrap()), dispatches, dev.dispatch_count() - before)
    };
    let split = gpu_with(F32_KERNELS);
    assert!(crate::common::tune(&split, |t| t.split_k_below = Some(1 << 20)));
    let plain = gpu_with(F32_KERNELS);
    let ((got, dispatches, all), (unsplit, _, all_unsplit), (want, _, _)) = (run(&split), run(&plain), run(&cpu()));
    // Relative to the largest output (linear attention's are about 1e-4).
    let worst = |a: &[f32], b: &[f32]| common::max_abs_diff(a, b) / common::worst(b.iter().map(|v| v.abs() as f64));
    for (i, name) in ["linear + residual", "batched matmul", "linear attention"].iter().enumerate() {
        println!("{name} split along K: max |gpu - cpu| / max |cpu| = {:.2e} (unsplit {:.2e})", worst(&got[i], &want[i]), worst(&unsplit[i], &want[i]));
        assert!(worst(&got[i], &want[i]) < 1e-5 && worst(&unsplit[i], &want[i]) < 1e-5, "{name}");
    }
    assert_eq!(dispatches, 2, "the slices, then their sum");
    // One more for each: the batch's, and linear attention's full chunks' context products.
    assert_eq!(all, all_unsplit + 3);
}

/// Attention over more than one dispatch's share goes in parts of query blocks (causal
/// masking included) and gives what the CPU backend computes whole.
#[test]
fn a_long_attention_is_dispatched_in_parts() {
    use daclip_webgpu::ops::{attention, Heads};
    let mut rng = common::Rng::new(12);
    // 2048 queries and keys, 4 heads of 64: 2.1e9 multiply-adds, two parts.
    let qkv = rng.normals(2048 * 3 * 256, 1.0);
    let (parts, worst) = gpu_against_cpu(&gpu(), |dev| {
        let t = dev.upload(&[1, 2048, 3 * 256], &qkv).unwrap();
        let heads = |i: usize| Heads { tensor: &t, start: i * 256, width: 256 };
        attention(dev, heads(0), heads(1), heads(2), 4, true).unwrap()
    });
    assert_eq!(parts, 2);
    assert!(worst < 1e-4, "parts differ from the whole: {worst}");
}

/// Both backends' profiles (natively): every dispatch in order, in its family, with its
/// counted work and a time.
#[test]
fn the_profile_counts_each_dispatch_in_its_family() {
    for dev in [gpu(), cpu()] {
        let x = dev.upload(&[64, 64], &vec![0.25; 64 * 64]).unwrap();
        if !dev.set_profiling(true) {
            common::skipped("timestamps", &format!("the profile: no timestamp queries on {}", dev.info()));
            continue;
        }
        let y = daclip_webgpu::ops::matmul(&dev, &daclip_webgpu::ops::silu(&dev, &x).unwrap(), &x).unwrap();
        let z = daclip_webgpu::ops::silu(&dev, &y).unwrap();
        let image = dev.upload(&[1, 8, 10, 10], &[0.5; 800]).unwrap();
        let w = dev.upload(&[4, 8, 3, 3], &[0.5; 288]).unwrap();
        drop(daclip_webgpu::ops::conv2d(&dev, &image, &w, None, daclip_webgpu::ops::Conv2dArgs::same(3)).unwrap());
        let profile = block_on(dev.take_profile()).unwrap().unwrap();
        println!("{}: {profile:?}", dev.info());
        assert_eq!(profile.iter().map(|d| d.kernel.family()).collect::<Vec<_>>(), ["elementwise", "matmul", "elementwise", "conv"], "every dispatch in order");
        let families = daclip_webgpu::device::FamilyTime::of(&profile);
        let family = |name| families.iter().find(|f| f.family == name).map(|f| (f.dispatches, f.flops));
        assert_eq!(family("elementwise"), Some((2, 0)));
        assert_eq!(family("matmul"), Some((1, 2 * 64 * 64 * 64)));
        assert_eq!(family("conv"), Some((1, 2 * 4 * 8 * 9 * 100)));
        assert!(profile.iter().all(|d| d.ms >= 0.0 && d.ms.is_finite()));
        assert!(profile[1].overrides.contains("MR="), "a product's tile: {}", profile[1].overrides);
        assert_eq!(block_on(dev.take_profile()).unwrap().unwrap(), vec![], "taking the profile starts it again");
        dev.set_profiling(false);
        assert!(block_on(dev.take_profile()).unwrap().is_none());
        assert!(dev.read_blocking(&z).unwrap().iter().all(|v| v.is_finite()));
    }
}
