// The npm package as web apps ship it, from its packed tarball (npm pack): built by Vite
// (`vite build`) and by webpack 5 in production mode, and imported from a static folder
// with no bundler; each build output is served on its own and run in headless Chromium
// without WebGPU (the CPU backend: quick), where it classifies and restores (2 steps)
// with the tiny weights. Also: a TypeScript consumer compiles against daclip.d.ts with
// `tsc --strict --noEmit`; a worker that cannot start or cannot fetch its wasm rejects
// DaClip.load with the URL and the HTTP status; the published weights download from a
// mirror (baseUrl), and load again from Cache Storage with the mirror stopped. Needs
// `npm run build` and `npm ci` (vite, webpack and typescript are devDependencies); run by
// tests/run. It also checks that the package imports in Node and says there that it needs a browser.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serve } from '../../www/serve.mjs';
import { check, finish, FLAGS } from './harness.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '../..');
const work = mkdtempSync(join(tmpdir(), 'daclip-bundlers-'));

// The package as a user installs it: the tarball, into a fresh app folder.
const tarball = execFileSync('npm', ['pack', '--silent', '--pack-destination', work], { cwd: root }).toString().trim().split('\n').pop();
function app(name) {
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true, type: 'module' }));
  execFileSync('npm', ['install', '--silent', '--no-audit', '--no-fund', join(work, tarball)], { cwd: dir });
  return dir;
}

// What every app does: load the tiny weights from beside its page, classify and restore a
// 40 x 48 image, and publish the result (or the error) on window.result.
const MAIN = (specifier) => `import { DaClip } from '${specifier}';
window.result = (async () => {
  const model = await DaClip.load({ daclip: './daclip-tiny.safetensors', unet: './universal-ir-tiny.pth', cache: false });
  const img = new ImageData(40, 48);
  for (let i = 0; i < 40 * 48; i++) img.data.set([(i * 7) % 256, (i % 40) * 6, ((i / 40) | 0) * 5, 255], 4 * i);
  const c = await model.classify(img);
  const out = await model.restore(img, { steps: 2, seed: 1 });
  const device = model.adapter.device;
  model.dispose();
  return { top: c.labels[0], labels: c.labels.length, size: [out.width, out.height], device };
})().catch((e) => ({ error: String(e?.message ?? e) }));
`;
const HTML = (script) => `<!doctype html><meta charset="utf-8"><title>app</title><script type="module" src="${script}"></script>`;
const weights = (dir) => {
  cpSync(join(root, 'www/tiny/daclip-tiny.safetensors'), join(dir, 'daclip-tiny.safetensors'));
  cpSync(join(root, 'www/tiny/universal-ir-tiny.pth'), join(dir, 'universal-ir-tiny.pth'));
};


const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: FLAGS });

/** Serves `dir`, opens `page`, and waits for window.result. */
async function runIn(dir, page = 'index.html') {
  const server = await serve(0, dir);
  const tab = await browser.newPage();
  const errors = [];
  tab.on('pageerror', (e) => errors.push(e.message));
  try {
    await tab.goto(`http://127.0.0.1:${server.address().port}/${page}`);
    await tab.waitForFunction(() => window.result !== undefined, null, { timeout: 60000 });
    const result = await tab.evaluate(() => window.result);
    if (errors.length) result.pageErrors = errors;
    return result;
  } finally {
    await tab.close();
    server.close();
  }
}

function assertWorks(result) {
  assert.equal(result.error, undefined, JSON.stringify(result));
  assert.deepEqual({ labels: result.labels, size: result.size, device: result.device }, { labels: 10, size: [40, 48], device: 'cpu' });
}

await check('the packed package installs and imports in a fresh project, and in Node says it needs a browser', async () => {
  const dir = app('node-app');
  const out = execFileSync('node', ['-e', `
    const m = await import('daclip-webgpu');
    if (typeof m.DaClip?.load !== 'function' || m.hasWebGPU()) throw new Error('bad exports');
    const err = await m.DaClip.load({ daclip: 'x' }).then(() => null, (e) => e.message);
    const gpu = await m.DaClip.load({ daclip: 'x', device: 'webgpu' }).then(() => null, (e) => e.message);
    console.log(err + ' | ' + gpu);`], { cwd: dir, input: '' }).toString();
  const pkg = join(dir, 'node_modules/daclip-webgpu');
  for (const f of ['www/lib/daclip.js', 'www/lib/worker.js', 'www/lib/daclip.d.ts', 'www/pkg/daclip_webgpu.js', 'www/pkg/daclip_webgpu_bg.wasm']) statSync(join(pkg, f));
  const [noWorker, noGpu] = out.trim().split(' | ');
  console.log(`     ${tarball}: imports; in Node: ${noWorker.slice(0, 60)}...; device 'webgpu': ${noGpu.slice(0, 50)}...`);
  assert.match(noWorker, /runs in a web browser/);
  assert.match(noGpu, /WebGPU is not available/);
});

