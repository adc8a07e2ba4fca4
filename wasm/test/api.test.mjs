// The whole JS API of the installed `cowsnap` package, on the happy paths.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import init, { Volume, Snapshot, version, errorCodes } from 'cowsnap';
import { KiB, MiB, bytes, text, throwsCode, assertBytesEqual } from './helpers.mjs';

await init(); // a no-op in Node.js; keeps the code the same as in the browser

test('version and error codes', () => {
  assert.match(version(), /^\d+\.\d+\.\d+/);
  const codes = errorCodes();
  assert.equal(codes.OK, 0);
  assert.equal(codes.OUT_OF_RANGE, -1);
  assert.equal(codes.CORRUPT_METADATA, -8);
  const nums = Object.values(codes);
  assert.equal(new Set(nums).size, nums.length, 'every code has its own number');
  assert.ok(nums.length >= 15);
});

test('memory volume: size, zero fill, write/read/readInto', () => {
  const vol = Volume.memory(MiB);
  assert.equal(vol.size, MiB);
  assert.deepEqual(vol.read(0, 8), new Uint8Array(8));
  vol.write(1000, text('hello'));
  assert.deepEqual(vol.read(1000, 5), text('hello'));
  const buf = new Uint8Array(7).fill(9);
  vol.readInto(999, buf);
  assert.deepEqual(buf, Uint8Array.of(0, ...text('hello'), 0));
  vol.readInto(0, new Uint8Array(0)); // empty reads are fine
  assert.equal(vol.read(MiB, 0).length, 0);
  vol.write(MiB - 1, Uint8Array.of(7)); // last byte
  assert.deepEqual(vol.read(MiB - 1, 1), Uint8Array.of(7));
  // A Node.js Buffer is a Uint8Array too.
  vol.write(0, Buffer.from('buf'));
  assert.deepEqual(vol.read(0, 3), text('buf'));
  // read() copies: the array stays valid and independent when wasm memory grows.
  const r = vol.read(0, 3);
  const big = Volume.memory(8 * MiB);
  big.write(0, bytes(8 * MiB, 1));
  vol.write(0, text('xyz'));
  assert.deepEqual(r, text('buf'));
  big.free();
  vol.free();
});

test('a snapshot keeps the old data; status and exceptions follow dm', () => {
  const vol = Volume.memory(MiB);
  vol.write(0, text('before'));
  const snap = vol.snapshot({ cowSize: 256 * KiB });
  assert.ok(snap instanceof Snapshot);
  let st = snap.status();
  assert.equal(st.state, 'active');
  assert.equal(st.dmStatus, '16/512 16', 'header + first metadata area');
  assert.equal(st.dataPercent, 0);
  assert.equal(st.exceptions, 0);
  assert.deepEqual(snap.exceptions(), []);
  vol.write(0, text('after!'));
  assert.deepEqual(snap.read(0, 6), text('before'));
  assert.deepEqual(vol.read(0, 6), text('after!'));
  st = snap.status();
  assert.deepEqual(st, {
    state: 'active',
    persistent: true,
    overflow: 'invalidate',
    chunkSize: 4096,
    cowSize: 256 * KiB,
    sectorsAllocated: 24,
    totalSectors: 512,
    metadataSectors: 16,
    exceptions: 1,
    dataPercent: (24 * 100) / 512,
    dmStatus: '24/512 16',
    lvsAttr: 'swi-a-s---',
    mergeProgress: null,
  });
  // header is chunk 0, the first metadata area chunk 1, data from chunk 2
  assert.deepEqual(snap.exceptions(), [{ oldChunk: 0, newChunk: 2 }]);
  // Writing the same chunk again copies nothing more.
  vol.write(100, text('again'));
  assert.equal(snap.status().exceptions, 1);
  // A write across two chunks copies both.
  vol.write(3 * 4096 - 2, bytes(4, 0xee));
  assert.deepEqual(
    snap.exceptions().map((e) => e.oldChunk),
    [0, 2, 3],
  );
  const buf = new Uint8Array(6);
  snap.readInto(0, buf);
  assert.deepEqual(buf, text('before'));
});

test('snapshot writes change the snapshot only; chunk size option', () => {
  const vol = Volume.memory(MiB);
  vol.write(0, bytes(MiB, 0x11));
  const snap = vol.snapshot({ cowSize: 512 * KiB, chunkSize: 64 * KiB });
  assert.equal(snap.status().chunkSize, 64 * KiB);
  snap.write(70 * KiB, text('snap'));
  assert.deepEqual(snap.read(70 * KiB - 1, 6), Uint8Array.of(0x11, ...text('snap'), 0x11));
  assert.deepEqual(vol.read(70 * KiB, 4), bytes(4, 0x11));
  assert.deepEqual(snap.exceptions(), [{ oldChunk: 1, newChunk: 2 }]);
  // the rest of the copied chunk is the origin's old data
  assertBytesEqual(snap.read(64 * KiB, 6 * KiB), bytes(6 * KiB, 0x11), 'chunk 1 head');
});

