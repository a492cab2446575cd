// The engine's module worker: owns the wasm module and the device (WebGPU or the CPU
// backend), so the page never blocks.
// Protocol: requests { id, type, ... } -> replies { id, ok, result } or { id, ok: false,
// error, aborted }, run in the order they arrive (see the end of this file); restore also
// posts { id, type: 'step', step, total, tile, tiles, preview } after every tile. A helper
// worker gets { type: 'serve', port } and then answers tile and kernel requests on that
// port; the restoring worker gets { type: 'helpers', ports }.
import init, { createEngine } from '../pkg/daclip_webgpu.js';

let engine = null;
// The wasm instance's exports (its memory: the heap size memoryUsage reports). Not `wasm`:
// the single-file build inlines the glue, which declares that name, into this script.
let wasmExports = null;
const aborted = new Set();

// Several workers on the CPU backend: the restoring worker hands tiles to helper workers
// (each its own wasm instance with its own copy of the UNet) over one MessagePort each.
let helpers = [];
// A helper whose wasm trapped cannot evaluate again: the restoring worker then reports
// itself broken, and the page starts everything afresh.
let helperBroken = false;
const tileRequests = new Map();
let nextTile = 1;

function evaluateOnHelper(helper, degradation, image, x, mu, width, height, t) {
  return new Promise((resolve, reject) => {
    const id = nextTile++;
    tileRequests.set(id, { resolve, reject });
    helpers[helper].postMessage({ id, degradation, image, x, mu, width, height, t }, [x.buffer, mu.buffer]);
  });
}

function connectHelper(port) {
  port.onmessage = ({ data }) => {
    const request = tileRequests.get(data.id);
    if (!request) return; // a tile of a cancelled restore
    tileRequests.delete(data.id);
    helperBroken ||= Boolean(data.broken);
    if (data.error) request.reject(new Error(data.error));
    else request.resolve(data.noise);
  };
  return port;
}

// Where the page is cross-origin isolated, the restoring worker also splits each large
// product and convolution with the helpers (engine.useKernelHelpers): it posts each
// helper its part and blocks in Atomics.wait until the helper has written the result
// into that helper's SharedArrayBuffer: [state (0 waiting, 1 answered), status (0 ok, 1
// error, 2 the helper broke), length, unused], then the values (or the error's UTF-8).
const kernelReplies = [];
// A helper that never answers (its worker crashed) fails the kernel after this long: far
// beyond a kernel's part (about a second for the largest convolution of a 512x512 tile).
const KERNEL_TIMEOUT_MS = 2 * 60 * 1000;

function sendKernel(helper, header, data, replyLength) {
  const bytes = 16 + 4 * Math.max(replyLength, 1024);
  if (!(kernelReplies[helper]?.byteLength >= bytes)) kernelReplies[helper] = new SharedArrayBuffer(bytes);
  const reply = kernelReplies[helper];
  Atomics.store(new Int32Array(reply, 0, 4), 0, 0);
  helpers[helper].postMessage({ type: 'kernel', header, data, reply }, [header.buffer, ...data.map((d) => d.buffer)]);
}

function receiveKernel(helper) {
  const reply = kernelReplies[helper];
  const state = new Int32Array(reply, 0, 4);
  if (Atomics.wait(state, 0, 0, KERNEL_TIMEOUT_MS) === 'timed-out') {
    helperBroken = true;
    throw new Error(`helper worker ${helper} did not answer in ${KERNEL_TIMEOUT_MS / 60000} minutes`);
  }
  const [, status, length] = state;
  if (status === 0) return new Float32Array(reply, 16, length);
  helperBroken ||= status === 2;
  // TextDecoder takes no view of shared memory: a copy.
  throw new Error(new TextDecoder().decode(new Uint8Array(reply, 16, length).slice()));
}

/** As a helper: computes a kernel's part and answers in its `reply` buffer (above). */
function serveKernel({ header, data, reply }) {
  const state = new Int32Array(reply, 0, 4);
  try {
    const values = engine.computeKernel(header, data);
    if (16 + 4 * values.length > reply.byteLength) throw new Error(`a kernel's part of ${values.length} values does not fit its reply buffer`);
    new Float32Array(reply, 16, values.length).set(values);
    state[1] = 0;
    state[2] = values.length;
  } catch (err) {
    const broken = err instanceof WebAssembly.RuntimeError;
    const text = broken ? trapMessage(err) : String(err?.message ?? err);
    const bytes = new TextEncoder().encode(text).slice(0, reply.byteLength - 16);
    new Uint8Array(reply, 16, bytes.length).set(bytes);
    state[1] = broken ? 2 : 1;
    state[2] = bytes.length;
  }
  Atomics.store(state, 0, 1);
  Atomics.notify(state, 0);
}

