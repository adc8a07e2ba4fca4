#!/usr/bin/env node
// Tiny static server for the cowsnap playground: serves this folder at / and the browser build of the
// npm package (wasm/pkg/web/) at /pkg/. Listens on 127.0.0.1 only and makes no outside requests.
//
//   node examples/playground/serve.mjs [--port N] [--host 127.0.0.1]   (port 0 picks a free one)
//
// Prints "cowsnap playground: http://127.0.0.1:PORT/" once listening. Importable: startServer().

import { createServer } from 'node:http';
import { readFile, stat } from 'node:fs/promises';
import { dirname, extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '..', '..');
export const DEFAULT_PKG_DIR = process.env.COWSNAP_WEB_PKG || join(ROOT, 'wasm', 'pkg', 'web');

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.ts': 'text/plain; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
};

// Maps a URL path to a file under one of the two roots, refusing anything that escapes them.
function resolvePath(urlPath, pkgDir) {
  let p;
  try {
    p = decodeURIComponent(urlPath.split('?')[0].split('#')[0]);
  } catch {
    return null;
  }
  if (p.includes('\0')) return null;
  let base = HERE;
  if (p === '/pkg' || p.startsWith('/pkg/')) {
    base = pkgDir;
    p = p.slice(4) || '/';
  } else if (p.startsWith('/test/') || p.startsWith('/node_modules/')) {
    return null; // only the page itself is served from here
  }
  if (p.endsWith('/')) p += 'index.html';
  const full = normalize(join(base, p));
  if (full !== base && !full.startsWith(base + sep)) return null;
  return full;
}

export function startServer({ port = 8080, host = '127.0.0.1', pkgDir = DEFAULT_PKG_DIR, quiet = false } = {}) {
  const server = createServer(async (req, res) => {
    const send = (code, body, type = 'text/plain; charset=utf-8') => {
      res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'method not allowed\n');
    const file = resolvePath(req.url || '/', pkgDir);
    if (!file) return send(404, 'not found\n');
    try {
      const st = await stat(file);
      if (!st.isFile()) return send(404, 'not found\n');
      const body = await readFile(file);
      res.writeHead(200, {
        'content-type': TYPES[extname(file)] || 'application/octet-stream',
        'content-length': body.length,
        'cache-control': 'no-store',
        // Everything is local: forbid the page from reaching anything else.
        'content-security-policy':
          "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'",
      });
      res.end(req.method === 'HEAD' ? undefined : body);
    } catch (e) {
      if (e.code === 'ENOENT' && file.startsWith(pkgDir)) {
        return send(404, `not found: ${req.url}\nIs the wasm package built? Run: bash wasm/build.sh (see wasm/README.md)\n`);
      }
      send(e.code === 'ENOENT' ? 404 : 500, e.code === 'ENOENT' ? 'not found\n' : 'server error\n');
    }
  });
  return new Promise((resolveP, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const addr = server.address();
      const url = `http://${host}:${addr.port}/`;
      if (!quiet) console.log(`cowsnap playground: ${url}`);
      resolveP({ server, url, port: addr.port });
    });
  });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const opt = (name, dflt) => {
    const i = args.indexOf(name);
    return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : dflt;
  };
  const port = Number(opt('--port', process.env.PORT || 8080));
  const host = opt('--host', '127.0.0.1');
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`bad --port ${port}`);
    process.exit(2);
  }
  startServer({ port, host }).catch((e) => {
    console.error(`cannot listen on ${host}:${port}: ${e.message}`);
    process.exit(1);
  });
}