test('transient store (persistent: false)', () => {
  const vol = Volume.memory(MiB);
  const snap = vol.snapshot({ cowSize: 64 * KiB, persistent: false });
  const st0 = snap.status();
  assert.equal(st0.persistent, false);
  assert.equal(st0.metadataSectors, 0);
  assert.equal(st0.dmStatus, '0/128 0');
  vol.write(0, bytes(10, 1));
  assert.equal(snap.status().dmStatus, '8/128 0');
  assert.deepEqual(snap.read(0, 10), new Uint8Array(10));
});

test('several snapshots each get their copy', () => {
  const vol = Volume.memory(MiB);
  vol.write(0, text('v1'));
  const a = vol.snapshot({ cowSize: 128 * KiB });
  vol.write(0, text('v2'));
  const b = vol.snapshot({ cowSize: 128 * KiB, chunkSize: 8 * KiB });
  vol.write(0, text('v3'));
  assert.deepEqual(a.read(0, 2), text('v1'));
  assert.deepEqual(b.read(0, 2), text('v2'));
  assert.deepEqual(vol.read(0, 2), text('v3'));
  const list = vol.snapshots();
  assert.deepEqual(
    list.map((s) => s.id),
    [a.id, b.id],
  );
  assert.notEqual(a.id, b.id);
  // handles from snapshots() address the same snapshots
  assert.deepEqual(list[1].read(0, 2), text('v2'));
  for (const s of list) s.free();
  assert.deepEqual(b.read(0, 2), text('v2'), 'freeing a second handle leaves the snapshot');
});

test('overflow: origin write invalidates (P); snapshot write reports (PO)', () => {
  const vol = Volume.memory(MiB);
  // 24 KiB COW with 4 KiB chunks: header, one metadata area, 4 data chunks.
  const p = vol.snapshot({ cowSize: 24 * KiB });
  const po = vol.snapshot({ cowSize: 24 * KiB, overflow: 'report' });
  for (let c = 0; c < 4; c++) vol.write(c * 4096, Uint8Array.of(c + 1));
  assert.equal(p.status().state, 'active');
  assert.equal(p.status().dataPercent, 100);
  vol.write(4 * 4096, Uint8Array.of(9)); // fifth chunk: no room
  assert.deepEqual(vol.read(4 * 4096, 1), Uint8Array.of(9), 'the origin write itself goes through');
  for (const s of [p, po]) {
    const st = s.status();
    assert.equal(st.state, 'invalid', 'origin-write overflow invalidates in both modes');
    assert.equal(st.dataPercent, null);
    assert.equal(st.dmStatus, 'Invalid');
    assert.equal(st.lvsAttr, 'swi-I-s---');
    throwsCode(() => s.read(0, 1), 'SNAPSHOT_INVALID');
  }

  const vol2 = Volume.memory(MiB);
  const po2 = vol2.snapshot({ cowSize: 24 * KiB, overflow: 'report' });
  for (let c = 0; c < 4; c++) po2.write(c * 4096, Uint8Array.of(0xa0 + c));
  throwsCode(() => po2.write(4 * 4096, Uint8Array.of(1)), 'SNAPSHOT_OVERFLOW');
  const st = po2.status();
  assert.equal(st.state, 'overflow');
  assert.equal(st.dmStatus, 'Overflow');
  assert.equal(st.dataPercent, 100);
  assert.equal(st.overflow, 'report');
  assert.deepEqual(po2.read(4096, 1), Uint8Array.of(0xa1), 'reads still work after overflow');
  throwsCode(() => po2.write(0, Uint8Array.of(1)), 'SNAPSHOT_OVERFLOW');

  const vol3 = Volume.memory(MiB);
  const p3 = vol3.snapshot({ cowSize: 24 * KiB, overflow: 'invalidate' });
  for (let c = 0; c < 4; c++) p3.write(c * 4096, Uint8Array.of(1));
  throwsCode(() => p3.write(4 * 4096, Uint8Array.of(1)), 'SNAPSHOT_INVALID');
  assert.equal(p3.status().state, 'invalid');
});

