//! The CPU backend: every WGSL kernel's twin in Rust, run on the same `Params` and
//! buffers the ops pack for the GPU (see [`super`]). Matrix products and the
//! convolutions go through a packed, register-blocked GEMM (`matrixmultiply` natively,
//! our `sgemm128` in the browser); natively on a CPU with AVX-512 the convolutions take
//! our own register tile (`tile`) on operands written straight into its layout, and
//! linear layers of few rows dot products that widen f16 weights in registers (`dot`).
//! Everything else is a plain loop over slices that the compiler vectorises. Natively
//! the work of
//! each kernel is split over threads (rayon); in the browser one wasm instance runs on one
//! thread, and parallelism comes from several workers.
//!
//! f16 weights stay f16 in memory, packed two per 32-bit word as the GPU holds them:
//! half the memory of f32. The kernels that read weights widen them where they read them:
//! the products and convolutions a cache-sized block at a time into f32 (see
//! `gemm::sgemm`; on AVX-512 as they pack a panel, or in registers), the norms and
//! lookups value by value. Every other kernel reads f32 and
//! refuses a packed tensor.

mod attention;
#[cfg(target_arch = "x86_64")]
mod dot;
mod gemm;
mod kernels;
pub mod split;
mod tile;
mod winograd;
// The browser's GEMM kernel (natively matrixmultiply's AVX/FMA ones run; compiled there
// for its tests).
#[cfg(any(target_arch = "wasm32", test))]
mod sgemm128;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

#[cfg(not(target_arch = "wasm32"))]
use super::profile::overrides_text;
use super::tensor::pack_f16;
use super::{AdapterInfo, DType, DispatchTime, MemoryStats, Storage, Tensor};
use crate::error::{Error, Result};
use crate::kernels::Kernel;

/// f16 bits to f32 bits, as `half` converts (NaNs quieted): the exponent and mantissa
/// shifted into f32's places and scaled by 2^112, the exponent bias difference (exact,
/// and it normalises subnormals); infinities and NaNs apart. Branch-free, so it
/// vectorises: `half`'s own conversion on wasm32 is a scalar routine that took seconds
/// for the published weights.
fn widen_f16(h: u16) -> u32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let magnitude = (h & 0x7fff) as u32;
    let finite = (f32::from_bits(magnitude << 13) * f32::from_bits(0x7780_0000)).to_bits();
    let special = 0x7f80_0000 | (magnitude & 0x3ff) << 13 | if magnitude > 0x7c00 { 0x0040_0000 } else { 0 };
    sign | if magnitude >= 0x7c00 { special } else { finite }
}

/// f16 bits to f32, exactly, for a finite value (packed tensors hold only those: see
/// [`CpuDevice::upload_f16`]). The bits sign-extended and shifted 13 places put the sign
/// on f32's and the exponent and mantissa where f32's are, with copies of the sign in
/// the three bits between (cleared); scaling by 2^112, the exponent bias difference, is
/// exact and normalises subnormals. Three integer operations and a multiply that
/// vectorise: the products with f16 weights widen every weight value once per call, and
/// this costs less than reading the f32 value would in wasm (a general conversion, with
/// infinities and NaNs, took 0.5 ns a value there, 15% of an image encode).
#[inline(always)]
fn widen_finite_f16(h: u16) -> f32 {
    f32::from_bits(((h as i16 as i32) << 13) as u32 & 0x8fff_ffff) * f32::from_bits(0x7780_0000)
}

/// `dst[i] = src[i]`, widened from finite f16 values: with the F16C instruction where
/// an x86 CPU has it (eight values an instruction, twice as fast as the SSE2 code of
/// [`widen_finite_f16`]).
fn widen_slice(src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU has F16C (checked above).
        return unsafe { widen_slice_f16c(src, dst) };
    }
    for (d, &h) in dst.iter_mut().zip(src) {
        *d = widen_finite_f16(h);
    }
}

