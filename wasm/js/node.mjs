// ES-module entry for Node.js: the wasm-bindgen `nodejs` build (CommonJS, which loads and instantiates
// the .wasm synchronously), re-exported, so that `import` and `require` share one module instance.
// Its `init()` resolves at once, so that the same code
// (`import init, { Volume } from 'cowsnap'; await init();`) runs in Node.js and in the browser.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const cowsnap = require('./cowsnap.js');

export const { Volume, Snapshot, version, errorCodes, initSync } = cowsnap;
export default cowsnap.init;
