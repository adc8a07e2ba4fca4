// Shared helpers of the package tests (run from a scratch folder where the packed tarball is installed).
import assert from 'node:assert/strict';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const HERE = dirname(fileURLToPath(import.meta.url));
export const KiB = 1024;
export const MiB = 1024 * 1024;

/** The repository's copy of the shared vector set (tests/shared); scripts/test-wasm.sh says where
 * it is, since the tests run from a scratch copy of the package. */
export const SHARED = process.env.COWSNAP_VECTORS_ROOT ? resolve(process.env.COWSNAP_VECTORS_ROOT) : join(HERE, '../../tests/shared');

/** Asserts that `fn` throws an instance of `ctor` whose `code` is `code`. */
export function throwsCode(fn, code, ctor = Error, msgPart) {
  let caught;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught !== undefined, `expected a throw with code ${code}`);
  assert.ok(caught instanceof ctor, `expected ${ctor.name}, got ${caught?.constructor?.name}: ${caught?.message}`);
  assert.equal(caught.code, code, `code of: ${caught.message}`);
  assert.equal(typeof caught.message, 'string');
  assert.ok(caught.message.length > 0);
  if (msgPart) assert.match(caught.message, msgPart);
  return caught;
}

export const bytes = (n, fill) => new Uint8Array(n).fill(fill);

export function text(s) {
  return new TextEncoder().encode(s);
}

/** Index of the first differing byte, or -1. */
export function firstDiff(a, b) {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

export function assertBytesEqual(actual, expected, what) {
  const d = firstDiff(actual, expected);
  assert.equal(d, -1, `${what}: first difference at byte ${d} (lengths ${actual.length} vs ${expected.length})`);
}
