// A static server for the demo on 127.0.0.1 (npm start). It serves the repository root,
// so the demo can offer the converted files in weights/ and the tiny test weights; the
// tests also serve other folders with it (a bundler's build output).
import { createServer } from 'node:http';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { dirname, extname, join, normalize, resolve as resolvePath, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.wasm': 'application/wasm', '.json': 'application/json', '.png': 'image/png', '.jpg': 'image/jpeg',
};

/**
 * Serves `folder` on 127.0.0.1:`port` (0: any free port). `isolated` adds the headers that
 * make its pages cross-origin isolated (SharedArrayBuffer, which ONNX Runtime Web's
 * threads need: tests/browser/bench.mjs).
 */
export function serve(port = Number(process.env.PORT ?? 8080), folder = root, { isolated = false } = {}) {
  const dir = resolvePath(folder);
  const isolation = isolated ? { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' } : {};
  const server = createServer(async (req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname)).replace(/^(\.\.[/\\])+/, '');
    const file = join(dir, path.endsWith('/') ? join(path, 'index.html') : path);
    try {
      const info = await stat(file);
      if (!info.isFile() || !file.startsWith(dir + sep)) throw new Error('not a file');
      // Any origin may fetch, as from the model card's CDN (the tests serve a mirror of
      // the published weights on another port).
      res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'content-length': info.size, 'access-control-allow-origin': '*', ...isolation });
      if (req.method === 'HEAD') return res.end();
      // Streamed: a published checkpoint (3 GB) fits no single buffer.
      createReadStream(file).on('error', () => res.destroy()).pipe(res);
    } catch {
      res.writeHead(404).end('not found');
    }
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const server = await serve();
  console.log(`demo: http://127.0.0.1:${server.address().port}/www/`);
}
