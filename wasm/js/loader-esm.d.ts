
// --- `import` (Node.js `node/index.mjs` and the browser build `web/cowsnap.js`) ---

/**
 * Loads the WebAssembly module. Required once before anything else in the browser build; in
 * Node.js the module is loaded on import and this resolves at once. `input` (browser only) is what
 * wasm-bindgen's `init` takes: `{ module_or_path }` with a URL, `Response`, bytes or
 * `WebAssembly.Module` of `cowsnap_bg.wasm` (default: fetched next to `cowsnap.js`).
 */
export default function init(input?: unknown): Promise<unknown>;

/** Synchronous `init` from the module's bytes (`{ module }`, browser) or nothing (Node.js). */
export function initSync(module?: unknown): unknown;
