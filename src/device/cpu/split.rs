//! One product or convolution over several workers. In the browser a wasm instance runs
//! on one thread; where the page is cross-origin isolated, the restoring worker hands
//! each helper worker a range of a large product's output columns (of a convolution's
//! output channels, or of a Winograd convolution's rows of output tiles) and computes the
//! first range itself, so that one image's classification or one tile's evaluation uses
//! every worker.
//!
//! A request carries the kernel's parameters, its range, and the inputs: activations
//! every time, weights (uploads never written since) once, after which the helper keeps
//! them until their buffer is dropped here. Each range is computed with the arithmetic of
//! the whole kernel (`gemm::matmul`, `gemm::conv2d`), so the result is the same bit for
//! bit whatever the number of workers.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ops::Range;

use super::{gemm, winograd, CpuBuffer, Values};
use crate::error::{Error, Result};
use crate::kernels::{Conv2dParams, MatmulParams};

/// Below this many multiply-adds a kernel stays whole: a request and its reply cost
/// about as much as the part a helper would take (in Chromium, 2 workers).
pub const MIN_MACS: usize = 1 << 22;

/// Other workers that compute ranges of kernels (in the browser: helper workers reached
/// through a `SharedArrayBuffer` each; in the tests: servers in this process).
pub trait KernelHelpers {
    /// How many helpers there are.
    fn count(&self) -> usize;
    /// Sends helper `helper` a request: `header` (see [`Helpers::request`]) and the
    /// words of the inputs it carries. Its reply, `reply_len` values, comes from
    /// [`KernelHelpers::receive`].
    fn send(&self, helper: usize, header: &[u32], data: &[&[u32]], reply_len: usize) -> Result<()>;
    /// Waits for helper `helper`'s reply to the request sent last.
    fn receive(&self, helper: usize) -> Result<Vec<f32>>;
    /// The least work worth splitting (the tests split every kernel).
    fn min_macs(&self) -> usize {
        MIN_MACS
    }
}

/// A product or convolution, as the CPU backend computes it.
#[derive(Clone, Copy)]
pub(crate) enum Product {
    Matmul(MatmulParams),
    Conv2d(Conv2dParams),
}

impl Product {
    /// What is split: output columns of a product; rows of output tiles of a Winograd
    /// convolution, output channels of others (see `gemm::conv2d`).
    fn width(&self) -> usize {
        match self {
            Product::Matmul(p) => p.n as usize,
            Product::Conv2d(p) => gemm::conv2d_width(p),
        }
    }

    /// Ranges start at multiples of this (whole register tiles).
    fn align(&self) -> usize {
        match self {
            Product::Matmul(_) => 16,
            Product::Conv2d(p) if !winograd::applies(p) => 8,
            Product::Conv2d(_) => 1,
        }
    }

    fn macs(&self, batch: usize) -> usize {
        match self {
            Product::Matmul(p) => batch * (p.m * p.n * p.k) as usize,
            Product::Conv2d(p) => batch * (p.cout * p.ho * p.wo) as usize * (p.cin * p.kh * p.kw) as usize,
        }
    }

    /// Computes the outputs of `range` (of [`Product::width`]).
    pub(crate) fn compute(&self, batch: usize, ins: &[Values], out: &mut [f32], range: Range<usize>) -> Result<()> {
        match self {
            Product::Matmul(p) => gemm::matmul(p, batch, ins, out, range),
            Product::Conv2d(p) => gemm::conv2d(p, batch, ins, out, range),
        }
    }

    pub(crate) fn whole(&self) -> Range<usize> {
        0..self.width()
    }

    /// Whether the kernel reads input `i` (the unused bindings hold placeholders).
    fn reads(&self, i: usize) -> bool {
        match self {
            Product::Matmul(p) => match i {
                0 | 1 => true,
                2 => p.has_bias != 0,
                _ => p.has(MatmulParams::RESIDUAL),
            },
            Product::Conv2d(p) => match i {
                0 | 2 => true,
                1 => p.split < p.cin,
                3 => p.has_bias != 0,
                4 => p.has(Conv2dParams::SCALE_SHIFT),
                5 => p.has(Conv2dParams::RESIDUAL),
                _ => p.has(Conv2dParams::RESIDUAL2),
            },
        }
    }

