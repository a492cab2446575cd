//! The only wasm-bindgen surface: an `Engine` the browser worker drives (www/lib/worker.js).
//! Everything heavy runs in that worker; the page talks to it through www/lib/daclip.js.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use crate::error::Error;
use crate::device::{Device, DeviceChoice, KernelHelpers, KernelServer};
use crate::models::clip::preprocess::ImageRef;
use crate::models::clip::DaClip;
use crate::models::unet::ConditionalUNet;
use crate::restore::{NoisePredictor, Rect, RestoreOptions, Restorer, UNetPredictor};
use crate::restore::tiles::{TileFuture, TileHelpers};
use crate::sde::{Grid, IrSde, Sampler, PUBLISHED_T};
use crate::weights::{self, DeviceDType, Format, Source};
use crate::models::{Checkpoint, ConvertOptions, StoreDType};

fn js_error(e: Error) -> JsError {
    JsError::new(&e.to_string())
}

/// A weights file as a Blob (a File, a download, a Cache Storage entry), read piece by
/// piece with the worker's synchronous FileReader: Chromium keeps large Blobs on disk, so
/// a 3 GB checkpoint never enters wasm memory whole (nor a single ArrayBuffer, which
/// cannot hold it).
struct BlobSource {
    blob: web_sys::Blob,
    reader: web_sys::FileReaderSync,
}

impl BlobSource {
    fn new(blob: web_sys::Blob) -> Result<BlobSource, Error> {
        let reader = web_sys::FileReaderSync::new().map_err(|e| Error::Io(format!("weights are read in a worker (FileReaderSync): {}", js_text(&e))))?;
        Ok(BlobSource { blob, reader })
    }
}

fn js_text(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())).or_else(|| e.as_string()).unwrap_or_else(|| format!("{e:?}"))
}

impl Source for BlobSource {
    fn len(&self) -> u64 {
        self.blob.size() as u64
    }

    fn read_at(&self, offset: u64, len: usize) -> Result<Cow<'_, [u8]>, Error> {
        weights::check_range(offset, len, Source::len(self))?;
        let read = || -> Result<Vec<u8>, JsValue> {
            let piece = self.blob.slice_with_f64_and_f64(offset as f64, (offset + len as u64) as f64)?;
            let bytes: js_sys::ArrayBuffer = self.reader.read_as_array_buffer(&piece)?;
            Ok(js_sys::Uint8Array::new(&bytes).to_vec())
        };
        read().map(Cow::Owned).map_err(|e| Error::Io(format!("reading {len} bytes of the weights at {offset}: {} (was the file changed or deleted?)", js_text(&e))))
    }
}

/// The pieces of a conversion handed to JavaScript as they are written.
const CHUNK: usize = 8 << 20;

struct ChunkSink(js_sys::Function);

impl std::io::Write for ChunkSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.call1(&JsValue::NULL, &js_sys::Uint8Array::from(buf)).map_err(|e| std::io::Error::other(js_text(&e)))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct Models {
    daclip: Option<Rc<DaClip>>,
    unet: Option<Rc<ConditionalUNet>>,
}

