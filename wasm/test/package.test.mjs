// The installed package as a whole: its files and size budget, its entry points (ESM and CommonJS in
// Node.js, the browser build), and the hand-written types (index.d.mts for `import`, index.d.cts for
// `require`) against what each kind of module really exports.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import * as esm from 'cowsnap';
import { KiB, MiB, text, assertBytesEqual } from './helpers.mjs';

const require = createRequire(import.meta.url);
const PKG_DIR = dirname(require.resolve('cowsnap/package.json'));
const pkg = JSON.parse(readFileSync(join(PKG_DIR, 'package.json'), 'utf8'));

/** Size budget of the optimised module (issue: at most 150 KiB after wasm-opt -Oz). */
const WASM_BUDGET = 150 * KiB;

/** Every file of the installed package, relative to its folder. */
function packageFiles(dir = PKG_DIR) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? packageFiles(join(dir, e.name)) : [relative(PKG_DIR, join(dir, e.name))],
  );
}

test('package.json: name, exports for node (import, require) and browser, types for each', () => {
  assert.equal(pkg.name, 'cowsnap');
  assert.match(pkg.version, /^\d+\.\d+\.\d+/);
  assert.equal(pkg.license, 'MIT OR Apache-2.0');
  assert.ok(pkg.repository?.url, 'repository');
  assert.equal(pkg.sideEffects, false);
  assert.equal(pkg.main, './node/cowsnap.js');
  assert.equal(pkg.types, './index.d.cts', 'top-level types describe `main` (CommonJS)');
  const root = pkg.exports['.'];
  assert.deepEqual(root.node.import, { types: './index.d.mts', default: './node/index.mjs' });
  assert.deepEqual(root.node.require, { types: './index.d.cts', default: './node/cowsnap.js' });
  assert.equal(root.types, './index.d.mts');
  assert.equal(root.default, './web/cowsnap.js');
  for (const f of ['index.d.mts', 'index.d.cts', 'node/index.mjs', 'node/cowsnap.js', 'web/cowsnap.js', 'web/cowsnap_bg.wasm', 'README.md', 'LICENSE-MIT', 'LICENSE-APACHE']) {
    assert.ok(statSync(join(PKG_DIR, f)).size > 0, f);
  }
});

test('one .wasm in the package (the node and web glue load the same file)', () => {
  const wasm = packageFiles().filter((f) => f.endsWith('.wasm'));
  assert.deepEqual(wasm, ['web/cowsnap_bg.wasm']);
});

test(`wasm size budget: the .wasm <= ${WASM_BUDGET} bytes`, () => {
  for (const f of ['web/cowsnap_bg.wasm']) {
    const n = statSync(join(PKG_DIR, f)).size;
    console.log(`${f}: ${n} bytes (${(n / KiB).toFixed(1)} KiB)`);
    assert.ok(n <= WASM_BUDGET, `${f} is ${n} bytes, over the ${WASM_BUDGET}-byte budget`);
    assert.ok(n > 10 * KiB, `${f} is suspiciously small`);
  }
});

test('CommonJS require gives the same classes, and the init functions its types declare', async () => {
  const cjs = require('cowsnap');
  assert.equal(cjs.Volume, esm.Volume, 'one module instance for import and require');
  assert.equal(typeof cjs.version, 'function');
  assert.equal(typeof cjs.init, 'function');
  assert.equal(typeof cjs.initSync, 'function');
  assert.equal(esm.default, cjs.init, 'import default is the same init');
  assert.equal(await cjs.init(), cjs);
  assert.equal(cjs.initSync(), cjs);
  assert.equal(cjs.Volume.memory(4096).size, 4096);
});

test('the browser build (--target web) works with init() and writes the same COW bytes', async () => {
  const web = await import('cowsnap/web');
  assert.notEqual(web.Volume, esm.Volume, 'a separate build');
  await assert.rejects(Promise.resolve().then(() => web.Volume.memory(4096)), 'unusable before init');
  await web.default({ module_or_path: readFileSync(join(PKG_DIR, 'web/cowsnap_bg.wasm')) });
  const run = (m) => {
    const vol = m.Volume.memory(MiB);
    const s = vol.snapshot({ cowSize: 128 * KiB, chunkSize: 8 * KiB });
    vol.write(20000, text('web or node'));
    s.write(0, text('snap'));
    return { cow: s.exportCow(), status: s.status(), origin: vol.originImage() };
  };
  const a = run(web);
  const b = run(esm);
  assertBytesEqual(a.cow, b.cow, 'COW');
  assertBytesEqual(a.origin, b.origin, 'origin');
  assert.deepEqual(a.status, b.status);
  try {
    web.Volume.memory(1).read(5, 1);
    assert.fail('no throw');
  } catch (e) {
    assert.equal(e.code, 'OUT_OF_RANGE', 'coded errors in the web build too');
  }
});

/** Names declared in `export class NAME { ... }` of index.d.ts (methods, getters, statics). */
function declaredMembers(dts, cls) {
  const m = dts.match(new RegExp(`export class ${cls} \\{([\\s\\S]*?)\\n\\}`));
  assert.ok(m, `class ${cls} in index.d.ts`);
  const body = m[1].replace(/\/\*\*[\s\S]*?\*\//g, '');
  const inst = new Set();
  const stat = new Set();
  for (const line of body.split('\n')) {
    const d = line.trim().match(/^(static\s+)?(readonly\s+)?([A-Za-z_]\w*)\s*[(:]/);
    if (!d || d[3] === 'constructor') continue;
    (d[1] ? stat : inst).add(d[3]);
  }
  return { inst, stat };
}

/** Checks a declaration file against a module namespace: every declared function, every export. */
function checkDeclarations(file, mod, defaultName) {
  const dts = readFileSync(join(PKG_DIR, file), 'utf8');
  const fns = [...dts.matchAll(/^export (default )?function (\w+)/gm)].map((m) => (m[1] ? 'default' : m[2]));
  if (defaultName) assert.ok(fns.includes('default'), `${file}: a default export`);
  else assert.ok(!fns.includes('default'), `${file}: no default export (CommonJS has none)`);
  for (const f of fns) assert.equal(typeof mod[f], 'function', `${file}: declared function ${f}`);
  const runtimeExports = Object.keys(mod).filter((k) => k !== 'default');
  for (const k of runtimeExports) {
    assert.ok(fns.includes(k) || new RegExp(`export class ${k} `).test(dts), `${file}: export ${k} is declared`);
  }
  for (const cls of ['Volume', 'Snapshot']) {
    const C = mod[cls];
    const { inst, stat } = declaredMembers(dts, cls);
    const protoNames = new Set(Object.getOwnPropertyNames(C.prototype).filter((n) => n !== 'constructor' && !n.startsWith('__')));
    const staticNames = new Set(Object.getOwnPropertyNames(C).filter((n) => typeof C[n] === 'function' && !n.startsWith('__')));
    assert.deepEqual([...inst].sort(), [...protoNames].sort(), `${file}: ${cls} instance members`);
    assert.deepEqual([...stat].sort(), [...staticNames].sort(), `${file}: ${cls} static members`);
  }
}

test('index.d.mts declares exactly what `import` gives (Node.js and the browser build)', async () => {
  checkDeclarations('index.d.mts', esm, 'init');
  checkDeclarations('index.d.mts', await import('cowsnap/web'), 'init');
});

test('index.d.cts declares exactly what `require` gives', () => {
  checkDeclarations('index.d.cts', require('cowsnap'), null);
});