    /// The parts of input `i` that `range` reads, as runs (start, length), where that is
    /// not all of it: a residual's outputs of the range; the input rows (with the halo
    /// of one row) of a Winograd convolution's rows of tiles. A helper is sent these
    /// alone.
    fn input_runs(&self, i: usize, batch: usize, range: &Range<usize>) -> Option<Vec<(usize, usize)>> {
        match self {
            Product::Matmul(_) if i == 3 => Some(self.runs(batch, range)),
            Product::Conv2d(_) if i == 5 || i == 6 => Some(self.runs(batch, range)),
            Product::Conv2d(p) if (i == 0 || i == 1) && winograd::applies(p) => {
                // Tile row ty reads input rows 2 ty - 1 .. 2 ty + 2; an upsampled input
                // reads its source's rows halved.
                let (h, w) = (p.h as usize, p.w as usize);
                let (lo, hi) = ((2 * range.start).saturating_sub(1), (2 * range.end + 1).min(h));
                let (sh, sw, lo, hi) = if p.up != 0 { (h / 2, w / 2, lo / 2, (hi - 1) / 2 + 1) } else { (h, w, lo, hi) };
                let planes = batch * if i == 0 { p.split.min(p.cin) } else { p.cin - p.split.min(p.cin) } as usize;
                (lo < hi).then(|| (0..planes).map(|plane| (plane * sh * sw + lo * sw, (hi - lo) * sw)).collect())
            }
            _ => None,
        }
    }

    /// The outputs of `range` as runs (start, length) of the output buffer, in order.
    fn runs(&self, batch: usize, range: &Range<usize>) -> Vec<(usize, usize)> {
        match self {
            Product::Matmul(p) => (0..batch)
                .flat_map(|z| {
                    let (g, bi) = (z / p.per_group as usize, z % p.per_group as usize);
                    let base = (p.c_off + g as u32 * p.c_sg + bi as u32 * p.c_sb) as usize;
                    (0..p.m as usize).map(move |r| (base + r * p.c_sm as usize + range.start, range.len()))
                })
                .collect(),
            Product::Conv2d(p) if !winograd::applies(p) => {
                let npix = (p.ho * p.wo) as usize;
                (0..batch).map(|b| ((b * p.cout as usize + range.start) * npix, range.len() * npix)).collect()
            }
            // Rows 2 start .. 2 end of every output channel's plane.
            Product::Conv2d(p) => {
                let (npix, wo) = ((p.ho * p.wo) as usize, p.wo as usize);
                let (first, last) = (2 * range.start * wo, (2 * range.end * wo).min(npix));
                (0..batch * p.cout as usize).map(|plane| (plane * npix + first, last - first)).collect()
            }
        }
    }

    fn code(&self) -> (u32, &[u32]) {
        match self {
            Product::Matmul(p) => (0, bytemuck::cast_slice(std::slice::from_ref(p))),
            Product::Conv2d(p) => (1, bytemuck::cast_slice(std::slice::from_ref(p))),
        }
    }

    fn decode(code: u32, words: &[u32]) -> Result<Product> {
        let params = |size: usize| {
            if words.len() * 4 != size {
                return Err(malformed("parameters of the wrong size"));
            }
            Ok(bytemuck::cast_slice::<u32, u8>(words))
        };
        match code {
            0 => Ok(Product::Matmul(bytemuck::pod_read_unaligned(params(std::mem::size_of::<MatmulParams>())?))),
            1 => Ok(Product::Conv2d(bytemuck::pod_read_unaligned(params(std::mem::size_of::<Conv2dParams>())?))),
            _ => Err(malformed("an unknown kernel")),
        }
    }
}

/// Splits `len` into at most `parts` ranges, each but the last a multiple of `align`.
fn parts(len: usize, parts: usize, align: usize) -> Vec<Range<usize>> {
    let step = len.div_ceil(parts.max(1)).next_multiple_of(align).max(align);
    (0..len).step_by(step).map(|s| s..(s + step).min(len)).collect()
}

// How a request carries each input.
const ABSENT: u32 = 0;
const SENT: u32 = 1;
const SENT_TO_KEEP: u32 = 2;
const KEPT: u32 = 3;

/// The restoring worker's side: its helpers and what each of them keeps.
pub(crate) struct Helpers {
    helpers: std::rc::Rc<dyn KernelHelpers>,
    /// The buffers each helper keeps.
    kept: Vec<HashSet<u64>>,
    /// Kept buffers dropped here, which each helper is told to forget with its next request.
    forget: Vec<Vec<u64>>,
}

impl Helpers {
    pub(crate) fn new(helpers: std::rc::Rc<dyn KernelHelpers>) -> Helpers {
        let n = helpers.count();
        Helpers { helpers, kept: vec![HashSet::new(); n], forget: vec![Vec::new(); n] }
    }

