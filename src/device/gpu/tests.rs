use super::*;
use crate::device::{block_on, Device};
use crate::kernels::ActivationParams;

#[test]
fn marks_and_started_reads_report_the_errors_of_their_own_work() {
    let dev = Device::new_blocking().unwrap();
    let x = dev.upload(&[4], &[1.0, -2.0, 3.0, -4.0]).unwrap();
    let params = ActivationParams { n: 4, d: 1, _pad: [0; 2] };
    let broken = || dev.dispatch(Kernel::Activation, &[], &params, &[&x], [1, 1, 1]).unwrap();
    broken();
    let broken_mark = dev.mark();
    let y = crate::ops::silu(&dev, &x).unwrap();
    let fine_mark = dev.mark();
    let err = block_on(broken_mark.wait()).unwrap_err();
    assert!(matches!(err, Error::Validation(_)), "{err:?}");
    block_on(fine_mark.wait()).expect("the work after the broken dispatch is fine, and its mark says so");
    broken();
    let broken_read = dev.start_read(&x).unwrap();
    let fine_read = dev.start_read(&y).unwrap();
    assert!(matches!(block_on(broken_read.values()), Err(Error::Validation(_))));
    let v = block_on(fine_read.values()).unwrap();
    assert!((v[0] - 0.731_058_6).abs() < 1e-6, "{v:?}");
}

#[test]
fn validation_error_comes_back_as_err_and_the_device_stays_usable() {
    let dev = Device::new_blocking().unwrap();
    let x = dev.upload(&[4], &[1.0, -2.0, 3.0, -4.0]).unwrap();
    // activation.wgsl binds two storage buffers; give it one.
    let params = ActivationParams { n: 4, d: 1, _pad: [0; 2] };
    dev.dispatch(Kernel::Activation, &[], &params, &[&x], [1, 1, 1]).unwrap();
    let err = dev.read_blocking(&x).unwrap_err();
    println!("broken dispatch gave: {err}");
    assert!(matches!(err, Error::Validation(_)), "{err:?}");

    let y = crate::ops::silu(&dev, &x).unwrap();
    let v = dev.read_blocking(&y).unwrap();
    assert!((v[0] - 0.731_058_6).abs() < 1e-6, "{v:?}");
}

#[test]
fn oversized_tensors_and_grids_are_refused() {
    let dev = Device::new_blocking().unwrap();
    let err = dev.empty(&[1 << 20, 1 << 10]).unwrap_err();
    println!("4 GiB tensor gave: {err}");
    assert!(matches!(err, Error::TooLarge(_)));
    let x = dev.upload(&[1], &[0.0]).unwrap();
    let params = ActivationParams { n: 1, d: 1, _pad: [0; 2] };
    let err = dev.dispatch(Kernel::Activation, &[], &params, &[&x, &x], [70_000, 1, 1]).unwrap_err();
    assert!(matches!(err, Error::TooLarge(_)), "{err:?}");
}

#[test]
fn device_keeps_to_webgpu_default_limits() {
    let dev = Device::new_blocking().unwrap();
    let l = dev.limits();
    let d = wgpu::Limits::default();
    assert_eq!(l.max_compute_invocations_per_workgroup, d.max_compute_invocations_per_workgroup);
    // Raised only for the larger cooperative-matrix tiles, which are chosen by whether
    // they fit (CooperativeTile::fits).
    if dev.cooperative_matrix().is_some() {
        assert!(l.max_compute_workgroup_storage_size >= d.max_compute_workgroup_storage_size);
    } else {
        assert_eq!(l.max_compute_workgroup_storage_size, d.max_compute_workgroup_storage_size);
    }
    assert_eq!(l.max_storage_buffers_per_shader_stage, d.max_storage_buffers_per_shader_stage);
    assert!(!dev.info().name.is_empty() && !dev.info().features.is_empty());
    println!("{} limits: {} invocations, {} B workgroup storage, {} MiB binding", dev.info(), l.max_compute_invocations_per_workgroup, l.max_compute_workgroup_storage_size, l.max_storage_buffer_binding_size >> 20);
}

