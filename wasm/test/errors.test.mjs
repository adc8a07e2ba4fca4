// Every error path of the installed package: wrong argument types and ranges (TypeError/RangeError),
// engine errors (Error with the stable `code`), corrupt COW images, deleted and merged snapshots.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Volume } from 'cowsnap';
import { KiB, MiB, bytes, throwsCode } from './helpers.mjs';

// Boxed numbers are objects: refused, never converted.
const NOT_NUMBERS = ['1', null, undefined, {}, [], 1n, true, Symbol('x'), new Number(1), Object(0)];
const NOT_COUNTS = [-1, 0.5, -0.5, NaN, Infinity, -Infinity, 2 ** 53, Number.MAX_VALUE];
const NOT_BYTES = ['abc', [1, 2, 3], new ArrayBuffer(4), new Uint16Array(2), new DataView(new ArrayBuffer(2)), null, undefined, 42, {}];

function fresh() {
  const vol = Volume.memory(MiB);
  const snap = vol.snapshot({ cowSize: 256 * KiB });
  return { vol, snap };
}

test('offsets and lengths: TypeError for non-numbers, RangeError for non-counts', () => {
  const { vol, snap } = fresh();
  const buf = new Uint8Array(4);
  const calls = {
    'vol.read offset': (x) => vol.read(x, 1),
    'vol.read len': (x) => vol.read(0, x),
    'vol.readInto offset': (x) => vol.readInto(x, buf),
    'vol.write offset': (x) => vol.write(x, buf),
    'snap.read offset': (x) => snap.read(x, 1),
    'snap.read len': (x) => snap.read(0, x),
    'snap.readInto offset': (x) => snap.readInto(x, buf),
    'snap.write offset': (x) => snap.write(x, buf),
    'snap.extend': (x) => snap.extend(x),
    'Volume.memory': (x) => Volume.memory(x),
    cowSize: (x) => vol.snapshot({ cowSize: x }),
    chunkSize: (x) => vol.snapshot({ cowSize: 64 * KiB, chunkSize: x }),
  };
  for (const [name, call] of Object.entries(calls)) {
    for (const x of NOT_NUMBERS) {
      if (x === undefined && name === 'chunkSize') continue; // optional
      const e = throwsCode(() => call(x), 'INVALID_ARGUMENT', TypeError);
      assert.match(e.message, /must be a number|need cowSize/, name);
    }
    for (const x of NOT_COUNTS) {
      const e = throwsCode(() => call(x), 'INVALID_ARGUMENT', RangeError, /non-negative safe integer/);
      // The refused value is shown as JavaScript prints it.
      assert.ok(e.message.endsWith(`got ${String(x)}`), `${name}: ${e.message}`);
    }
  }
  // nothing was written by the refused calls
  assert.equal(snap.status().exceptions, 0);
});

test('bytes: TypeError for anything but a Uint8Array', () => {
  const { vol, snap } = fresh();
  const calls = {
    'vol.write': (x) => vol.write(0, x),
    'vol.readInto': (x) => vol.readInto(0, x),
    'snap.write': (x) => snap.write(0, x),
    'snap.readInto': (x) => snap.readInto(0, x),
    'fromImages origin': (x) => Volume.fromImages(x, []),
    'fromImages COW': (x) => Volume.fromImages(new Uint8Array(4096), [x]),
  };
  for (const [name, call] of Object.entries(calls)) {
    for (const x of NOT_BYTES) {
      throwsCode(() => call(x), 'INVALID_ARGUMENT', TypeError, /must be a Uint8Array/);
    }
    assert.ok(name);
  }
  for (const x of ['abc', new Uint8Array(4), 5, null, {}]) {
    throwsCode(() => Volume.fromImages(new Uint8Array(4096), x), 'INVALID_ARGUMENT', TypeError, /array of Uint8Array/);
  }
});

