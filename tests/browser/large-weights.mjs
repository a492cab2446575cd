// npm run bench:weights -- <folder> [published-wild] [webgpu|cpu] [demo]: a published pair as
// the original's files (in <folder>, under the model card's names: for example the
// full-size Wild-IR pair that tests/reference/make_fixtures.py --wild-checkpoints
// writes) loaded by the npm package in headless Chromium, from a mirror URL (twice: the
// second visit reads Cache Storage) and from Files, with the wasm heap after each load
// (a wasm heap never shrinks: its size then is the most the load used), then a classify
// and a 3-step restore of a 64 x 64 image (the image towers and the UNet run at all).
// With `demo`: the demo page instead, told of the mirror by its address (?mirror=), its
// published-weights button, then a classify and a 10-step restore of a 256 x 256 image.
// Not part of the tests: minutes, and the files are gigabytes.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { serve } from '../../www/serve.mjs';
import { FLAGS } from './harness.mjs';

const [folder, weights = 'published-wild', device = 'webgpu', mode = 'package'] = process.argv.slice(2);
if (!folder) {
  console.error('usage: node tests/browser/large-weights.mjs <folder with the published files> [published|published-mix|published-wild] [webgpu|cpu] [demo]');
  process.exit(2);
}
const [site, mirror] = [await serve(0), await serve(0, folder)];
const base = `http://127.0.0.1:${site.address().port}`;
const baseUrl = `http://127.0.0.1:${mirror.address().port}/`;
const flags = device === 'webgpu' ? [...FLAGS, '--enable-unsafe-webgpu'] : FLAGS;
// A profile on disk, as a user's browser has (an incognito-like context keeps Blobs and
// Cache Storage in memory).
const profile = mkdtempSync(join(tmpdir(), 'daclip-large-weights-'));
const browser = await chromium.launchPersistentContext(profile, { executablePath: '/usr/bin/chromium', args: flags });
const page = await browser.newPage();
page.on('pageerror', (e) => console.log(`page error: ${e.message}`));
page.on('console', (m) => { if (m.type() === 'warning' || m.type() === 'error') console.log(`console: ${m.text()}`); });
const gb = (n) => `${(n / 1e9).toFixed(2)} GB`;

if (mode === 'demo') {
  page.on('dialog', (d) => { console.log(`asked: ${d.message()}`); d.accept(); });
  await page.goto(`${base}/www/index.html?mirror=${encodeURIComponent(baseUrl)}`);
  const started = Date.now();
  const seconds = () => ((Date.now() - started) / 1000).toFixed(1);
  await page.selectOption('#published-choice', weights);
  await page.click('#load-published');
  await page.waitForFunction(() => /loaded on|failed/.test(document.querySelector('#load-text').textContent), null, { timeout: 3600000 });
  console.log(`demo, ${weights} on ${device}: ${await page.textContent('#load-text')} after ${seconds()} s; ${await page.textContent('#published-note')}`);
  await page.setInputFiles('#image-file', { name: 'photo.png', mimeType: 'image/png', buffer: await page.evaluate(async () => {
    const c = new OffscreenCanvas(256, 256);
    const g = c.getContext('2d');
    for (let y = 0; y < 256; y += 16) for (let x = 0; x < 256; x += 16) { g.fillStyle = `rgb(${x}, ${y}, ${(x * y) % 256})`; g.fillRect(x, y, 16, 16); }
    return [...new Uint8Array(await (await c.convertToBlob({ type: 'image/png' })).arrayBuffer())];
  }).then((b) => Buffer.from(b)) });
  await page.waitForFunction(() => document.querySelector('#bars').children.length === 10, null, { timeout: 3600000 });
  console.log(`  classified after ${seconds()} s: ${(await page.textContent('#bars')).replace(/\s+/g, ' ').slice(0, 120)}`);
  await page.selectOption('#preset', 'mr-ode2:10');
  await page.click('#restore');
  await page.waitForFunction(() => /done in|failed|error/i.test(document.querySelector('#step-text').textContent), null, { timeout: 3600000 });
  const memory = await page.evaluate(() => window.daclipDemo.model.memoryUsage());
  console.log(`  restore 256x256, 10 mr-ode2 steps: ${await page.textContent('#step-text')}; wasm heap ${gb(memory.wasmHeapBytes)}, device tensors ${gb(memory.liveBytes ?? 0)}`);
  await browser.close();
  process.exit(0);
}

await page.goto(`${base}/www/index.html`);
const visit = (how) => page.evaluate(async ({ how, weights, baseUrl, device }) => {
  const { DaClip, PUBLISHED_WEIGHTS } = await import('/www/lib/daclip.js');
  const started = performance.now();
  let options = { weights, baseUrl };
  if (how === 'files') {
    const files = [...document.querySelector('#bench-files').files];
    const named = (name) => files.find((f) => f.name === name);
    options = { daclip: named(PUBLISHED_WEIGHTS[weights].daclip), unet: named(PUBLISHED_WEIGHTS[weights].unet) };
  }
  const model = await DaClip.load({ ...options, device, workers: 1 });
  const loadSeconds = (performance.now() - started) / 1000;
  const memory = await model.memoryUsage();
  const keys = (await (await caches.open('daclip-webgpu-weights-v1')).keys()).map((r) => new URL(r.url).pathname + new URL(r.url).search);
  const cached = [];
  for (const key of await (await caches.open('daclip-webgpu-weights-v1')).keys()) cached.push((await (await caches.open('daclip-webgpu-weights-v1')).match(key)).headers.get('content-length'));
  let classify = null;
  let restoreSeconds = null;
  if (how !== 'url, first visit') {
    const img = new ImageData(64, 64);
    for (let i = 0; i < 64 * 64; i++) img.data.set([(i * 7) % 256, (i * 13) % 256, (i * 31) % 256, 255], 4 * i);
    const t0 = performance.now();
    classify = (await model.classify(img)).labels.slice(0, 3);
    const t1 = performance.now();
    await model.restore(img, { steps: 3, sampler: 'mr-ode2' });
    restoreSeconds = (performance.now() - t1) / 1000;
    classify = `${classify.join(', ')} (${((t1 - t0) / 1000).toFixed(1)} s)`;
  }
  model.dispose();
  return { loadSeconds, memory, keys, cached, classify, restoreSeconds };
}, { how, weights, baseUrl, device });

for (const how of ['url, first visit', 'url, second visit (Cache Storage)', 'files']) {
  if (how === 'files') {
    await page.evaluate(() => {
      const input = Object.assign(document.createElement('input'), { type: 'file', multiple: true, id: 'bench-files' });
      document.body.append(input);
    });
    const { PUBLISHED_WEIGHTS } = await import('../../www/lib/daclip.js');
    await page.setInputFiles('#bench-files', [join(folder, PUBLISHED_WEIGHTS[weights].daclip), join(folder, PUBLISHED_WEIGHTS[weights].unet)]);
  }
  const r = await visit(how);
  console.log(`${weights} on ${device}, ${how}: loaded in ${r.loadSeconds.toFixed(1)} s; wasm heap ${gb(r.memory.wasmHeapBytes)}, device tensors ${gb(r.memory.liveBytes ?? 0)}`);
  console.log(`  cached: ${r.keys.map((k, i) => `${k} (${gb(Number(r.cached[i]))})`).join(', ') || 'nothing'}`);
  if (r.classify) console.log(`  classify: ${r.classify}; restore 64x64, 3 mr-ode2 steps: ${r.restoreSeconds.toFixed(1)} s`);
}
await browser.close();
site.close();
mirror.close();
rmSync(profile, { recursive: true, force: true });