/// A GPU device and the loaded models.
#[wasm_bindgen]
pub struct Engine {
    dev: Device,
    models: Rc<RefCell<Models>>,
    /// Measured seconds of one network evaluation per tile size, for the loaded UNet.
    tile_seconds: RefCell<HashMap<(usize, usize), f64>>,
    /// As a helper worker: the ranges of the restoring worker's kernels.
    kernel_server: RefCell<KernelServer>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Estimate {
    tiles: usize,
    tile_width: usize,
    tile_height: usize,
    steps: usize,
    seconds_per_tile: f64,
    seconds: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AdapterDescription {
    /// "webgpu" or "cpu".
    device: &'static str,
    name: String,
    backend: String,
    is_software: bool,
    /// Why this device runs.
    reason: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JsRestoreOptions {
    steps: Option<usize>,
    seed: Option<u64>,
    sampler: Option<String>,
    grid: Option<String>,
    tile: Option<usize>,
    overlap: Option<usize>,
    preview: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsClassification {
    labels: Vec<String>,
    probabilities: Vec<f32>,
    image_features: Vec<f32>,
    degradation_features: Vec<f32>,
}

fn image<'a>(rgba: &'a [u8], width: usize, height: usize) -> ImageRef<'a> {
    ImageRef { width, height, channels: 4, data: rgba }
}

/// The JS restore options, checked.
fn restore_options(options: JsValue) -> Result<RestoreOptions, JsError> {
    let js: JsRestoreOptions = if options.is_undefined() || options.is_null() { JsRestoreOptions::default() } else { serde_wasm_bindgen::from_value(options)? };
    let mut opts = RestoreOptions { preview: js.preview, tile: js.tile, overlap: js.overlap, ..Default::default() };
    if let Some(s) = js.steps {
        opts.steps = s;
    }
    if let Some(s) = js.seed {
        opts.seed = s;
    }
    if let Some(s) = js.sampler {
        opts.sampler = s.parse::<Sampler>().map_err(js_error)?;
    }
    if let Some(g) = js.grid {
        opts.grid = g.parse::<Grid>().map_err(js_error)?;
    }
    Ok(opts)
}

/// Opens the device `choice` names ("auto", "webgpu" or "cpu"): "auto" takes a hardware
/// WebGPU adapter and the CPU backend where WebGPU is missing or only a fallback adapter
/// exists. "webgpu" fails with a message saying how to get WebGPU where there is none.
#[wasm_bindgen(js_name = createEngine)]
pub async fn create_engine(choice: String) -> Result<Engine, JsError> {
    // A panic (a bug: wasm32 cannot unwind, the instance is unusable afterwards) is logged
    // and its message left in `globalThis.daclipPanic`, where the worker reads it to tell
    // the page what happened before it starts a fresh instance.
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        let _ = js_sys::Reflect::set(&js_sys::global(), &"daclipPanic".into(), &info.to_string().into());
    }));
    let dev = Device::open(DeviceChoice::parse(&choice).map_err(js_error)?).await.map_err(js_error)?;
    Ok(Engine { dev, models: Rc::default(), tile_seconds: RefCell::default(), kernel_server: RefCell::default() })
}

#[wasm_bindgen]
impl Engine {
    /// `{ device, name, backend, isSoftware, reason }` of the device.
    #[wasm_bindgen(js_name = adapterInfo)]
    pub fn adapter_info(&self) -> Result<JsValue, JsError> {
        let i = self.dev.info();
        let device = if self.dev.is_cpu() { "cpu" } else { "webgpu" };
        let d = AdapterDescription { device, name: i.name.clone(), backend: i.backend.clone(), is_software: i.is_software, reason: self.dev.reason().to_string() };
        Ok(serde_wasm_bindgen::to_value(&d)?)
    }

    /// Loads DA-CLIP weights (safetensors or the original .pt) from a Blob, read one
    /// tensor at a time, checked, uploaded as f16; the ten trained names' text features
    /// are computed now when the file does not store them. The text tower is kept only
    /// with `keep_text` (custom labels): otherwise it runs for the ten names before the
    /// image towers load, and is dropped. With `on_chunk`, an original .pt is also
    /// converted to f16 safetensors for the caller to cache (the text tower replaced by
    /// those features unless `keep_text`), handed over in pieces of a few MiB: the file
    /// and its conversion are never whole in wasm memory.
    #[wasm_bindgen(js_name = loadDaclip)]
    pub async fn load_daclip(&self, blob: web_sys::Blob, keep_text: bool, on_chunk: Option<js_sys::Function>) -> Result<(), JsError> {
        let source = BlobSource::new(blob).map_err(js_error)?;
        let (model, torch) = {
            let ckpt = Checkpoint::read(&source, None).map_err(js_error)?;
            let model = if keep_text { DaClip::load(&self.dev, &ckpt, DeviceDType::F16) } else { DaClip::load_without_text(&self.dev, &ckpt, DeviceDType::F16).await };
            (model.map_err(js_error)?, ckpt.weights.format == Format::Torch)
        };
        model.prepare_degradation_features(&self.dev).await.map_err(js_error)?;
        if let (Some(on_chunk), true) = (on_chunk, torch) {
            let mut out = std::io::BufWriter::with_capacity(CHUNK, ChunkSink(on_chunk));
            model.converted(&self.dev, &source, keep_text, &mut out).await.map_err(js_error)?;
        }
        self.models.borrow_mut().daclip = Some(Rc::new(model));
        Ok(())
    }