test('snapshot options: types, unknown keys, values', () => {
  const vol = Volume.memory(MiB);
  for (const o of [undefined, null, 5, 'x', [], [65536]]) {
    throwsCode(() => vol.snapshot(o), 'INVALID_ARGUMENT', TypeError, /snapshot options must be an object/);
  }
  throwsCode(() => vol.snapshot({}), 'INVALID_ARGUMENT', TypeError, /need cowSize/);
  throwsCode(() => vol.snapshot({ cowsize: 65536 }), 'INVALID_ARGUMENT', TypeError, /unknown snapshot option "cowsize"/);
  throwsCode(() => vol.snapshot({ cowSize: 65536, store: 'P' }), 'INVALID_ARGUMENT', TypeError, /unknown/);
  for (const p of ['yes', 1, null]) {
    throwsCode(() => vol.snapshot({ cowSize: 65536, persistent: p }), 'INVALID_ARGUMENT', TypeError, /persistent/);
  }
  for (const o of ['PO', 'Report', 1, null]) {
    throwsCode(() => vol.snapshot({ cowSize: 65536, overflow: o }), 'INVALID_ARGUMENT', TypeError, /overflow/);
  }
  for (const a of ['50,50', 50, [50], [50, 50, 50], true]) {
    throwsCode(() => vol.snapshot({ cowSize: 65536, autoextend: a }), 'INVALID_ARGUMENT', TypeError, /autoextend/);
  }
  throwsCode(() => vol.snapshot({ cowSize: 65536, autoextend: { threshold: '50', percent: 5 } }), 'INVALID_ARGUMENT', TypeError);
  throwsCode(() => vol.snapshot({ cowSize: 65536, autoextend: [50, -5] }), 'INVALID_ARGUMENT', RangeError);
  throwsCode(() => vol.snapshot({ cowSize: 65536, autoextend: [2 ** 40, 5] }), 'INVALID_ARGUMENT', RangeError);
  // values the engine refuses: plain Errors with the core's code
  for (const a of [{ threshold: 0, percent: 10 }, [101, 10], [50, 0]]) {
    throwsCode(() => vol.snapshot({ cowSize: 65536, autoextend: a }), 'INVALID_ARGUMENT', Error, /autoextend/);
  }
  for (const c of [0, 512, 2048, 3000, 6144, 1 << 20]) {
    throwsCode(() => vol.snapshot({ cowSize: 65536, chunkSize: c }), 'BAD_CHUNK_SIZE', Error, /chunk size/);
  }
  // The core's one rule (as in C and Python): size 0 is an invalid argument, below 3 chunks no space.
  throwsCode(() => vol.snapshot({ cowSize: 0 }), 'INVALID_ARGUMENT', Error, /COW size is 0/);
  for (const size of [4096, 8191]) {
    throwsCode(() => vol.snapshot({ cowSize: size }), 'NO_SPACE', Error);
  }
  throwsCode(() => vol.snapshot({ cowSize: 4096, chunkSize: 8192, persistent: false }), 'NO_SPACE', Error);
  assert.equal(vol.snapshots().length, 0, 'no refused snapshot was created');
  const s = vol.snapshot({ cowSize: 65536 });
  throwsCode(() => s.setAutoextend('x'), 'INVALID_ARGUMENT', TypeError);
  throwsCode(() => s.setAutoextend([0, 5]), 'INVALID_ARGUMENT', Error);
  throwsCode(() => s.merge('not a function'), 'INVALID_ARGUMENT', TypeError, /onProgress must be a function/);
  assert.equal(s.status().state, 'active', 'a refused merge did not start');
});

test('out of memory is a RangeError with code NO_SPACE, not a trap', () => {
  throwsCode(() => Volume.memory(2 ** 40), 'NO_SPACE', RangeError, /out of memory/);
  const vol = Volume.memory(MiB);
  throwsCode(() => vol.read(0, 2 ** 40), 'NO_SPACE', RangeError);
  throwsCode(() => vol.snapshot({ cowSize: 2 ** 40 }), 'NO_SPACE', RangeError);
  vol.write(0, Uint8Array.of(1)); // still usable
  assert.deepEqual(vol.read(0, 1), Uint8Array.of(1));
});

test('out of range I/O: OUT_OF_RANGE, nothing done', () => {
  const { vol, snap } = fresh();
  for (const f of [
    () => vol.read(MiB, 1),
    () => vol.read(MiB - 1, 2),
    () => vol.read(2 ** 52, 1),
    () => vol.readInto(MiB - 2, new Uint8Array(3)),
    () => vol.write(MiB - 1, new Uint8Array(2)),
    () => snap.read(MiB, 1),
    () => snap.readInto(MiB - 2, new Uint8Array(3)),
    () => snap.write(MiB - 1, new Uint8Array(2)),
  ]) {
    throwsCode(f, 'OUT_OF_RANGE', Error, /out of range/);
  }
  assert.equal(snap.status().exceptions, 0, 'a refused origin write copied nothing');
  assert.deepEqual(vol.read(MiB - 1, 1), Uint8Array.of(0));
});

