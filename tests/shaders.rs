//! Every kernel's module parses and validates with naga (no GPU needed), with both
//! reduction files where it reduces, every file under shaders/ is in the registry, and
//! every kernel follows the binding convention the dispatcher relies on.
#![cfg(not(target_arch = "wasm32"))]

use std::path::Path;

use daclip_webgpu::kernels::{Kernel, REDUCTIONS};

#[test]
fn every_shader_validates() {
    for &kernel in Kernel::ALL {
        // (subgroups, cooperative matrix size): the reductions in both variants, the
        // cooperative product for both matrix sizes.
        let variants: &[(bool, u32)] = match (kernel.reduces(), kernel.cooperative()) {
            (true, _) => &[(false, 16), (true, 16)],
            (_, true) => &[(true, 16), (true, 8)],
            _ => &[(false, 16)],
        };
        for &(subgroups, coop_size) in variants {
            let name = match (subgroups, kernel.cooperative()) {
                (_, true) => format!("{} ({coop_size}x{coop_size})", kernel.path()),
                (true, _) => format!("{} (subgroups)", kernel.path()),
                _ if kernel.f16_tiles() => format!("{} (f16)", kernel.path()),
                _ => kernel.path().to_string(),
            };
            let src = kernel.source(subgroups, coop_size);
            let module = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&src)));
            // Beyond core WGSL: `unpack2x16float` (f16 weights), which naga tracks
            // separately and every WebGPU implementation provides, and in the subgroup
            // variants the `subgroups` feature.
            let mut caps = naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
            if subgroups {
                caps |= naga::valid::Capabilities::SUBGROUP;
            }
            if kernel.cooperative() {
                caps |= naga::valid::Capabilities::COOPERATIVE_MATRIX | naga::valid::Capabilities::SHADER_FLOAT16;
                assert!(src.contains(&format!("coop_mat{coop_size}x{coop_size}<")), "{name}");
            }
            // The f16-tile modules must hold f16 tiles, the others must not need f16.
            assert_eq!(src.contains("alias Tile = vec4<f16>;"), kernel.f16_tiles(), "{name}");
            if kernel.f16_tiles() {
                caps |= naga::valid::Capabilities::SHADER_FLOAT16;
            }
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
                .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
                .subgroup_operations(naga::valid::SubgroupOperationSet::BASIC | naga::valid::SubgroupOperationSet::ARITHMETIC)
                .validate(&module)
                .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&src)));
            // The plain variant must not depend on the feature.
            assert_eq!(src.contains("subgroupAdd("), subgroups && kernel.reduces(), "{name}");

            let entry: Vec<_> = module.entry_points.iter().map(|e| e.name.as_str()).collect();
            assert_eq!(entry, ["main"], "{name}: one entry point named main");
            let mut bindings: Vec<(u32, u32, bool)> = module
                .global_variables
                .iter()
                .filter_map(|(_, v)| v.binding.as_ref().map(|b| (b.group, b.binding, v.space == naga::AddressSpace::Uniform)))
                .collect();
            bindings.sort();
            assert_eq!(bindings[0], (0, 0, true), "{name}: binding 0 is the Params uniform");
            for (i, &(group, binding, uniform)) in bindings.iter().enumerate().skip(1) {
                assert_eq!((group, binding, uniform), (0, i as u32, false), "{name}: storage buffers at bindings 1..");
            }
            assert!(bindings.len() - 1 <= 8, "{name}: at most 8 storage buffers (WebGPU default)");
            println!("{name:<48} ok ({} storage buffers)", bindings.len() - 1);
        }
    }
}

#[test]
fn every_shader_file_is_registered() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut on_disk = Vec::new();
    for family in std::fs::read_dir(&root).unwrap() {
        let family = family.unwrap().path();
        for file in std::fs::read_dir(&family).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_some_and(|e| e == "wgsl") {
                on_disk.push(file.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/"));
            }
        }
    }
    on_disk.sort();
    let mut registered: Vec<String> = Kernel::ALL.iter().map(|k| k.path()).chain(REDUCTIONS).map(String::from).collect();
    registered.sort();
    registered.dedup(); // the half-precision kernels share the f32 kernels' files
    assert_eq!(on_disk, registered);
}
