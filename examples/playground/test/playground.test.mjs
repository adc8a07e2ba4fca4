// End-to-end test of the playground in real headless Chromium (Debian's /usr/bin/chromium) driven by
// playwright-core. Serves the page on 127.0.0.1 (random port), refuses every request that leaves the
// machine, and saves a screenshot of each step under artifacts/playground/.
//
//   node --test examples/playground/test/      (scripts/test-playground.sh installs what it needs)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, mkdir, readFile, rm } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startServer } from '../serve.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '..', '..', '..');
const ART = process.env.PLAYGROUND_ARTIFACTS || join(ROOT, 'artifacts', 'playground');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const KERNEL = join(ROOT, 'tests', 'shared', 'vectors', 'kernel');

let srv, ctx, page, profile, dlDir;
const external = [];
const pageErrors = [];
let shot = 0;

async function snap(name) {
  shot++;
  const file = join(ART, `${String(shot).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

const row = (name) => page.getByTestId(`lvs-row-${name}`);
const cell = (name, id) => row(name).getByTestId(id);
const text = async (loc) => (await loc.textContent()).trim();

async function fill(id, value) {
  await page.locator(`#${id}`).fill(String(value));
}

async function takeSnapshot(name, cowKiB, store = 'P', autoextend = null) {
  await fill('snap-name', name);
  await fill('snap-cow', cowKiB);
  await page.selectOption('#snap-store', store);
  await page.locator('#snap-ae').setChecked(!!autoextend);
  if (autoextend) {
    await fill('snap-ae-threshold', autoextend.threshold);
    await fill('snap-ae-percent', autoextend.percent);
  }
  // Keyboard: Enter in the form submits it.
  await page.locator('#snap-cow').press('Enter');
  await row(name).waitFor();
}

async function write(target, offset, length, kind, data) {
  await page.selectOption('#write-target', target);
  await fill('write-offset', offset);
  await fill('write-length', length);
  await page.selectOption('#write-kind', kind);
  await fill('write-data', data);
  await page.locator('#write-go').click();
}

// Content hashes of the drawn chunks (the grid colours are a function of these).
async function originHashes() {
  return page.locator('#origin-grid .cell').evaluateAll((cs) => cs.map((c) => c.dataset.hash));
}
async function viewHashes(name) {
  return page.getByTestId(`snap-card-${name}`).locator('.view-grid .cell').evaluateAll((cs) => cs.map((c) => c.dataset.hash));
}

// dm-snapshot persistent store geometry, from the spec (not from the page): chunk 0 = header,
// then one metadata chunk per chunk/16 data chunks. Data% = allocated sectors / COW sectors.
function expectedDataPercent(cowBytes, chunk, dataChunks) {
  const epa = chunk / 16;
  const areas = Math.max(1, Math.ceil(dataChunks / epa));
  const allocated = (1 + areas + dataChunks) * chunk;
  return ((allocated * 100) / cowBytes).toFixed(2);
}

before(async () => {
  await mkdir(ART, { recursive: true });
  srv = await startServer({ port: 0, host: '127.0.0.1', quiet: true });
  profile = await mkdtemp(join(tmpdir(), 'cowsnap-pg-profile-'));
  dlDir = await mkdtemp(join(tmpdir(), 'cowsnap-pg-dl-'));
  ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--disable-quic', '--no-first-run'],
    viewport: { width: 1440, height: 900 },
    acceptDownloads: true,
    downloadsPath: dlDir,
  });
  // Nothing but our own server: any other request is recorded and refused.
  const origin = new URL(srv.url).origin;
  await ctx.route('**/*', (route) => {
    const u = route.request().url();
    if (u.startsWith(origin + '/') || u.startsWith('blob:') || u.startsWith('data:')) return route.continue();
    external.push(u);
    return route.abort();
  });
  page = ctx.pages()[0] || (await ctx.newPage());
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(`console: ${m.text()}`); });
});

after(async () => {
  await ctx?.close();
  await new Promise((r) => (srv ? srv.server.close(r) : r()));
  if (profile) await rm(profile, { recursive: true, force: true });
  if (dlDir) await rm(dlDir, { recursive: true, force: true });
});

