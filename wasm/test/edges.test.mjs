// The edges of issue 13 in JavaScript: fromImages never formats a COW it is asked to open, one memory
// cannot be two devices, sizes C and Python refuse are refused here with the same code, and freed
// handles throw with a code. Every refusal also checks that the caller's images are unchanged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import init, { Volume } from 'cowsnap';
import { KiB, MiB, bytes, text, throwsCode, assertBytesEqual } from './helpers.mjs';

await init();

/** A 256 KiB origin (first chunk zero) and the image of a persistent COW holding old data. */
function images() {
  const vol = Volume.memory(256 * KiB);
  vol.write(4096, bytes(252 * KiB, 0x41));
  const snap = vol.snapshot({ cowSize: 64 * KiB });
  vol.write(4096, bytes(16 * KiB, 0x42));
  const out = { origin: vol.originImage(), cow: snap.exportCow() };
  vol.free();
  return out;
}

/** Runs `fn`, which must throw `code`, and checks that every array in `inputs` is unchanged. */
function refusedUnchanged(inputs, fn, code, ctor, msg) {
  const before = inputs.map((a) => a.slice());
  const e = throwsCode(fn, code, ctor, msg);
  inputs.forEach((a, i) => assertBytesEqual(a, before[i], `input ${i} after the refusal`));
  return e;
}

test('fromImages never formats: a zeroed or empty COW image is CORRUPT_METADATA', () => {
  const { origin, cow } = images();
  const ok = Volume.fromImages(origin, [cow]);
  assert.deepEqual(ok.snapshots()[0].read(4096, 2), bytes(2, 0x41));
  ok.free();
  const zeroedMagic = cow.slice();
  zeroedMagic.fill(0, 0, 4);
  refusedUnchanged([origin, zeroedMagic], () => Volume.fromImages(origin, [zeroedMagic]), 'CORRUPT_METADATA', Error, /COW image 0/);
  const allZero = new Uint8Array(64 * KiB);
  refusedUnchanged([origin, allZero], () => Volume.fromImages(origin, [allZero]), 'CORRUPT_METADATA', Error);
  refusedUnchanged([origin], () => Volume.fromImages(origin, [new Uint8Array(0)]), 'CORRUPT_METADATA', Error);
  // the second image is bad: the whole call fails, no volume with only the first
  refusedUnchanged([origin, cow], () => Volume.fromImages(origin, [cow.slice(), allZero]), 'CORRUPT_METADATA', Error, /COW image 1/);
});

test('one memory cannot be two devices: the same array, views of one region, the origin as a COW', () => {
  const { origin, cow } = images();
  const sameRegion = new Uint8Array(cow.buffer, cow.byteOffset, cow.byteLength);
  // origin and COW packed in one buffer, then views over it
  const packed = new Uint8Array(origin.length + cow.length);
  packed.set(origin, 0);
  packed.set(cow, origin.length);
  const pOrigin = packed.subarray(0, origin.length);
  const pCow = packed.subarray(origin.length);
  const overlapping = packed.subarray(origin.length - 4096, origin.length + 4096);
  const cases = {
    'the same Uint8Array twice': [origin, [cow, cow]],
    'two views of the same region': [origin, [cow, sameRegion]],
    'the origin array as a COW': [origin, [origin]],
    'a view of the origin region as a COW': [pOrigin, [packed.subarray(0, 4096)]],
    'a COW overlapping the origin': [pOrigin, [overlapping]],
    'two COWs overlapping': [origin, [pCow, packed.subarray(origin.length + 4096)]],
  };
  for (const [what, [o, cows]] of Object.entries(cases)) {
    const e = refusedUnchanged([o, ...cows, packed], () => Volume.fromImages(o, cows), 'INVALID_ARGUMENT', Error, /is the same memory as/);
    assert.ok(!(e instanceof TypeError) && !(e instanceof RangeError), what);
  }
  // disjoint views of one buffer are two devices: accepted
  const vol = Volume.fromImages(pOrigin, [pCow]);
  assert.deepEqual(vol.snapshots()[0].read(4096, 2), bytes(2, 0x41));
  vol.free();
});

