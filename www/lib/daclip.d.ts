/** Weights: a URL (downloaded, cached), a File or Blob, or the bytes. Safetensors from
 * `daclip-webgpu convert`, or the original `.pt` / `.pth` files. */
export type WeightsSource = string | URL | Blob | File | ArrayBuffer | Uint8Array;

export interface LoadProgress {
  /** "daclip" / "unet" while reading or downloading, "daclip-upload" / "unet-upload" while sending to the GPU. */
  stage: string;
  loaded: number;
  /** 0 when unknown. */
  total: number;
}

/** The published pairs `DaClip.load({ weights })` downloads. */
export type PublishedWeightsName = 'published' | 'published-mix' | 'published-wild';

export interface LoadOptions {
  /** DA-CLIP's weights (a converted .safetensors or the original .pt). Required unless
   * `weights` names a published pair. */
  daclip?: WeightsSource;
  /** Needed for `restore`; `classify` works without. */
  unet?: WeightsSource;
  /** A published pair from the authors' model card instead of `daclip` / `unet`:
   * downloaded once (about 1.2 GB for "published"; see `DaClip.publishedWeights` for the
   * figure before starting), kept converted in Cache Storage, offline afterwards. */
  weights?: PublishedWeightsName;
  /** Where the published files are served (default `PUBLISHED_BASE_URL`, the model card's
   * `resolve/main/`): a mirror with the same file names. */
  baseUrl?: string | URL;
  onProgress?: (progress: LoadProgress) => void;
  /** Keep downloaded weights in Cache Storage for the next visit (default true). An
   * original `.pt` / `.pth` is kept converted (f16 safetensors, DA-CLIP's text tower
   * replaced by the ten trained names' text features unless `customLabels`): about a
   * third of the download, and no unpickling on the next visit. */
  cache?: boolean;
  /** Keep DA-CLIP's text tower, for `classify(..., { labels })` now and (in the cached
   * conversion) on later visits (default false: the tower runs once for the ten trained
   * names and is dropped, and the model holds less memory). */
  customLabels?: boolean;
  /** Where `worker.js` is served, for bundlers that move it (default: beside this module). */
  workerUrl?: string | URL;
  /** Where to compute (default "auto"): "auto" uses WebGPU on a hardware adapter and the
   * CPU backend (wasm SIMD, one thread in the worker) where WebGPU is missing or only a
   * fallback (software) adapter exists; "webgpu" insists on WebGPU (rejects without it);
   * "cpu" always uses the CPU backend. `model.adapter` says which runs and why. */
  device?: 'auto' | 'webgpu' | 'cpu';
  /** On the CPU backend: workers sharing a tiled restore's tiles, 1 to 16 (default the
   * number of logical cores, at most 4). Each helper worker holds its own copy of the
   * UNet (about 90 MB for the published one) and runs on its own core. Where the page
   * is cross-origin isolated (COOP `same-origin` and COEP `require-corp` headers), the
   * workers also split each large layer of a classification and of a single-tile
   * restore between them, and each helper then also keeps the weights of those layers
   * (about 440 MiB more per helper for the published pair). The result does not depend
   * on the count. Ignored on WebGPU. */
  workers?: number;
}

export type ImageInput = ImageData | ImageBitmap | HTMLImageElement | HTMLCanvasElement | OffscreenCanvas | Blob | File;

export interface Classification {
  /** Most likely first. */
  labels: string[];
  probabilities: number[];
  imageFeatures: number[];
  degradationFeatures: number[];
}

export type SamplerName = 'posterior' | 'sde' | 'mr-ode1' | 'mr-ode2' | 'mr-sde1' | 'mr-sde2';
export type GridName = 'logsnr' | 'linspace';

/** Reported after every tile of every step. */
export interface StepProgress {
  /** 1-based. */
  step: number;
  total: number;
  /** Tiles of this step done (1-based); `tile === tiles` once the step is finished. */
  tile: number;
  /** Tiles per step (1 for an image that fits in one tile). */
  tiles: number;
  /** The current state, at most 128 pixels on its longer side; on finished steps only. */
  preview?: ImageData;
}

export interface RestoreOptions {
  /** Network evaluations (default 100 with the published posterior sampler; 10-20 with mr-ode2). */
  steps?: number;
  /** Seed of the sampler's noise (default 0). */
  seed?: number;
  /** Default "posterior" (the published sampler). */
  sampler?: SamplerName;
  /** Time grid of the MR samplers (default "logsnr"). */
  grid?: GridName;
  /** Tile side in pixels for images larger than one tile (default: chosen from the
   * adapter's limits and the model, 256 for the published UNet; 32 at least). An image
   * that fits in one tile is restored whole. */
  tile?: number;
  /** Overlap of neighbouring tiles in pixels, at most half the tile (default: a quarter). */
  overlap?: number;
  /** Aborting rejects with an AbortError within one tile; the model stays usable. */
  signal?: AbortSignal;
  onStep?: (progress: StepProgress) => void;
}

export interface RestoreEstimate {
  tiles: number;
  tileWidth: number;
  tileHeight: number;
  /** Network evaluations. */
  steps: number;
  /** Measured time of one network evaluation on one tile. */
  secondsPerTile: number;
  /** secondsPerTile * tiles * steps. */
  seconds: number;
}