/// [`widen_slice`] on F16C (`vcvtph2ps` is exact).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "f16c,avx")]
unsafe fn widen_slice_f16c(src: &[u16], dst: &mut [f32]) {
    use std::arch::x86_64::{_mm256_cvtph_ps, _mm256_storeu_ps, _mm_loadu_si128};
    let whole = src.len() / 8 * 8;
    for (s, d) in src[..whole].chunks_exact(8).zip(dst.chunks_exact_mut(8)) {
        // SAFETY: 8 halves read and 8 floats written, within the chunks.
        unsafe { _mm256_storeu_ps(d.as_mut_ptr(), _mm256_cvtph_ps(_mm_loadu_si128(s.as_ptr().cast()))) };
    }
    for (d, &h) in dst[whole..].iter_mut().zip(&src[whole..]) {
        *d = widen_finite_f16(h);
    }
}

/// Host memory of one tensor: 32-bit words (f32 bits, or u32 indices).
pub(crate) struct CpuBuffer {
    words: RefCell<Vec<u32>>,
    shared: Rc<Shared>,
    /// This buffer's number on its device, which names it to kernel helpers.
    id: u64,
    /// Uploaded and never written since: a weight, which kernel helpers keep once sent.
    constant: Cell<bool>,
    /// Sent to kernel helpers to keep: they forget it when it is dropped.
    kept_by_helpers: Cell<bool>,
}

/// What a device's buffers share.
#[derive(Default)]
struct Shared {
    stats: RefCell<MemoryStats>,
    next_id: Cell<u64>,
    /// Buffers that kernel helpers keep, dropped since the helpers were last told.
    dropped: RefCell<Vec<u64>>,
}

impl CpuBuffer {
    fn bytes(&self) -> u64 {
        4 * self.words.borrow().len() as u64
    }

    pub(crate) fn write(&self, data: &[f32]) -> Result<()> {
        let mut words = self.words.try_borrow_mut().map_err(|_| busy())?;
        words.copy_from_slice(bytemuck::cast_slice(data));
        self.constant.set(false);
        Ok(())
    }

    pub(crate) fn read(&self, dtype: DType, n: usize) -> Result<Vec<f32>> {
        let words = self.words.try_borrow().map_err(|_| busy())?;
        Ok(match dtype {
            DType::U32 => words[..n].iter().map(|&w| w as f32).collect(),
            DType::F32 => bytemuck::cast_slice(&words[..n]).to_vec(),
            DType::F16Packed => halves(&words)[..n].iter().map(|&h| widen_finite_f16(h)).collect(),
        })
    }
}

impl Drop for CpuBuffer {
    fn drop(&mut self) {
        let bytes = self.bytes();
        self.shared.stats.borrow_mut().live_bytes -= bytes;
        if self.kept_by_helpers.get() {
            self.shared.dropped.borrow_mut().push(self.id);
        }
    }
}

/// The f16 values of packed words, in order: value 2i is word i's low half (the words
/// were packed so on every target; the halves are read back in memory order, which is
/// that order on the little-endian targets this builds for).
fn halves(words: &[u32]) -> &[u16] {
    const _: () = assert!(cfg!(target_endian = "little"), "packed f16 tensors assume a little-endian target");
    bytemuck::cast_slice(words)
}

/// One kernel input's values: f32 (or u32 indices, read by their bits), or f16 (a
/// packed weight).
#[derive(Clone, Copy)]
pub(crate) enum Values<'a> {
    F32(&'a [f32]),
    F16(&'a [u16]),
}

impl<'a> Values<'a> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F16(v) => v.len(),
        }
    }

    /// Value `i` as f32 (bounds checked).
    #[inline]
    pub(crate) fn get(&self, i: usize) -> f32 {
        match self {
            Values::F32(v) => v[i],
            Values::F16(v) => widen_finite_f16(v[i]),
        }
    }

    /// The values from `start` on (empty past the end).
    pub(crate) fn from(&self, start: usize) -> Values<'a> {
        match *self {
            Values::F32(v) => Values::F32(v.get(start..).unwrap_or(&[])),
            Values::F16(v) => Values::F16(v.get(start..).unwrap_or(&[])),
        }
    }

    /// Values `start .. start + dst.len()` into `dst`, widened where f16 (a loop that
    /// vectorises).
    pub(crate) fn widen_into(&self, start: usize, dst: &mut [f32]) {
        match self {
            Values::F32(v) => dst.copy_from_slice(&v[start..start + dst.len()]),
            Values::F16(v) => widen_slice(&v[start..start + dst.len()], dst),
        }
    }

    /// Values `start .. start + n` as a new f32 vector, checked to be there (`what` names
    /// them in the error): a bias, or a norm's gain, widened once per call rather than
    /// per use.
    pub(crate) fn widened(&self, start: usize, n: usize, what: &str) -> Result<Vec<f32>> {
        check_extent(what, start + n - 1, self.len())?;
        let mut out = vec![0.0; n];
        self.widen_into(start, &mut out);
        Ok(out)
    }

    /// The f32 values, or an error naming `kernel` for a packed f16 tensor: only the
    /// kernels that read weights take those.
    pub(crate) fn f32(&self, kernel: Kernel) -> Result<&'a [f32]> {
        match *self {
            Values::F32(v) => Ok(v),
            Values::F16(_) => Err(Error::Usage(format!("{} reads f32 values, and was given a packed f16 tensor", kernel.path()))),
        }
    }
}

