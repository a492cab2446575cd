// daclip-webgpu: DA-CLIP image restoration in the browser, on the user's own GPU (or
// its CPU where there is no WebGPU).
// The main-thread API; all computation runs in a module worker (worker.js).

const WEIGHTS_CACHE = 'daclip-webgpu-weights-v1';

const NO_WEBGPU =
  "WebGPU is not available in this browser (device: 'webgpu' was asked for; device: 'auto' runs on the CPU instead). " +
  'Use a current Chrome or Edge (version 113 or later), Safari 26 or later, or Firefox 141 or later on Windows; ' +
  'on Linux, Chrome needs the flag --enable-unsafe-webgpu (chrome://flags/#enable-unsafe-webgpu).';

/**
 * The checkpoints the authors publish on their Hugging Face model card, by the name
 * `DaClip.load({ weights })` takes. The original .pt/.pth files are downloaded once and
 * kept converted (f16) in Cache Storage. `memory`: the bytes of GPU memory the two
 * models hold once loaded with their f16 weights, DA-CLIP's text tower included (as
 * `customLabels` keeps it), before any image (`daclip-webgpu bench --memory`); the CPU
 * backend holds as much in wasm memory.
 */
// BEGIN PUBLISHED: JSON, which the command line reads too (src/bin/daclip-webgpu/published.rs).
const PUBLISHED = {
  "baseUrl": "https://huggingface.co/weblzw/daclip-uir-ViT-B-32-irsde/resolve/main/",
  "pairs": {
    "published": { "daclip": "daclip_ViT-B-32.pt", "unet": "universal-ir.pth", "memory": 537919488, "about": "DA-CLIP ViT-B/32 and the universal-IR UNet (ten degradations)" },
    "published-mix": { "daclip": "daclip_ViT-B-32_mix.pt", "unet": "universal-ir-mix.pth", "memory": 537919488, "about": "the same pair trained on mixed degradations" },
    "published-wild": { "daclip": "wild-daclip_ViT-L-14.pt", "unet": "wild-ir.pth", "memory": 1534066688, "about": "DA-CLIP ViT-L/14 and the Wild-IR UNet (photos in the wild)" }
  }
};
// END PUBLISHED
export const PUBLISHED_WEIGHTS = Object.freeze(Object.fromEntries(Object.entries(PUBLISHED.pairs).map(([name, pair]) => [name, Object.freeze(pair)])));

/** Where `weights: 'published' | ...` downloads from, unless `baseUrl` says otherwise. */
export const PUBLISHED_BASE_URL = PUBLISHED.baseUrl;

/** The two URLs of a published pair. */
function publishedUrls(weights, baseUrl = PUBLISHED_BASE_URL) {
  const files = PUBLISHED_WEIGHTS[weights];
  if (!files) throw new RangeError(`weights must be one of ${Object.keys(PUBLISHED_WEIGHTS).join(', ')}, not ${weights}`);
  const base = new URL(baseUrl, globalThis.location?.href);
  if (!base.pathname.endsWith('/')) base.pathname += '/';
  return { daclip: new URL(files.daclip, base).href, unet: new URL(files.unet, base).href };
}

/** True when this browser exposes the WebGPU API (an adapter may still be missing:
 * see `webgpuAvailable`). */
export function hasWebGPU() {
  return typeof navigator !== 'undefined' && 'gpu' in navigator;
}

/** Resolves to true when WebGPU can actually give an adapter here. */
export async function webgpuAvailable() {
  if (!hasWebGPU()) return false;
  try {
    return (await navigator.gpu.requestAdapter()) !== null;
  } catch {
    return false;
  }
}

/** The response's body as a Blob, with progress as it arrives. A Blob rather than an
 * ArrayBuffer: the browser may keep a large one on disk (a 3 GB checkpoint fits no
 * single ArrayBuffer), and the engine reads it one tensor at a time. */
async function readBody(response, stage, onProgress) {
  const total = Number(response.headers.get('content-length')) || 0;
  if (!response.body || !onProgress) return response.blob();
  let loaded = 0;
  const counted = response.body.pipeThrough(new TransformStream({
    transform(chunk, controller) {
      loaded += chunk.length;
      onProgress({ stage, loaded, total });
      controller.enqueue(chunk);
    },
  }));
  return new Response(counted).blob();
}