/** As a helper: evaluates the tiles (and computes the kernels' parts) the restoring
 * worker sends on `port`, one at a time. */
function serveTiles(port) {
  port.onmessage = async ({ data: m }) => {
    if (m.type === 'kernel') return serveKernel(m);
    try {
      const noise = await engine.evaluateTile(m.degradation, m.image, m.x, m.mu, m.width, m.height, m.t);
      port.postMessage({ id: m.id, noise }, [noise.buffer]);
    } catch (err) {
      const { error, broken } = await failure(err);
      port.postMessage({ id: m.id, error, broken });
    }
  };
}

/**
 * A module of one function that uses `f32x4.relaxed_madd`: what `WebAssembly.validate`
 * accepts only where the browser has relaxed SIMD (Chrome 114+, Firefox 145+; not Safari).
 */
const RELAXED_SIMD_PROBE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version 1
  0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7b, // types: () -> v128
  0x03, 0x02, 0x01, 0x00, // one function of that type
  0x0a, 0x1c, 0x01, 0x1a, 0x00, // code: one body of 26 bytes, no locals
  0x43, 0x00, 0x00, 0x80, 0x3f, 0xfd, 0x13, // f32x4.splat(1.0), three times
  0x43, 0x00, 0x00, 0x80, 0x3f, 0xfd, 0x13,
  0x43, 0x00, 0x00, 0x80, 0x3f, 0xfd, 0x13,
  0xfd, 0x85, 0x02, 0x0b, // f32x4.relaxed_madd, end
]);

/**
 * The engine's wasm, found beside the glue by `new URL(.., import.meta.url)`, the form
 * bundlers recognise and emit: the relaxed-SIMD build where the browser validates it
 * (its products use fused multiply-adds), else the simd128 one. `?simd=simd128` on the
 * worker's URL asks for the latter (the tests compare the two). A failed fetch says
 * which URL answered what.
 */
async function fetchWasm() {
  const relaxed = WebAssembly.validate(RELAXED_SIMD_PROBE) && new URL(self.location.href).searchParams.get('simd') !== 'simd128';
  const url = relaxed ? new URL('../pkg/daclip_webgpu_relaxed_bg.wasm', import.meta.url) : new URL('../pkg/daclip_webgpu_bg.wasm', import.meta.url);
  let response;
  try {
    response = await fetch(url);
  } catch (err) {
    throw new Error(`the daclip-webgpu engine (${url}) could not be fetched: ${err?.message ?? err}`);
  }
  if (!response.ok) throw new Error(`the daclip-webgpu engine (${url}) could not be fetched: HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ''}`);
  return response;
}

/** A Blob built from pieces: every 64 MiB the pieces so far become one Blob, which the
 * browser may move out of memory (and the pieces' buffers can be collected). */
class BlobBuilder {
  #parts = [];
  #pending = 0;

  add(chunk) {
    this.#parts.push(chunk);
    this.#pending += chunk.length;
    if (this.#pending >= 64 << 20) {
      this.#parts = [new Blob(this.#parts)];
      this.#pending = 0;
    }
  }

