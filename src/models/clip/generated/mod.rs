//! Tables written by scripts, not by hand (each names its generator at its top): the text
//! cleaning's data from Python's standard library (`text`) and ftfy's mojibake test as
//! measured on ftfy (`badness`). Regenerate them; do not edit them.

pub(crate) mod badness;
pub(crate) mod text;
