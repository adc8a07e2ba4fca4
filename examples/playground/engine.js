// The one place that knows how the npm package's browser build is loaded and what its objects look
// like; app.js only talks to the functions below. The package is served at /pkg/ by serve.mjs.

import init, * as pkg from '/pkg/cowsnap.js';

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
    attr: s.attr ?? s.lvsAttr ?? null,
    dmStatus: s.dmStatus ?? null,
    chunkBytes: s.chunkBytes === undefined ? null : num(s.chunkBytes),
    raw: s,
  };
}

// snap.exceptions() normalised to [{ oldChunk, newChunk }] with numbers.
export function exceptionsOf(snap) {
  return Array.from(snap.exceptions(), (e) => ({ oldChunk: num(e.oldChunk), newChunk: num(e.newChunk) }));
}
