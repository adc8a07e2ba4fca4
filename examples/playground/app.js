// cowsnap playground: drives the real engine (the npm package's browser build) and draws what it does.
// No state of the engine is modelled here: every number and map shown is read back from the engine
// (status(), exceptions(), read(), exportCow()) after each action.

import { loadEngine, statusOf, exceptionsOf } from './engine.js';

const $ = (id) => document.getElementById(id);
const MAX_CELLS = 1024; // chunks drawn per grid
const DENSE = 256; // above this many cells, grids use small unlabelled squares
const SECTOR = 512;

const S = {
  cs: null, // the package
  vol: null,
  size: 0,
  chunk: 4096, // display / default snapshot chunk size
  snaps: [], // { name, snap, store, chunk, autoextend, fresh:Set, explain:{cls,text}|null, cowBytes }
  selected: null, // name of the snapshot compared in the hex view and highlighted
  written: new Set(), // origin chunks touched by the last write
  lastExport: null, // { name, bytes } of the last COW export (test hook)
  imported: null,
  counter: 0,
  busy: false,
};

// ---------------------------------------------------------------- small helpers

function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k);
  return e;
}

// "4096", "4k", "1m", "0x1000", "8s" (sectors) -> bytes.
export function parseNum(str, what) {
  const s = String(str).trim().toLowerCase();
  const m = /^(0x[0-9a-f]+|\d+)\s*(k|kib|m|mib|s)?$/.exec(s);
  if (!m) throw new RangeError(`${what}: "${str}" is not a number (examples: 4096, 4k, 0x1000, 8s)`);
  const n = Number(m[1]);
  const mult = { k: 1024, kib: 1024, m: 1 << 20, mib: 1 << 20, s: SECTOR }[m[2]] || 1;
  return n * mult;
}

function fmtBytes(n) {
  if (n >= 1 << 20 && n % (1 << 20) === 0) return `${n >> 20} MiB`;
  if (n >= 1024 && n % 1024 === 0) return `${n >> 10} KiB`;
  return `${n} B`;
}