fn busy() -> Error {
    Error::Shape("a CPU tensor was read and written by one kernel at once".into())
}

struct Inner {
    info: AdapterInfo,
    shared: Rc<Shared>,
    dispatched: Cell<u64>,
    /// Other workers that compute part of each large product and convolution (the
    /// browser's helper workers), while `solo` is 0 (see [`split`]).
    helpers: RefCell<Option<split::Helpers>>,
    solo: Cell<usize>,
    /// Each kernel's wall time while profiling (natively: the browser has no clock here).
    profile: RefCell<Option<Vec<DispatchTime>>>,
}

#[derive(Clone)]
pub(crate) struct CpuDevice {
    inner: Rc<Inner>,
}

/// Threads each kernel is split over.
pub(crate) fn threads() -> usize {
    #[cfg(not(target_arch = "wasm32"))]
    return rayon::current_num_threads();
    #[cfg(target_arch = "wasm32")]
    return 1;
}

/// Two scratch buffers of this thread, of at least `a` and `b` elements (their contents
/// are whatever the last user left). Kernels' per-task temporaries of megabytes would
/// otherwise be fresh memory maps on every call, every page faulting on first touch.
/// `f` must not call a kernel that uses scratch itself.
pub(crate) fn with_scratch<R>(a: usize, b: usize, f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    }
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let (x, y) = &mut *s;
        if x.len() < a {
            x.resize(a, 0.0);
        }
        if y.len() < b {
            y.resize(b, 0.0);
        }
        f(&mut x[..a], &mut y[..b])
    })
}

/// Runs `f(0..count)`, on rayon's threads natively and in order in the browser.
pub(crate) fn parallel_for(count: usize, f: impl Fn(usize) + Sync + Send) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        if count > 1 {
            (0..count).into_par_iter().for_each(f);
            return;
        }
    }
    (0..count).for_each(f);
}

/// Runs `f(chunk index, chunk)` over `out` cut into pieces of `chunk` elements, in parallel
/// natively.
pub(crate) fn parallel_chunks(out: &mut [f32], chunk: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    let chunk = chunk.max(1);
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        if out.len() > chunk {
            out.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
            return;
        }
    }
    out.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
}

/// An output that several threads write at disjoint indices (strided blocks that
/// `chunks_mut` cannot express). Every write is bounds-checked.
pub(crate) struct SharedOut<'a> {
    ptr: *mut f32,
    len: usize,
    _out: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: callers write each index from at most one task (documented at every use), and
// the borrow of the slice outlives every task.
unsafe impl Send for SharedOut<'_> {}
unsafe impl Sync for SharedOut<'_> {}