test('extend and autoextend grow the COW', () => {
  const vol = Volume.memory(MiB);
  const s = vol.snapshot({ cowSize: 24 * KiB });
  s.extend(48 * KiB);
  assert.equal(s.status().cowSize, 48 * KiB);
  assert.equal(s.status().totalSectors, 96);
  for (let c = 0; c < 8; c++) vol.write(c * 4096, Uint8Array.of(1));
  assert.equal(s.status().state, 'active', 'eight chunks fit after extending');

  for (const autoextend of [{ threshold: 50, percent: 50 }, [50, 50]]) {
    const v = Volume.memory(MiB);
    const a = v.snapshot({ cowSize: 24 * KiB, autoextend });
    for (let c = 0; c < 32; c++) v.write(c * 4096, Uint8Array.of(2));
    const st = a.status();
    assert.equal(st.state, 'active', JSON.stringify(autoextend));
    assert.ok(st.cowSize > 24 * KiB, `grew: ${st.cowSize}`);
    assert.ok(st.dataPercent <= 100);
    assert.equal(st.exceptions, 32);
  }

  const v = Volume.memory(MiB);
  const a = v.snapshot({ cowSize: 24 * KiB, autoextend: null });
  a.setAutoextend({ threshold: 60, percent: 100 });
  for (let c = 0; c < 8; c++) v.write(c * 4096, Uint8Array.of(3));
  assert.ok(a.status().cowSize > 24 * KiB);
  a.setAutoextend(null);
  const size = a.status().cowSize;
  for (let c = 8; c < 64; c++) v.write(c * 4096, Uint8Array.of(3));
  assert.equal(a.status().state, 'invalid', 'without autoextend the COW overflows');
  assert.equal(a.status().cowSize, size);
});

test('delete removes the snapshot', () => {
  const vol = Volume.memory(MiB);
  const a = vol.snapshot({ cowSize: 64 * KiB });
  const b = vol.snapshot({ cowSize: 64 * KiB });
  a.delete();
  assert.deepEqual(
    vol.snapshots().map((s) => s.id),
    [b.id],
  );
  throwsCode(() => a.read(0, 1), 'UNKNOWN_SNAPSHOT');
  vol.write(0, bytes(4096, 5)); // only b copies
  assert.equal(b.status().exceptions, 1);
});

test('merge: progress, origin takes the snapshot contents, snapshot removed', () => {
  const vol = Volume.memory(MiB);
  vol.write(0, bytes(MiB, 0x33));
  const snap = vol.snapshot({ cowSize: 512 * KiB });
  const other = vol.snapshot({ cowSize: 512 * KiB });
  for (let c = 0; c < 20; c++) vol.write(c * 8192, Uint8Array.of(0x44)); // 20 origin chunks change
  snap.write(500 * KiB, text('from the snapshot'));
  const expected = snap.read(0, MiB);
  const otherBefore = other.read(0, MiB);
  const total = snap.status().exceptions;
  const events = [];
  snap.merge((p) => {
    events.push(p);
    // re-entrant calls are allowed while merging: the origin shows the merged view
    assert.deepEqual(vol.read(500 * KiB, 4), text('from'));
    assert.equal(snap.status().state, 'merging');
  });
  assert.ok(events.length >= 2, `${events.length} progress events`);
  assert.deepEqual(events[0], { merged: 0, total, done: false });
  assert.deepEqual(events.at(-1), { merged: total, total, done: true });
  for (let i = 1; i < events.length; i++) assert.ok(events[i].merged >= events[i - 1].merged);
  assertBytesEqual(vol.read(0, MiB), expected, 'origin after merge');
  assertBytesEqual(other.read(0, MiB), otherBefore, 'the other snapshot is unchanged by the merge');
  throwsCode(() => snap.status(), 'UNKNOWN_SNAPSHOT');
  assert.deepEqual(
    vol.snapshots().map((s) => s.id),
    [other.id],
  );

  // without a callback
  const s2 = vol.snapshot({ cowSize: 128 * KiB });
  s2.write(0, text('zz'));
  s2.merge();
  assert.deepEqual(vol.read(0, 2), text('zz'));
});

test('merge interrupted by a throwing callback resumes', () => {
  const vol = Volume.memory(MiB);
  const snap = vol.snapshot({ cowSize: 512 * KiB, chunkSize: 4 * KiB });
  // exceptions that are not contiguous in the COW so that the merge takes several steps
  for (let c = 0; c < 16; c++) snap.write(((c * 7) % 64) * 4096, Uint8Array.of(c + 1));
  const want = snap.read(0, MiB);
  let n = 0;
  assert.throws(
    () =>
      snap.merge(() => {
        if (++n === 2) throw new Error('stop here');
      }),
    /stop here/,
  );
  const st = snap.status();
  assert.equal(st.state, 'merging');
  assert.equal(st.lvsAttr, 'Swi-a-s---');
  assert.ok(st.mergeProgress && st.mergeProgress.total === 16, JSON.stringify(st.mergeProgress));
  throwsCode(() => vol.snapshot({ cowSize: 64 * KiB }), 'MERGING');
  throwsCode(() => snap.delete(), 'MERGING');
  assertBytesEqual(vol.read(0, MiB), want, 'origin shows the merged view while merging');
  snap.merge();
  assertBytesEqual(vol.read(0, MiB), want, 'origin after the resumed merge');
  assert.equal(vol.snapshots().length, 0);
});