// lvs-style size: 256.00k, 1.00m
function lvsSize(n) {
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(2)}m`;
  return `${(n / 1024).toFixed(2)}k`;
}

function fmtPercent(p) {
  return p === null ? '' : p.toFixed(2);
}

// FNV-1a over a byte range: the colour of a chunk is a function of its contents.
function hashBytes(b, start, end) {
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) {
    h ^= b[i];
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

function chunkFace(b, start, end) {
  const h = hashBytes(b, start, end);
  let uniform = true;
  for (let i = start + 1; i < end; i++) if (b[i] !== b[start]) { uniform = false; break; }
  let label;
  if (uniform) label = b[start].toString(16).padStart(2, '0');
  else {
    label = '';
    for (let i = start; i < Math.min(end, start + 3); i++) {
      const c = b[i];
      label += c >= 0x21 && c < 0x7f ? String.fromCharCode(c) : c === 0x20 ? '\u00b7' : '.';
    }
  }
  const color = uniform && b[start] === 0 ? '#ffffff' : `hsl(${h % 360} ${45 + ((h >>> 9) % 30)}% ${72 + ((h >>> 17) % 14)}%)`;
  return { hash: h.toString(16).padStart(8, '0'), label, color };
}

function errText(e) {
  if (e && e.code) return `${e.code}: ${e.message}`;
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return String(e);
}

function log(text, cls = '') {
  const li = el('li', { class: cls, text: `${new Date().toLocaleTimeString()}  ${text}` });
  const ol = $('log');
  ol.append(li);
  while (ol.children.length > 200) ol.firstChild.remove();
  li.scrollIntoView({ block: 'nearest' });
}

function message(html, cls = '') {
  const m = $('message');
  m.className = `message ${cls}`;
  m.innerHTML = html;
}

const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);

// lvs attributes, dmsetup status and Data% are the engine's (the core's rules), never restated here.
const attrOf = (rec, st) => st.attr;
const dmStatusOf = (st) => st.dmStatus;

// ---------------------------------------------------------------- facts read back from the engine

function facts(rec) {
  const st = statusOf(rec.snap);
  let exc = [];
  try {
    exc = exceptionsOf(rec.snap);
  } catch {
    exc = [];
  }
  return { st, exc, cowBytes: st.totalSectors * SECTOR };
}

function readAll(reader) {
  const out = new Uint8Array(S.size);
  const step = 1 << 20;
  for (let off = 0; off < S.size; off += step) {
    const n = Math.min(step, S.size - off);
    out.set(reader.read(off, n), off);
  }
  return out;
}

// ---------------------------------------------------------------- rendering

function render() {
  renderLvs();
  renderOrigin();
  renderSnapshots();
  renderSelects();
  const have = !!S.vol;
  for (const id of ['snap-create', 'write-go', 'read-go', 'origin-export']) $(id).disabled = !have || S.busy;
  $('vol-create').disabled = S.busy;
  $('import-go').disabled = !S.cs || S.busy;
  requestAnimationFrame(drawArrows);
}

function renderLvs() {
  const tb = $('lvs-body');
  tb.replaceChildren();
  if (!S.vol) return;
  const all = new Map(S.snaps.map((r) => [r, facts(r)]));
  const oattr = S.vol.lvsAttr;
  tb.append(
    el('tr', { 'data-testid': 'lvs-row-origin' },
      el('td', { text: 'origin' }), el('td', { class: 'mono', 'data-testid': 'attr', text: oattr }),
      el('td', { class: 'num', text: lvsSize(S.size) }), el('td'), el('td'), el('td'), el('td'), el('td'), el('td'),
      el('td', { class: 'actions' })));
  for (const rec of S.snaps) {
    const f = all.get(rec);
    const st = f.st;
    const sel = S.selected === rec.name;
    tb.append(
      el('tr', { 'data-testid': `lvs-row-${rec.name}`, class: sel ? 'selected' : '', dataset: { name: rec.name } },
        el('td', { text: rec.name }),
        el('td', { class: 'mono', 'data-testid': 'attr', text: attrOf(rec, st) }),
        el('td', { class: 'num', text: lvsSize(S.size) }),
        el('td', { text: 'origin' }),
        el('td', { class: 'num', 'data-testid': 'data-percent', text: fmtPercent(st.dataPercent) }),
        el('td', {}, el('span', { class: `state ${st.state}`, 'data-testid': 'state', text: st.state[0].toUpperCase() + st.state.slice(1) })),
        el('td', { class: 'num', 'data-testid': 'cow-size', text: lvsSize(f.cowBytes) }),
        el('td', { class: 'num', 'data-testid': 'exc-count', text: String(f.exc.length) }),
        el('td', { class: 'mono', 'data-testid': 'dm-status', text: dmStatusOf(st) }),
        el('td', { class: 'actions' },
          el('button', { type: 'button', class: 'small', 'data-testid': 'select', 'aria-pressed': String(sel), text: 'Compare', title: 'compare with the origin in the hex view', onclick: () => select(rec.name) }),
          el('button', { type: 'button', class: 'small', 'data-testid': 'merge', text: 'Merge', title: 'lvconvert --merge', disabled: S.busy || st.state === 'invalid', onclick: () => doMerge(rec) }),
          el('button', { type: 'button', class: 'small', 'data-testid': 'extend', text: 'Extend +50%', title: 'lvextend the COW', disabled: S.busy, onclick: () => doExtend(rec) }),
          el('button', { type: 'button', class: 'small', 'data-testid': 'export', text: 'Export COW', title: 'download the dm-format COW image', disabled: S.busy || rec.store === 'N', onclick: () => doExport(rec) }),
          el('button', { type: 'button', class: 'small danger', 'data-testid': 'delete', text: 'Delete', title: 'lvremove', disabled: S.busy, onclick: () => doDelete(rec) }))));
  }
}

function gridCells(bytes, chunk, opts = {}) {
  const n = Math.ceil(S.size / chunk);
  const shown = Math.min(n, MAX_CELLS);
  const cells = [];
  for (let c = 0; c < shown; c++) {
    const start = c * chunk;
    const end = Math.min(S.size, start + chunk);
    const cell = el('div', { class: 'cell', dataset: { chunk: c, old: c } });
    if (bytes) {
      const f = chunkFace(bytes, start, end);
      cell.style.background = f.color;
      cell.dataset.hash = f.hash;
      cell.append(el('span', { class: 'k', text: c }), el('span', { class: 'v', text: f.label }));
      cell.title = `chunk ${c} (bytes ${start}–${end - 1}): ${opts.titleOf ? opts.titleOf(c) : ''}`;
    } else {
      cell.classList.add('dead');
      cell.append(el('span', { class: 'k', text: c }), el('span', { class: 'v', text: '✕' }));
      cell.title = `chunk ${c}: unreadable`;
    }
    if (opts.mark) opts.mark(c, cell);
    cells.push(cell);
  }
  const note = n > shown ? el('p', { class: 'hint', text: `showing the first ${shown} of ${n} chunks` }) : null;
  return { cells, note, dense: shown > DENSE };
}

function renderOrigin() {
  const g = $('origin-grid');
  g.replaceChildren();
  if (!S.vol) {
    $('origin-info').textContent = '';
    return;
  }
  const bytes = readAll(S.vol);
  S.originBytes = bytes;
  const { cells, note, dense } = gridCells(bytes, S.chunk, {
    mark: (c, cell) => { if (S.written.has(c)) cell.classList.add('written'); },
    titleOf: () => 'origin',
  });
  g.classList.toggle('dense', dense);
  g.parentElement.querySelectorAll('p.hint').forEach((x) => x.remove());
  g.append(...cells);
  if (note) g.after(note);
  $('origin-info').textContent = `${fmtBytes(S.size)}, ${Math.ceil(S.size / S.chunk)} chunks of ${fmtBytes(S.chunk)}`;
}

function cowHeader(rec) {
  if (rec.store === 'N') return null;
  try {
    const b = rec.snap.exportCow();
    if (b.length < 16) return null;
    const dv = new DataView(b.buffer, b.byteOffset, 16);
    return {
      magicBytes: Array.from(b.subarray(0, 4), (x) => x.toString(16).padStart(2, '0').toUpperCase()).join(' '),
      magicText: String.fromCharCode(...b.subarray(0, 4)),
      valid: dv.getUint32(4, true),
      version: dv.getUint32(8, true),
      chunkSectors: dv.getUint32(12, true),
    };
  } catch {
    return null;
  }
}

function renderSnapshots() {
  const box = $('snapshots');
  box.replaceChildren();
  for (const rec of S.snaps) box.append(snapCard(rec));
}

function snapCard(rec) {
  const f = facts(rec);
  const st = f.st;
  const chunk = rec.chunk;
  const excByOld = new Map(f.exc.map((e) => [e.oldChunk, e.newChunk]));
  const byNew = new Map(f.exc.map((e) => [e.newChunk, e.oldChunk]));
  let view = null;
  let viewErr = null;
  try {
    view = readAll(rec.snap);
  } catch (e) {
    viewErr = e;
  }
  const card = el('section', { class: `card snap-card ${S.selected === rec.name ? 'selected' : ''}`, 'data-testid': `snap-card-${rec.name}`, dataset: { name: rec.name } });
  const storeName = { P: 'persistent (P)', PO: 'persistent, overflow reported (PO)', N: 'transient (N)' }[rec.store];
  const ae = rec.autoextend ? `, autoextend at ${rec.autoextend.threshold}% by ${rec.autoextend.percent}%` : '';
  card.append(el('h2', {}, `Snapshot ${rec.name} `, el('small', { text: `${storeName}, chunk ${fmtBytes(chunk)}, COW ${fmtBytes(f.cowBytes)}${ae}` })));
  if (rec.explain) card.append(el('p', { class: `explain ${rec.explain.cls}`, 'data-testid': 'explain', text: rec.explain.text }));
  if (typeof rec.snap.setAutoextend === 'function' && st.state !== 'invalid') {
    const th = el('input', { type: 'number', min: '1', max: '100', value: rec.autoextend?.threshold ?? 70, 'aria-label': 'autoextend threshold %', 'data-testid': 'ae-threshold' });
    const pc = el('input', { type: 'number', min: '1', value: rec.autoextend?.percent ?? 50, 'aria-label': 'autoextend grow by %', 'data-testid': 'ae-percent' });
    card.append(el('form', { class: 'ae-form', 'data-testid': 'ae-form',
      onsubmit: guard(() => setAutoextend(rec, { threshold: Number(th.value), percent: Number(pc.value) })) },
      'autoextend: at ', th, '% grow by ', pc, '% ',
      el('button', { type: 'submit', class: 'small', 'data-testid': 'ae-set', text: 'Set', disabled: S.busy }),
      el('button', { type: 'button', class: 'small', 'data-testid': 'ae-clear', text: 'Off', disabled: S.busy || !rec.autoextend,
        onclick: guard(() => setAutoextend(rec, null)) })));
  }

  // Left: what the snapshot reads (its own copies where it has them, the origin elsewhere).
  const left = el('div', {}, el('h3', {}, 'Snapshot view ', el('small', { text: 'chunks with a dot are read from the COW' })));
  const { cells, note, dense } = gridCells(view, chunk, {
    mark: (c, cell) => {
      if (excByOld.has(c)) {
        cell.classList.add('cowed');
        cell.dataset.new = excByOld.get(c);
        if (rec.fresh.has(c)) cell.classList.add('fresh');
      }
    },
    titleOf: (c) => (excByOld.has(c) ? `from COW chunk ${excByOld.get(c)}` : 'shared with the origin'),
  });
  if (view) {
    left.append(el('div', { class: `grid small view-grid${dense ? ' dense' : ''}`, 'data-testid': 'view-grid' }, cells));
    if (note) left.append(note);
  } else {
    // An unreadable snapshot (invalid): no view to draw, only why.
    left.append(el('div', { class: 'grid small view-grid', 'data-testid': 'view-grid', hidden: true }),
      el('p', { class: 'explain bad', 'data-testid': 'read-error', text: `every read fails: ${errText(viewErr)}` }));
  }

  // Middle: the COW device, chunk by chunk.
  const mid = el('div', {}, el('h3', {}, 'COW device ',
    el('small', {}, el('span', { class: 'sw hdr' }), ' header ', el('span', { class: 'sw meta' }), ' metadata ', el('span', { class: 'sw free' }), ' free')));
  const cowChunks = Math.floor(f.cowBytes / chunk);
  const shownCow = Math.min(cowChunks, 512);
  const epa = chunk / 16;
  const chunkSectors = chunk / SECTOR;
  const areasSoFar = rec.store === 'N' ? 0 : Math.max(0, Math.round(st.metadataSectors / chunkSectors) - 1);
  const cmap = el('div', { class: `grid small cow-grid${shownCow > DENSE ? ' dense' : ''}`, 'data-testid': 'cow-grid' });
  for (let c = 0; c < shownCow; c++) {
    const cell = el('div', { class: 'cell', dataset: { cow: c } });
    if (rec.store !== 'N' && c === 0) {
      cell.classList.add('hdr');
      cell.append(el('span', { class: 'k', text: 'H' }), el('span', { class: 'v', text: c }));
      cell.title = 'COW chunk 0: header (magic SnAp, valid, version, chunk size)';
    } else if (rec.store !== 'N' && (c - 1) % (epa + 1) === 0) {
      const a = (c - 1) / (epa + 1);
      cell.classList.add('meta');
      if (a >= areasSoFar) cell.style.opacity = '0.45';
      cell.append(el('span', { class: 'k', text: `M${a}` }), el('span', { class: 'v', text: c }));
      cell.title = `COW chunk ${c}: metadata area ${a} (${epa} records of old→new chunk)${a >= areasSoFar ? ', not used yet' : ''}`;
    } else if (byNew.has(c)) {
      const old = byNew.get(c);
      cell.dataset.old = old;
      cell.dataset.new = c;
      if (view) cell.style.background = chunkFace(view, old * chunk, Math.min(S.size, (old + 1) * chunk)).color;
      if (rec.fresh.has(old)) cell.classList.add('fresh');
      cell.append(el('span', { class: 'k', text: `←${old}` }), el('span', { class: 'v', text: c }));
      cell.title = `COW chunk ${c}: data of origin chunk ${old}`;
    } else {
      cell.classList.add('free');
      cell.append(el('span', { class: 'v', text: c }));
      cell.title = `COW chunk ${c}: free`;
    }
    cmap.append(cell);
  }
  mid.append(cmap);
  if (cowChunks > shownCow) mid.append(el('p', { class: 'hint', text: `showing the first ${shownCow} of ${cowChunks} COW chunks` }));
  const hdr = cowHeader(rec);
  if (hdr) {
    mid.append(el('p', { class: 'header-line', 'data-testid': 'header-line',
      text: `header: magic ${hdr.magicBytes} (${hdr.magicText}) · valid ${hdr.valid} · version ${hdr.version} · chunk ${hdr.chunkSectors} sectors` }));
  }
  mid.append(el('p', { class: 'header-line', text: `dmsetup status: ${dmStatusOf(st)}` }));

  // Right: the exception table.
  const rows = f.exc.slice(0, 2000).map((e) =>
    el('tr', { tabindex: '0', dataset: { old: e.oldChunk, new: e.newChunk } },
      el('td', { text: e.oldChunk }), el('td', { text: '→' }), el('td', { text: e.newChunk })));
  const right = el('div', {},
    el('h3', {}, 'Exceptions ', el('small', { 'data-testid': 'exc-summary', text: `${f.exc.length} chunk${f.exc.length === 1 ? '' : 's'} copied` })),
    el('div', { class: 'exc-table' },
      el('table', { 'data-testid': 'exc-table' },
        el('thead', {}, el('tr', {}, el('th', { text: 'origin' }), el('th'), el('th', { text: 'COW' }))),
        el('tbody', {}, rows))));
  if (!f.exc.length) right.append(el('p', { class: 'hint', text: st.state === 'invalid' ? 'none: an invalid snapshot drops its table' : 'none yet: write to the origin' }));

  card.append(el('div', { class: 'snap-body' }, left, mid, right));
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('class', 'arrows');
  svg.setAttribute('aria-hidden', 'true');
  card.append(svg);

  const highlight = (target) => {
    clearHighlight();
    const t = target.closest('[data-old]');
    if (!t || t.dataset.old === undefined) return;
    const old = t.dataset.old;
    if (!excByOld.has(Number(old))) return;
    document.querySelectorAll(`#origin-grid [data-chunk="${old}"]`).forEach((x) => x.classList.add('hl'));
    card.querySelectorAll(`[data-old="${old}"]`).forEach((x) => x.classList.add('hl'));
    card.querySelectorAll(`svg.arrows path[data-old="${old}"]`).forEach((x) => x.classList.add('hl'));
  };
  card.addEventListener('mouseover', (e) => highlight(e.target));
  card.addEventListener('focusin', (e) => highlight(e.target));
  card.addEventListener('mouseleave', clearHighlight);
  card.addEventListener('focusout', clearHighlight);
  return card;
}