    /// Computes `product` here and on the helpers (or here alone where it is small),
    /// its inputs `values` in `buffers`. `dropped` lists the device's buffers dropped
    /// since the last call.
    pub(crate) fn run(&mut self, product: &Product, batch: usize, dropped: &RefCell<Vec<u64>>, buffers: &[&CpuBuffer], values: &[Values], out: &mut [f32]) -> Result<()> {
        let parts = if product.macs(batch) >= self.helpers.min_macs() { parts(product.width(), 1 + self.helpers.count(), product.align()) } else { Vec::new() };
        if parts.len() < 2 {
            return product.compute(batch, values, out, product.whole());
        }
        for id in dropped.borrow_mut().drain(..) {
            for (kept, forget) in self.kept.iter_mut().zip(&mut self.forget) {
                if kept.remove(&id) {
                    forget.push(id);
                }
            }
        }
        // Every request sent is answered before this returns, whatever fails, so that the
        // next request's reply is its own.
        let mut failed = None;
        let mut sent = Vec::new();
        for (helper, range) in parts[1..].iter().enumerate() {
            let (header, data) = self.request(helper, product, batch, range, out.len(), buffers, values);
            let data: Vec<&[u32]> = data.iter().map(|d| &d[..]).collect();
            // Where the helper's reply goes in `out`.
            let runs = product.runs(batch, range);
            match self.helpers.send(helper, &header, &data, runs.iter().map(|r| r.1).sum()) {
                Ok(()) => sent.push((helper, runs)),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if failed.is_none() {
            failed = product.compute(batch, values, out, parts[0].clone()).err();
        }
        for (helper, runs) in sent {
            match self.helpers.receive(helper) {
                Ok(reply) => {
                    if reply.len() != runs.iter().map(|r| r.1).sum::<usize>() || runs.last().is_some_and(|&(s, l)| s + l > out.len()) {
                        failed.get_or_insert(Error::Shape(format!("helper worker {helper} answered {} values for a kernel range of another size", reply.len())));
                        continue;
                    }
                    let mut from = 0;
                    for (start, len) in runs {
                        out[start..start + len].copy_from_slice(&reply[from..from + len]);
                        from += len;
                    }
                }
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Helper `helper`'s request for `range` of `product`: the header, then the words of
    /// the inputs it carries. Header words: kernel, batch, range start and end, output
    /// length; the count of buffers to forget and their ids (two words each); the count
    /// of parameter words and the words; the count of inputs and, for each, how it
    /// comes (`ABSENT`, `SENT`, `SENT_TO_KEEP`, `KEPT`), whether f16, its id (two words),
    /// its length in words, and the count of runs sent (0: all of it) and the runs
    /// (start and length each; see [`Product::input_runs`]).
    #[allow(clippy::too_many_arguments)]
    fn request<'v>(&mut self, helper: usize, product: &Product, batch: usize, range: &Range<usize>, out_len: usize, buffers: &[&CpuBuffer], values: &[Values<'v>]) -> (Vec<u32>, Vec<Cow<'v, [u32]>>) {
        let (code, params) = product.code();
        let mut header = vec![code, batch as u32, range.start as u32, range.end as u32, out_len as u32];
        let forget = std::mem::take(&mut self.forget[helper]);
        header.push(forget.len() as u32);
        for id in forget {
            header.extend([id as u32, (id >> 32) as u32]);
        }
        header.push(params.len() as u32);
        header.extend_from_slice(params);
        header.push(values.len() as u32);
        let mut data = Vec::new();
        for (i, (buffer, v)) in buffers.iter().zip(values).enumerate() {
            let (words, f16): (&'v [u32], bool) = match *v {
                Values::F32(v) => (bytemuck::cast_slice(v), false),
                // Packed halves come from whole words (see `halves`).
                Values::F16(v) => (bytemuck::cast_slice(v), true),
            };
            let how = if !product.reads(i) {
                ABSENT
            } else if !buffer.constant.get() {
                SENT
            } else if self.kept[helper].insert(buffer.id) {
                buffer.kept_by_helpers.set(true);
                SENT_TO_KEEP
            } else {
                KEPT
            };
            header.extend([how, u32::from(f16), buffer.id as u32, (buffer.id >> 32) as u32, words.len() as u32]);
            let runs = if how == SENT { product.input_runs(i, batch, range).filter(|r| r.iter().all(|&(s, l)| s + l <= words.len())) } else { None };
            header.push(runs.as_ref().map_or(0, Vec::len) as u32);
            match runs {
                Some(runs) => {
                    let mut part = Vec::with_capacity(runs.iter().map(|r| r.1).sum());
                    for &(start, len) in &runs {
                        header.extend([start as u32, len as u32]);
                        part.extend_from_slice(&words[start..start + len]);
                    }
                    data.push(Cow::Owned(part));
                }
                None if how == SENT || how == SENT_TO_KEEP => data.push(Cow::Borrowed(words)),
                None => {}
            }
        }
        (header, data)
    }
}

fn malformed(what: &str) -> Error {
    Error::Usage(format!("a kernel request from the restoring worker was malformed: {what}"))
}

/// An input as a request brings it (the bool: packed f16).
enum Input {
    Absent,
    Whole(bool, Vec<u32>),
    /// Runs of it, in the server's buffer for its slot.
    Partial(bool),
    Kept(u64),
}

/// A helper's side: computes the ranges it is sent, keeping the weights it is told to.
#[derive(Default)]
pub struct KernelServer {
    kept: HashMap<u64, (bool, Vec<u32>)>,
    /// The inputs sent by runs, at their places in buffers of their whole length (the
    /// rest is never read), one per input slot, reused.
    partial: Vec<Vec<u32>>,
    /// The whole output, of which each request's range is computed (reused).
    out: Vec<f32>,
}

impl KernelServer {
    /// Answers a request (see [`Helpers::request`]) with its range's outputs, in order.
    pub fn serve(&mut self, header: &[u32], mut data: Vec<Vec<u32>>) -> Result<Vec<f32>> {
        let mut words = header.iter().copied();
        let mut next = || words.next().ok_or_else(|| malformed("a short header"));
        let (code, batch, start, end, out_len) = (next()?, next()? as usize, next()? as usize, next()? as usize, next()? as usize);
        for _ in 0..next()? {
            let id = next()? as u64 | (next()? as u64) << 32;
            self.kept.remove(&id);
        }
        let params: Vec<u32> = (0..next()?).map(|_| next()).collect::<Result<_>>()?;
        let product = Product::decode(code, &params)?;
        let count = next()? as usize;
        let mut inputs = Vec::with_capacity(count);
        let mut carried = data.drain(..);
        self.partial.resize(self.partial.len().max(count), Vec::new());
        for slot in 0..count {
            let (how, f16, id, len) = (next()?, next()? != 0, next()? as u64 | (next()? as u64) << 32, next()? as usize);
            let runs: Vec<(usize, usize)> = (0..next()?).map(|_| Ok((next()? as usize, next()? as usize))).collect::<Result<_>>()?;
            let input = match how {
                ABSENT => Input::Absent,
                SENT | SENT_TO_KEEP => {
                    let words = carried.next().ok_or_else(|| malformed("fewer inputs than its header lists"))?;
                    let expected = if runs.is_empty() { len } else { runs.iter().map(|r| r.1).sum() };
                    if words.len() != expected {
                        return Err(malformed("an input of another length than its header says"));
                    }
                    if how == SENT_TO_KEEP {
                        self.kept.insert(id, (f16, words));
                        Input::Kept(id)
                    } else if runs.is_empty() {
                        Input::Whole(f16, words)
                    } else {
                        let whole = &mut self.partial[slot];
                        whole.resize(len, 0);
                        let mut from = 0;
                        for (start, n) in runs {
                            let to = whole.get_mut(start..start + n).ok_or_else(|| malformed("a run outside its input"))?;
                            to.copy_from_slice(&words[from..from + n]);
                            from += n;
                        }
                        Input::Partial(f16)
                    }
                }
                KEPT => Input::Kept(id),
                _ => return Err(malformed("an unknown input kind")),
            };
            inputs.push(input);
        }
        let values = inputs
            .iter()
            .enumerate()
            .map(|(slot, input)| {
                let (f16, words) = match input {
                    Input::Absent => return Ok(Values::F32(&[])),
                    Input::Whole(f16, words) => (*f16, words),
                    Input::Partial(f16) => (*f16, &self.partial[slot]),
                    Input::Kept(id) => {
                        let (f16, words) = self.kept.get(id).ok_or_else(|| Error::Usage(format!("a helper worker was asked for weight {id}, which it was not sent")))?;
                        (*f16, words)
                    }
                };
                Ok(if f16 { Values::F16(bytemuck::cast_slice(words)) } else { Values::F32(bytemuck::cast_slice(words)) })
            })
            .collect::<Result<Vec<_>>>()?;
        let range = start..end;
        if end > product.width() || start > end {
            return Err(malformed("a range outside the kernel"));
        }
        let runs = product.runs(batch, &range);
        if runs.last().is_some_and(|&(s, l)| s + l > out_len) {
            return Err(malformed("an output too short for its range"));
        }
        self.out.resize(out_len, 0.0);
        product.compute(batch, &values, &mut self.out, range)?;
        let mut reply = Vec::with_capacity(runs.iter().map(|r| r.1).sum());
        for (s, l) in runs {
            reply.extend_from_slice(&self.out[s..s + l]);
        }
        Ok(reply)
    }

    /// Bytes of the weights kept.
    pub fn kept_bytes(&self) -> u64 {
        self.kept.values().map(|(_, w)| 4 * w.len() as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::{parts, Helpers, KernelHelpers, KernelServer, Product, Values};
    use crate::device::cpu::{halves, CpuDevice};
    use crate::device::{DType, Tensor};
    use crate::error::Result;
    use crate::kernels::{Conv2dParams, MatmulParams};

    /// Servers in this process, each reply kept until received; the first reply received
    /// while `failing` is set fails instead (as a helper's error does).
    struct Local(Vec<RefCell<KernelServer>>, RefCell<Vec<Option<Result<Vec<f32>>>>>, std::cell::Cell<bool>);

    impl KernelHelpers for Local {
        fn count(&self) -> usize {
            self.0.len()
        }
        fn send(&self, helper: usize, header: &[u32], data: &[&[u32]], _reply_len: usize) -> Result<()> {
            let slot = &mut self.1.borrow_mut()[helper];
            assert!(slot.is_none(), "a request sent before the last reply was received");
            *slot = Some(self.0[helper].borrow_mut().serve(header, data.iter().map(|d| d.to_vec()).collect()));
            Ok(())
        }
        fn receive(&self, helper: usize) -> Result<Vec<f32>> {
            let reply = self.1.borrow_mut()[helper].take().expect("a request first");
            if self.2.replace(false) {
                return Err(crate::error::Error::Helper("a simulated failure".into()));
            }
            reply
        }
        fn min_macs(&self) -> usize {
            0
        }
    }

    /// `product` on this worker and `count` servers, after a first call that a server's
    /// failure fails: its inputs uploaded (the weight kept by the servers; the others activations, sent by runs where they can
    /// be), computed twice so that the second request finds the weight kept.
    fn through_servers(product: &Product, batch: usize, ins: &[Values], out_len: usize, count: usize) -> Vec<f32> {
        let weight = match product {
            Product::Matmul(_) => 1,
            Product::Conv2d(_) => 2,
        };
        let dev = CpuDevice::new();
        let tensors: Vec<Tensor> = ins
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let t = match v {
                    Values::F32(v) => dev.upload(&[v.len()], DType::F32, bytemuck::cast_slice(v)).unwrap(),
                    Values::F16(v) => dev.upload(&[v.len()], DType::F16Packed, bytemuck::cast_slice(v)).unwrap(),
                };
                if i != weight {
                    if let Values::F32(v) = v {
                        t.cpu().unwrap().write(v).unwrap();
                    }
                }
                t
            })
            .collect();
        let buffers: Vec<_> = tensors.iter().map(|t| t.cpu().unwrap()).collect();
        let words: Vec<_> = buffers.iter().map(|b| b.words.borrow()).collect();
        let values: Vec<Values> = words.iter().zip(&tensors).map(|(w, t)| if t.dtype() == DType::F16Packed { Values::F16(halves(w)) } else { Values::F32(bytemuck::cast_slice(w)) }).collect();
        let mut helpers = Helpers::new(Rc::new(Local((0..count).map(|_| RefCell::default()).collect(), RefCell::new(vec![None; count]), true.into())));
        let mut out = vec![0f32; out_len];
        // A helper's failure fails the kernel with its message, after every reply was
        // received (the next kernel's replies are its own: `Local::send` checks).
        let failed = helpers.run(product, batch, &RefCell::default(), &buffers, &values, &mut out).unwrap_err();
        assert!(failed.to_string().contains("a simulated failure"), "{failed}");
        for _ in 0..2 {
            out.fill(f32::NAN);
            helpers.run(product, batch, &RefCell::default(), &buffers, &values, &mut out).unwrap();
        }
        out
    }

    /// Products and convolutions (im2col, 1x1 and Winograd, of an input, a concatenation
    /// and an upsampling; f32 and f16 weights; bias, time conditioning, SiLU and
    /// residuals) computed in ranges of 2 and 3 parts, here and through servers: the
    /// same bits as computed whole; and a server's failure fails only the call it
    /// answers.
    #[test]
    fn ranges_compute_the_bits_of_the_whole() {
        let mut rng = crate::weights::SplitMix::new(3);
        let mut values = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.uniform() as f32 - 0.5).collect() };
        let halves = |v: &[f32]| -> Vec<u16> { v.iter().map(|&x| half::f16::from_f32(x).to_bits()).collect() };
        let check = |what: &str, product: Product, batch: usize, ins: &[Values], out_len: usize| {
            let mut whole = vec![0f32; out_len];
            product.compute(batch, ins, &mut whole, product.whole()).unwrap();
            for n in [2, 3] {
                let mut split = vec![0f32; out_len];
                for range in parts(product.whole().len(), n, product.align()) {
                    product.compute(batch, ins, &mut split, range).unwrap();
                }
                assert!(whole.iter().zip(&split).all(|(a, b)| a.to_bits() == b.to_bits()), "{what} in {n} parts");
                let served = through_servers(&product, batch, ins, out_len, n - 1);
                assert!(whole.iter().zip(&served).all(|(a, b)| a.to_bits() == b.to_bits()), "{what} on {} servers", n - 1);
            }
        };
        // A linear layer of 50 tokens, f16 weight [n, k] read transposed, bias, residual.
        let (m, k, n) = (50u32, 96u32, 200u32);
        let (a, w, bias, res) = (values((m * k) as usize), values((n * k) as usize), values(n as usize), values((m * n) as usize));
        let wh = halves(&w);
        let p = MatmulParams { m, n, k, has_bias: 1, a_sm: k, a_sk: 1, b_sk: 1, b_sn: k, c_sm: n, alpha: 1.0, per_group: 1, flags: MatmulParams::RESIDUAL, k_slices: 1, ..bytemuck::Zeroable::zeroed() };
        for (what, weight) in [("matmul f32", Values::F32(&w)), ("matmul f16", Values::F16(&wh))] {
            check(what, Product::Matmul(p), 1, &[Values::F32(&a), weight, Values::F32(&bias), Values::F32(&res)], (m * n) as usize);
        }
        // Convolutions of 2 images: 3x3 by Winograd (32 channels, 34x34) and by im2col
        // (12 channels), 1x1; the first with every epilogue step.
        for (cin, split, up, cout, hw, taps) in [(32u32, 32u32, 0u32, 40u32, 34u32, 3u32), (32, 20, 0, 24, 35, 3), (24, 24, 1, 16, 36, 3), (12, 12, 0, 24, 20, 3), (24, 24, 0, 48, 16, 1)] {
            let (batch, npix) = (2usize, hw * hw);
            let src = if up == 1 { npix / 4 } else { npix };
            let (x, x2) = (values(batch * (split * src) as usize), values(batch * ((cin - split) * src) as usize));
            let (w, bias) = (values((cout * cin * taps * taps) as usize), values(cout as usize));
            let (table, r1, r2) = (values(batch * 2 * cout as usize), values(batch * (cout * npix) as usize), values(batch * (cout * npix) as usize));
            let wh = halves(&w);
            let flags = if taps == 3 && cin == 32 { Conv2dParams::SCALE_SHIFT | Conv2dParams::SILU | Conv2dParams::RESIDUAL | Conv2dParams::RESIDUAL2 } else { 0 };
            let pad = taps / 2;
            let p = Conv2dParams { cin, h: hw, w: hw, cout, ho: hw, wo: hw, kh: taps, kw: taps, stride: 1, pad, has_bias: 1, split, up, flags, k_slices: 1, ..bytemuck::Zeroable::zeroed() };
            for (what, weight) in [("f32", Values::F32(&w)), ("f16", Values::F16(&wh))] {
                let ins = [Values::F32(&x), Values::F32(&x2), weight, Values::F32(&bias), Values::F32(&table), Values::F32(&r1), Values::F32(&r2)];
                check(&format!("conv2d {cin} ({split} + {}, up {up})->{cout} {taps}x{taps} at {hw}x{hw} {what}", cin - split), Product::Conv2d(p), batch, &ins, batch * (cout * npix) as usize);
            }
        }
    }
}
