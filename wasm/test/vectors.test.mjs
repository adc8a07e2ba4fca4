// Cross-language check: every operation script of shared/vectors/scripts/ replayed in JS through the
// installed package yields the origin, COW and snapshot images and the status strings that the real
// Linux kernel produced (shared/vectors/kernel/<name>/), and the kernel's origin + COW images loaded with
// Volume.fromImages read back the kernel's snapshot images exactly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { Volume } from 'cowsnap';
import { SHARED, assertBytesEqual } from './helpers.mjs';

const SCRIPTS = join(SHARED, 'vectors/scripts');
const KERNEL = join(SHARED, 'vectors/kernel');

/** `sector-index`: sector k holds the u64 little-endian k, 64 times. */
export function originInit(size, init) {
  const img = new Uint8Array(size);
  if (init === 'sector-index') {
    const dv = new DataView(img.buffer);
    for (let k = 0; k * 512 < size; k++) {
      for (let w = 0; w < 64; w++) dv.setBigUint64(k * 512 + w * 8, BigInt(k), true);
    }
  } else {
    assert.equal(init, 'zero', `origin_init ${init}`);
  }
  return img;
}

const isEngineError = (e) => e instanceof Error && !(e instanceof TypeError) && !(e instanceof RangeError) && typeof e.code === 'string';

/** Replays a script (shared/vectors/README.md) with the JS API, as the Rust replayer does. */
export function replay(script) {
  const vol = Volume.fromImages(originInit(script.origin_size, script.origin_init), []);
  const decl = new Map(script.snapshots.map((s) => [s.name, s]));
  const live = new Map();
  const gone = new Map();
  const errors = [];
  for (const op of script.ops) {
    switch (op.op) {
      case 'snapshot': {
        const d = decl.get(op.name);
        assert.ok(d, `unknown snapshot ${op.name}`);
        const store = d.store.toUpperCase();
        live.set(
          op.name,
          vol.snapshot({
            cowSize: d.cow_size,
            chunkSize: d.chunk_sectors * 512,
            persistent: store !== 'N',
            overflow: store === 'PO' ? 'report' : 'invalidate',
          }),
        );
        break;
      }
      case 'write': {
        const data = new Uint8Array(op.len).fill(op.fill);
        try {
          if (op.target === 'origin') vol.write(op.offset, data);
          else live.get(op.target).write(op.offset, data);
        } catch (e) {
          if (!isEngineError(e)) throw e;
          errors.push(`WRITE-ERR ${op.target} ${op.offset}`);
        }
        break;
      }
      case 'delete': {
        const s = live.get(op.name);
        live.delete(op.name);
        const status = s.status().dmStatus;
        const cow = s.exportCow();
        s.delete();
        gone.set(op.name, { cow, status });
        break;
      }
      case 'merge': {
        const s = live.get(op.name);
        live.delete(op.name);
        let last;
        // The status and COW of a merged snapshot are those at the end of the merge (the callback
        // runs before the snapshot is removed).
        s.merge((p) => {
          if (p.done) last = { cow: s.exportCow(), status: s.status().dmStatus };
        });
        assert.ok(last, 'merge reported done');
        gone.set(op.name, last);
        break;
      }
      default:
        assert.fail(`unknown op ${op.op}`);
    }
  }
  const snapshots = [];
  for (const d of script.snapshots) {
    const s = live.get(d.name);
    if (s) {
      let image = null;
      try {
        image = s.read(0, script.origin_size);
      } catch (e) {
        assert.equal(e.code, 'SNAPSHOT_INVALID');
        errors.push(`READ-ERR ${d.name}`);
      }
      snapshots.push({ name: d.name, cow: s.exportCow(), image, status: s.status().dmStatus });
    } else if (gone.has(d.name)) {
      snapshots.push({ name: d.name, image: null, ...gone.get(d.name) });
    }
  }
  const out = { origin: vol.originImage(), snapshots, errors };
  vol.free();
  return out;
}

const gunzip = (p) => new Uint8Array(gunzipSync(readFileSync(p)));
const scripts = readdirSync(SCRIPTS)
  .filter((f) => f.endsWith('.json'))
  .sort();

test('the shared vectors are there', () => {
  assert.ok(scripts.length >= 6, `scripts in ${SCRIPTS}: ${scripts.length}`);
});

for (const file of scripts) {
  const name = file.replace(/\.json$/, '');
  const dir = join(KERNEL, name);
  const script = JSON.parse(readFileSync(join(SCRIPTS, file), 'utf8'));

  test(`replay ${name} matches the kernel's images`, () => {
    assert.ok(existsSync(dir), `kernel images for ${name} in ${dir}`);
    assert.deepEqual(JSON.parse(readFileSync(join(dir, 'script.json'), 'utf8')), script, 'same script as the kernel ran');
    const out = replay(script);
    const kstatus = JSON.parse(readFileSync(join(dir, 'status.json'), 'utf8'));
    assertBytesEqual(out.origin, gunzip(join(dir, 'origin.img.gz')), `${name}: origin`);
    assert.equal(out.snapshots.length, script.snapshots.length);
    for (const s of out.snapshots) {
      assertBytesEqual(s.cow, gunzip(join(dir, `${s.name}.cow.gz`)), `${name}: COW of ${s.name}`);
      const img = join(dir, `${s.name}.img.gz`);
      assert.equal(s.image !== null, existsSync(img), `${name}: ${s.name} readable here vs kernel image present`);
      if (s.image) assertBytesEqual(s.image, gunzip(img), `${name}: image of ${s.name}`);
      assert.equal(s.status, kstatus.status[s.name], `${name}: status of ${s.name}`);
    }
    const kerrors = kstatus.errors.filter((e) => !e.startsWith('WRITE-FAILED'));
    assert.deepEqual(out.errors, kerrors, `${name}: refused operations`);
  });

  test(`fromImages on ${name}'s kernel images reads back the kernel's snapshots`, () => {
    const origin = gunzip(join(dir, 'origin.img.gz'));
    for (const d of script.snapshots) {
      if (d.store.toUpperCase() === 'N') continue; // a transient store does not survive deactivation
      const cow = gunzip(join(dir, `${d.name}.cow.gz`));
      const vol = Volume.fromImages(origin, [cow]);
      const [snap] = vol.snapshots();
      const imgPath = join(dir, `${d.name}.img.gz`);
      const mergedOrDeleted = script.ops.some((op) => (op.op === 'merge' || op.op === 'delete') && op.name === d.name);
      if (existsSync(imgPath)) {
        assertBytesEqual(snap.read(0, origin.length), gunzip(imgPath), `${name}/${d.name}: activated image`);
        assert.equal(snap.status().chunkSize, d.chunk_sectors * 512);
      } else if (mergedOrDeleted) {
        assert.equal(snap.status().exceptions, 0, 'a merged COW has no records left');
        assertBytesEqual(snap.read(0, origin.length), origin, 'and reads as the origin');
      } else {
        assert.throws(
          () => snap.read(0, 512),
          (e) => e.code === 'SNAPSHOT_INVALID',
        );
      }
      vol.free();
    }
  });
}