test('playground: volume, snapshots, copy-on-write, overflow, merge, export, import', async (t) => {
  const CHUNK = 4096;
  await page.goto(srv.url);
  await page.waitForSelector('body[data-ready]');
  assert.equal(await page.getAttribute('body', 'data-ready'), '1', `engine did not load: ${await text(page.locator('#message'))}`);

  await t.test('create a 256 KiB origin with 4 KiB chunks', async () => {
    await page.selectOption('#vol-size', '262144');
    await page.selectOption('#vol-chunk', String(CHUNK));
    await page.locator('#vol-create').click();
    await page.waitForSelector('#origin-grid .cell');
    assert.equal(await page.locator('#origin-grid .cell').count(), 64);
    const hashes = await originHashes();
    assert.equal(new Set(hashes).size, 64, 'every chunk of the pattern has its own contents');
    assert.equal(await text(cell('origin', 'attr')), '-wi-a-----');
    await snap('volume');
  });
  const pattern = await originHashes();

  await t.test('take a snapshot: nothing copied, Data% 0.00', async () => {
    await takeSnapshot('snap0', 64);
    assert.equal(await text(cell('snap0', 'data-percent')), '0.00');
    assert.equal(await text(cell('snap0', 'exc-count')), '0');
    assert.equal(await text(cell('snap0', 'state')), 'Active');
    assert.equal(await text(cell('snap0', 'attr')), 'swi-a-s---');
    assert.equal(await text(cell('origin', 'attr')), 'owi-a-s---');
    // The COW map shows the header and the first metadata area.
    const card = page.getByTestId('snap-card-snap0');
    assert.equal(await card.locator('.cow-grid .cell').count(), 16);
    assert.equal(await card.locator('.cow-grid .cell.hdr').count(), 1);
    assert.equal(await card.locator('.cow-grid .cell.meta').count(), 1);
    assert.match(await text(card.getByTestId('header-line')), /53 6E 41 70 \(SnAp\).*valid 1/);
    await snap('snapshot');
  });

  await t.test('write to the origin: chunks copied, Data% rises, snapshot keeps old data', async () => {
    await write('origin', '0', '8k', 'byte', '0xAA'); // chunks 0 and 1
    assert.equal(await text(cell('snap0', 'exc-count')), '2');
    assert.equal(await text(cell('snap0', 'data-percent')), expectedDataPercent(64 << 10, CHUNK, 2)); // 25.00
    assert.equal(await text(cell('snap0', 'data-percent')), '25.00');
    const card = page.getByTestId('snap-card-snap0');
    assert.equal(await card.getByTestId('exc-table').locator('tbody tr').count(), 2);
    assert.equal(await text(card.getByTestId('exc-summary')), '2 chunks copied');
    assert.equal(await card.locator('svg.arrows path').count(), 2, 'one arrow per exception');
    const now = await originHashes();
    assert.notEqual(now[0], pattern[0]);
    assert.notEqual(now[1], pattern[1]);
    assert.deepEqual(now.slice(2), pattern.slice(2));
    assert.deepEqual(await viewHashes('snap0'), pattern, 'the snapshot still reads the old contents');
    // Side by side hex view: all 64 bytes differ (AA on the origin, the pattern in the snapshot).
    await page.locator('#read-offset').fill('0');
    await page.locator('#read-length').fill('64');
    await page.selectOption('#read-right', 'snap0');
    await page.locator('#read-go').click();
    assert.equal(await page.getAttribute('#hex-card', 'data-diff'), '64');
    assert.match(await text(page.getByTestId('hex-left')), /^00000000 {2}aa aa aa/);
    assert.match(await text(page.getByTestId('hex-right')), /\|A0 A0 A0 A0/);
    await card.getByTestId('exc-table').locator('tbody tr').first().focus(); // keyboard highlight
    assert.equal(await page.locator('#origin-grid .cell.hl').count(), 1);
    await snap('origin-write');
  });

  await t.test('overflow a small snapshot on an origin write: Invalid', async () => {
    await takeSnapshot('tiny', 16); // header + metadata + 2 data chunks
    await write('origin', '16k', '16k', 'text', 'new data '); // chunks 4..7: 4 copies needed
    assert.equal(await text(cell('tiny', 'state')), 'Invalid');
    assert.equal(await text(cell('tiny', 'attr')), 'swi-I-s---');
    assert.equal(await text(cell('tiny', 'data-percent')), '');
    assert.equal(await text(cell('tiny', 'dm-status')), 'Invalid');
    assert.match(await text(page.getByTestId('snap-card-tiny').getByTestId('explain')), /full.*invalidates/);
    assert.match(await text(page.locator('#message')), /tiny.*Invalid/);
    // The header on the COW now says valid = 0.
    assert.match(await text(page.getByTestId('snap-card-tiny').getByTestId('header-line')), /valid 0/);
    // snap0 is unaffected: it copied the 4 chunks too.
    assert.equal(await text(cell('snap0', 'exc-count')), '6');
    assert.equal(await text(cell('snap0', 'data-percent')), expectedDataPercent(64 << 10, CHUNK, 6));
    await snap('overflow-invalid');
    // A laptop-sized view of this state (the README's picture is one of these): a copied chunk focused.
    await page.getByTestId('snap-card-snap0').getByTestId('exc-table').locator('tbody tr').nth(2).focus();
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: join(ART, 'laptop-view.png') });
  });

  await t.test('overflow in report mode (PO) on a snapshot write: Overflow', async () => {
    await takeSnapshot('rep', 16, 'PO');
    await write('rep', '40k', '12k', 'byte', '0x55'); // 3 chunks, room for 2
    assert.equal(await text(cell('rep', 'state')), 'Overflow');
    assert.equal(await text(cell('rep', 'dm-status')), 'Overflow');
    assert.equal(await text(cell('rep', 'data-percent')), '100.00');
    assert.match(await text(page.locator('#message')), /SNAPSHOT_OVERFLOW/);
    await snap('overflow-report');
  });

  await t.test('autoextend grows a snapshot instead of letting it overflow', async () => {
    await takeSnapshot('grow', 24, 'P', { threshold: 70, percent: 50 }); // 6 chunks: 4 for data
    assert.equal(await text(cell('grow', 'cow-size')), '24.00k');
    await write('origin', '32k', '24k', 'byte', '0x11'); // chunks 8..13: 6 copies
    assert.equal(await text(cell('grow', 'state')), 'Active');
    assert.equal(await text(cell('grow', 'exc-count')), '6');
    const grown = await text(cell('grow', 'cow-size'));
    assert.notEqual(grown, '24.00k');
    assert.ok(parseFloat(grown) > 24, `COW grew (${grown})`);
    // Autoextend set later on an existing snapshot (no policy at creation).
    await takeSnapshot('late', 24);
    const late = page.getByTestId('snap-card-late');
    await late.getByTestId('ae-threshold').fill('60');
    await late.getByTestId('ae-percent').fill('100');
    await late.getByTestId('ae-percent').press('Enter');
    await write('late', '56k', '16k', 'byte', '0x22'); // a snapshot write of 4 chunks: room for 4, but past 60 %
    assert.equal(await text(cell('late', 'state')), 'Active');
    assert.equal(await text(cell('late', 'exc-count')), '4');
    assert.ok(parseFloat(await text(cell('late', 'cow-size'))) > 24, 'the late policy grew the COW');
    await cell('late', 'delete').click();
    // lvextend by hand: +50 %, rounded up to whole chunks.
    await cell('grow', 'extend').click();
    const kib = parseFloat(grown);
    assert.equal(await text(cell('grow', 'cow-size')), `${(Math.ceil((kib * 1.5) / 4) * 4).toFixed(2)}k`);
    await snap('autoextend');
  });

  await t.test('merge a snapshot back: progress bar, origin view changes', async () => {
    const beforeMerge = await originHashes();
    assert.notEqual(beforeMerge[0], pattern[0]);
    const n = await text(cell('snap0', 'exc-count'));
    assert.equal(n, '12', 'snap0 holds chunks 0-1, 4-7 and 8-13');
    // Record what the page shows while the merge runs (it redraws between merge steps).
    await page.evaluate(() => {
      window.__seen = new Set();
      const note = () => {
        const st = document.querySelector('[data-testid="lvs-row-snap0"] [data-testid="state"]');
        if (st) window.__seen.add(`state:${st.textContent}`);
        const oa = document.querySelector('[data-testid="lvs-row-origin"] [data-testid="attr"]');
        if (oa) window.__seen.add(`origin:${oa.textContent}`);
        window.__seen.add(`bar:${document.getElementById('merge-text').textContent.split(' ')[0]}`);
      };
      new MutationObserver(note).observe(document.body, { subtree: true, childList: true, characterData: true });
    });
    await cell('snap0', 'merge').click();
    await page.waitForFunction(() => !document.querySelector('[data-testid="lvs-row-snap0"]'));
    const seen = await page.evaluate(() => [...window.__seen]);
    assert.ok(seen.includes('state:Merging'), `snapshot shown as Merging during the merge: ${seen}`);
    assert.ok(seen.includes('origin:Owi-a-s---'), `origin attr shows the merge: ${seen}`);
    assert.ok(seen.includes('bar:10/12'), `progress bar between steps (one run of 10 chunks, then 2): ${seen}`);
    assert.equal(await page.getAttribute('#merge-progress', 'value'), '100');
    assert.equal((await text(page.getByTestId('merge-text'))).split(' ')[0], `${n}/${n}`);
    const merged = await originHashes();
    assert.deepEqual(merged, pattern, 'the origin is back to what snap0 saw');
    assert.notDeepEqual(merged, beforeMerge);
    await snap('merged');
  });

  let exported, growExc;
  await t.test('export a COW image: dm magic', async () => {
    growExc = await text(cell('grow', 'exc-count'));
    const [dl] = await Promise.all([page.waitForEvent('download'), cell('grow', 'export').click()]);
    assert.equal(dl.suggestedFilename(), 'grow-cow.img');
    exported = await readFile(await dl.path());
    assert.deepEqual([...exported.subarray(0, 4)], [0x53, 0x6e, 0x41, 0x70], 'magic "SnAp"');
    const hook = await page.evaluate(() => Array.from(window.playground.lastExport.bytes.subarray(0, 16)));
    assert.deepEqual(hook, [...exported.subarray(0, 16)]);
    assert.equal(exported.readUInt32LE(4), 1, 'valid');
    assert.equal(exported.readUInt32LE(8), 1, 'version');
    assert.equal(exported.readUInt32LE(12), CHUNK / 512, 'chunk size in sectors');
  });

  await t.test('import origin + COW images and inspect them', async () => {
    const [dl] = await Promise.all([page.waitForEvent('download'), page.locator('#origin-export').click()]);
    const originBytes = await readFile(await dl.path());
    assert.equal(originBytes.length, 256 << 10);
    const originBefore = await originHashes();
    const growView = await viewHashes('grow');
    await page.setInputFiles('#import-origin', { name: 'origin.img', mimeType: 'application/octet-stream', buffer: originBytes });
    await page.setInputFiles('#import-cow', { name: 'grow-cow.img', mimeType: 'application/octet-stream', buffer: exported });
    await page.locator('#import-go').click();
    const ins = page.getByTestId('inspect-grow-cow');
    await ins.waitFor();
    assert.match(await text(ins.getByTestId('inspect-magic')), /^53 6E 41 70 \(SnAp\)/);
    assert.equal(await text(ins.getByTestId('inspect-valid')), '1');
    assert.equal(await text(ins.getByTestId('inspect-exceptions')), growExc);
    assert.match(await text(ins.getByTestId('inspect-areas')), /^1 /);
    assert.equal(await text(cell('grow-cow', 'exc-count')), growExc);
    assert.deepEqual(await originHashes(), originBefore, 'the imported origin is the exported one');
    assert.deepEqual(await viewHashes('grow-cow'), growView, 'the reactivated snapshot reads what it did before export');
    await snap('import');
  });

  // Images written by the real Linux kernel (shared/vectors/kernel/): import, inspect, read back.
  for (const [dir, cows, areas] of [['area-crossing-4k', ['s0'], '2'], ['writable-two-snaps-64k', ['a', 'b'], null]]) {
    await t.test(`import kernel-written images: ${dir}`, { skip: !existsSync(join(KERNEL, dir)) && 'no shared kernel vectors' }, async () => {
      const d = join(KERNEL, dir);
      const gz = async (f) => gunzipSync(await readFile(join(d, f)));
      const status = JSON.parse(await readFile(join(d, 'status.json'), 'utf8')).status;
      await page.setInputFiles('#import-origin', { name: 'origin.img', mimeType: 'application/octet-stream', buffer: await gz('origin.img.gz') });
      await page.setInputFiles('#import-cow', await Promise.all(cows.map(async (c) => ({ name: `${c}.cow`, mimeType: 'application/octet-stream', buffer: await gz(`${c}.cow.gz`) }))));
      await page.locator('#import-go').click();
      for (const c of cows) {
        const ins = page.getByTestId(`inspect-${c}`);
        await ins.waitFor();
        assert.match(await text(ins.getByTestId('inspect-magic')), /^53 6E 41 70 \(SnAp\)/);
        assert.equal(await text(ins.getByTestId('inspect-valid')), '1');
        if (areas) assert.match(await text(ins.getByTestId('inspect-areas')), new RegExp(`^${areas} `));
        // The kernel's dmsetup status, the kernel's snapshot image.
        assert.equal(await text(cell(c, 'dm-status')), status[c]);
        const img = await gz(`${c}.img.gz`);
        const digest = await page.evaluate(async (name) => {
          const S = window.playground.state;
          const r = S.snaps.find((x) => x.name === name);
          const h = await crypto.subtle.digest('SHA-256', r.snap.read(0, S.size));
          return Array.from(new Uint8Array(h), (x) => x.toString(16).padStart(2, '0')).join('');
        }, c);
        assert.equal(digest, createHash('sha256').update(img).digest('hex'), `${c} reads the kernel's snapshot image`);
      }
      await snap(`kernel-${dir}`);
    });
  }

  await t.test('delete a snapshot', async () => {
    await cell('b', 'delete').click();
    assert.equal(await row('b').count(), 0);
    await cell('a', 'delete').click();
    assert.equal(await row('a').count(), 0);
    assert.equal(await text(cell('origin', 'attr')), '-wi-a-----');
  });

  await t.test('bad input gives a clear error, not a crash', async () => {
    await write('origin', '64m', '4k', 'byte', '0x01');
    assert.match(await text(page.locator('#message')), /OUT_OF_RANGE/);
    await write('origin', 'zz', '4k', 'byte', '0x01');
    assert.match(await text(page.locator('#message')), /offset: "zz" is not a number/);
    await snap('errors');
  });

  assert.deepEqual(external, [], 'no request left 127.0.0.1');
  assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
});