#[test]
fn bind_groups_are_reused_and_forgotten_with_their_buffers() {
    let dev = Device::new_blocking().unwrap();
    let x = dev.upload(&[1000], &[0.5; 1000]).unwrap();
    let step = || crate::ops::gelu(&dev, &crate::ops::silu(&dev, &x).unwrap()).unwrap();
    let want = dev.read_blocking(&step()).unwrap();
    let built = dev.bind_groups_built();
    for _ in 0..3 {
        assert_eq!(dev.read_blocking(&step()).unwrap(), want);
    }
    assert_eq!(dev.bind_groups_built(), built, "the pool hands out the same buffers, so the same bind groups serve");
    // Destroys the pooled buffers: a bind group kept for them would fail validation.
    dev.release_free_buffers();
    assert_eq!(dev.read_blocking(&step()).unwrap(), want);
    assert_eq!(dev.bind_groups_built(), built + 2, "new buffers, new bind groups");
}

#[test]
fn gathers_and_epilogues_share_their_convolutions_and_products_pipelines() {
    use crate::ops::{conv2d_with, linear_with, Conv2dArgs, ConvInput, Epilogue};
    let dev = Device::new_blocking().unwrap();
    let up = |shape: &[usize]| dev.upload(shape, &vec![0.25; shape.iter().product()]).unwrap();
    let (x, half, small) = (up(&[1, 16, 6, 6]), up(&[1, 8, 6, 6]), up(&[1, 16, 3, 3]));
    let (w, bias, table, res) = (up(&[16, 16, 3, 3]), up(&[16]), up(&[1, 32]), up(&[1, 16, 6, 6]));
    let args = Conv2dArgs::same(3);
    let (lin_x, lin_w, lin_b, lin_res) = (up(&[8, 16]), up(&[16, 16]), up(&[16]), up(&[8, 16]));
    conv2d_with(&dev, &x, &w, None, args, Epilogue::default()).unwrap();
    linear_with(&dev, &lin_x, &lin_w, None, None).unwrap();
    let created = dev.pipelines_created();
    // The gathers and the epilogue's steps are values in Params, not overrides: no
    // pipeline of their own to compile, which a short restore on a software adapter
    // pays for.
    let fused = Epilogue { scale_shift: Some((&table, 0)), silu: true, residual: Some(&res), second_residual: Some(&res) };
    conv2d_with(&dev, ConvInput::concat(&half, &half), &w, Some(&bias), args, fused).unwrap();
    conv2d_with(&dev, ConvInput::upsampled(&small), &w, Some(&bias), args, Epilogue { residual: Some(&res), ..Default::default() }).unwrap();
    linear_with(&dev, &lin_x, &lin_w, Some(&lin_b), Some(&lin_res)).unwrap();
    dev.sync_blocking().unwrap();
    assert_eq!(dev.pipelines_created(), created);
    // What the loops over K or the accumulators read stays an override: an f32 bias
    // shares the product's pipeline (BIAS_F16 false), an f16 one has its own.
    let f16_bias = dev.upload_f16(&[16], &[0.5; 16]).unwrap();
    linear_with(&dev, &lin_x, &lin_w, Some(&f16_bias), None).unwrap();
    assert_eq!(dev.pipelines_created(), created + 1);
}


#[test]
fn pool_recycles_intermediates() {
    let dev = Device::new_blocking().unwrap();
    let x = dev.upload(&[1000], &[0.5; 1000]).unwrap();
    let a = crate::ops::silu(&dev, &x).unwrap();
    let first = dev.memory();
    drop(a);
    assert_eq!(dev.memory().free_bytes, first.free_bytes + 4096);
    let b = crate::ops::gelu(&dev, &x).unwrap();
    assert_eq!(dev.memory(), first, "the freed buffer is reused, nothing new is allocated");
    assert!(dev.read_blocking(&b).unwrap().iter().all(|v| (v - 0.345_731_2).abs() < 1e-6));
    // An upload is freed, not pooled: each upload takes a fresh buffer, so pooling them
    // would grow the pool by every upload (a leak over many calls).
    let before = dev.memory();
    drop(x);
    let after = dev.memory();
    assert_eq!((after.free_bytes, after.live_bytes), (before.free_bytes, before.live_bytes - 4096));
}
