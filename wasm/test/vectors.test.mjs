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

// The shared set, and cowsnap's own scripts with the kernel's images for them (tests/vectors/).
const OWN = process.env.COWSNAP_ROOT ? join(process.env.COWSNAP_ROOT, 'tests/vectors') : null;
const SETS = [{ scripts: join(SHARED, 'vectors/scripts'), kernel: join(SHARED, 'vectors/kernel'), atLeast: 6 }];
if (OWN && existsSync(join(OWN, 'kernel'))) SETS.push({ scripts: join(OWN, 'scripts'), kernel: join(OWN, 'kernel'), atLeast: 4 });

const gunzip = (p) => new Uint8Array(gunzipSync(readFileSync(p)));
const cases = SETS.flatMap(({ scripts, kernel, atLeast }) => {
  const files = readdirSync(scripts).filter((f) => f.endsWith('.json')).sort();
  test(`the vectors in ${scripts} are there`, () => {
    assert.ok(files.length >= atLeast, `scripts in ${scripts}: ${files.length}`);
  });
  return files.map((file) => ({ file, scripts, kernel }));
});

for (const { file, scripts, kernel } of cases) {
  const name = file.replace(/\.json$/, '');
  const dir = join(kernel, name);
  const script = JSON.parse(readFileSync(join(scripts, file), 'utf8'));

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
      // The kernel lists the status of live and merged snapshots, not of deleted ones.
      if (s.name in kstatus.status) assert.equal(s.status, kstatus.status[s.name], `${name}: status of ${s.name}`);
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
      const merged = script.ops.some((op) => op.op === 'merge' && op.name === d.name);
      const deleted = script.ops.some((op) => op.op === 'delete' && op.name === d.name);
      if (existsSync(imgPath)) {
        assertBytesEqual(snap.read(0, origin.length), gunzip(imgPath), `${name}/${d.name}: activated image`);
        assert.equal(snap.status().chunkSize, d.chunk_sectors * 512);
      } else if (merged) {
        assert.equal(snap.status().exceptions, 0, 'a merged COW has no records left');
        assertBytesEqual(snap.read(0, origin.length), origin, 'and reads as the origin');
      } else if (deleted) {
        // Deleted while the origin kept changing: the COW still activates, its view means nothing now.
        assert.ok(snap.status().exceptions > 0, `${name}/${d.name}: records kept`);
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