  blob() {
    return new Blob(this.#parts);
  }
}

async function handle(msg) {
  switch (msg.type) {
    case 'init':
      wasmExports = await init({ module_or_path: await fetchWasm() });
      engine = await createEngine(msg.device);
      return { result: engine.adapterInfo() };
    case 'load': {
      // The engine reads the Blob one tensor at a time. An original .pt/.pth comes back
      // converted (f16 safetensors) when asked, for the page to cache in its place: its
      // pieces are gathered into Blobs as they come, so that it is never whole in memory.
      const converted = msg.convert ? new BlobBuilder() : null;
      const onChunk = converted ? (chunk) => converted.add(chunk) : undefined;
      if (msg.kind === 'daclip') await engine.loadDaclip(msg.blob, msg.keepText, onChunk);
      else engine.loadUnet(msg.blob, onChunk);
      return { result: converted?.blob() ?? null };
    }
    case 'classify':
      return { result: await engine.classify(msg.rgba, msg.width, msg.height, msg.labels ?? undefined) };
    case 'restore': {
      // Called after every tile: an abort takes effect between tiles.
      const onStep = (step, total, tile, tiles, preview) => {
        if (aborted.has(msg.id)) return false;
        self.postMessage({ id: msg.id, type: 'step', step, total, tile, tiles, preview });
        return true;
      };
      const rgba = await engine.restore(msg.rgba, msg.width, msg.height, msg.options, onStep, helpers.length, helpers.length ? evaluateOnHelper : undefined);
      return { result: rgba, transfer: [rgba.buffer] };
    }
    case 'helpers': {
      helpers = msg.ports.map(connectHelper);
      // Blocking on a SharedArrayBuffer needs a cross-origin isolated page.
      const kernels = self.crossOriginIsolated && typeof SharedArrayBuffer === 'function' ? helpers.length : 0;
      // `?split=all` on the worker's URL splits every kernel, however small (the tests'
      // tiny models have no kernel large enough otherwise).
      const splitAll = new URL(self.location.href).searchParams.get('split') === 'all';
      if (kernels) engine.useKernelHelpers(kernels, sendKernel, receiveKernel, splitAll ? 0 : undefined);
      return { result: { tiles: msg.tiles ? helpers.length : 0, kernels } };
    }
    case 'serve':
      serveTiles(msg.port);
      return { result: null };
    case 'estimate':
      return { result: await engine.estimate(msg.width, msg.height, msg.options, 1 + helpers.length) };
    case 'tokenize':
      return { result: Array.from(engine.tokenize(msg.text)) };
    case 'memory':
      return { result: { ...engine.memoryUsage(), wasmHeapBytes: wasmExports.memory.buffer.byteLength } };
    case 'simulate':
      engine.simulateFailure(msg.kind);
      return { result: null };
    case 'dispose':
      engine?.dispose();
      return { result: null };
    default:
      throw new Error(`unknown request ${msg.type}`);
  }
}

/** What a trap in the wasm (a panic) says: the panic's message where the hook left one. */
function trapMessage(err) {
  const panic = globalThis.daclipPanic?.replace(/\s*\n\s*/g, ' ');
  return `the engine stopped on an internal error: ${panic ?? err.message}`;
}

/**
 * What an error means for the engine: a trap in the wasm (a panic: wasm32 cannot unwind)
 * leaves the instance unusable, and so does a lost GPU device; either makes the page
 * start a fresh worker (`broken`). The device-lost callback may come a moment after the
 * failed call, hence the short wait before asking.
 */
async function failure(err) {
  if (err instanceof WebAssembly.RuntimeError) return { error: trapMessage(err), broken: true };
  const error = String(err?.message ?? err);
  if (helperBroken) return { error: `a helper worker failed: ${error}`, broken: true };
  if (engine && engine.adapterInfo().device === 'webgpu') {
    await new Promise((resolve) => setTimeout(resolve, 50));
    const lost = engine.deviceLost();
    if (lost) return { error: `the GPU device was lost (${lost}): ${error}`, broken: true };
  }
  return { error };
}

async function reply(msg) {
  try {
    if (aborted.has(msg.id)) throw new Error('aborted before it started');
    const { result, transfer } = await handle(msg);
    self.postMessage({ id: msg.id, ok: true, result }, transfer ?? []);
  } catch (err) {
    self.postMessage({ id: msg.id, ok: false, aborted: aborted.has(msg.id), ...(await failure(err)) });
  } finally {
    aborted.delete(msg.id);
  }
}

// Requests run one after another, in the order they came: a classify sent during a
// restore runs after it. Three do not wait: an abort (it must reach the restore that
// runs), simulate (a test breaks the engine mid-restore) and memory (read-only).
const IMMEDIATE = new Set(['simulate', 'memory']);
let queue = Promise.resolve();

self.onmessage = (event) => {
  const msg = event.data;
  if (msg.type === 'abort') aborted.add(msg.target);
  else if (IMMEDIATE.has(msg.type)) reply(msg);
  else queue = queue.then(() => reply(msg));
};
