// npm run bench:browser: the CPU backend in headless Chromium without WebGPU, on the
// published architectures with seeded random weights (`daclip-webgpu bench
// --save-weights`), through the npm package's API. Prints a table: DA-CLIP's encode of a
// 224 x 224 image (a classify of a new image), one UNet evaluation at 64 x 64 (the timed
// tile of `estimate`), and a tiled restore's step per tile, each with 1 and 2 workers
// (the page is cross-origin isolated, so 2 workers split one image's kernels). Needs
// `npm run build`; not part of the tests (speed is not asserted).
//
// With `-- --onnx DIR` (the folder `python3 tests/reference/onnx_peers.py --onnx DIR`
// wrote) it also times the peer, ONNX Runtime Web's wasm backend (`npm install --no-save
// onnxruntime-web`), on the same two models with 1 and 2 threads in a cross-origin
// isolated page, and prints the ratios.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serve } from '../../www/serve.mjs';
import { FLAGS } from './harness.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '../..');
const onnxAt = process.argv.indexOf('--onnx');
const onnxDir = onnxAt > 0 ? process.argv[onnxAt + 1] : null;
if (onnxAt > 0 && !onnxDir) {
  console.error('--onnx needs a folder: the one tests/reference/onnx_peers.py --onnx wrote');
  process.exit(2);
}
if (onnxDir && !existsSync(join(root, 'node_modules/onnxruntime-web/dist/ort.wasm.min.mjs'))) {
  console.error('--onnx needs ONNX Runtime Web: npm install --no-save onnxruntime-web');
  process.exit(2);
}
const weights = mkdtempSync(join(tmpdir(), 'daclip-bench-'));
execFileSync('cargo', ['run', '--release', '--quiet', '--', 'bench', '--save-weights', weights], { cwd: root, stdio: 'inherit' });
const [site, store] = [await serve(0, root, { isolated: true }), await serve(0, weights)];
const base = `http://127.0.0.1:${site.address().port}`;
const weightsBase = `http://127.0.0.1:${store.address().port}`;