/** Where a URL's weights are kept converted (f16 safetensors): the key of a URL whose
 * original .pt/.pth was converted after its first load. */
function convertedKey(url, keepText) {
  const u = new URL(url);
  u.searchParams.set('daclip-webgpu', keepText ? 'f16-text' : 'f16');
  return u.href;
}

/** Stores weights in Cache Storage. Caching is an optimisation: where it fails (quota,
 * a private window), the weights were still loaded, so the failure is only reported.
 * Asks for persistent storage first: without it Safari deletes script-written storage
 * after seven days without a visit, and any browser may under storage pressure. */
async function keep(store, key, blob) {
  const again = 'they will be downloaded again next time';
  try {
    const estimate = await navigator.storage?.estimate?.();
    const free = estimate?.quota ? estimate.quota - (estimate.usage ?? 0) : Infinity;
    if (free < blob.size) {
      const mb = (n) => `${Math.round(n / 1e6)} MB`;
      console.warn(`daclip-webgpu: the weights (${mb(blob.size)}) do not fit this site's storage quota (${mb(free)} free of ${mb(estimate.quota)}); ${again}`);
      return;
    }
    await navigator.storage?.persist?.();
    await store.put(key, new Response(blob, { headers: { 'content-length': String(blob.size) } }));
  } catch (err) {
    console.warn(`daclip-webgpu: could not keep the weights in Cache Storage (${err.message}); ${again}`);
  }
}

async function isTorchArchive(blob) {
  const head = new Uint8Array(await blob.slice(0, 4).arrayBuffer());
  return head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04;
}

/** Reads weights from any source as a Blob. For URLs with `cache`, Cache Storage is
 * looked up first (the converted form of an original checkpoint, then the download
 * itself); returns the Blob and, where the converted form should be stored after
 * loading, the key to store it under. */
async function readWeights(source, stage, onProgress, cache, keepText) {
  if (source instanceof Uint8Array || source instanceof ArrayBuffer) return { blob: new Blob([source]) };
  if (typeof Blob !== 'undefined' && source instanceof Blob) {
    onProgress?.({ stage, loaded: source.size, total: source.size });
    return { blob: source };
  }
  if (typeof source === 'string' || source instanceof URL) {
    const url = new URL(source, globalThis.location?.href).href;
    const store = cache && globalThis.caches ? await caches.open(WEIGHTS_CACHE) : null;
    const key = convertedKey(url, stage === 'daclip' && keepText);
    const cached = (await store?.match(key)) ?? (await store?.match(url));
    if (cached) {
      // Read as it lies on disk: no copy through JavaScript for the progress of a local read.
      const blob = await cached.blob();
      onProgress?.({ stage, loaded: blob.size, total: blob.size });
      return { blob };
    }
    let response;
    try {
      response = await fetch(url);
    } catch (err) {
      throw new Error(`could not download the ${stage} weights from ${url}: ${err?.message ?? err} (offline, or the server does not allow this page to fetch from it)`);
    }
    if (!response.ok) throw new Error(`could not download the ${stage} weights from ${url}: HTTP ${response.status}`);
    let blob;
    try {
      blob = await readBody(response, stage, onProgress);
    } catch (err) {
      // Seen with a 3 GB checkpoint in a private window, whose Blobs must fit in memory.
      const size = Number(response.headers.get('content-length'));
      throw new Error(`could not download the ${stage} weights from ${url}${size ? ` (${(size / 1e9).toFixed(2)} GB)` : ''}: ${err?.message ?? err}. ` +
        'The connection broke, or the browser could not keep the file (a private window keeps downloads in memory): try again in a normal window, or load a downloaded File');
    }
    if (!store) return { blob };
    // An original checkpoint is cached in its converted form once loaded (smaller, and
    // no unpickling next time); anything else as downloaded.
    if (await isTorchArchive(blob)) return { blob, convertedKey: key };
    await keep(store, url, blob);
    return { blob };
  }
  throw new TypeError(`${stage} weights must be a URL, File, Blob, ArrayBuffer or Uint8Array`);
}