await check('a Vite app (vite build) classifies and restores', async () => {
  const dir = app('vite-app');
  writeFileSync(join(dir, 'main.js'), MAIN('daclip-webgpu'));
  writeFileSync(join(dir, 'index.html'), HTML('./main.js'));
  mkdirSync(join(dir, 'public'));
  weights(join(dir, 'public'));
  const { build } = await import('vite');
  await build({ root: dir, logLevel: 'warn', configFile: false, build: { outDir: join(dir, 'dist') } });
  const result = await runIn(join(dir, 'dist'));
  console.log(`     ${JSON.stringify(result)}`);
  assertWorks(result);
});

await check('a webpack 5 app (production build) classifies and restores', async () => {
  const dir = app('webpack-app');
  writeFileSync(join(dir, 'main.js'), MAIN('daclip-webgpu'));
  const out = join(dir, 'dist');
  const { default: webpack } = await import('webpack');
  const stats = await new Promise((resolve, reject) => webpack({
    mode: 'production',
    context: dir,
    entry: './main.js',
    output: { path: out, filename: 'main.js', publicPath: 'auto' },
    resolve: { modules: [join(dir, 'node_modules')] },
    performance: { hints: false },
  }, (err, s) => (err ? reject(err) : resolve(s))));
  assert.ok(!stats.hasErrors(), stats.toString('errors-only'));
  writeFileSync(join(out, 'index.html'), HTML('./main.js'));
  weights(out);
  const result = await runIn(out);
  console.log(`     ${JSON.stringify(result)}`);
  assertWorks(result);
});

await check('a page with no bundler imports the package from a static folder', async () => {
  const dir = app('static-app');
  const site = join(dir, 'site');
  cpSync(join(dir, 'node_modules/daclip-webgpu'), join(site, 'vendor/daclip-webgpu'), { recursive: true });
  writeFileSync(join(site, 'main.js'), MAIN('./vendor/daclip-webgpu/www/lib/daclip.js'));
  writeFileSync(join(site, 'index.html'), HTML('./main.js'));
  weights(site);
  const result = await runIn(site);
  console.log(`     ${JSON.stringify(result)}`);
  assertWorks(result);
});

await check('a worker that cannot start, or cannot fetch its wasm, rejects load with the URL and the status', async () => {
  const dir = app('broken-app');
  const site = join(dir, 'site');
  cpSync(join(dir, 'node_modules/daclip-webgpu'), join(site, 'vendor'), { recursive: true });
  // Both engines gone: Chromium would fetch the relaxed-SIMD one.
  rmSync(join(site, 'vendor/www/pkg/daclip_webgpu_bg.wasm'));
  rmSync(join(site, 'vendor/www/pkg/daclip_webgpu_relaxed_bg.wasm'));
  weights(site);
  writeFileSync(join(site, 'main.js'), `import { DaClip } from './vendor/www/lib/daclip.js';
const message = (p) => p.then(() => 'loaded', (e) => String(e?.message ?? e));
window.result = (async () => ({
  noWasm: await message(DaClip.load({ daclip: './daclip-tiny.safetensors', cache: false })),
  noWorker: await message(DaClip.load({ daclip: './daclip-tiny.safetensors', cache: false, workerUrl: './missing/worker.js' })),
}))();
`);
  writeFileSync(join(site, 'index.html'), HTML('./main.js'));
  const result = await runIn(site);
  console.log(`     wasm missing: ${result.noWasm}\n     worker missing: ${result.noWorker}`);
  assert.match(result.noWasm, /daclip_webgpu_relaxed_bg\.wasm\) could not be fetched: HTTP 404/);
  assert.match(result.noWorker, /did not start from http:\/\/127\.0\.0\.1:\d+\/missing\/worker\.js: HTTP 404/);
});

