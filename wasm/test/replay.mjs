// Replays an operation script (shared/vectors/README.md) through the JS API, as the Rust replayer
// (core/src/replay.rs) does: origin, each snapshot's COW bytes, logical image and dmsetup status string,
// and the refused operations.
import assert from 'node:assert/strict';
import { Volume } from 'cowsnap';

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