impl<'a> SharedOut<'a> {
    pub(crate) fn new(out: &'a mut [f32]) -> Self {
        SharedOut { ptr: out.as_mut_ptr(), len: out.len(), _out: std::marker::PhantomData }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn set(&self, i: usize, v: f32) {
        assert!(i < self.len, "CPU kernel wrote past its output");
        // SAFETY: in bounds; no other task writes index i (see the type's comment).
        unsafe { *self.ptr.add(i) = v }
    }

    /// Elements `start .. start + len` as a slice (bounds checked).
    ///
    /// # Safety
    /// No other task may touch these elements while the slice lives.
    #[allow(clippy::mut_from_ref)] // disjoint pieces of one output, one per task: the type's point
    pub(crate) unsafe fn slice_mut(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(start + len <= self.len, "CPU kernel wrote past its output");
        // SAFETY: in bounds; exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }

    /// The raw pointer, for the GEMM, whose caller checked the extent it writes.
    pub(crate) fn ptr(&self) -> *mut f32 {
        self.ptr
    }
}

/// A kernel's parameters from the bytes the op packed (the same struct the WGSL reads).
fn params<P: bytemuck::Pod>(bytes: &[u8]) -> P {
    bytemuck::pod_read_unaligned(bytes)
}

/// An override's value, or the WGSL default 0 / false when the op did not set it.
pub(crate) fn overridden(overrides: &[(&'static str, f64)], name: &str) -> f64 {
    overrides.iter().find(|(n, _)| *n == name).map_or(0.0, |o| o.1)
}

impl CpuDevice {
    pub(crate) fn new() -> CpuDevice {
        let simd = if cfg!(target_arch = "wasm32") {
            if cfg!(target_feature = "relaxed-simd") {
                "wasm relaxed SIMD"
            } else if cfg!(target_feature = "simd128") {
                "wasm simd128"
            } else {
                "wasm, no SIMD"
            }
        } else {
            "native"
        };
        let info = AdapterInfo {
            name: format!("CPU ({} thread{}, {simd})", threads(), if threads() == 1 { "" } else { "s" }),
            backend: "cpu".into(),
            device_type: "Cpu".into(),
            driver: String::new(),
            is_software: false,
            limits: wgpu::Limits::default(),
            features: Vec::new(),
            cooperative_matrix: Vec::new(),
        };
        let inner = Inner { info, shared: Rc::default(), dispatched: Cell::new(0), helpers: RefCell::default(), solo: Cell::new(0), profile: RefCell::default() };
        CpuDevice { inner: Rc::new(inner) }
    }

    pub(crate) fn info(&self) -> &AdapterInfo {
        &self.inner.info
    }

    pub(crate) fn dispatch_count(&self) -> u64 {
        self.inner.dispatched.get()
    }

    pub(crate) fn memory(&self) -> MemoryStats {
        *self.inner.shared.stats.borrow()
    }

    pub(crate) fn reset_peak_memory(&self) {
        let mut s = self.inner.shared.stats.borrow_mut();
        s.peak_bytes = s.live_bytes;
    }

    /// The same per-tensor limit as a GPU under WebGPU's defaults for what the kernels
    /// write: both backends take the same images and tiles. (Uploads are not limited: a
    /// weight may be larger than a GPU's binding here.)
    fn check_size(&self, shape: &[usize]) -> Result<usize> {
        let n: usize = shape.iter().product();
        let max = self.inner.info.limits.max_storage_buffer_binding_size;
        if 4 * n as u64 > max {
            return Err(Error::TooLarge(format!(
                "a tensor of shape {shape:?} needs {} MiB but one tensor may hold at most {} MiB; use a smaller image or tile",
                (4 * n as u64) >> 20,
                max >> 20
            )));
        }
        Ok(n)
    }

    /// A tensor of `words`; `constant` for an upload (until it is written).
    fn tensor(&self, shape: &[usize], dtype: DType, words: Vec<u32>, constant: bool) -> Tensor {
        let shared = &self.inner.shared;
        let bytes = 4 * words.len() as u64;
        {
            let mut s = shared.stats.borrow_mut();
            s.live_bytes += bytes;
            s.peak_bytes = s.peak_bytes.max(s.live_bytes);
        }
        let id = shared.next_id.get();
        shared.next_id.set(id + 1);
        let buffer = CpuBuffer { words: RefCell::new(words), shared: shared.clone(), id, constant: Cell::new(constant), kept_by_helpers: Cell::new(false) };
        Tensor::new(Storage::Cpu(Rc::new(buffer)), shape.to_vec(), dtype)
    }

    pub(crate) fn empty(&self, shape: &[usize]) -> Result<Tensor> {
        let n = self.check_size(shape)?;
        Ok(self.tensor(shape, DType::F32, vec![0; n], false))
    }

    pub(crate) fn upload(&self, shape: &[usize], dtype: DType, words: &[u32]) -> Result<Tensor> {
        Ok(self.tensor(shape, dtype, words.to_vec(), true))
    }

    /// Lets `helpers` compute part of each large product and convolution from now on
    /// (`None`: this worker alone).
    pub(crate) fn set_kernel_helpers(&self, helpers: Option<Rc<dyn split::KernelHelpers>>) {
        *self.inner.helpers.borrow_mut() = helpers.map(split::Helpers::new);
    }

    /// Keeps kernels on this worker until the guard is dropped (while the helpers
    /// evaluate tiles of their own).
    pub(crate) fn solo(&self) -> Solo {
        self.inner.solo.set(self.inner.solo.get() + 1);
        Solo(self.clone())
    }

    pub(crate) fn upload_f16(&self, shape: &[usize], data: &[half::f16]) -> Result<Tensor> {
        // A tensor with an infinity or a NaN (a broken checkpoint, but the GPU would read
        // it as given) is kept widened, so that the kernels' conversion need only be
        // exact for finite values.
        if data.iter().any(|h| h.to_bits() & 0x7c00 == 0x7c00) {
            let words = data.iter().map(|h| widen_f16(h.to_bits())).collect();
            return Ok(self.tensor(shape, DType::F32, words, true));
        }
        Ok(self.tensor(shape, DType::F16Packed, pack_f16(data), true))
    }

    /// Starts or stops timing each kernel (natively; false in the browser).
    pub(crate) fn set_profiling(&self, on: bool) -> bool {
        if cfg!(target_arch = "wasm32") {
            return false;
        }
        *self.inner.profile.borrow_mut() = on.then(Vec::new);
        true
    }

    /// The kernels timed since profiling started or was last taken.
    pub(crate) fn take_profile(&self) -> Option<Vec<DispatchTime>> {
        self.inner.profile.borrow_mut().as_mut().map(std::mem::take)
    }

    /// Runs `kernel` now on `buffers` (inputs, then the output); `flops` is its counted
    /// work, for a profile.
    pub(crate) fn run(&self, kernel: Kernel, overrides: &[(&'static str, f64)], p: &[u8], buffers: &[&Tensor], workgroups: [u32; 3], flops: u64) -> Result<()> {
        if workgroups.contains(&0) {
            return Ok(());
        }
        #[cfg(not(target_arch = "wasm32"))]
        if self.inner.profile.borrow().is_some() {
            let start = std::time::Instant::now();
            let done = self.compute(kernel, overrides, p, buffers, workgroups);
            let time = DispatchTime { kernel, overrides: overrides_text(overrides), workgroups, flops, ms: start.elapsed().as_secs_f64() * 1e3 };
            self.inner.profile.borrow_mut().as_mut().expect("profiling").push(time);
            return done;
        }
        let _ = flops;
        self.compute(kernel, overrides, p, buffers, workgroups)
    }

    fn compute(&self, kernel: Kernel, overrides: &[(&'static str, f64)], p: &[u8], buffers: &[&Tensor], workgroups: [u32; 3]) -> Result<()> {
        let (out_t, in_t) = buffers.split_last().ok_or_else(|| Error::Shape(format!("{} without buffers", kernel.path())))?;
        let out_buf = out_t.cpu()?;
        let inputs = in_t.iter().map(|t| t.cpu()).collect::<Result<Vec<_>>>()?;
        let mut out_words = out_buf.words.try_borrow_mut().map_err(|_| busy())?;
        let in_words = inputs.iter().map(|b| b.words.try_borrow().map_err(|_| busy())).collect::<Result<Vec<_>>>()?;
        let values: Vec<Values> = in_words
            .iter()
            .zip(in_t)
            .map(|(w, t)| if t.dtype() == DType::F16Packed { Values::F16(halves(w)) } else { Values::F32(bytemuck::cast_slice(w)) })
            .collect();
        // The kernels that read no weights take f32 slices.
        let f32s = || values.iter().map(|v| v.f32(kernel)).collect::<Result<Vec<_>>>();
        let out: &mut [f32] = bytemuck::cast_slice_mut(&mut out_words);
        let batch = workgroups[2] as usize;
        let ov = |name| overridden(overrides, name);
        self.inner.dispatched.set(self.inner.dispatched.get() + 1);
        out_buf.constant.set(false);
        let mut product = |product: split::Product| match self.inner.helpers.borrow_mut().as_mut() {
            Some(helpers) if self.inner.solo.get() == 0 => helpers.run(&product, batch, &self.inner.shared.dropped, &inputs, &values, out),
            _ => product.compute(batch, &values, out, product.whole()),
        };
        match kernel {
            // The CPU has no cooperative matrices and never records those variants; they
            // compute the same product and convolution.
            Kernel::Matmul | Kernel::MatmulCoop | Kernel::MatmulF16 => product(split::Product::Matmul(params(p))),
            Kernel::Conv2d | Kernel::Conv2dCoop | Kernel::Conv2dF16 => product(split::Product::Conv2d(params(p))),
            Kernel::FlashAttention => attention::attention(&params(p), batch, ov("D4") as usize, &f32s()?, out),
            Kernel::LayerNorm => kernels::layer_norm(&params(p), &values, out),
            Kernel::ChannelLayerNorm => kernels::channel_layer_norm(&params(p), ov("RESIDUAL") != 0.0, &values, out),
            Kernel::GroupNorm => kernels::group_norm(&params(p), &values, out),
            Kernel::GroupNormStats => kernels::group_norm_stats(&params(p), &f32s()?, out),
            Kernel::Softmax => kernels::softmax(&params(p), &f32s()?, out),
            Kernel::Activation => kernels::activation(&params(p), ov("OP") as u32, &f32s()?, out),
            Kernel::Binary => kernels::binary(&params(p), ov("OP") as u32, &f32s()?, out),
            Kernel::Concat => kernels::concat(&params(p), &f32s()?, out),
            Kernel::PadCrop => kernels::pad_crop(&params(p), &f32s()?, out),
            Kernel::Transpose => kernels::transpose(&params(p), batch, &f32s()?, out),
            Kernel::GatherRows => kernels::gather_rows(&params(p), &values, out),
            Kernel::SdeUpdate => kernels::sde_update(&params(p), ov("Z") as u32, &f32s()?, out),
        }
    }
}

/// Kernels stay on this worker while this lives (see [`CpuDevice::solo`]).
pub(crate) struct Solo(CpuDevice);

impl Drop for Solo {
    fn drop(&mut self) {
        let solo = &self.0.inner.solo;
        solo.set(solo.get() - 1);
    }
}

/// Fails unless `len` elements starting at the extent's maximum index fit in `buf`: the
/// kernels index with the op's offsets and strides, checked once here.
pub(crate) fn check_extent(what: &str, max_index: usize, len: usize) -> Result<()> {
    if max_index >= len {
        return Err(Error::Shape(format!("{what}: index {max_index} out of a buffer of {len} elements")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn f16_widening_equals_half_for_every_value() {
        for h in 0..=u16::MAX {
            let want = half::f16::from_bits(h).to_f32().to_bits();
            assert_eq!(super::widen_f16(h), want, "f16 bits {h:#06x}");
            if h & 0x7c00 != 0x7c00 {
                assert_eq!(super::widen_finite_f16(h).to_bits(), want, "finite f16 bits {h:#06x}");
            }
        }
        // The slice routine (F16C where the CPU has it) at every offset against its
        // blocks of eight.
        let finite: Vec<u16> = (0..=u16::MAX).filter(|h| h & 0x7c00 != 0x7c00).collect();
        for skip in 0..8 {
            let mut got = vec![0f32; finite.len() - skip];
            super::widen_slice(&finite[skip..], &mut got);
            for (&h, g) in finite[skip..].iter().zip(&got) {
                assert_eq!(g.to_bits(), half::f16::from_bits(h).to_f32().to_bits(), "f16 bits {h:#06x} in a slice");
            }
        }
    }

    /// f16 values are kept packed unless one is infinite or NaN; either way they read
    /// back as given.
    #[test]
    fn f16_uploads_keep_their_values() {
        let dev = super::CpuDevice::new();
        for (values, packed) in [(vec![1.5, -0.0, 6e-8, 65504.0, -2.0], true), (vec![1.5, f32::INFINITY, f32::NAN, -2.0, 0.25], false)] {
            let halves: Vec<half::f16> = values.iter().map(|&v| half::f16::from_f32(v)).collect();
            let t = dev.upload_f16(&[5], &halves).unwrap();
            assert_eq!(t.dtype() == super::DType::F16Packed, packed, "{values:?}");
            let back = t.cpu().unwrap().read(t.dtype(), 5).unwrap();
            for ((b, h), v) in back.iter().zip(&halves).zip(&values) {
                assert!(b.to_bits() == h.to_f32().to_bits() || (b.is_nan() && v.is_nan()), "{v} read back as {b}");
            }
        }
    }
}