await check('published weights: the size is said first, one download, then offline from Cache Storage, and deletable', async () => {
  const dir = app('published-app');
  const site = join(dir, 'site');
  cpSync(join(dir, 'node_modules/daclip-webgpu'), join(site, 'vendor'), { recursive: true });
  // The mirror: the tiny weights under the published names (DA-CLIP as its converted
  // file: the tiny .pt's 32-channel heads cannot be read off its shapes; the UNet as the
  // original .pth, which is kept converted).
  const mirror = join(dir, 'mirror');
  mkdirSync(mirror);
  cpSync(join(root, 'www/tiny/daclip-tiny.safetensors'), join(mirror, 'daclip_ViT-B-32.pt'));
  cpSync(join(root, 'www/tiny/universal-ir-tiny.pth'), join(mirror, 'universal-ir.pth'));
  const mirrorServer = await serve(0, mirror);
  const baseUrl = `http://127.0.0.1:${mirrorServer.address().port}/`;
  writeFileSync(join(site, 'main.js'), `import { DaClip } from './vendor/www/lib/daclip.js';
const baseUrl = new URLSearchParams(location.search).get('base');
const img = new ImageData(40, 48);
for (let i = 0; i < 40 * 48; i++) img.data.set([(i * 7) % 256, (i % 40) * 6, ((i / 40) | 0) * 5, 255], 4 * i);
const stages = new Set();
window.run = async (step) => {
  try {
    const before = await DaClip.publishedWeights('published', { baseUrl });
    if (step === 'delete') return { before, deleted: await DaClip.deleteCachedWeights('published', { baseUrl }), after: await DaClip.publishedWeights('published', { baseUrl }) };
    const model = await DaClip.load({ weights: 'published', baseUrl, onProgress: ({ stage }) => stages.add(stage) });
    const c = await model.classify(img);
    const out = await model.restore(img, { steps: 1 });
    model.dispose();
    return { before, probabilities: c.probabilities, size: [out.width, out.height] };
  } catch (e) {
    return { error: String(e?.message ?? e) };
  }
};
window.result = 'ready';
`);
  writeFileSync(join(site, 'index.html'), HTML('./main.js'));
  const server = await serve(0, site);
  const tab = await browser.newPage();
  try {
    const open = async () => {
      await tab.goto(`http://127.0.0.1:${server.address().port}/index.html?base=${encodeURIComponent(baseUrl)}`);
      await tab.waitForFunction(() => window.result === 'ready');
    };
    await open();
    const first = await tab.evaluate(() => window.run('load'));
    assert.equal(first.error, undefined, JSON.stringify(first));
    const sizes = first.before.files.map((f) => f.bytes);
    console.log(`     first load: ${first.before.download} bytes to download (${sizes.join(' + ')}), cached ${first.before.cached}`);
    assert.equal(first.before.cached, false);
    assert.equal(first.before.download, statSync(join(mirror, 'daclip_ViT-B-32.pt')).size + statSync(join(mirror, 'universal-ir.pth')).size);
    // Down for good: close() alone leaves the browser's kept-alive connections open, and
    // a later download could still go through one of them.
    mirrorServer.close();
    mirrorServer.closeAllConnections();
    await open();
    const second = await tab.evaluate(() => window.run('load'));
    assert.equal(second.error, undefined, JSON.stringify(second));
    console.log(`     mirror stopped, reloaded: cached ${second.before.cached}; classify the same: ${JSON.stringify(second.probabilities) === JSON.stringify(first.probabilities)}`);
    assert.equal(second.before.cached, true);
    assert.equal(second.before.download, 0);
    assert.deepEqual(second.probabilities, first.probabilities);
    const removed = await tab.evaluate(() => window.run('delete'));
    assert.equal(removed.error, undefined, JSON.stringify(removed));
    const third = await tab.evaluate(() => window.run('load'));
    console.log(`     deleted ${removed.deleted} cache entries; cached now ${removed.after.cached}; loading with the mirror down: ${third.error}`);
    assert.ok(removed.deleted >= 2 && !removed.after.cached, JSON.stringify(removed));
    assert.match(third.error ?? '', /daclip_ViT-B-32\.pt/);
  } finally {
    await tab.close();
    server.close();
    mirrorServer.close();
  }
});

