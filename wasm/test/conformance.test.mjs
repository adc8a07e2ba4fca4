// The conformance table (tests/conformance/cases.json) through the installed npm package: the same
// inputs must give the same answers as in Rust, C, Python and the CLI (same status fields, or an
// error whose `code` is the same stable name).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Volume, errorCodes } from 'cowsnap';
import { HERE } from './helpers.mjs';

const ROOT = process.env.COWSNAP_ROOT ?? join(HERE, '../../../..');
const TABLE = JSON.parse(readFileSync(join(ROOT, 'tests/conformance/cases.json'), 'utf8')).cases;
const CODES = errorCodes();

class StopMerge extends Error {}

function image({ size, patches }) {
  const img = new Uint8Array(size);
  for (const [at, hex] of patches) img.set(Buffer.from(hex, 'hex'), at);
  return img;
}

function runStep(r, s, ctx) {
  const target = (t) => (t === 'origin' ? r.vol : r.snaps[t]);
  switch (s.op) {
    case 'volume':
      r.vol = Volume.memory(s.size);
      return;
    case 'images':
      r.vol = Volume.fromImages(new Uint8Array(s.size), s.cows.map(image));
      r.snaps.push(...r.vol.snapshots());
      return;
    case 'snapshot': {
      const store = s.store ?? 'P';
      const opts = {
        cowSize: s.cow,
        chunkSize: s.chunk ?? 4096,
        persistent: store.startsWith('P'),
        overflow: store.endsWith('O') ? 'report' : 'invalidate',
      };
      if (s.autoextend) opts.autoextend = s.autoextend;
      r.snaps.push(r.vol.snapshot(opts));
      return;
    }
    case 'write':
      target(s.target).write(s.offset, new Uint8Array(s.len).fill(s.fill));
      return;
    case 'read': {
      const data = target(s.target).read(s.offset, s.len);
      assert.equal(data.length, s.len, ctx);
      if (s.fill !== undefined) assert.ok(data.every((b) => b === s.fill), `${ctx}: read bytes`);
      return;
    }
    case 'status': {
      const st = r.snaps[s.snap].status();
      const fields = { state: 'state', dm_status: 'dmStatus', lvs_attr: 'lvsAttr', exceptions: 'exceptions', data_percent: 'dataPercent' };
      for (const [key, js] of Object.entries(fields)) {
        if (key in s) assert.equal(st[js], s[key], `${ctx}: ${key}`);
      }
      return;
    }
    case 'delete':
      r.snaps[s.snap].delete();
      return;
    case 'merge':
    case 'merge_start': {
      const stop = (p) => {
        if (!p.done) throw new StopMerge();
      };
      try {
        r.snaps[s.snap].merge(s.op === 'merge_start' ? stop : undefined);
      } catch (e) {
        if (!(e instanceof StopMerge)) throw e; // stopped as asked: the snapshot stays merging
      }
      return;
    }
    case 'extend':
      r.snaps[s.snap].extend(s.size);
      return;
    case 'autoextend':
      r.snaps[s.snap].setAutoextend(s.policy);
      return;
    case 'origin_attr':
      assert.equal(r.vol.lvsAttr, s.value, `${ctx}: origin lvsAttr`);
      return;
    case 'count':
      assert.equal(r.vol.snapshots().length, s.count, `${ctx}: snapshot count`);
      return;
    case 'close':
      r.vol.free();
      return;
    default:
      assert.fail(`${ctx}: unknown op ${s.op}`);
  }
}

// (2^63 in the table is not a safe integer: the JS API refuses it as an argument, INVALID_ARGUMENT,
// the same answer the core gives the other front ends.)
for (const c of TABLE) {
  test(`conformance: ${c.name}`, () => {
    const r = { vol: null, snaps: [] };
    try {
      c.steps.forEach((s, i) => {
        const ctx = `step ${i} ${JSON.stringify(s)}`;
        let got = 'OK';
        try {
          runStep(r, s, ctx);
        } catch (e) {
          // An assertion of this runner, or an error without a code (a bug): fail the test.
          if (e instanceof assert.AssertionError || typeof e?.code !== 'string') throw e;
          assert.ok(e.code in CODES, `${ctx}: unknown code ${e.code}`);
          got = e.code;
        }
        assert.equal(got, s.expect ?? 'OK', `${ctx}: got ${got}`);
      });
    } finally {
      r.vol?.free();
      for (const s of r.snaps) s.free();
    }
  });
}

test('the conformance table is large enough', () => {
  assert.ok(TABLE.length >= 40, `${TABLE.length} cases`);
});
