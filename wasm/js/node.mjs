// ES-module entry for Node.js: the wasm-bindgen `nodejs` build (CommonJS, which loads and instantiates
// the .wasm synchronously), plus an `init()` that does nothing, so that the same code
// (`import init, { Volume } from 'cowsnap'; await init();`) runs in Node.js and in the browser.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const cowsnap = require('./cowsnap.js');

export const { Volume, Snapshot, version, errorCodes } = cowsnap;

/** Already initialised in Node.js: resolves at once. */
export default async function init() {
  return cowsnap;
}

/** Already initialised in Node.js. */
export function initSync() {
  return cowsnap;
}
