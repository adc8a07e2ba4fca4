// Cross-language check against the Rust core, for scripts that have no kernel images: every script of
// the repository's tests/vectors/scripts/ (and shared/vectors/scripts/) replayed in JS gives the same
// origin, COW and snapshot images, statuses and refused operations as the Rust replayer
// (core/src/replay.rs, run through the `cowsnap replay` command; $COWSNAP_CLI, set by scripts/test-wasm.sh).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { replay } from './replay.mjs';
import { SHARED, assertBytesEqual } from './helpers.mjs';

const CLI = process.env.COWSNAP_CLI;
const ROOT = process.env.COWSNAP_ROOT;
const dirs = [ROOT && join(ROOT, 'tests/vectors/scripts'), join(SHARED, 'vectors/scripts')].filter((d) => d && existsSync(d));
const files = dirs.flatMap((d) =>
  readdirSync(d)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => join(d, f)),
);

test('the Rust replayer and the scripts are there', () => {
  assert.ok(CLI && existsSync(CLI), `COWSNAP_CLI=${CLI} (the cowsnap command)`);
  assert.ok(files.length >= 10, `${files.length} scripts in ${dirs.join(', ')}`);
});

for (const file of files) {
  test(`JS replay = Rust replay: ${file.split('/').slice(-3).join('/')}`, { skip: !CLI }, () => {
    const script = JSON.parse(readFileSync(file, 'utf8'));
    const out = mkdtempSync(join(tmpdir(), 'cowsnap-rs-replay-'));
    try {
      execFileSync(CLI, ['replay', file, '--out-dir', out], { stdio: ['ignore', 'ignore', 'inherit'] });
      const js = replay(script);
      const rs = JSON.parse(readFileSync(join(out, 'status.json'), 'utf8'));
      assertBytesEqual(js.origin, readFileSync(join(out, 'origin.img')), 'origin');
      assert.equal(js.snapshots.length, script.snapshots.length);
      for (const s of js.snapshots) {
        assertBytesEqual(s.cow, readFileSync(join(out, `${s.name}.cow`)), `COW of ${s.name}`);
        const img = join(out, `${s.name}.img`);
        assert.equal(s.image !== null, existsSync(img), `${s.name} readable in JS vs Rust`);
        if (s.image) assertBytesEqual(s.image, readFileSync(img), `image of ${s.name}`);
        assert.equal(s.status, rs.status[s.name], `status of ${s.name}`);
      }
      assert.deepEqual(js.errors, rs.errors, 'refused operations');
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
}