await check('the demo downloads published-wild from the mirror its address names (?mirror=), classifies and restores', async () => {
  // The tiny weights under the Wild-IR pair's published names (the full-size files:
  // npm run bench:weights -- <folder> published-wild cpu demo).
  const mirror = mkdtempSync(join(tmpdir(), 'daclip-demo-mirror-'));
  cpSync(join(root, 'www/tiny/daclip-tiny.safetensors'), join(mirror, 'wild-daclip_ViT-L-14.pt'));
  cpSync(join(root, 'www/tiny/universal-ir-tiny.pth'), join(mirror, 'wild-ir.pth'));
  const [site, mirrorServer] = [await serve(0, root), await serve(0, mirror)];
  const tab = await browser.newPage();
  const origins = new Set();
  tab.on('request', (r) => origins.add(new URL(r.url()).origin));
  const asked = [];
  tab.on('dialog', (d) => { asked.push(d.message()); d.accept(); });
  try {
    const mirrorUrl = `http://127.0.0.1:${mirrorServer.address().port}/`;
    await tab.goto(`http://127.0.0.1:${site.address().port}/www/index.html?mirror=${encodeURIComponent(mirrorUrl)}`);
    await tab.selectOption('#published-choice', 'published-wild');
    await tab.click('#load-published');
    await tab.waitForFunction(() => /loaded on|failed/.test(document.querySelector('#load-text').textContent), null, { timeout: 120000 });
    assert.match(await tab.textContent('#load-text'), /loaded on/, await tab.textContent('#status'));
    await tab.setInputFiles('#image-file', { name: 'photo.png', mimeType: 'image/png', buffer: await tab.evaluate(async () => {
      const c = new OffscreenCanvas(40, 48);
      const g = c.getContext('2d');
      g.fillStyle = '#5a8'; g.fillRect(0, 0, 40, 48); g.fillStyle = '#c42'; g.fillRect(8, 10, 20, 20);
      return [...new Uint8Array(await (await c.convertToBlob({ type: 'image/png' })).arrayBuffer())];
    }).then((b) => Buffer.from(b)) });
    await tab.waitForFunction(() => document.querySelector('#bars').children.length === 10);
    await tab.selectOption('#preset', 'mr-ode2:10');
    await tab.click('#restore');
    await tab.waitForFunction(() => /done in|failed|error/i.test(document.querySelector('#step-text').textContent), null, { timeout: 120000 });
    const done = await tab.textContent('#step-text');
    console.log(`     asked: "${asked[0]}"; ${await tab.textContent('#published-note')}; ${done}`);
    assert.match(done, /done in/);
    assert.equal(asked.length, 1);
    assert.match(asked[0], new RegExp(`from 127\\.0\\.0\\.1:${mirrorServer.address().port}\\?`));
    assert.deepEqual([...origins].sort(), [`http://127.0.0.1:${site.address().port}`, `http://127.0.0.1:${mirrorServer.address().port}`].sort(), 'requests only to the page and the mirror');
  } finally {
    await tab.close();
    site.close();
    mirrorServer.close();
    rmSync(mirror, { recursive: true, force: true });
  }
});

await check('a TypeScript consumer compiles against daclip.d.ts (tsc --strict --noEmit)', async () => {
  const dir = app('ts-app');
  writeFileSync(join(dir, 'main.ts'), `import { DaClip, hasWebGPU, PUBLISHED_WEIGHTS, type AdapterDescription, type Classification, type PublishedDownload, type RestoreOptions } from 'daclip-webgpu';

const model: DaClip = await DaClip.load({ daclip: '/w/daclip.safetensors', unet: new URL('/w/unet.pth', location.href), device: 'auto', onProgress: ({ stage, loaded, total }) => console.log(stage, loaded, total) });
const adapter: AdapterDescription | null = model.adapter;
const ranked: Classification = await model.classify(new ImageData(8, 8), { labels: ['rainy', 'sharp'] });
const options: RestoreOptions = { steps: 10, sampler: 'mr-ode2', signal: new AbortController().signal, onStep: ({ step, total, preview }) => console.log(step, total, preview?.width) };
const restored: ImageData = await model.restore(new Blob(), options);
const { seconds } = await model.estimate(4000, 3000, { steps: 10 });
console.log(adapter?.device, ranked.labels[0], restored.width, seconds, hasWebGPU());
model.dispose();
const published: DaClip = await DaClip.load({ weights: 'published-mix', baseUrl: 'https://mirror.example/daclip/' });
const download: PublishedDownload = await DaClip.publishedWeights('published');
console.log(published.adapter, download.download, PUBLISHED_WEIGHTS['published-wild'].daclip, await DaClip.deleteCachedWeights());
// @ts-expect-error: not a published pair
await DaClip.load({ weights: 'published-v2' });
// @ts-expect-error: steps is a number
await model.restore(new ImageData(8, 8), { steps: '10' });
// @ts-expect-error: not a sampler
await model.restore(new ImageData(8, 8), { sampler: 'ddim' });
`);
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: { strict: true, noEmit: true, target: 'es2022', module: 'esnext', moduleResolution: 'bundler', lib: ['es2022', 'dom'], skipLibCheck: false }, files: ['main.ts'] }));
  execFileSync(join(root, 'node_modules/.bin/tsc'), ['-p', dir], { cwd: dir, stdio: 'pipe' });
  console.log(`     tsc ${execFileSync(join(root, 'node_modules/.bin/tsc'), ['--version']).toString().trim()}: no errors`);
});

await browser.close();
rmSync(work, { recursive: true, force: true });
finish('app');
