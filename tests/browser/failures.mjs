// What the npm package does when the engine fails, and that nothing leaks, in headless
// Chromium (WebGPU on SwiftShader, and the CPU backend): a panic inside the wasm and a
// lost GPU device each reject the call in flight with a message, the engine starts again
// with its weights, and the next call gives what it gave before; calls made during a
// restore run after it, in order; classifications and restores in a row (50 on the CPU
// backend, 4 on WebGPU) keep device memory and the wasm heap flat. Needs
// `npm run build:single`.
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { serve } from '../../www/serve.mjs';
import { check, finish, FLAGS } from './harness.mjs';

const server = await serve(0);
const base = `http://127.0.0.1:${server.address().port}`;
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: [...FLAGS, '--enable-unsafe-webgpu'] });
const page = await browser.newPage();
page.on('pageerror', (e) => console.log(`page error: ${e.message}`));
await page.goto(`${base}/www/index.html`);
// A test image and a loader in the page.
await page.evaluate(() => {
  window.testImage = (width, height, salt = 0) => {
    const img = new ImageData(width, height);
    for (let i = 0; i < width * height; i++) img.data.set([(i * 7 + salt) % 256, (i % width) * 5, ((i / width) | 0) * 4, 255], 4 * i);
    return img;
  };
  window.loadTiny = async (device) => {
    const { DaClip } = await import('/www/lib/daclip.js');
    return DaClip.load({ daclip: '/www/tiny/daclip-tiny.safetensors', unet: '/www/tiny/universal-ir-tiny.pth', device, cache: false });
  };
  window.message = (p) => p.then(() => 'resolved', (e) => e.message);
});

for (const device of ['webgpu', 'cpu']) {
  await check(`${device}: a panic inside the engine rejects with its message; the engine starts again and gives the same results`, async () => {
    const r = await page.evaluate(async (device) => {
      // The WebGPU model is kept for the checks below: a WebGPU device costs SwiftShader
      // seconds to set up, and each restart sets up another.
      const model = await window.loadTiny(device);
      if (device === 'webgpu') window.webgpuModel = model;
      const img = window.testImage(40, 48);
      const before = { classify: await model.classify(img), restore: Array.from((await model.restore(img, { steps: 2, seed: 3 })).data) };
      const panic = await window.message(model.simulateFailure('panic'));
      const after = { classify: await model.classify(img), restore: Array.from((await model.restore(img, { steps: 2, seed: 3 })).data) };
      const out = { panic, restarts: model.restarts, adapter: model.adapter.device, sameClassify: JSON.stringify(after.classify.probabilities) === JSON.stringify(before.classify.probabilities), sameRestore: after.restore.every((v, i) => v === before.restore[i]) };
      if (device !== 'webgpu') model.dispose();
      return out;
    }, device);
    console.log(`     ${r.panic}`);
    console.log(`     restarts ${r.restarts}; classify the same: ${r.sameClassify}; restore the same: ${r.sameRestore}`);
    assert.equal(r.adapter, device);
    assert.match(r.panic, /internal error: .*a simulated failure/);
    assert.match(r.panic, /started again/);
    assert.equal(r.restarts, 1);
    assert.ok(r.sameClassify && r.sameRestore, JSON.stringify(r));
  });
}

await check('webgpu: the device lost mid-restore rejects that restore; the next restore, on a new device, gives the same output', async () => {
  const r = await page.evaluate(async () => {
    const model = (window.webgpuModel ??= await window.loadTiny('webgpu'));
    const restartsBefore = model.restarts;
    const img = window.testImage(40, 48);
    const options = { steps: 2, seed: 5, sampler: 'mr-ode2' };
    const before = Array.from((await model.restore(img, options)).data);
    let lostAt = null;
    const failed = await window.message(model.restore(img, {
      ...options,
      onStep: ({ step }) => {
        if (step === 1 && lostAt === null) {
          lostAt = step;
          model.simulateFailure('device-lost');
        }
      },
    }));
    const cpu = await window.loadTiny('cpu');
    const cpuLoss = await window.message(cpu.simulateFailure('device-lost'));
    cpu.dispose();
    const after = Array.from((await model.restore(img, options)).data);
    return { failed, lostAt, cpuLoss, restarts: model.restarts - restartsBefore, same: after.every((v, i) => v === before[i]), adapter: model.adapter.device };
  });
  console.log(`     lost at step ${r.lostAt}: ${r.failed.slice(0, 160)}...`);
  console.log(`     restarts ${r.restarts}; the next restore the same as before: ${r.same}; on the CPU backend: ${r.cpuLoss}`);
  assert.match(r.failed, /GPU device was lost/);
  assert.equal(r.restarts, 1);
  assert.equal(r.adapter, 'webgpu');
  assert.ok(r.same);
  assert.match(r.cpuLoss, /no GPU device to lose/);
});