function clearHighlight() {
  document.querySelectorAll('.hl').forEach((x) => x.classList.remove('hl'));
}

// Arrows from each copied chunk in the snapshot view to the COW chunk that holds it.
function drawArrows() {
  for (const card of document.querySelectorAll('.snap-card')) {
    const svg = card.querySelector('svg.arrows');
    if (!svg) continue;
    svg.replaceChildren();
    // Many exceptions: arrows appear only for the highlighted chunk.
    svg.classList.toggle('many', card.querySelectorAll('.view-grid .cell.cowed').length > 64);
    const cr = card.getBoundingClientRect();
    svg.setAttribute('width', cr.width);
    svg.setAttribute('height', cr.height);
    const cow = card.querySelector('.cow-grid');
    const stacked = card.querySelector('.snap-body').children[1].getBoundingClientRect().top >
      card.querySelector('.snap-body').children[0].getBoundingClientRect().bottom - 5;
    for (const v of card.querySelectorAll('.view-grid .cell.cowed')) {
      const target = cow.querySelector(`[data-cow="${v.dataset.new}"]`);
      if (!target) continue;
      const a = v.getBoundingClientRect();
      const b = target.getBoundingClientRect();
      let d;
      if (stacked) {
        const x1 = a.left + a.width / 2 - cr.left, y1 = a.bottom - cr.top;
        const x2 = b.left + b.width / 2 - cr.left, y2 = b.top - cr.top;
        d = `M${x1},${y1} C${x1},${y1 + 40} ${x2},${y2 - 40} ${x2},${y2}`;
      } else {
        const x1 = a.right - cr.left, y1 = a.top + a.height / 2 - cr.top;
        const x2 = b.left - cr.left, y2 = b.top + b.height / 2 - cr.top;
        const dx = Math.max(30, (x2 - x1) / 2);
        d = `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
      }
      const p = document.createElementNS('http://www.w3.org/2000/svg', 'path');
      p.setAttribute('d', d);
      p.dataset.old = v.dataset.old;
      svg.append(p);
    }
  }
}

function renderSelects() {
  const wt = $('write-target');
  const keep = wt.value;
  wt.replaceChildren(el('option', { value: 'origin', text: 'origin' }), ...S.snaps.map((r) => el('option', { value: r.name, text: `snapshot ${r.name}` })));
  wt.value = [...wt.options].some((o) => o.value === keep) ? keep : 'origin';
  const rr = $('read-right');
  const keepR = S.selected || rr.value;
  rr.replaceChildren(...S.snaps.map((r) => el('option', { value: r.name, text: `snapshot ${r.name}` })));
  if (!S.snaps.length) rr.append(el('option', { value: 'origin', text: 'origin' }));
  rr.value = [...rr.options].some((o) => o.value === keepR) ? keepR : rr.options[0]?.value;
}

// ---------------------------------------------------------------- actions

function freeAll() {
  for (const r of S.snaps) {
    try { r.snap.free(); } catch { /* already consumed */ }
  }
  if (S.vol) {
    try { S.vol.free(); } catch { /* ignore */ }
  }
  S.snaps = [];
  S.vol = null;
  S.selected = null;
  S.written = new Set();
}

function createVolume(size, chunk) {
  freeAll();
  const vol = S.cs.Volume.memory(size);
  // The pattern: chunk i holds "<letter><i> " repeated, so every chunk has its own contents (colour).
  const buf = new Uint8Array(size);
  const enc = new TextEncoder();
  for (let c = 0; c * chunk < size; c++) {
    const word = enc.encode(`${String.fromCharCode(65 + (c % 26))}${c} `);
    const end = Math.min(size, (c + 1) * chunk);
    for (let i = c * chunk, j = 0; i < end; i++, j = (j + 1) % word.length) buf[i] = word[j];
  }
  vol.write(0, buf);
  S.vol = vol;
  S.size = size;
  S.chunk = chunk;
  S.counter = 0;
  $('snap-name').value = 'snap0';
  log(`created a ${fmtBytes(size)} origin (${Math.ceil(size / chunk)} chunks of ${fmtBytes(chunk)}) and filled it with a pattern`, 'ok');
  message(`Origin ready. Now <b>Take snapshot</b>: it copies nothing until the origin changes.`, 'ok');
  resetPanels();
}

function resetPanels() {
  $('hex-card').hidden = true;
  $('inspect-card').hidden = true;
  $('merge-box').hidden = true;
}

function snapshotOptions(cowSize, store, autoextend) {
  const o = {
    cowSize,
    chunkSize: S.chunk,
    persistent: store !== 'N',
    overflow: store === 'PO' ? 'report' : 'invalidate',
  };
  if (autoextend) o.autoextend = { threshold: autoextend.threshold, percent: autoextend.percent };
  return o;
}

function createSnapshot(name, cowSize, store, autoextend) {
  if (S.snaps.some((r) => r.name === name)) throw new RangeError(`a snapshot named ${name} exists already`);
  const snap = S.vol.snapshot(snapshotOptions(cowSize, store, autoextend));
  const rec = { name, snap, store, chunk: S.chunk, autoextend, fresh: new Set(), explain: null };
  S.snaps.push(rec);
  if (!S.selected) S.selected = name;
  const f = facts(rec);
  log(`lvcreate -s -L ${lvsSize(cowSize)} -n ${name}: ${store} store, chunk ${fmtBytes(S.chunk)}; nothing copied, Data% ${fmtPercent(f.st.dataPercent)}`, 'ok');
  S.counter++;
  let next = `snap${S.counter}`;
  while (S.snaps.some((r) => r.name === next)) next = `snap${++S.counter}`;
  $('snap-name').value = next;
  return rec;
}

// Runs an engine action and explains what changed in every snapshot (copies, Data%, state, size).
function observed(what, action) {
  const before = new Map(S.snaps.map((r) => [r.name, facts(r)]));
  let err = null;
  try {
    action();
  } catch (e) {
    err = e;
  }
  const notes = [];
  for (const r of S.snaps) {
    const b = before.get(r.name);
    if (!b) continue;
    const a = facts(r);
    const had = new Set(b.exc.map((e) => e.oldChunk));
    const added = a.exc.filter((e) => !had.has(e.oldChunk));
    r.fresh = new Set(added.map((e) => e.oldChunk));
    if (added.length) {
      const list = added.slice(0, 8).map((e) => `${e.oldChunk}→${e.newChunk}`).join(', ') + (added.length > 8 ? ', …' : '');
      log(`${r.name}: copied ${added.length} chunk${added.length > 1 ? 's' : ''} into its COW (origin→COW: ${list}); Data% ${fmtPercent(b.st.dataPercent)} → ${fmtPercent(a.st.dataPercent)}`);
    }
    if (a.cowBytes > b.cowBytes) {
      log(`${r.name}: autoextend grew the COW from ${fmtBytes(b.cowBytes)} to ${fmtBytes(a.cowBytes)} (Data% would have passed ${r.autoextend?.threshold}%)`, 'ok');
      notes.push(`<b>${esc(r.name)}</b> grew from ${fmtBytes(b.cowBytes)} to ${fmtBytes(a.cowBytes)} by autoextend.`);
    }
    if (a.st.state !== b.st.state) {
      const text = explainTransition(r, b, a, what);
      r.explain = { cls: a.st.state === 'invalid' ? 'bad' : 'warn', text };
      log(`${r.name}: ${b.st.state} → ${a.st.state}. ${text}`, a.st.state === 'invalid' ? 'bad' : 'warn');
      notes.push(`<b>${esc(r.name)}</b> is now <b>${a.st.state === 'invalid' ? 'Invalid' : a.st.state === 'overflow' ? 'Overflow' : a.st.state}</b>: ${esc(text)}`);
    }
  }
  return { err, notes };
}

function explainTransition(r, b, a, what) {
  const data = Math.max(0, Math.floor(a.cowBytes / r.chunk) - (r.store === 'N' ? 0 : Math.round(b.st.metadataSectors / (r.chunk / SECTOR))));
  if (a.st.state === 'invalid' && what === 'origin') {
    return `the origin write needed to save old chunks in its COW, but the COW (${fmtBytes(a.cowBytes)}, about ${data} data chunks after header and metadata) was full. ` +
      'dm-snapshot cannot keep the old data any more, so it invalidates the whole snapshot (header valid = 0): every read or write of it now fails, ' +
      'lvs shows attr swi-I-s--- and no Data%. The origin write itself went ahead. Avoid it with a bigger COW (-L), autoextend, or merge/remove the snapshot in time.';
  }
  if (a.st.state === 'invalid') {
    return 'a write to the snapshot itself needed a new COW chunk but the COW was full; with store P (what LVM uses) that invalidates the snapshot for good.';
  }
  if (a.st.state === 'overflow') {
    return 'a write to the snapshot needed a new COW chunk but the COW was full; with store PO the snapshot reports Overflow instead of dying: ' +
      'further writes are refused, reads still work (dmsetup status says "Overflow", Data% 100).';
  }
  return `state changed from ${b.st.state} to ${a.st.state}.`;
}

function doWrite() {
  const target = $('write-target').value;
  const offset = parseNum($('write-offset').value, 'offset');
  const length = parseNum($('write-length').value, 'length');
  if (length <= 0) throw new RangeError('length must be at least 1 byte');
  if (length > 64 << 20) throw new RangeError('length: at most 64 MiB per write here');
  const data = new Uint8Array(length);
  const raw = $('write-data').value;
  let desc;
  if ($('write-kind').value === 'byte') {
    const v = parseNum(raw, 'fill byte');
    if (v > 255) throw new RangeError(`fill byte: ${raw} is more than 0xFF`);
    data.fill(v);
    desc = `byte 0x${v.toString(16).padStart(2, '0')}`;
  } else {
    const t = new TextEncoder().encode(raw);
    if (!t.length) throw new RangeError('text: type something to write');
    for (let i = 0; i < length; i++) data[i] = t[i % t.length];
    desc = `text "${raw}"`;
  }
  const rec = target === 'origin' ? null : S.snaps.find((r) => r.name === target);
  if (target !== 'origin' && !rec) throw new RangeError(`no snapshot ${target}`);
  const { err, notes } = observed(target, () => (rec ? rec.snap : S.vol).write(offset, data));
  const first = Math.floor(offset / S.chunk);
  const last = Math.floor((offset + length - 1) / S.chunk);
  S.written = new Set();
  if (!rec && !err) for (let c = first; c <= last && c - first < MAX_CELLS; c++) S.written.add(c);
  const where = `${target} bytes ${offset}–${offset + length - 1} (chunk${first === last ? ` ${first}` : `s ${first}–${last}`})`;
  if (err) {
    log(`write ${desc} to ${where} failed: ${errText(err)}`, 'bad');
    message(`Write to ${esc(where)} failed: <b>${esc(errText(err))}</b>${notes.length ? '<br>' + notes.join('<br>') : ''}`, 'bad');
  } else {
    log(`wrote ${desc} to ${where}`);
    message(notes.length ? notes.join('<br>') : `Wrote ${esc(desc)} to ${esc(where)}. ${rec ? 'The origin is untouched.' : 'Snapshots that lacked these chunks got a copy first.'}`, notes.length ? 'warn' : '');
  }
}

function hexDump(bytes, other, offset) {
  const frag = document.createDocumentFragment();
  for (let i = 0; i < bytes.length; i += 16) {
    frag.append(el('span', { class: 'o', text: (offset + i).toString(16).padStart(8, '0') + '  ' }));
    let ascii = '';
    for (let j = 0; j < 16; j++) {
      if (i + j < bytes.length) {
        const v = bytes[i + j];
        const diff = other && other[i + j] !== v;
        frag.append(diff ? el('span', { class: 'd', text: v.toString(16).padStart(2, '0') }) : v.toString(16).padStart(2, '0'));
        frag.append(j === 7 ? '  ' : ' ');
        ascii += v >= 0x20 && v < 0x7f ? String.fromCharCode(v) : '.';
      } else {
        frag.append(j === 7 ? '    ' : '   ');
      }
    }
    frag.append(el('span', { class: 'o', text: ` |${ascii}|\n` }));
  }
  return frag;
}

function doRead() {
  const offset = parseNum($('read-offset').value, 'offset');
  const length = parseNum($('read-length').value, 'length');
  if (length <= 0 || length > 4096) throw new RangeError('length: 1 to 4096 bytes for the hex view');
  const rightName = $('read-right').value;
  const rec = S.snaps.find((r) => r.name === rightName);
  let left, right, lerr, rerr;
  try { left = S.vol.read(offset, length); } catch (e) { lerr = e; }
  try { right = rec ? rec.snap.read(offset, length) : S.vol.read(offset, length); } catch (e) { rerr = e; }
  $('hex-card').hidden = false;
  $('hex-info').textContent = `bytes ${offset}–${offset + length - 1}; differing bytes highlighted`;
  $('hex-right-title').textContent = rec ? `snapshot ${rec.name}` : 'origin';
  $('hex-left').replaceChildren(lerr ? errText(lerr) : hexDump(left, right, offset));
  $('hex-right').replaceChildren(rerr ? errText(rerr) : hexDump(right, left, offset));
  let ndiff = 0;
  if (left && right) for (let i = 0; i < length; i++) if (left[i] !== right[i]) ndiff++;
  $('hex-card').dataset.diff = String(ndiff);
  log(`read ${length} bytes at ${offset} from origin and ${rec ? rec.name : 'origin'}: ${lerr || rerr ? 'error: ' + errText(lerr || rerr) : `${ndiff} bytes differ`}`, lerr || rerr ? 'bad' : '');
  $('hex-card').scrollIntoView({ block: 'nearest' });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function setMergeBar(name, merged, total) {
  const pct = total ? Math.round((merged * 100) / total) : 100;
  $('merge-box').hidden = false;
  $('merge-label').textContent = `merging ${name}`;
  $('merge-progress').value = pct;
  $('merge-text').textContent = `${merged}/${total} chunks (${pct}%)`;
}

async function doMerge(rec) {
  if (S.busy) return;
  S.busy = true;
  const before = S.vol ? readAll(S.vol) : null;
  const total0 = facts(rec).exc.length;
  render();
  try {
    setMergeBar(rec.name, 0, total0);
    // merge(onProgress) runs the core's merge loop and calls back after every step; a callback that
    // throws stops the merge there and the next merge() resumes it. So: one step per call, and the
    // page redraws between steps (the snapshot shows as Merging, the origin already reads merged).
    const PAUSE = { pause: true };
    let last = -1;
    let steps = 0;
    for (;;) {
      try {
        rec.snap.merge((p) => {
          const merged = Number(p.merged);
          setMergeBar(rec.name, merged, Number(p.total));
          const stepped = last >= 0 && merged > last;
          last = merged;
          if (stepped) steps++;
          if (stepped && !p.done) throw PAUSE;
        });
        break;
      } catch (e) {
        if (e !== PAUSE) throw e;
      }
      render();
      await sleep(Math.min(300, 1500 / Math.max(1, total0)));
    }
    setMergeBar(rec.name, total0, total0);
    S.snaps = S.snaps.filter((r) => r !== rec);
    if (S.selected === rec.name) S.selected = S.snaps[0]?.name ?? null;
    const after = readAll(S.vol);
    const changed = [];
    for (let c = 0; c * S.chunk < S.size; c++) {
      const s = c * S.chunk, e = Math.min(S.size, s + S.chunk);
      if (hashBytes(before, s, e) !== hashBytes(after, s, e)) changed.push(c);
    }
    S.written = new Set(changed);
    log(`lvconvert --merge ${rec.name}: ${total0} chunk${total0 === 1 ? '' : 's'} copied back in ${steps} merge step${steps === 1 ? '' : 's'}; origin chunks changed: ${changed.length ? changed.join(', ') : 'none'}; the snapshot is gone`, 'ok');
    message(`Merged <b>${esc(rec.name)}</b> into the origin: the origin now reads what the snapshot held (${changed.length} chunk${changed.length === 1 ? '' : 's'} changed, outlined). The snapshot no longer exists.`, 'ok');
  } catch (e) {
    log(`merge ${rec.name} failed: ${errText(e)}`, 'bad');
    message(`Merge of ${esc(rec.name)} failed: <b>${esc(errText(e))}</b>`, 'bad');
  } finally {
    S.busy = false;
    render();
  }
}

function doDelete(rec) {
  rec.snap.delete();
  S.snaps = S.snaps.filter((r) => r !== rec);
  if (S.selected === rec.name) S.selected = S.snaps[0]?.name ?? null;
  log(`lvremove ${rec.name}: snapshot and its COW dropped; the origin is unchanged`, 'ok');
  message(`Deleted <b>${esc(rec.name)}</b>.`, 'ok');
  render();
}

function doExtend(rec) {
  const cur = facts(rec).cowBytes;
  const grown = Math.ceil((cur * 1.5) / rec.chunk) * rec.chunk;
  const { err, notes } = observed('extend', () => rec.snap.extend(grown));
  if (err) {
    log(`lvextend ${rec.name} failed: ${errText(err)}`, 'bad');
    message(`Extend failed: <b>${esc(errText(err))}</b>`, 'bad');
  } else {
    log(`lvextend ${rec.name}: COW ${fmtBytes(cur)} → ${fmtBytes(grown)}`, 'ok');
    message(`Extended the COW of <b>${esc(rec.name)}</b> to ${fmtBytes(grown)}.${notes.length ? '<br>' + notes.join('<br>') : ''}`, 'ok');
  }
  render();
}

function setAutoextend(rec, policy) {
  rec.snap.setAutoextend(policy);
  rec.autoextend = policy;
  log(policy ? `${rec.name}: autoextend when Data% would pass ${policy.threshold}%, by ${policy.percent}% of the COW` : `${rec.name}: autoextend off`, 'ok');
  message(policy ? `Autoextend set on <b>${esc(rec.name)}</b>: write to the origin and watch its COW grow.` : `Autoextend off for <b>${esc(rec.name)}</b>.`, 'ok');
}

function download(bytes, name) {
  const url = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }));
  const a = el('a', { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function doExport(rec) {
  const bytes = rec.snap.exportCow();
  S.lastExport = { name: rec.name, bytes };
  const magic = Array.from(bytes.subarray(0, 4), (x) => x.toString(16).padStart(2, '0').toUpperCase()).join(' ');
  download(bytes, `${rec.name}-cow.img`);
  log(`exported ${rec.name}'s COW: ${bytes.length} bytes, dm-snapshot format, starts with ${magic}`, 'ok');
  message(`Downloaded <code>${esc(rec.name)}-cow.img</code> (${fmtBytes(bytes.length)}). Import it with the origin image to inspect it, or write it to an LVM snapshot's COW device.`, 'ok');
}

function doExportOrigin() {
  const bytes = S.vol.originImage();
  download(bytes, 'origin.img');
  log(`exported the origin image: ${bytes.length} bytes`, 'ok');
}

async function doImport() {
  const of = $('import-origin').files[0];
  const cf = [...$('import-cow').files];
  if (!of) throw new RangeError('choose an origin image');
  if (!cf.length) throw new RangeError('choose at least one COW image');
  const origin = new Uint8Array(await of.arrayBuffer());
  const cows = await Promise.all(cf.map(async (f) => new Uint8Array(await f.arrayBuffer())));
  const vol = S.cs.Volume.fromImages(origin, cows);
  const snaps = vol.snapshots();
  freeAll();
  resetPanels();
  S.vol = vol;
  S.size = origin.length;
  const recs = [];
  cows.forEach((bytes, i) => {
    const dv = new DataView(bytes.buffer, bytes.byteOffset, Math.min(16, bytes.length));
    const chunkSectors = bytes.length >= 16 ? dv.getUint32(12, true) : 0;
    const chunk = chunkSectors ? chunkSectors * SECTOR : 4096;
    const name = cf[i].name.replace(/\.[^.]*$/, '').replace(/[^A-Za-z0-9_.+-]/g, '_').slice(0, 32) || `imported${i}`;
    const raw = snaps[i].status();
    const store = raw.persistent === false ? 'N' : raw.overflow === 'report' ? 'PO' : 'P';
    const rec = { name, snap: snaps[i], store, chunk, autoextend: null, fresh: new Set(), explain: null };
    recs.push({ rec, bytes, file: cf[i].name });
    S.snaps.push(rec);
  });
  S.chunk = recs[0].rec.chunk;
  S.selected = recs[0].rec.name;
  const box = $('inspect');
  box.replaceChildren();
  for (const { rec, bytes, file } of recs) {
    const f = facts(rec);
    const dv = new DataView(bytes.buffer, bytes.byteOffset, 16);
    const chunkSectors = rec.chunk / SECTOR;
    const areas = Math.max(0, Math.round(f.st.metadataSectors / chunkSectors) - 1);
    const magic = Array.from(bytes.subarray(0, 4), (x) => x.toString(16).padStart(2, '0').toUpperCase()).join(' ');
    box.append(el('h3', { text: `${file} → ${rec.name}` }),
      el('dl', { class: 'kv', 'data-testid': `inspect-${rec.name}` },
        el('dt', { text: 'magic' }), el('dd', { 'data-testid': 'inspect-magic', text: `${magic} (${String.fromCharCode(...bytes.subarray(0, 4))})` }),
        el('dt', { text: 'valid' }), el('dd', { 'data-testid': 'inspect-valid', text: dv.getUint32(4, true) }),
        el('dt', { text: 'version' }), el('dd', { text: dv.getUint32(8, true) }),
        el('dt', { text: 'chunk size' }), el('dd', { text: `${chunkSectors} sectors (${fmtBytes(rec.chunk)})` }),
        el('dt', { text: 'COW size' }), el('dd', { text: `${fmtBytes(bytes.length)} (${Math.floor(bytes.length / rec.chunk)} chunks)` }),
        el('dt', { text: 'metadata areas in use' }), el('dd', { 'data-testid': 'inspect-areas', text: `${areas} (${rec.chunk / 16} records each)` }),
        el('dt', { text: 'exceptions' }), el('dd', { 'data-testid': 'inspect-exceptions', text: f.exc.length }),
        el('dt', { text: 'state' }), el('dd', { text: `${f.st.state}, dmsetup status ${dmStatusOf(f.st)}, Data% ${fmtPercent(f.st.dataPercent)}` })));
  }
  $('inspect-card').hidden = false;
  log(`opened ${of.name} (${fmtBytes(origin.length)}) with ${cf.map((f) => f.name).join(', ')}`, 'ok');
  message(`Imported <b>${esc(of.name)}</b> with ${cf.length} COW image${cf.length > 1 ? 's' : ''}: see the snapshot cards and the inspection below.`, 'ok');
}

function select(name) {
  S.selected = name;
  render();
  $('read-right').value = name;
  doRead();
}

// ---------------------------------------------------------------- wiring

function guard(fn) {
  return async (ev) => {
    ev?.preventDefault?.();
    try {
      await fn();
    } catch (e) {
      log(errText(e), 'bad');
      message(`<b>${esc(errText(e))}</b>`, 'bad');
    }
    render();
  };
}

$('form-volume').addEventListener('submit', guard(() => createVolume(Number($('vol-size').value), Number($('vol-chunk').value))));
$('form-snap').addEventListener('submit', guard(() => {
  const name = $('snap-name').value.trim();
  if (!/^[A-Za-z0-9_.+-]{1,32}$/.test(name)) throw new RangeError('name: 1–32 letters, digits or _.+-');
  const kib = Number($('snap-cow').value);
  if (!Number.isFinite(kib) || kib <= 0) throw new RangeError('COW size: a positive number of KiB');
  const ae = $('snap-ae').checked ? { threshold: Number($('snap-ae-threshold').value), percent: Number($('snap-ae-percent').value) } : null;
  createSnapshot(name, Math.round(kib * 1024), $('snap-store').value, ae);
}));
$('form-write').addEventListener('submit', guard(doWrite));
$('form-read').addEventListener('submit', guard(doRead));
$('form-import').addEventListener('submit', guard(doImport));
$('origin-export').addEventListener('click', guard(doExportOrigin));
$('write-kind').addEventListener('change', () => {
  const t = $('write-kind').value === 'text';
  const d = $('write-data');
  if (t && /^0x/i.test(d.value)) d.value = 'hello';
  if (!t && !/^(0x[0-9a-f]+|\d+)$/i.test(d.value)) d.value = '0xAA';
});
window.addEventListener('resize', () => requestAnimationFrame(drawArrows));

// Test hook (read-only use by the end-to-end test; also handy in the console).
window.playground = {
  state: S,
  get lastExport() { return S.lastExport; },
  render,
};

(async () => {
  try {
    S.cs = await loadEngine();
    $('engine-status').textContent = 'engine loaded (wasm)';
    $('engine-status').classList.add('ok');
    document.body.dataset.ready = '1';
  } catch (e) {
    $('engine-status').textContent = 'engine failed to load';
    $('engine-status').classList.add('bad');
    message(`Could not load the wasm engine from <code>/pkg/</code>: ${esc(errText(e))}. Build it first (see the README), then reload.`, 'bad');
    document.body.dataset.ready = 'error';
  }
  render();
})();
