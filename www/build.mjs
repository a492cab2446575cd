// npm run build: the wasm engine (cargo, wasm-bindgen at the Cargo.lock version,
// wasm-opt; the wasm target and wasm-bindgen-cli are installed first where missing) into
// www/pkg/, twice: with simd128 (every browser) and with relaxed SIMD too (the worker
// takes it where the browser validates it), and the tiny test weights for the demo into
// www/tiny/.
// npm run build:single: also www/dist/daclip-webgpu.html, the demo in one file that
// works when opened from disk.
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, copyFileSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const run = (cmd, args) => execFileSync(cmd, args, { cwd: root, stdio: 'inherit' });
const output = (cmd, args) => {
  try {
    return execFileSync(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  } catch {
    return null;
  }
};

// A fresh machine with Rust (rustup) and Node has neither the wasm target nor the
// wasm-bindgen command line: add them, saying so, rather than fail half-way.
if (output('cargo', ['--version']) === null) {
  throw new Error('building daclip-webgpu needs Rust: install it with rustup (https://rustup.rs), then run this again');
}
const targets = output('rustup', ['target', 'list', '--installed']);
if (targets === null) {
  console.log('rustup not found: assuming the wasm32-unknown-unknown target is installed');
} else if (!targets.split('\n').includes('wasm32-unknown-unknown')) {
  console.log('adding the Rust target wasm32-unknown-unknown (rustup target add wasm32-unknown-unknown)');
  run('rustup', ['target', 'add', 'wasm32-unknown-unknown']);
}
// wasm-bindgen's command line must be exactly the version of the crate in Cargo.lock.
const bindgen = readFileSync(join(root, 'Cargo.lock'), 'utf8').match(/name = "wasm-bindgen"\nversion = "([^"]+)"/)[1];
if (output('wasm-bindgen', ['--version'])?.trim() !== `wasm-bindgen ${bindgen}`) {
  console.log(`installing wasm-bindgen-cli ${bindgen} to match Cargo.lock (cargo install, once; a few minutes)`);
  run('cargo', ['install', 'wasm-bindgen-cli', '--version', bindgen]);
}

run('cargo', ['build', '--release', '--target', 'wasm32-unknown-unknown', '--lib']);
run('wasm-bindgen', ['--target', 'web', '--out-dir', 'www/pkg', '--out-name', 'daclip_webgpu', 'target/wasm32-unknown-unknown/release/daclip_webgpu.wasm']);
// wasm-opt (12 s a module on 2 cores) runs beside the next build.
const optimise = (from, to) => new Promise((resolve, reject) => {
  spawn(join(root, 'node_modules/.bin/wasm-opt'), ['-O2', '--all-features', from, '-o', to], { cwd: root, stdio: 'inherit' })
    .on('error', reject)
    .on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`wasm-opt ${from} exited with ${code}`))));
});
const optimised = [optimise('www/pkg/daclip_webgpu_bg.wasm', 'www/pkg/daclip_webgpu_bg.wasm')];

// The relaxed-SIMD engine: this crate alone compiled again with the feature (`cargo
// rustc` passes the flag to it and not to its dependencies, which are reused), so that
// the CPU backend's products use the fused f32x4.relaxed_madd. The JS glue's code must
// be the first build's (its comments name function indices, which differ): one glue
// loads either wasm.
run('cargo', ['rustc', '--release', '--target', 'wasm32-unknown-unknown', '--lib', '--', '-C', 'target-feature=+relaxed-simd']);
run('wasm-bindgen', ['--target', 'web', '--out-dir', 'target/relaxed-simd/pkg', '--out-name', 'daclip_webgpu', 'target/wasm32-unknown-unknown/release/daclip_webgpu.wasm']);
const code = (path) => readFileSync(join(root, path), 'utf8').replace(/^\s*\/\/.*\n/gm, '');
if (code('target/relaxed-simd/pkg/daclip_webgpu.js') !== code('www/pkg/daclip_webgpu.js')) {
  throw new Error('the relaxed-SIMD build has other JS glue than the simd128 one: the worker cannot load either wasm with one glue');
}
optimised.push(optimise('target/relaxed-simd/pkg/daclip_webgpu_bg.wasm', 'www/pkg/daclip_webgpu_relaxed_bg.wasm'));
await Promise.all(optimised);

// The tiny untrained weights of the test fixtures, so the demo can run without real ones.
mkdirSync(join(root, 'www/tiny'), { recursive: true });
run('cargo', ['run', '--release', '--quiet', '--', 'convert', 'tests/fixtures/tiny/daclip.pt', '--clip-config', 'tests/fixtures/tiny/clip_config.json', '-o', 'www/tiny/daclip-tiny.safetensors']);
copyFileSync(join(root, 'tests/fixtures/tiny/universal-ir.pth'), join(root, 'www/tiny/universal-ir-tiny.pth'));

if (process.argv.includes('--single')) {
  // One HTML file: the wasm as base64, the glue and the worker as one script (a Blob URL
  // the API is told to use), the API and the demo inlined. Pages opened from file:// may
  // not fetch, and Chromium refuses module workers there: the worker is a classic one.
  const read = (p) => readFileSync(join(root, p), 'utf8');
  const wasm = readFileSync(join(root, 'www/pkg/daclip_webgpu_bg.wasm')).toString('base64');
  const glue = read('www/pkg/daclip_webgpu.js')
    .replace(/^export (?:\{[^}]*\}|(?=async function|function|class|const|let))/gm, '')
    .replaceAll('import.meta.url', 'self.location.href');
  const worker = read('www/lib/worker.js')
    .replaceAll('import.meta.url', 'self.location.href')
    .replace(/^import init, \{ createEngine \} from .*$/m, `const WASM = Uint8Array.from(atob(${JSON.stringify(wasm)}), (c) => c.charCodeAt(0));`)
    .replace('await init({ module_or_path: await fetchWasm() });', 'await __wbg_init({ module_or_path: WASM });');
  const workerSource = `${glue}\n${worker}`;
  const api = read('www/lib/daclip.js');
  const app = read('www/app.js').replace(/^import .* from '\.\/lib\/daclip\.js';$/m, '');
  const html = read('www/index.html')
    .replace(/<script type="module" src="app.js"><\/script>/, () =>
      `<script type="module">\nconst WORKER_SOURCE = ${JSON.stringify(workerSource)};\n` +
      `globalThis.DACLIP_WORKER_URL = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: 'text/javascript' }));\n` +
      `globalThis.DACLIP_WORKER_TYPE = 'classic';\n` +
      `${api.replace(/^export /gm, '')}\n${app}\n</script>`);
  mkdirSync(join(root, 'www/dist'), { recursive: true });
  writeFileSync(join(root, 'www/dist/daclip-webgpu.html'), html);
  console.log(`wrote www/dist/daclip-webgpu.html (${(html.length / 1e6).toFixed(1)} MB)`);
}
if (!existsSync(join(root, 'www/pkg/daclip_webgpu.js'))) throw new Error('the build produced no www/pkg/daclip_webgpu.js');