await check('calls made while a restore runs wait for it and run in the order they were made; a queued restore can be aborted', async () => {
  const r = await page.evaluate(async () => {
    const model = (window.webgpuModel ??= await window.loadTiny('webgpu'));
    const img = window.testImage(40, 48);
    const alone = { classify: await model.classify(img), tokens: await model.tokenize('a noisy photo') };
    // The first restore gets a PNG: its decode takes a while, and the calls after it must
    // still wait their turn.
    const canvas = new OffscreenCanvas(40, 48);
    canvas.getContext('2d').putImageData(img, 0, 0);
    const blob = await canvas.convertToBlob({ type: 'image/png' });
    const order = [];
    const settled = (name, p) => p.then((v) => (order.push(name), v), (e) => (order.push(`${name}: ${e.name}`), e));
    const controller = new AbortController();
    const calls = [
      settled('restore', model.restore(blob, { steps: 3, seed: 1, onStep: ({ step }) => step === 1 && controller.abort() })),
      settled('classify', model.classify(img)),
      settled('tokenize', model.tokenize('a noisy photo')),
      settled('aborted restore', model.restore(img, { steps: 2, seed: 2, signal: controller.signal })),
      settled('restore 2', model.restore(img, { steps: 1, seed: 2 })),
    ];
    const [, classify, tokens] = await Promise.all(calls);
    return {
      order,
      sameClassify: JSON.stringify(classify.probabilities) === JSON.stringify(alone.classify.probabilities),
      sameTokens: JSON.stringify(tokens) === JSON.stringify(alone.tokens),
    };
  });
  console.log(`     settled in this order: ${r.order.join(', ')}`);
  console.log(`     classify and tokenize gave what they give alone: ${r.sameClassify}, ${r.sameTokens}`);
  assert.deepEqual(r.order, ['restore', 'classify', 'tokenize', 'aborted restore: AbortError', 'restore 2']);
  assert.ok(r.sameClassify && r.sameTokens);
});

// 50 calls on the CPU backend; 4 on WebGPU, where SwiftShader takes seconds a call (with
// the model of the checks above). The figures after the
// last call must equal those after the first, not be close to them.
for (const [device, calls] of [['webgpu', 4], ['cpu', 50]]) {
  await check(`${device}: ${calls} classifications and restores in a row keep device memory and the wasm heap flat`, async () => {
    const r = await page.evaluate(async ([device, calls]) => {
      const model = (device === 'webgpu' && window.webgpuModel) || (await window.loadTiny(device));
      const usage = [];
      for (let i = 0; i < calls; i++) {
        // A new image each time: classify's cache of the last encoding does not hide work.
        const img = window.testImage(40, 48, i);
        await model.classify(img);
        await model.restore(img, { steps: 1, seed: i });
        if (i === 0 || i === 1 || i === calls - 1) usage.push(await model.memoryUsage());
      }
      model.dispose();
      return usage;
    }, [device, calls]);
    const mb = (b) => (b / 2 ** 20).toFixed(2);
    console.log(`     after 1, 2, ${calls}: live ${r.map((u) => mb(u.liveBytes)).join(' / ')} MiB, pooled ${r.map((u) => mb(u.pooledBytes)).join(' / ')} MiB, wasm heap ${r.map((u) => mb(u.wasmHeapBytes)).join(' / ')} MiB`);
    for (const key of ['liveBytes', 'pooledBytes', 'wasmHeapBytes']) {
      assert.equal(r[2][key], r[0][key], `${key} grew from ${r[0][key]} after the first call to ${r[2][key]} after ${calls}`);
    }
  });
}

await browser.close();
server.close();
finish('failure');