    /// Loads the restoration UNet (safetensors or the original .pth) from a Blob, read
    /// one tensor at a time, uploaded as f16. With `on_chunk`, an original .pth is also
    /// converted to f16 safetensors for the caller to cache, handed over in pieces.
    #[wasm_bindgen(js_name = loadUnet)]
    pub fn load_unet(&self, blob: web_sys::Blob, on_chunk: Option<js_sys::Function>) -> Result<(), JsError> {
        let source = BlobSource::new(blob).map_err(js_error)?;
        let ckpt = Checkpoint::read(&source, None).map_err(js_error)?;
        let model = ConditionalUNet::load(&self.dev, &ckpt, DeviceDType::F16).map_err(js_error)?;
        if let Some(d) = &self.models.borrow().daclip {
            Restorer::new(d, &model).map_err(js_error)?;
        }
        if let (Some(on_chunk), Format::Torch) = (on_chunk, ckpt.weights.format) {
            let mut out = std::io::BufWriter::with_capacity(CHUNK, ChunkSink(on_chunk));
            crate::models::convert(&source, ConvertOptions::new(StoreDType::F16), &mut out).map_err(js_error)?;
        }
        drop(ckpt);
        self.models.borrow_mut().unet = Some(Rc::new(model));
        self.tile_seconds.borrow_mut().clear();
        Ok(())
    }

    /// Ranks `labels` (or the ten trained degradations when null) for an RGBA image.
    pub async fn classify(&self, rgba: Vec<u8>, width: usize, height: usize, labels: Option<Vec<String>>) -> Result<JsValue, JsError> {
        let daclip = self.models.borrow().daclip.clone().ok_or_else(|| JsError::new("no DA-CLIP weights are loaded"))?;
        let refs: Option<Vec<&str>> = labels.as_ref().map(|l| l.iter().map(String::as_str).collect());
        let c = daclip.classify(&self.dev, image(&rgba, width, height), refs.as_deref()).await.map_err(js_error)?;
        let out = JsClassification { labels: c.labels, probabilities: c.probabilities, image_features: c.image_features, degradation_features: c.degradation_features };
        Ok(serde_wasm_bindgen::to_value(&out)?)
    }

    /// Restores an RGBA image; returns RGBA bytes of the same size, the alpha channel
    /// unchanged. `on_step(step, total,
    /// tile, tiles, preview)` is called after every tile (`tile == tiles`: the step is
    /// finished; `preview` is then `{ width, height, data }` RGBA when asked for, else
    /// undefined) and cancels the restore by returning false.
    ///
    /// `helpers` helper workers (each with this UNet loaded) share a tiled restore's tiles:
    /// `evaluate(helper, degradation, image, x, mu, width, height, t)` resolves to the
    /// tile's noise (a Float32Array, planar [3, height, width]) from helper `helper`'s
    /// `evaluateTile`.
    #[allow(clippy::too_many_arguments)]
    pub async fn restore(&self, rgba: Vec<u8>, width: usize, height: usize, options: JsValue, on_step: js_sys::Function, helpers: usize, evaluate: Option<js_sys::Function>) -> Result<Vec<u8>, JsError> {
        let (daclip, unet) = self.restore_models()?;
        let opts = restore_options(options)?;
        let restorer = Restorer::new(&daclip, &unet).map_err(js_error)?;
        let mut callback = |s: crate::restore::StepInfo| {
            let preview = match s.preview {
                Some(p) => {
                    let obj = js_sys::Object::new();
                    let rgba: Vec<u8> = p.data.chunks(3).flat_map(|c| [c[0], c[1], c[2], 255]).collect();
                    let _ = js_sys::Reflect::set(&obj, &"width".into(), &(p.width as u32).into());
                    let _ = js_sys::Reflect::set(&obj, &"height".into(), &(p.height as u32).into());
                    let _ = js_sys::Reflect::set(&obj, &"data".into(), &js_sys::Uint8ClampedArray::from(&rgba[..]).into());
                    obj.into()
                }
                None => JsValue::UNDEFINED,
            };
            let p = s.progress;
            let args = js_sys::Array::of5(&(p.step as u32).into(), &(p.total as u32).into(), &(p.tile as u32).into(), &(p.tiles as u32).into(), &preview);
            let r = on_step.apply(&JsValue::NULL, &args);
            // Anything but an explicit `false` (or a throwing callback) continues.
            matches!(r, Ok(v) if v != JsValue::FALSE)
        };
        let mut helpers = evaluate.map(|evaluate| HelperWorkers { count: helpers, evaluate, context: None });
        let shared = helpers.as_mut().map(|h| h as &mut dyn TileHelpers);
        let out = restorer.restore_sharing(&self.dev, image(&rgba, width, height), &opts, shared, &mut callback).await.map_err(js_error)?.to_rgb8();
        // Restoration works on RGB, as the original; the alpha channel is copied through.
        Ok(out.data.chunks(3).zip(rgba.chunks(4)).flat_map(|(c, a)| [c[0], c[1], c[2], a[3]]).collect())
    }

