//! Every kernel against its f64 reference: the WGSL kernels on the native adapter
//! (lavapipe in CI) and their twins on the CPU backend, the same cases and tolerances.
//! Run with `cargo test --release --test kernels -- --nocapture` to see the errors.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use daclip_webgpu::device::block_on;
use daclip_webgpu::Device;

fn gpu() -> Device {
    let dev = Device::new_blocking().expect("no GPU adapter (install mesa-vulkan-drivers for lavapipe)");
    println!("adapter: {}", dev.info());
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
