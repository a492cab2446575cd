//! Seeded random weights for a model's tensor list, as an f16 safetensors file: what the
//! benchmarks and the full-size tests run on when no trained checkpoint is at hand.

use std::collections::HashMap;

use crate::models::TensorSpec;

/// SplitMix64: small, fast, reproducible.
struct SplitMix(u64);

impl SplitMix {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Every tensor of `spec` filled from `seed`: matrices and convolutions uniform with the
/// variance of 1/fan_in (activations keep their scale through deep stacks), 1-D weights
/// (norm gains) near 1, biases and other vectors near 0, and the tensors `zero` selects
/// exactly 0. `metadata` goes into the header (model and config).
pub fn random_safetensors(spec: &TensorSpec, seed: u64, zero: impl Fn(&str) -> bool, metadata: HashMap<String, String>) -> Vec<u8> {
    let mut rng = SplitMix(seed);
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = spec
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let gain = name.ends_with(".weight") && shape.len() == 1 || name.ends_with(".g");
            let matrix = shape.iter().filter(|&&d| d > 1).count() > 1;
            let bytes = (0..n)
                .map(|_| {
                    let u = 2.0 * rng.uniform() - 1.0;
                    let v = if zero(name) {
                        0.0
                    } else if matrix {
                        u * (3.0 * shape[0] as f64 / n as f64).sqrt()
                    } else if gain {
                        1.0 + 0.05 * u
                    } else {
                        0.05 * u
                    };
                    half::f16::from_f64(v)
                })
                .flat_map(|h| h.to_le_bytes())
                .collect();
            (name.clone(), shape.clone(), bytes)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F16, s.clone(), b).expect("sizes match")))
        .collect();
    safetensors::serialize(views, Some(metadata)).expect("serialisable")
}
