
// --- `require('cowsnap')` (Node.js, `node/cowsnap.js`): the module is loaded on require ---

/** Already loaded: resolves at once (for code shared with the browser build's `await init()`). */
export function init(): Promise<unknown>;

/** Already loaded: does nothing (the browser build's `initSync`). */
export function initSync(): unknown;