test('sizes refused as in C and Python', () => {
  throwsCode(() => Volume.memory(0), 'INVALID_ARGUMENT', RangeError, /volume size is 0/);
  throwsCode(() => Volume.fromImages(new Uint8Array(0)), 'INVALID_ARGUMENT', RangeError, /origin image is empty/);
  const vol = Volume.memory(MiB);
  // a persistent COW needs 3 chunks (header, metadata area, one data chunk), as lvcreate requires
  throwsCode(() => vol.snapshot({ cowSize: 2 * 4096 }), 'NO_SPACE', Error, /needs 3 chunks/);
  throwsCode(() => vol.snapshot({ cowSize: 3 * 65536 - 512, chunkSize: 65536 }), 'NO_SPACE', Error, /196608 bytes/);
  assert.equal(vol.snapshots().length, 0);
  const s = vol.snapshot({ cowSize: 3 * 4096 });
  vol.write(0, text('x'));
  assert.deepEqual(s.read(0, 1), new Uint8Array(1));
  // a size no memory can hold: said so, not "COW device too small"
  for (const n of [2 ** 53 - 1, 2 ** 40]) {
    const e = throwsCode(() => s.extend(n), 'NO_SPACE', RangeError, /out of memory/);
    assert.doesNotMatch(e.message, /too small/);
  }
  assert.equal(s.status().cowSize, 3 * 4096);
  vol.free();
  s.free();
});

test('freed handles throw INVALID_ARGUMENT (as a closed volume in Python); deleted snapshots UNKNOWN_SNAPSHOT', () => {
  const vol = Volume.memory(MiB);
  const snap = vol.snapshot({ cowSize: 64 * KiB });
  const other = vol.snapshot({ cowSize: 64 * KiB });
  other.delete();
  throwsCode(() => other.read(0, 1), 'UNKNOWN_SNAPSHOT', Error);
  throwsCode(() => other.readInto(0, new Uint8Array(1)), 'UNKNOWN_SNAPSHOT', Error);
  throwsCode(() => other.write(0, text('x')), 'UNKNOWN_SNAPSHOT', Error);
  vol.free();
  // write and readInto with any offset (a number or not: the glue takes two paths)
  for (const f of [() => vol.read(0, 1), () => vol.write(0, text('x')), () => vol.write('0', text('x')),
    () => vol.readInto(0, new Uint8Array(1)), () => vol.readInto(null, new Uint8Array(1)), () => vol.size, () => vol.snapshots(), () => vol.snapshot({ cowSize: 64 * KiB }), () => vol.originImage()]) {
    throwsCode(f, 'INVALID_ARGUMENT', Error, /Volume handle was freed/);
  }
  snap.free();
  for (const f of [() => snap.read(0, 1), () => snap.write(0, text('x')), () => snap.write(1n, text('x')),
    () => snap.readInto(0, new Uint8Array(1)), () => snap.readInto({}, new Uint8Array(1)), () => snap.id, () => snap.status(), () => snap.delete(), () => snap.exportCow(), () => snap.extend(128 * KiB)]) {
    throwsCode(f, 'INVALID_ARGUMENT', Error, /Snapshot handle was freed/);
  }
  snap.free(); // a second free stays harmless
  other.free();
});

test('bytes copied in and out stay right while wasm memory grows (its buffer is replaced)', () => {
  const vol = Volume.memory(64 * KiB);
  const snap = vol.snapshot({ cowSize: 64 * KiB });
  // A view into the middle of a larger buffer: the copy must start at its byteOffset.
  const backing = new Uint8Array(8 * KiB);
  for (let i = 0; i < backing.length; i++) backing[i] = (i * 7 + 3) & 0xff;
  const view = backing.subarray(1000, 1000 + 4 * KiB);
  const big = [];
  for (let round = 0; round < 8; round++) {
    const at = (round % 4) * 4 * KiB + round; // unaligned too
    vol.write(at, view);
    assert.deepEqual(vol.read(at, view.length), view, `round ${round}`);
    // Volumes of growing size: at least one of them grows the memory (the old buffer detaches).
    big.push(Volume.memory(MiB << round));
    const out = new Uint8Array(view.length);
    vol.readInto(at, out);
    assert.deepEqual(out, view, `round ${round} after growth`);
    snap.write(at, out);
    assert.deepEqual(snap.read(at, out.length), view, `snapshot, round ${round}`);
  }
  for (const b of big) b.free();
});

test('a Uint8Array whose length getter lies is refused, and nothing else is written', () => {
  class Short extends Uint8Array {
    get length() {
      return 16;
    }
  }
  const vol = Volume.memory(64 * KiB);
  const neighbour = Volume.memory(64 * KiB);
  neighbour.write(0, bytes(4096, 7));
  // The copy into wasm memory goes through a view of the 16 bytes the getter claims: it throws.
  assert.throws(() => vol.write(0, new Short(4096).fill(9)));
  assert.deepEqual(neighbour.read(0, 4096), bytes(4096, 7));
  // And the module goes on working (copies after the refused one included).
  for (const n of [4096, 16, 4096, 100]) {
    const other = Volume.memory(64 * KiB);
    other.write(100, bytes(n, 3));
    assert.deepEqual(other.read(100, n), bytes(n, 3));
    other.free();
  }
});
