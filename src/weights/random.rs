//! Seeded random weights for a model's tensor list, as an f16 safetensors file: what the
//! benchmarks and the full-size tests run on when no trained checkpoint is at hand.

use std::collections::HashMap;

use crate::weights::TensorSpec;

/// SplitMix64: small, fast, reproducible, and easy to write again elsewhere
/// (tests/reference/make_fixtures.py does, with numpy, for the fixture sets whose weights
/// are too large to commit). The tests' inputs come from it too.
pub struct SplitMix(u64);

impl SplitMix {
    /// The generator whose first output follows `state`.
    pub fn new(state: u64) -> SplitMix {
        SplitMix(state)
    }

    /// The stream of tensor `name`: each tensor's values depend on the seed and its name
    /// only, not on the order in which a tensor list names them.
    fn for_tensor(seed: u64, name: &str) -> SplitMix {
        // FNV-1a over the name's bytes.
        let hash = name.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01B3));
        SplitMix(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ hash)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1): the top 53 bits of the next output.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Every tensor of `spec` filled from `seed`: matrices and convolutions uniform with the
/// variance of 1/fan_in (activations keep their scale through deep stacks), 1-D weights
/// (norm gains) near 1, biases and other vectors near 0, and the tensors `zero` selects
/// exactly 0, each value rounded to f32 and then to f16. `metadata` goes into the header (model and
/// config).
pub fn random_safetensors(spec: &TensorSpec, seed: u64, zero: impl Fn(&str) -> bool, metadata: HashMap<String, String>) -> Vec<u8> {
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = spec
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let gain = name.ends_with(".weight") && shape.len() == 1 || name.ends_with(".g");
            let matrix = shape.iter().filter(|&&d| d > 1).count() > 1;
            let mut rng = SplitMix::for_tensor(seed, name);
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
                    // Through f32, whose rounding to f16 every library does alike (a direct f64
                    // rounding is done in one step by some and in two by others).
                    half::f16::from_f32(v as f32)
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