test('exportCow / originImage / fromImages round trip', () => {
  const vol = Volume.memory(2 * MiB);
  vol.write(0, bytes(2 * MiB, 0x5a));
  const a = vol.snapshot({ cowSize: 256 * KiB });
  vol.write(8192, text('one'));
  const b = vol.snapshot({ cowSize: 256 * KiB, chunkSize: 16 * KiB });
  vol.write(100 * KiB, text('two'));
  b.write(MiB, text('bee'));
  const cowA = a.exportCow();
  const cowB = b.exportCow();
  assert.equal(cowA.length, 256 * KiB);
  assert.deepEqual(cowA.subarray(0, 4), text('SnAp'), 'dm magic');
  assert.deepEqual(cowB.subarray(4, 16), Uint8Array.of(1, 0, 0, 0, 1, 0, 0, 0, 32, 0, 0, 0), 'valid, version 1, 32 sectors');
  const origin = vol.originImage();
  assert.equal(origin.length, 2 * MiB);
  const again = Volume.fromImages(origin, [cowA, cowB]);
  const [a2, b2] = again.snapshots();
  assert.deepEqual(a2.exceptions(), a.exceptions());
  assert.deepEqual(b2.exceptions(), b.exceptions());
  assertBytesEqual(a2.read(0, 2 * MiB), a.read(0, 2 * MiB), 'snapshot a');
  assertBytesEqual(b2.read(0, 2 * MiB), b.read(0, 2 * MiB), 'snapshot b');
  assert.equal(b2.status().chunkSize, 16 * KiB, 'chunk size from the header');
  assert.equal(a2.status().dmStatus, a.status().dmStatus);
  // the reimported volume keeps working and writes the same COW bytes as the original
  vol.write(300 * KiB, text('three'));
  again.write(300 * KiB, text('three'));
  assertBytesEqual(again.snapshots()[0].exportCow(), a.exportCow(), 'COW after one more write');
  // the inputs were copied
  origin.fill(0);
  assert.deepEqual(again.read(0, 1), Uint8Array.of(0x5a));
  // no COW images at all
  const plain = Volume.fromImages(vol.originImage());
  assert.equal(plain.snapshots().length, 0);
  assert.equal(plain.size, 2 * MiB);
  // an all-zero COW is corruption: only snapshot() formats a COW (edges.test.mjs has the cases)
  throwsCode(() => Volume.fromImages(vol.originImage(), [new Uint8Array(64 * KiB)]), 'CORRUPT_METADATA');
});

test('free, Symbol.dispose, and snapshots outliving their volume handle', () => {
  const vol = Volume.memory(MiB);
  const snap = vol.snapshot({ cowSize: 64 * KiB });
  vol.write(0, text('new'));
  assert.equal(typeof Volume.prototype[Symbol.dispose], 'function');
  assert.equal(typeof Snapshot.prototype[Symbol.dispose], 'function');
  vol[Symbol.dispose]();
  throwsCode(() => vol.read(0, 1), 'INVALID_ARGUMENT', Error, /freed/); // a freed handle throws (no trap)
  // the snapshot holds the volume alive
  assert.deepEqual(snap.read(0, 3), new Uint8Array(3));
  assert.equal(snap.status().exceptions, 1);
  snap.free();
  throwsCode(() => snap.status(), 'INVALID_ARGUMENT', Error, /Snapshot handle was freed/);
});

test('changedRanges names every chunk where snapshots may differ', () => {
  const vol = Volume.memory(4 * MiB);
  vol.write(0, bytes(4 * MiB, 0x11));
  const old = vol.snapshot({ cowSize: 2 * MiB, chunkSize: 4096 });
  assert.deepEqual(old.changedRanges(), []);
  vol.write(10 * 4096 + 5, text('x'));
  vol.write(255 * 4096, bytes(2 * 4096, 0x22)); // chunks 255..256, across a table window
  const neu = vol.snapshot({ cowSize: 2 * MiB, chunkSize: 65536 });
  neu.write(3 * 65536, text('z')); // a write to the newer snapshot itself
  assert.deepEqual(old.changedRanges(), [
    { offset: 10 * 4096, length: 4096 },
    { offset: 255 * 4096, length: 2 * 4096 },
  ]);
  assert.deepEqual(neu.changedRanges(old.id), [
    { offset: 10 * 4096, length: 4096 },
    { offset: 3 * 65536, length: 65536 },
    { offset: 255 * 4096, length: 2 * 4096 },
  ]);
  assert.throws(() => neu.changedRanges('x'), TypeError);
  throwsCode(() => neu.changedRanges(999), 'UNKNOWN_SNAPSHOT');
  vol.free();
});