test('invalid and overflowed snapshots', () => {
  const vol = Volume.memory(MiB);
  const s = vol.snapshot({ cowSize: 24 * KiB });
  for (let c = 0; c < 5; c++) vol.write(c * 4096, Uint8Array.of(1));
  for (const f of [() => s.read(0, 1), () => s.readInto(0, new Uint8Array(1)), () => s.write(0, Uint8Array.of(1)), () => s.merge()]) {
    throwsCode(f, 'SNAPSHOT_INVALID', Error, /invalid/);
  }
  // still describable, exportable and deletable
  assert.equal(s.status().state, 'invalid');
  const cow = s.exportCow();
  assert.deepEqual(cow.subarray(4, 8), new Uint8Array(4), 'valid = 0 on disk');
  const reloaded = Volume.fromImages(vol.originImage(), [cow]);
  assert.equal(reloaded.snapshots()[0].status().state, 'invalid', 'an invalid COW activates invalid');
  s.delete();

  const po = vol.snapshot({ cowSize: 24 * KiB, overflow: 'report' });
  for (let c = 0; c < 4; c++) po.write(c * 4096, Uint8Array.of(1));
  throwsCode(() => po.write(4 * 4096, Uint8Array.of(1)), 'SNAPSHOT_OVERFLOW', Error, /overflow/);
});

test('deleted and merged snapshots: UNKNOWN_SNAPSHOT from every method', () => {
  const vol = Volume.memory(MiB);
  const deleted = vol.snapshot({ cowSize: 64 * KiB });
  const merged = vol.snapshot({ cowSize: 64 * KiB });
  const keep = vol.snapshot({ cowSize: 64 * KiB });
  const alias = vol.snapshots()[0]; // another handle on `deleted`
  deleted.delete();
  merged.merge();
  for (const s of [deleted, merged, alias]) {
    for (const f of [
      () => s.read(0, 1),
      () => s.readInto(0, new Uint8Array(1)),
      () => s.write(0, Uint8Array.of(1)),
      () => s.status(),
      () => s.exceptions(),
      () => s.exportCow(),
      () => s.extend(128 * KiB),
      () => s.setAutoextend(null),
      () => s.delete(),
      () => s.merge(),
    ]) {
      throwsCode(f, 'UNKNOWN_SNAPSHOT', Error, /no snapshot with id/);
    }
  }
  assert.equal(keep.status().state, 'active');
});

test('merging: other operations wait for the merge', () => {
  const vol = Volume.memory(MiB);
  const a = vol.snapshot({ cowSize: 256 * KiB });
  const b = vol.snapshot({ cowSize: 256 * KiB });
  for (let c = 0; c < 8; c++) a.write(c * 3 * 4096, Uint8Array.of(c));
  assert.throws(() =>
    a.merge(() => {
      throw new Error('pause');
    }),
  );
  assert.equal(a.status().state, 'merging');
  throwsCode(() => vol.snapshot({ cowSize: 64 * KiB }), 'MERGING', Error);
  throwsCode(() => a.delete(), 'MERGING', Error);
  throwsCode(() => b.merge(), 'MERGING', Error);
  a.merge();
  b.merge(); // now fine
  assert.equal(vol.snapshots().length, 0);
});

test('extend: shrinking is refused', () => {
  const { snap } = fresh();
  throwsCode(() => snap.extend(64 * KiB), 'INVALID_ARGUMENT', Error, /shrink/);
  assert.equal(snap.status().cowSize, 256 * KiB);
});

test('corrupt COW images in fromImages: CORRUPT_METADATA', () => {
  const vol = Volume.memory(MiB);
  const s = vol.snapshot({ cowSize: 64 * KiB });
  vol.write(0, bytes(8192, 7));
  const good = s.exportCow();
  const origin = vol.originImage();
  const u32 = (img, at, v) => new DataView(img.buffer).setUint32(at, v, true);
  const cases = {
    'bad magic': (img) => u32(img, 0, 0x12345678),
    'version 2': (img) => u32(img, 8, 2),
    'chunk size not a power of two': (img) => u32(img, 12, 3),
    'chunk size zero': (img) => u32(img, 12, 0),
    'record pointing past the device': (img) => new DataView(img.buffer).setBigUint64(4096 + 8, 1000n, true),
    'record pointing at the header': (img) => new DataView(img.buffer).setBigUint64(4096 + 8, 0n + 1n, true),
  };
  for (const [name, mutate] of Object.entries(cases)) {
    const img = good.slice();
    mutate(img);
    const e = throwsCode(() => Volume.fromImages(origin, [good, img]), 'CORRUPT_METADATA', Error);
    assert.match(e.message, /^COW image 1: /, name);
  }
  for (const n of [0, 15, 100]) {
    throwsCode(() => Volume.fromImages(origin, [good.slice(0, n)]), 'CORRUPT_METADATA', Error, /COW image 0/);
  }
  // the good image alone is fine
  assert.equal(Volume.fromImages(origin, [good]).snapshots()[0].status().exceptions, 2);
});

test('errors are real Error objects with a message and a code', () => {
  const vol = Volume.memory(4096);
  try {
    vol.read(4096, 1);
    assert.fail('no throw');
  } catch (e) {
    assert.ok(e instanceof Error);
    assert.equal(e.code, 'OUT_OF_RANGE');
    assert.ok(typeof e.stack === 'string');
    assert.match(String(e), /out of range/);
  }
});