async function toImageData(image) {
  if (typeof ImageData !== 'undefined' && image instanceof ImageData) return image;
  let source = image;
  if (typeof Blob !== 'undefined' && image instanceof Blob) source = await createImageBitmap(image);
  else if (typeof HTMLImageElement !== 'undefined' && image instanceof HTMLImageElement) {
    if (!image.complete) await image.decode();
  }
  const width = source.naturalWidth ?? source.width;
  const height = source.naturalHeight ?? source.height;
  if (!width || !height) throw new Error('the image is empty or not decoded');
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext('2d');
  ctx.drawImage(source, 0, 0);
  return ctx.getImageData(0, 0, width, height);
}

function abortError() {
  return new DOMException('The restore was aborted.', 'AbortError');
}

const DEVICES = ['auto', 'webgpu', 'cpu'];
// The engine's names (src/sde.rs, `Sampler::NAMES` and `Grid::NAMES`; tests/sampler.rs
// checks that these lists and daclip.d.ts's types are the same).
const SAMPLERS = ['posterior', 'sde', 'mr-ode1', 'mr-ode2', 'mr-sde1', 'mr-sde2'];
const GRIDS = ['logsnr', 'linspace'];
const RESTORE_OPTIONS = ['steps', 'seed', 'sampler', 'grid', 'tile', 'overlap', 'signal', 'onStep'];

/** Checks restore options in the caller's terms before anything reaches the engine. */
function checkRestoreOptions(options) {
  const unknown = Object.keys(options).filter((k) => !RESTORE_OPTIONS.includes(k));
  if (unknown.length) throw new TypeError(`unknown restore option${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')}: the options are ${RESTORE_OPTIONS.join(', ')}`);
  const { steps, seed, sampler, grid, tile, overlap, onStep } = options;
  const integer = (v, min, max) => v === undefined || (Number.isInteger(v) && v >= min && v <= max);
  if (!integer(steps, 1, 1000)) throw new RangeError(`steps must be an integer from 1 to 1000, not ${steps}`);
  if (!integer(seed, 0, Number.MAX_SAFE_INTEGER)) throw new RangeError(`seed must be a non-negative integer, not ${seed}`);
  if (sampler !== undefined && !SAMPLERS.includes(sampler)) throw new RangeError(`sampler must be one of ${SAMPLERS.join(', ')}, not ${sampler}`);
  if (grid !== undefined && !GRIDS.includes(grid)) throw new RangeError(`grid must be one of ${GRIDS.join(', ')}, not ${grid}`);
  if (!integer(tile, 32, 16384)) throw new RangeError(`tile must be an integer number of pixels, at least 32, not ${tile}`);
  if (!integer(overlap, 0, 8192)) throw new RangeError(`overlap must be a non-negative integer number of pixels, not ${overlap}`);
  if (onStep !== undefined && typeof onStep !== 'function') throw new TypeError('onStep must be a function');
}

/**
 * The engine's worker. The literal `new Worker(new URL('./worker.js', import.meta.url),
 * { type: 'module' })` is the form Vite, webpack 5, Rollup and Parcel recognise: they
 * bundle the worker and the wasm it finds the same way. `workerUrl` (or the single-file
 * build's DACLIP_WORKER_URL / _TYPE) overrides it.
 */
function startWorker(workerUrl) {
  const url = workerUrl ?? globalThis.DACLIP_WORKER_URL;
  const worker = url
    ? new Worker(url, { type: globalThis.DACLIP_WORKER_TYPE ?? 'module' })
    : new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  worker.daclipUrl = String(url ? new URL(url, globalThis.location?.href) : new URL('./worker.js', import.meta.url));
  return worker;
}

/** What went wrong with a worker, in words: its script's error, or why it did not start. */
async function workerFailure(worker, event) {
  if (event.message) return `the daclip-webgpu worker failed: ${event.message}${event.filename ? ` (${event.filename}:${event.lineno})` : ''}`;
  // A module worker that cannot start gets an error event without a message: ask the
  // server what it says about the script.
  const url = worker.daclipUrl;
  let cause;
  try {
    const response = await fetch(url);
    cause = response.ok ? `it loaded (HTTP ${response.status}, ${response.headers.get('content-type') ?? 'no content type'}) but did not start: a module worker needs a JavaScript MIME type and every import resolvable from it` : `HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ''}`;
  } catch (err) {
    cause = err?.message ?? String(err);
  }
  return `the daclip-webgpu worker did not start from ${url}: ${cause}. If a bundler moved the package's files, pass workerUrl (see the README).`;
}

