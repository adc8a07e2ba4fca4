
// --- appended to wasm-bindgen's nodejs glue by wasm/build.sh (from wasm/js/node-init.cjs) ---
// The module is instantiated synchronously on require; `init` and `initSync` exist so that code
// written for the browser build (`await init()`) runs unchanged, with `require` as with `import`.
module.exports.init = async function init() {
  return module.exports;
};
module.exports.initSync = function initSync() {
  return module.exports;
};
