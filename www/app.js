// The demo page: everything runs in this browser; the only requests go to this origin
// (and, on request, to the model card or the mirror named by `?mirror=` for the published
// weights).
import { DaClip, webgpuAvailable } from './lib/daclip.js';

const $ = (id) => document.getElementById(id);
let model = null;
let image = null; // ImageData
let restored = null; // ImageData
let controller = null;

function status(message, error = false) {
  $('status').hidden = !message;
  $('status').textContent = message ?? '';
  $('status').classList.toggle('error', error);
}

function mib(n) {
  return `${(n / 1048576).toFixed(1)} MiB`;
}

/** `weights`: { daclip, unet } sources, or { weights: a published pair's name }. */
async function loadWeights(weights) {
  model?.dispose();
  model = null;
  $('restore').disabled = true;
  $('load-text').textContent = 'loading...';
  try {
    // The text tower stays (also in a cached conversion): the page ranks the user's own labels.
    model = await DaClip.load({
      ...weights,
      customLabels: true,
      onProgress: ({ stage, loaded, total }) => {
        $('load-progress').value = total ? loaded / total : 0;
        $('load-text').textContent = `${stage}: ${mib(loaded)}${total ? ` of ${mib(total)}` : ''}`;
      },
    });
    const a = model.adapter;
    $('load-text').textContent = a.device === 'cpu' ? `loaded on this computer's CPU (${a.name})` : `loaded on ${a.name || 'a WebGPU adapter'}`;
    $('load-progress').value = 1;
    if (a.device === 'cpu') {
      status(`Running on the CPU, because ${a.reason}. Everything works; a restore takes longer than on a GPU.`);
    } else if (a.isSoftware) {
      status('This browser only offers a software WebGPU adapter (no GPU acceleration): everything works, but a restore takes minutes to hours.');
    } else {
      status(null);
    }
    await classify();
  } catch (err) {
    $('load-text').textContent = 'loading failed';
    status(err.message, true);
  }
  updateButtons();
}

async function setImage(blob) {
  const bitmap = await createImageBitmap(blob);
  const canvas = $('before');
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(bitmap, 0, 0);
  image = ctx.getImageData(0, 0, bitmap.width, bitmap.height);
  // Small images are shown enlarged (pixelated), large ones fit the page.
  canvas.style.width = `${Math.max(bitmap.width, 360)}px`;
  restored = null;
  $('compare').hidden = false;
  $('after').hidden = true;
  $('result-controls').hidden = true;
  updateButtons();
  await classify();
}

async function classify() {
  if (!model || !image) return;
  try {
    // The user's own labels, when given, are ranked by DA-CLIP's text tower instead.
    const labels = $('labels').value.split(',').map((l) => l.trim()).filter(Boolean);
    const r = await model.classify(image, labels.length ? { labels } : {});
    $('bars').replaceChildren(...r.labels.map((label, i) => {
      const row = document.createElement('div');
      const bar = document.createElement('span');
      bar.className = 'bar';
      bar.style.width = `${(100 * r.probabilities[i]).toFixed(1)}%`;
      const name = document.createElement('span');
      name.textContent = label;
      const value = document.createElement('span');
      value.textContent = `${(100 * r.probabilities[i]).toFixed(1)}%`;
      const track = document.createElement('span');
      track.append(bar);
      row.append(name, track, value);
      return row;
    }));
  } catch (err) {
    status(err.message, true);
  }
}

function updateButtons() {
  $('restore').disabled = !(model && image) || Boolean(controller);
  $('cancel').disabled = !controller;
}

function showRestored() {
  const after = $('after');
  after.width = restored.width;
  after.height = restored.height;
  after.getContext('2d').putImageData(restored, 0, 0);
  after.hidden = false;
  $('result-controls').hidden = false;
  updateSlider();
}

function updateSlider() {
  const v = $('slider').value;
  $('after').style.clipPath = `inset(0 0 0 ${v}%)`;
}

function duration(seconds) {
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
}

async function restore() {
  const [sampler, steps] = $('preset').value.split(':');
  const options = { sampler, steps: Number(steps), seed: Number($('seed').value) || 0 };
  controller = new AbortController();
  updateButtons();
  $('preview').hidden = false;
  try {
    // Say how long it will take before it starts, from one timed tile step.
    $('step-text').textContent = 'measuring one tile step on this adapter...';
    const e = await model.estimate(image.width, image.height, options);
    const tiles = e.tiles > 1 ? `${e.tiles} tiles of ${e.tileWidth}x${e.tileHeight} x ` : '';
    $('estimate-text').textContent = `${image.width}x${image.height}: ${tiles}${e.steps} steps, about ${duration(e.seconds)} on ${model.adapter.name || 'this adapter'} (${e.secondsPerTile.toFixed(2)} s per tile step)`;
    if (controller.signal.aborted) throw new DOMException('aborted', 'AbortError');
    const started = performance.now();
    restored = await model.restore(image, {
      ...options,
      signal: controller.signal,
      onStep: ({ step, total, tile, tiles, preview }) => {
        const done = ((step - 1) * tiles + tile) / (total * tiles);
        const elapsed = (performance.now() - started) / 1000;
        $('step-progress').value = done;
        $('step-text').textContent = `step ${step} of ${total}${tiles > 1 ? `, tile ${tile} of ${tiles}` : ''}, ${duration((elapsed / done) * (1 - done))} left`;
        if (preview) {
          const c = $('preview');
          c.width = preview.width;
          c.height = preview.height;
          c.getContext('2d').putImageData(preview, 0, 0);
        }
      },
    });
    $('step-text').textContent = `done in ${((performance.now() - started) / 1000).toFixed(1)} s`;
    showRestored();
  } catch (err) {
    if (err.name === 'AbortError') $('step-text').textContent = 'cancelled';
    else status(err.message, true);
  } finally {
    controller = null;
    updateButtons();
  }
}