    /// One tile's noise for a helper worker: the loaded UNet conditioned on the restore's
    /// embeddings (`degradation`, `image`) at network time `t`, on the tile's state `x`
    /// and LQ image `mu` (planar [3, height, width]); the same values the restoring
    /// worker would compute for it.
    #[allow(clippy::too_many_arguments)]
    #[wasm_bindgen(js_name = evaluateTile)]
    pub async fn evaluate_tile(&self, degradation: Vec<f32>, image: Vec<f32>, x: Vec<f32>, mu: Vec<f32>, width: usize, height: usize, t: f32) -> Result<Vec<f32>, JsError> {
        let unet = self.models.borrow().unet.clone().ok_or_else(|| JsError::new("a helper worker needs the UNet weights"))?;
        let n = 3 * width * height;
        if x.len() != n || mu.len() != n || degradation.len() != image.len() {
            return Err(JsError::new(&format!("a tile of {width}x{height} needs {n} values, got {} and {}", x.len(), mu.len())));
        }
        let dev = &self.dev;
        let context = |v: &[f32]| dev.upload(&[1, v.len()], v);
        let (degra, img) = (context(&degradation).map_err(js_error)?, context(&image).map_err(js_error)?);
        let mut predictor = UNetPredictor::new(dev, &unet, &degra, &img, &[t]).map_err(js_error)?;
        let shape = [1, 3, height, width];
        let at = Rect { x: 0, y: 0, width, height };
        let noise = predictor.predict_noise(dev, &dev.upload(&shape, &x).map_err(js_error)?, &dev.upload(&shape, &mu).map_err(js_error)?, at, t).map_err(js_error)?;
        dev.read(&noise).await.map_err(js_error)
    }

    /// Lets `count` helper workers compute part of each large product and convolution
    /// (CPU backend; 0 stops it): `send(helper, header, data, replyLength)` posts helper
    /// `helper` a request (a Uint32Array and an array of them, each the worker's to
    /// transfer), and `receive(helper)` blocks until that helper's reply and returns it
    /// (a Float32Array), or throws its error. Each helper answers with `computeKernel`.
    /// Kernels of fewer multiply-adds than `min_macs` (default: where splitting pays)
    /// stay whole; the tests split every kernel of the tiny models with 0.
    #[wasm_bindgen(js_name = useKernelHelpers)]
    pub fn use_kernel_helpers(&self, count: usize, send: js_sys::Function, receive: js_sys::Function, min_macs: Option<usize>) -> Result<(), JsError> {
        let min_macs = min_macs.unwrap_or(crate::device::SPLIT_MIN_MACS);
        let helpers: Option<Rc<dyn KernelHelpers>> = (count > 0).then(|| Rc::new(KernelWorkers { count, send, receive, min_macs }) as Rc<dyn KernelHelpers>);
        self.dev.set_kernel_helpers(helpers).map_err(js_error)
    }

