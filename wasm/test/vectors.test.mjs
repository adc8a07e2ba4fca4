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
import { replay } from './replay.mjs';
import { SHARED, assertBytesEqual } from './helpers.mjs';

const SCRIPTS = join(SHARED, 'vectors/scripts');
const KERNEL = join(SHARED, 'vectors/kernel');

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