$('load-files').onclick = () => {
  const [d, u] = [$('daclip-file').files[0], $('unet-file').files[0]];
  if (!d || !u) return status('Choose both weight files first.', true);
  loadWeights({ daclip: d, unet: u });
};
$('load-tiny').onclick = () => loadWeights({ daclip: 'tiny/daclip-tiny.safetensors', unet: 'tiny/universal-ir-tiny.pth' });
$('load-local').onclick = () => loadWeights({ daclip: '../weights/daclip.safetensors', unet: '../weights/universal-ir.safetensors' });

// The published weights: only on request does the page contact the model card (or the
// mirror the page's address names: `?mirror=https://example.org/daclip/`, the files
// under their published names), first to say how much it would download.
const mirror = new URLSearchParams(location.search).get('mirror') ?? undefined;
const source = mirror ? new URL(mirror, location.href).host : 'huggingface.co';
if (mirror) $('published-note').textContent = `(from the mirror at ${source}, once; kept in this browser for offline use)`;
$('load-published').onclick = async () => {
  const weights = $('published-choice').value;
  $('published-note').textContent = `asking ${source} for the file sizes...`;
  let plan;
  try {
    plan = await DaClip.publishedWeights(weights, { customLabels: true, baseUrl: mirror });
  } catch (err) {
    $('published-note').textContent = `${source} cannot be reached (${err.message})`;
    return;
  }
  const size = plan.download === null ? 'an unknown amount (the server did not say)' : `${(plan.download / 1e9).toFixed(2)} GB`;
  const gb = (n) => `${(n / 1e9).toFixed(1)} GB`;
  const memory = `The models need about ${gb(plan.memory)} of GPU memory (without WebGPU, as much of this computer's memory).`;
  const storage = plan.storageFree === null ? '' : plan.download !== null && plan.storageFree < plan.download / 2
    ? ` This site may store only ${gb(plan.storageFree)} more, so they cannot be kept: every visit downloads them again.`
    : ` They are kept in this browser (${gb(plan.storageFree)} free): later visits load them offline.`;
  if (!plan.cached && !confirm(`Download ${size} from ${source}? ${memory}${storage}`)) {
    $('published-note').textContent = 'not downloaded';
    return;
  }
  $('published-note').textContent = plan.cached ? 'loading from this browser\'s cache' : `downloading ${size}, once`;
  await loadWeights({ weights, baseUrl: mirror });
  $('published-note').textContent = model ? 'kept in this browser for offline use' : '';
};
$('delete-published').onclick = async () => {
  const n = await DaClip.deleteCachedWeights($('published-choice').value, { baseUrl: mirror });
  $('published-note').textContent = n ? `deleted from this browser (${n} cached files)` : 'nothing of these was kept in this browser';
};
$('image-file').onchange = (e) => e.target.files[0] && setImage(e.target.files[0]);
$('restore').onclick = restore;
$('cancel').onclick = () => controller?.abort();
$('slider').oninput = updateSlider;
$('download').onclick = () => {
  const c = document.createElement('canvas');
  c.width = restored.width;
  c.height = restored.height;
  c.getContext('2d').putImageData(restored, 0, 0);
  c.toBlob((blob) => {
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = 'restored.png';
    a.click();
    URL.revokeObjectURL(a.href);
  }, 'image/png');
};
const drop = $('drop');
drop.ondragover = (e) => { e.preventDefault(); drop.classList.add('over'); };
drop.ondragleave = () => drop.classList.remove('over');
drop.ondrop = (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  const f = [...e.dataTransfer.files].find((f) => f.type.startsWith('image/'));
  if (f) setImage(f);
};
$('rank-labels').addEventListener('click', classify);
$('labels').addEventListener('keydown', (e) => {
  if (e.key === 'Enter') classify();
});
document.addEventListener('paste', (e) => {
  const f = [...(e.clipboardData?.files ?? [])].find((f) => f.type.startsWith('image/'));
  if (f) setImage(f);
});

webgpuAvailable().then((ok) => {
  if (!ok) {
    status('WebGPU is not available in this browser: this page will compute on the CPU, which takes longer. For the GPU, use a current Chrome or Edge (113 or later), Safari 26 or later, or Firefox 141 or later on Windows; on Linux, Chrome needs chrome://flags/#enable-unsafe-webgpu.');
  }
  if (location.protocol !== 'file:') {
    // Offer the converted real weights when the server has them (same origin only).
    fetch('../weights/daclip.safetensors', { method: 'HEAD' }).then((r) => { $('local-weights').hidden = !r.ok; }).catch(() => {});
  }
});
window.daclipDemo = { get model() { return model; }, get restored() { return restored; } };
