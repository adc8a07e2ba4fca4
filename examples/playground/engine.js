// The one place that knows how the npm package's browser build is loaded and what its objects look
// like; app.js only talks to the functions below. The package is served at /pkg/ by serve.mjs, which
// also makes /pkg/entry.js (a re-export of the wasm-bindgen entry module, whatever its name).

import init, * as pkg from '/pkg/entry.js';

export async function loadEngine() {
  await init();
  return pkg;
}

const num = (v) => (typeof v === 'bigint' ? Number(v) : v);

// snap.status() normalised: numbers (never BigInt), lowercase state, dataPercent null when absent.
export function statusOf(snap) {
  const s = snap.status();
  return {
    state: String(s.state).toLowerCase(),
    sectorsAllocated: num(s.sectorsAllocated),
    totalSectors: num(s.totalSectors),
    metadataSectors: num(s.metadataSectors),
    dataPercent: s.dataPercent === undefined || s.dataPercent === null ? null : num(s.dataPercent),
    exceptions: s.exceptions === undefined ? null : num(s.exceptions),
    attr: s.lvsAttr ?? s.attr ?? null,
    dmStatus: s.dmStatus ?? null,
    chunkBytes: s.chunkSize === undefined ? null : num(s.chunkSize),
    cowBytes: s.cowSize === undefined ? null : num(s.cowSize),
    raw: s,
  };
}

// snap.exceptions() normalised to [{ oldChunk, newChunk }] with numbers.
export function exceptionsOf(snap) {
  return Array.from(snap.exceptions(), (e) => ({ oldChunk: num(e.oldChunk), newChunk: num(e.newChunk) }));
}