export interface AdapterDescription {
  /** What computes: a WebGPU adapter or the CPU backend. */
  device: 'webgpu' | 'cpu';
  name: string;
  /** The WebGPU backend, or "cpu". */
  backend: string;
  /** A software WebGPU adapter (SwiftShader, WARP), chosen only with device: "webgpu":
   * it works, very slowly. */
  isSoftware: boolean;
  /** Why this device runs, e.g. "no GPU adapter: ...". */
  reason: string;
}

export interface MemoryUsage {
  /** Device memory in tensors now (GPU buffers, or the CPU backend's tensors). */
  liveBytes: number;
  /** GPU buffers kept for reuse. */
  pooledBytes: number;
  /** The most device memory in tensors at once. */
  peakBytes: number;
  /** The worker's wasm memory: it grows and never shrinks. */
  wasmHeapBytes: number;
  /** The helper workers' wasm memory together (0 without helpers): each holds its copy
   * of the UNet and, where one image is split over the workers, the weights it computes
   * with. */
  helpersWasmHeapBytes: number;
}

/** One file of a published pair. */
export interface PublishedFile {
  kind: 'daclip' | 'unet';
  url: string;
  /** Its size as the server says (null when it does not, or when it is cached). */
  bytes: number | null;
  /** Already in Cache Storage: no download. */
  cached: boolean;
}

export interface PublishedDownload {
  weights: PublishedWeightsName;
  files: PublishedFile[];
  /** Bytes still to download (0 when cached; null when a size is unknown). */
  download: number | null;
  cached: boolean;
  /** Bytes of GPU memory the two models hold once loaded (f16 weights, text tower
   * included), before any image; the CPU backend holds as much. */
  memory: number;
  /** Bytes this site may still store (navigator.storage.estimate()); the converted
   * weights are about half the download. Null where the browser does not say. */
  storageFree: number | null;
}

/** The file names of each published pair on the model card. */
export declare const PUBLISHED_WEIGHTS: Readonly<Record<PublishedWeightsName, Readonly<{ daclip: string; unet: string; memory: number; about: string }>>>;
/** The model card's download folder: https://huggingface.co/weblzw/daclip-uir-ViT-B-32-irsde/resolve/main/ */
export declare const PUBLISHED_BASE_URL: string;

/** True when this browser exposes the WebGPU API. */
export declare function hasWebGPU(): boolean;
/** True when WebGPU can actually provide an adapter here. */
export declare function webgpuAvailable(): Promise<boolean>;

export declare class DaClip {
  /** Starts the engine in a module worker and loads the weights. Rejects when
   * device: "webgpu" was asked for and WebGPU is unavailable (the message says how to get
   * it) or when the weights do not fit the model (the message names the tensors). */
  static load(options: LoadOptions): Promise<DaClip>;
  /** What downloading a published pair involves (sizes from the server, what is cached
   * already): for saying the size before starting. */
  static publishedWeights(weights?: PublishedWeightsName, options?: { baseUrl?: string | URL; customLabels?: boolean }): Promise<PublishedDownload>;
  /** Deletes a published pair from Cache Storage (as downloaded and as converted), or
   * with no name every weights file this package kept; resolves to the entries deleted. */
  static deleteCachedWeights(weights?: PublishedWeightsName, options?: { baseUrl?: string | URL }): Promise<number>;
  readonly adapter: AdapterDescription | null;
  /** Workers sharing a tiled restore's tiles (1 on WebGPU). */
  readonly workers: number;
  /** Workers that one classification, or one tile's network evaluation, is split over:
   * all of them on the CPU backend where the page is cross-origin isolated, else 1. */
  readonly workersPerImage: number;
  /** How many times the engine was started again after a failure (a panic, a lost GPU
   * device, a crashed worker): the call in flight rejected, the next one worked. */
  readonly restarts: number;
  /** Ranks the ten trained degradations, or `labels`, for an image. */
  classify(image: ImageInput, options?: { labels?: string[] }): Promise<Classification>;
  /** The token ids the text tower gets for a label, as the original tokenizer gives them
   * (start and end tokens included, at most 77, no padding). */
  tokenize(text: string): Promise<number[]>;
  /** Restores an image of any size up to 64 MP (each side 9 to 16384 pixels); the result
   * has the input's size and its alpha channel unchanged (restoration works on RGB).
   * Files and blobs are decoded upright (EXIF orientation applied). Larger than one
   * tile: tile by tile at every step, blended. */
  restore(image: ImageInput, options?: RestoreOptions): Promise<ImageData>;
  /** How long `restore` of a `width` x `height` image would take on this adapter (one
   * timed network evaluation on a tile, measured once per tile size; the tiles shared by
   * `workers`). */
  estimate(width: number, height: number, options?: RestoreOptions): Promise<RestoreEstimate>;
  /** The memory the engine holds now. */
  memoryUsage(): Promise<MemoryUsage>;
  /** Breaks the engine on purpose, to test an app's handling of it: 'panic' (an internal
   * error in the wasm; this call rejects) or 'device-lost' (the GPU device destroyed,
   * WebGPU only; the call in flight rejects). The engine then starts again with its
   * weights before the next call. */
  simulateFailure(kind: 'panic' | 'device-lost'): Promise<void>;
  /** Frees the device's memory and stops the worker. Every later call rejects with
   * "the model was disposed". */
  dispose(): void;
}