    /// As a helper worker: computes the range of a kernel the restoring worker sent
    /// (`header` and the inputs `data` it carries, Uint32Arrays), keeping its weights.
    #[wasm_bindgen(js_name = computeKernel)]
    pub fn compute_kernel(&self, header: Vec<u32>, data: js_sys::Array) -> Result<Vec<f32>, JsError> {
        let data = data.iter().map(|d| js_sys::Uint32Array::from(d).to_vec()).collect();
        self.kernel_server.borrow_mut().serve(&header, data).map_err(js_error)
    }

    /// How long a restore of a `width` x `height` image with `options` will take here:
    /// `{ tiles, tileWidth, tileHeight, steps, secondsPerTile, seconds }`, from one timed
    /// network evaluation on a tile (measured once per tile size and model), the tiles
    /// shared by `workers` workers side by side.
    pub async fn estimate(&self, width: usize, height: usize, options: JsValue, workers: usize) -> Result<JsValue, JsError> {
        let (daclip, unet) = self.restore_models()?;
        let opts = restore_options(options)?;
        let restorer = Restorer::new(&daclip, &unet).map_err(js_error)?;
        let layout = restorer.layout(&self.dev, width, height, &opts).map_err(js_error)?;
        let steps = IrSde::published(PUBLISHED_T).and_then(|sde| sde.plan(opts.sampler, opts.steps, opts.grid)).map_err(js_error)?.len();
        let r = layout.rect(0);
        let cached = self.tile_seconds.borrow().get(&(r.width, r.height)).copied();
        let seconds_per_tile = match cached {
            Some(s) => s,
            None => {
                // A tiled restore's tiles go to the workers whole (see `restore_sharing`):
                // time one worker's.
                let _solo = (layout.tile_count() > 1).then(|| self.dev.solo());
                let mut seconds = 0.0;
                // The first evaluation also compiles the pipelines: where that is quick,
                // time a second one.
                for _ in 0..2 {
                    let started = js_sys::Date::now();
                    restorer.evaluate_tile(&self.dev, &layout).await.map_err(js_error)?;
                    seconds = (js_sys::Date::now() - started) / 1000.0;
                    if seconds > 3.0 {
                        break;
                    }
                }
                self.tile_seconds.borrow_mut().insert((r.width, r.height), seconds);
                seconds
            }
        };
        let tiles = layout.tile_count();
        let rounds = tiles.div_ceil(workers.clamp(1, tiles));
        let out = Estimate { tiles, tile_width: r.width, tile_height: r.height, steps, seconds_per_tile, seconds: seconds_per_tile * (rounds * steps) as f64 };
        Ok(serde_wasm_bindgen::to_value(&out)?)
    }

    fn restore_models(&self) -> Result<(Rc<DaClip>, Rc<ConditionalUNet>), JsError> {
        let m = self.models.borrow();
        match (&m.daclip, &m.unet) {
            (Some(d), Some(u)) => Ok((d.clone(), u.clone())),
            _ => Err(JsError::new("restoring needs both the DA-CLIP and the UNet weights")),
        }
    }

    /// The token ids DA-CLIP's text tower gets for `text` (a label): start and end tokens
    /// included, truncated to its 77 positions, without the zero padding.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        crate::models::clip::tokenizer::label_ids(text)
    }

    /// The device memory the engine holds: `{ liveBytes, pooledBytes, peakBytes }` (tensors
    /// in use, buffers kept for reuse, the most in use at once).
    #[wasm_bindgen(js_name = memoryUsage)]
    pub fn memory_usage(&self) -> Result<JsValue, JsError> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Usage {
            live_bytes: u64,
            pooled_bytes: u64,
            peak_bytes: u64,
        }
        let m = self.dev.memory();
        Ok(serde_wasm_bindgen::to_value(&Usage { live_bytes: m.live_bytes, pooled_bytes: m.free_bytes, peak_bytes: m.peak_bytes })?)
    }

    /// Why the GPU device was lost, once it was (the engine must then be started again).
    #[wasm_bindgen(js_name = deviceLost)]
    pub fn device_lost(&self) -> Option<String> {
        self.dev.lost()
    }

    /// Breaks the engine on purpose, for tests of recovery: "panic" panics inside the
    /// wasm, "device-lost" destroys the GPU device.
    #[wasm_bindgen(js_name = simulateFailure)]
    pub fn simulate_failure(&self, kind: &str) -> Result<(), JsError> {
        match kind {
            "panic" => panic!("a simulated failure (simulateFailure('panic'))"),
            "device-lost" => self.dev.destroy().map_err(js_error),
            other => Err(JsError::new(&format!("simulateFailure takes 'panic' or 'device-lost', not {other:?}"))),
        }
    }

    /// Frees the models and the pooled GPU memory (and the weights kept for the
    /// restoring worker); the engine can load again afterwards.
    pub fn dispose(&self) {
        *self.models.borrow_mut() = Models::default();
        *self.kernel_server.borrow_mut() = KernelServer::default();
        self.tile_seconds.borrow_mut().clear();
        self.dev.release_free_buffers();
    }
}

