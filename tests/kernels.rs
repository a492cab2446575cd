//! Every kernel against its f64 CPU reference on the native adapter (lavapipe in CI).
//! Run with `cargo test --release --test kernels -- --nocapture` to see the errors.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use daclip_webgpu::gpu::block_on;
use daclip_webgpu::Gpu;

fn gpu() -> Gpu {
    let gpu = Gpu::new_blocking().expect("no GPU adapter (install mesa-vulkan-drivers for lavapipe)");
    println!("adapter: {}", gpu.info());
    gpu
}

macro_rules! kernel_tests {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            let gpu = gpu();
            block_on(common::cases::$name(&gpu));
        }
    )*};
}

kernel_tests!(matmul, linear, conv2d, norms, softmax, activations, elementwise, layout, attention, linear_attn);