export class DaClip {
  #worker;
  #disposed = false;
  #next = 1;
  #pending = new Map();
  #helpers = [];
  /** What load was given, to start the engine again after a failure. */
  #setup = null;
  /** Settles when the engine can take calls (after a restart); calls wait for it. */
  #ready = Promise.resolve();
  /** Settles when the latest call's request has been posted (or failed before it). */
  #lastPosted = Promise.resolve();
  /** The device that runs: `{ device: 'webgpu' | 'cpu', name, backend, isSoftware, reason }`. */
  adapter = null;
  /** Workers sharing a tiled restore's tiles (1 on WebGPU). */
  workers = 1;
  /** Workers that one classification or one tile's evaluation is split over: all of
   * them on the CPU backend where the page is cross-origin isolated, else 1. */
  workersPerImage = 1;
  /** How many times the engine was started again after a failure. */
  restarts = 0;

  constructor(worker) {
    this.#attach(worker);
  }

  #attach(worker) {
    this.#worker = worker;
    worker.onmessage = (event) => {
      if (worker !== this.#worker) return;
      const msg = event.data;
      const pending = this.#pending.get(msg.id);
      if (!pending) return;
      if (msg.type === 'step') {
        pending.onStep?.(msg);
        return;
      }
      this.#pending.delete(msg.id);
      if (msg.ok) pending.resolve(msg.result);
      else if (msg.broken && this.#setup) this.#fail(`${msg.error}; the engine is being started again and its weights reloaded, so the next call works`, pending);
      else if (msg.aborted) pending.reject(abortError());
      else pending.reject(new Error(msg.error));
    };
    worker.onerror = async (event) => {
      event.preventDefault?.();
      if (worker !== this.#worker) return;
      const failure = await workerFailure(worker, event);
      if (this.#setup) this.#fail(`${failure}; the engine is being started again and its weights reloaded, so the next call works`);
      else {
        for (const p of this.#pending.values()) p.reject(new Error(failure));
        this.#pending.clear();
      }
    };
  }

  /** The engine broke (a panic in the wasm, a lost GPU device, a crashed worker): the
   * calls in flight reject with `message`, and a fresh worker with a fresh wasm instance
   * and device loads the weights again (from Cache Storage, a Blob or the caller's bytes)
   * before the next call runs. */
  #fail(message, first) {
    const error = new Error(message);
    first?.reject(error);
    for (const p of this.#pending.values()) p.reject(error);
    this.#pending.clear();
    if (this.#disposed) return;
    const old = this.#worker;
    for (const helper of this.#helpers) helper.dispose();
    this.#helpers = [];
    this.restarts++;
    this.#ready = (async () => {
      old.terminate();
      this.#attach(startWorker(this.#setup.workerUrl));
      await this.#start();
    })();
    this.#ready.catch(() => {}); // reported to the calls that wait for it
  }

  /** Posts a request to the worker as it is now. */
  #post(type, payload = {}, transfer = [], onStep) {
    const id = this.#next++;
    return {
      id,
      promise: new Promise((resolve, reject) => {
        this.#pending.set(id, { resolve, reject, onStep });
        this.#worker.postMessage({ id, type, ...payload }, transfer);
      }),
    };
  }

  /**
   * A request, posted once the engine is ready (after a restart in progress, if any) and
   * after every earlier call's request: the worker runs them one after another, so calls
   * run in the order they were made. `request` is the payload, or a promise of it (an
   * image still being decoded: the decode runs at once, the post waits its turn).
   */
  #call(type, request = {}, transfer = [], onStep) {
    if (this.#disposed) return { ids: { id: 0, aborted: false }, promise: Promise.reject(new Error('the model was disposed')) };
    const ids = { id: 0, aborted: false };
    const prepared = Promise.resolve(request);
    prepared.catch(() => {}); // rejects this call, below, in its turn
    const posted = this.#lastPosted.then(async () => {
      const payload = await prepared;
      try {
        await this.#ready;
      } catch (err) {
        throw new Error(`the engine could not be started again after a failure: ${err?.message ?? err}`);
      }
      if (this.#disposed) throw new Error('the model was disposed');
      if (ids.aborted) throw abortError();
      const post = this.#post(type, payload, typeof transfer === 'function' ? transfer(payload) : transfer, onStep);
      ids.id = post.id;
      return post;
    });
    this.#lastPosted = posted.then(() => {}, () => {});
    return { ids, promise: posted.then((post) => post.promise) };
  }

  /**
   * Starts the engine in a worker and loads the weights.
   * @param {import('./daclip').LoadOptions} options
   */
  static async load({ daclip, unet, weights, baseUrl, onProgress, cache = true, customLabels = false, workerUrl, device = 'auto', workers } = {}) {
    if (!DEVICES.includes(device)) throw new RangeError(`device must be one of ${DEVICES.join(', ')}, not ${device}`);
    if (workers !== undefined && !(Number.isInteger(workers) && workers >= 1 && workers <= 16)) throw new RangeError(`workers must be an integer from 1 to 16, not ${workers}`);
    if (weights !== undefined) {
      if (daclip || unet) throw new TypeError('pass either weights (a published pair) or daclip/unet, not both');
      ({ daclip, unet } = publishedUrls(weights, baseUrl));
    }
    if (device === 'webgpu' && !(await webgpuAvailable())) throw new Error(NO_WEBGPU);
    if (typeof Worker === 'undefined') throw new Error('daclip-webgpu runs in a web browser: this environment has no Web Workers (in Node.js, use the daclip-webgpu command-line tool instead)');
    if (!daclip) throw new TypeError("DaClip.load needs the DA-CLIP weights (`daclip`, or `weights: 'published'`)");
    const model = new DaClip(startWorker(workerUrl));
    try {
      await model.#start({ daclip, unet, onProgress, cache, customLabels, workerUrl, device, workers });
    } catch (err) {
      model.dispose();
      if (/no GPU adapter/.test(err.message)) throw new Error(`${NO_WEBGPU} (${err.message})`);
      throw err;
    }
    return model;
  }

  /** Opens the device and loads the weights in the current worker: at load with `setup`,
   * and again with the same after a failure. */
  async #start(setup) {
    const first = Boolean(setup);
    setup ??= this.#setup;
    const { daclip, unet, cache, customLabels, workerUrl, device, workers } = setup;
    const onProgress = first ? setup.onProgress : undefined;
    this.adapter = await this.#post('init', { device }).promise;
    // On the CPU backend helper workers (one thread each) take a tiled restore's tiles,
    // and where the page is cross-origin isolated parts of every large kernel too; on a
    // GPU one worker feeds the GPU.
    const helperCount = this.adapter.device === 'cpu' && (unet || globalThis.crossOriginIsolated) ? (workers ?? Math.min(4, globalThis.navigator?.hardwareConcurrency || 1)) - 1 : 0;
    let unetBlob = null;
    for (const [kind, source] of [['daclip', daclip], ['unet', unet]]) {
      if (!source) continue;
      const { blob, convertedKey } = await readWeights(source, kind, onProgress, cache, customLabels);
      if (this.#disposed) return;
      const total = blob.size;
      onProgress?.({ stage: `${kind}-upload`, loaded: 0, total });
      // A Blob is passed by reference: the worker reads it one tensor at a time, and the
      // helpers share it.
      const request = { kind, blob, convert: Boolean(convertedKey), keepText: customLabels };
      const converted = await this.#post('load', request).promise;
      if (converted && convertedKey) await keep(await caches.open(WEIGHTS_CACHE), convertedKey, converted);
      if (kind === 'unet') unetBlob = blob;
      onProgress?.({ stage: `${kind}-upload`, loaded: total, total });
    }
    const shares = helperCount > 0 ? await this.#startHelpers(helperCount, unetBlob, workerUrl) : { tiles: 0, kernels: 0 };
    this.workers = 1 + shares.tiles;
    this.workersPerImage = 1 + shares.kernels;
    this.#setup = setup;
  }

  /**
   * What downloading a published pair involves: each file's URL, its size in bytes (from
   * the server, null where it does not say) and whether it is already in Cache Storage,
   * so that a page can say how much will be downloaded before starting.
   * @returns {Promise<import('./daclip').PublishedDownload>}
   */
  static async publishedWeights(weights = 'published', { baseUrl, customLabels = false } = {}) {
    const urls = publishedUrls(weights, baseUrl);
    const store = globalThis.caches ? await caches.open(WEIGHTS_CACHE) : null;
    const files = await Promise.all(Object.entries(urls).map(async ([kind, url]) => {
      const cached = Boolean((await store?.match(convertedKey(url, kind === 'daclip' && customLabels))) ?? (await store?.match(url)));
      let bytes = null;
      if (!cached) {
        try {
          const head = await fetch(url, { method: 'HEAD' });
          bytes = head.ok ? Number(head.headers.get('content-length')) || null : null;
        } catch {
          bytes = null;
        }
      }
      return { kind, url, bytes, cached };
    }));
    const sizes = files.filter((f) => !f.cached).map((f) => f.bytes);
    let storageFree = null;
    try {
      const estimate = await navigator.storage?.estimate?.();
      if (estimate?.quota) storageFree = Math.max(0, estimate.quota - (estimate.usage ?? 0));
    } catch {
      storageFree = null;
    }
    return {
      weights,
      files,
      download: sizes.includes(null) ? null : sizes.reduce((a, b) => a + b, 0),
      cached: files.every((f) => f.cached),
      memory: PUBLISHED_WEIGHTS[weights].memory,
      storageFree,
    };
  }

  /**
   * Deletes downloaded weights from Cache Storage: those of one published pair (as
   * downloaded and as converted), or with no name every weights file this package kept.
   * Resolves to the number of entries deleted.
   */
  static async deleteCachedWeights(weights, { baseUrl } = {}) {
    if (!globalThis.caches) return 0;
    if (weights === undefined) {
      const store = await caches.open(WEIGHTS_CACHE);
      const n = (await store.keys()).length;
      await caches.delete(WEIGHTS_CACHE);
      return n;
    }
    const store = await caches.open(WEIGHTS_CACHE);
    let n = 0;
    for (const url of Object.values(publishedUrls(weights, baseUrl))) {
      for (const key of [url, convertedKey(url, false), convertedKey(url, true)]) n += (await store.delete(key)) ? 1 : 0;
    }
    return n;
  }

  /**
   * Ranks degradations (or `labels`) for an image, most likely first.
   * @returns {Promise<import('./daclip').Classification>}
   */
  async classify(image, { labels } = {}) {
    if (this.#disposed) throw new Error('the model was disposed');
    const request = toImageData(image).then((img) => ({ rgba: new Uint8Array(img.data.buffer.slice(0)), width: img.width, height: img.height, labels }));
    const r = await this.#call('classify', request, (payload) => [payload.rgba.buffer]).promise;
    return { labels: r.labels, probabilities: r.probabilities, imageFeatures: r.imageFeatures, degradationFeatures: r.degradationFeatures };
  }

  /**
   * The token ids DA-CLIP's text tower gets for `text` (a label for `classify`), as the
   * original tokenizer gives them: start and end tokens included, truncated to 77
   * positions, without the zero padding.
   * @param {string} text
   * @returns {Promise<number[]>}
   */
  async tokenize(text) {
    if (this.#disposed) throw new Error('the model was disposed');
    if (typeof text !== 'string') throw new TypeError(`text must be a string, not ${typeof text}`);
    return this.#call('tokenize', { text }).promise;
  }

  /**
   * Restores an image; resolves to an ImageData of the same size, its alpha channel
   * unchanged. Images larger than one tile are restored tile by tile at every step (see
   * `tile`, `overlap`).
   * @param {import('./daclip').ImageInput} image
   * @param {import('./daclip').RestoreOptions} [options]
   * @returns {Promise<ImageData>}
   */
  async restore(image, options = {}) {
    if (this.#disposed) throw new Error('the model was disposed');
    checkRestoreOptions(options);
    const { steps, seed, sampler, grid, tile, overlap, signal, onStep } = options;
    if (signal?.aborted) throw abortError();
    const decoded = toImageData(image);
    const engineOptions = { steps, seed, sampler, grid, tile, overlap, preview: Boolean(onStep) };
    const request = decoded.then((img) => ({ rgba: new Uint8Array(img.data.buffer.slice(0)), width: img.width, height: img.height, options: engineOptions }));
    const step = onStep && ((m) => onStep({ step: m.step, total: m.total, tile: m.tile, tiles: m.tiles, preview: m.preview && new ImageData(m.preview.data, m.preview.width, m.preview.height) }));
    const { ids, promise } = this.#call('restore', request, (payload) => [payload.rgba.buffer], step);
    // Before the request is posted (waiting its turn) it is dropped when its turn comes;
    // once posted, the worker drops it before it starts or stops it between tiles.
    const abort = () => (ids.id ? this.#worker.postMessage({ type: 'abort', target: ids.id }) : (ids.aborted = true));
    signal?.addEventListener('abort', abort, { once: true });
    try {
      const out = await promise;
      const { width, height } = await decoded;
      return new ImageData(new Uint8ClampedArray(out.buffer, out.byteOffset, out.length), width, height);
    } finally {
      signal?.removeEventListener('abort', abort);
    }
  }

  /**
   * How long `restore` of a `width` x `height` image with these options will take on this
   * adapter, from one timed network evaluation on a tile (measured once per tile size).
   * @param {number} width
   * @param {number} height
   * @param {import('./daclip').RestoreOptions} [options]
   * @returns {Promise<import('./daclip').RestoreEstimate>}
   */
  async estimate(width, height, options = {}) {
    checkRestoreOptions(options);
    const { steps, seed, sampler, grid, tile, overlap } = options;
    return this.#call('estimate', { width, height, options: { steps, seed, sampler, grid, tile, overlap } }).promise;
  }

  /**
   * The memory the engine holds: `{ liveBytes, pooledBytes, peakBytes }` of the device
   * (GPU buffers, or the CPU backend's tensors) and `wasmHeapBytes`, the worker's wasm
   * memory (which grows and never shrinks: flat over many calls means nothing leaks), and
   * `helpersWasmHeapBytes`, the helper workers' wasm memory together.
   * @returns {Promise<import('./daclip').MemoryUsage>}
   */
  async memoryUsage() {
    const [own, ...helpers] = await Promise.all([this.#call('memory').promise, ...this.#helpers.map((h) => h.#post('memory').promise)]);
    return { ...own, helpersWasmHeapBytes: helpers.reduce((sum, h) => sum + h.wasmHeapBytes, 0) };
  }

  /**
   * Breaks the engine on purpose, to test what an app does when that happens: `'panic'`
   * stops the wasm on an internal error (the promise rejects as any call would), and
   * `'device-lost'` destroys the GPU device (WebGPU only), so the call in flight rejects.
   * Either way the engine starts again with its weights before the next call runs.
   * @param {'panic' | 'device-lost'} kind
   * @returns {Promise<void>}
   */
  async simulateFailure(kind) {
    if (kind !== 'panic' && kind !== 'device-lost') throw new RangeError(`simulateFailure takes 'panic' or 'device-lost', not ${kind}`);
    return this.#call('simulate', { kind }).promise;
  }

  /** `count` helper workers, each loading the UNet from `unet` (a Blob, or null without
   * one: then they take kernels' parts only), joined to the restoring worker by a
   * MessageChannel apiece. Resolves to `{ tiles, kernels }`: how many helpers take
   * tiles and kernels' parts. */
  async #startHelpers(count, unet, workerUrl) {
    if (this.#disposed) return { tiles: 0, kernels: 0 };
    this.#helpers = Array.from({ length: count }, () => new DaClip(startWorker(workerUrl)));
    await Promise.all(this.#helpers.map(async (helper) => {
      await helper.#post('init', { device: 'cpu' }).promise;
      if (unet) await helper.#post('load', { kind: 'unet', blob: unet, convert: false }).promise;
    }));
    const channels = this.#helpers.map(() => new MessageChannel());
    await Promise.all(this.#helpers.map((helper, i) => helper.#post('serve', { port: channels[i].port2 }, [channels[i].port2]).promise));
    const ports = channels.map((c) => c.port1);
    return this.#post('helpers', { ports, tiles: Boolean(unet) }, ports).promise;
  }

  /** Frees the device's memory and stops the worker (and its helpers). */
  dispose() {
    this.#disposed = true;
    for (const helper of this.#helpers) helper.dispose();
    this.#helpers = [];
    this.#worker.terminate();
    for (const p of this.#pending.values()) p.reject(new Error('the model was disposed'));
    this.#pending.clear();
  }
}