const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: FLAGS });
const page = await browser.newPage();
page.on('pageerror', (e) => console.log(`page error: ${e.message}`));
await page.goto(`${base}/www/index.html`);
const rows = await page.evaluate(async (weightsBase) => {
  const { DaClip } = await import('/www/lib/daclip.js');
  const picture = (w, h, seed) => {
    const img = new ImageData(w, h);
    for (let i = 0; i < w * h; i++) img.data.set([(i * 7 + seed) % 256, (i * 13) % 256, (i * 31 + seed * 5) % 256, 255], 4 * i);
    return img;
  };
  const seconds = async (f) => {
    const started = performance.now();
    await f();
    return (performance.now() - started) / 1000;
  };
  const out = [];
  let name = '';
  for (const workers of [1, 2]) {
    const model = await DaClip.load({ daclip: `${weightsBase}/daclip.safetensors`, unet: `${weightsBase}/unet.safetensors`, device: 'cpu', workers, cache: false });
    name = model.adapter.name;
    if (model.workersPerImage !== workers) throw new Error(`${workers} workers split one image over ${model.workersPerImage}`);
    // The first classify warms the caches (and hands the helpers their weights).
    await model.classify(picture(224, 224, 1));
    out.push({ what: 'encode_image 224x224 (classify a new image)', workers, seconds: await seconds(() => model.classify(picture(224, 224, 2))) });
    const e = await model.estimate(64, 64, { steps: 1 });
    out.push({ what: 'UNet evaluation at 64x64', workers, seconds: e.secondsPerTile });
    // 176 x 176 in tiles of 64 overlapping by 16 (4 x 4 tiles). Its embeddings are
    // computed by the classify first, so the restore times the network on the tiles.
    const img = picture(176, 176, 3);
    const options = { steps: 1, sampler: 'mr-ode1', tile: 64, overlap: 16 };
    const { tiles } = await model.estimate(176, 176, options);
    await model.classify(img);
    const step = await seconds(() => model.restore(img, options));
    out.push({ what: `tiled step 176x176, ${tiles} tiles of 64, per tile`, workers: model.workers, seconds: step / tiles });
    model.dispose();
  }
  return { name, out };
}, weightsBase);
// The peer: ONNX Runtime Web's wasm backend on the exported models, in a page that is
// cross-origin isolated (its threads need SharedArrayBuffer).
let peer = null;
if (onnxDir) {
  const [isolatedSite, models] = [await serve(0, root, { isolated: true }), await serve(0, onnxDir)];
  // One page per thread count: ONNX Runtime reads numThreads once, when its wasm starts.
  peer = { version: '', out: [] };
  for (const threads of [1, 2]) {
    const isolatedPage = await browser.newPage();
    isolatedPage.on('pageerror', (e) => console.log(`page error: ${e.message}`));
    await isolatedPage.goto(`http://127.0.0.1:${isolatedSite.address().port}/www/index.html`);
    const run = await isolatedPage.evaluate(async ([modelsBase, threads]) => {
      if (!crossOriginIsolated) throw new Error('the page is not cross-origin isolated');
      const ort = await import('/node_modules/onnxruntime-web/dist/ort.wasm.min.mjs');
      ort.env.wasm.wasmPaths = '/node_modules/onnxruntime-web/dist/';
      ort.env.wasm.numThreads = threads;
      const values = (n) => Float32Array.from({ length: n }, (_, i) => ((i * 7919) % 1000) / 1000);
      const models = [
        { what: 'encode_image 224x224 (classify a new image)', file: 'encode_image.onnx', feeds: { image: [1, 3, 224, 224] } },
        { what: 'UNet evaluation at 64x64', file: 'unet_64.onnx', feeds: { xt: [1, 3, 64, 64], cond: [1, 3, 64, 64], time: [1], text_context: [1, 512], image_context: [1, 512] } },
      ];
      const out = [];
      for (const m of models) {
        const session = await ort.InferenceSession.create(`${modelsBase}/${m.file}`, { executionProviders: ['wasm'] });
        const feeds = Object.fromEntries(Object.entries(m.feeds).map(([name, shape]) => [name, new ort.Tensor('float32', values(shape.reduce((a, b) => a * b)), shape)]));
        await session.run(feeds);
        let best = Infinity;
        for (let i = 0; i < 3; i++) {
          const started = performance.now();
          await session.run(feeds);
          best = Math.min(best, (performance.now() - started) / 1000);
        }
        out.push({ what: m.what, threads, seconds: best });
        await session.release();
      }
      return { version: ort.env.versions?.web ?? '', out };
    }, [`http://127.0.0.1:${models.address().port}`, threads]);
    peer.version = run.version;
    peer.out.push(...run.out);
    await isolatedPage.close();
  }
  isolatedSite.close();
  models.close();
}
await browser.close();
site.close();
store.close();
rmSync(weights, { recursive: true, force: true });

console.log(`CPU backend in Chromium (${rows.name}), no WebGPU, published shapes, seeded random weights`);
console.log(`| ${'what'.padEnd(46)} | workers | seconds |`);
console.log(`|${'-'.repeat(48)}|---------|---------|`);
for (const r of rows.out) console.log(`| ${r.what.padEnd(46)} | ${String(r.workers).padStart(7)} | ${r.seconds.toFixed(3).padStart(7)} |`);
if (peer) {
  console.log(`\nBeside ONNX Runtime Web ${peer.version} (wasm, the fastest of three runs after one): ours with as many workers as it has threads`);
  console.log(`| ${'what'.padEnd(46)} | threads | ORT Web s | ours s | ours / ORT |`);
  console.log(`|${'-'.repeat(48)}|---------|-----------|--------|------------|`);
  for (const p of peer.out) {
    const ours = rows.out.find((r) => r.what === p.what && r.workers === p.threads)?.seconds;
    const ratio = ours ? (ours / p.seconds).toFixed(2) : 'n/a';
    console.log(`| ${p.what.padEnd(46)} | ${String(p.threads).padStart(7)} | ${p.seconds.toFixed(3).padStart(9)} | ${(ours ?? NaN).toFixed(3).padStart(6)} | ${ratio.padStart(10)} |`);
  }
}
