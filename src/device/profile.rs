//! A profile: the time of every dispatch, and its sum per kernel family (the bench's
//! `--profile`; see [`super::Device::set_profiling`]).

use std::rc::Rc;

use crate::kernels::Kernel;

/// One dispatch of a profile (see [`crate::Device::take_profile`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DispatchTime {
    pub kernel: Kernel,
    /// The pipeline's override constants (tile sizes, variants), `NAME=value` apart by spaces.
    pub overrides: Rc<str>,
    pub workgroups: [u32; 3],
    /// Floating-point operations counted for it (see [`crate::Device::flops`]; 0 for the
    /// kernels not counted: norms, element-wise, layout, ...).
    pub flops: u64,
    /// Its time: on a GPU from timestamp queries, on the CPU backend the wall time of
    /// the kernel's twin.
    pub ms: f64,
}

/// What the bench prints of a profile: time, dispatches and work of one kernel family
/// (the folder of its shader: conv, matmul, attention, norm, elementwise, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyTime {
    pub family: &'static str,
    pub dispatches: u64,
    pub ms: f64,
    /// Floating-point operations counted for its dispatches.
    pub flops: u64,
}

impl FamilyTime {
    /// The dispatches of `profile` added up per kernel family, the slowest family first.
    pub fn of(profile: &[DispatchTime]) -> Vec<FamilyTime> {
        let mut families: Vec<FamilyTime> = Vec::new();
        for d in profile {
            let family = d.kernel.family();
            match families.iter_mut().find(|f| f.family == family) {
                Some(f) => {
                    f.dispatches += 1;
                    f.ms += d.ms;
                    f.flops += d.flops;
                }
                None => families.push(FamilyTime { family, dispatches: 1, ms: d.ms, flops: d.flops }),
            }
        }
        families.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        families
    }
}

/// A dispatch's override constants as a profile shows them: `NAME=value` apart by spaces.
pub(crate) fn overrides_text(overrides: &[(&'static str, f64)]) -> Rc<str> {
    overrides.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join(" ").into()
}