/// The helper workers that compute part of each large kernel, reached through the JS
/// functions the worker passes (www/lib/worker.js: a MessagePort and a
/// SharedArrayBuffer per helper).
struct KernelWorkers {
    count: usize,
    send: js_sys::Function,
    receive: js_sys::Function,
    min_macs: usize,
}

fn helper_error(e: JsValue) -> Error {
    Error::Helper(e.as_string().or_else(|| js_sys::Reflect::get(&e, &"message".into()).ok().and_then(|m| m.as_string())).unwrap_or_else(|| format!("{e:?}")))
}

impl KernelHelpers for KernelWorkers {
    fn count(&self) -> usize {
        self.count
    }

    fn send(&self, helper: usize, header: &[u32], data: &[&[u32]], reply_len: usize) -> crate::Result<()> {
        let inputs = js_sys::Array::new();
        for d in data {
            inputs.push(&js_sys::Uint32Array::from(*d));
        }
        let args = js_sys::Array::of4(&(helper as u32).into(), &js_sys::Uint32Array::from(header), &inputs, &(reply_len as u32).into());
        self.send.apply(&JsValue::NULL, &args).map_err(helper_error)?;
        Ok(())
    }

    fn receive(&self, helper: usize) -> crate::Result<Vec<f32>> {
        let reply = self.receive.call1(&JsValue::NULL, &(helper as u32).into()).map_err(helper_error)?;
        Ok(js_sys::Float32Array::from(reply).to_vec())
    }

    fn min_macs(&self) -> usize {
        self.min_macs
    }
}

/// The helper workers of a tiled restore on the CPU backend, reached through the JS
/// function the worker passes (www/lib/worker.js: a MessagePort per helper).
struct HelperWorkers {
    count: usize,
    evaluate: js_sys::Function,
    context: Option<(js_sys::Float32Array, js_sys::Float32Array)>,
}

impl TileHelpers for HelperWorkers {
    fn count(&self) -> usize {
        self.count
    }

    fn condition(&mut self, degradation: Vec<f32>, image: Vec<f32>) {
        self.context = Some((js_sys::Float32Array::from(&degradation[..]), js_sys::Float32Array::from(&image[..])));
    }

    fn send(&mut self, helper: usize, x: Vec<f32>, mu: Vec<f32>, at: Rect, t: f32) -> TileFuture {
        let (degra, image) = self.context.clone().expect("conditioned before the first tile");
        let args = js_sys::Array::new();
        for v in [JsValue::from(helper as u32), degra.into(), image.into(), js_sys::Float32Array::from(&x[..]).into(), js_sys::Float32Array::from(&mu[..]).into(), (at.width as u32).into(), (at.height as u32).into(), t.into()] {
            args.push(&v);
        }
        let promise = self.evaluate.apply(&JsValue::NULL, &args);
        Box::pin(async move {
            let promise: js_sys::Promise = promise.map_err(helper_error)?.into();
            let noise = wasm_bindgen_futures::JsFuture::from(promise).await.map_err(helper_error)?;
            Ok(js_sys::Float32Array::from(noise).to_vec())
        })
    }

    fn pause(&self) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(crate::device::yield_to_event_loop())
    }
}
