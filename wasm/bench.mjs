// Benchmark: the same workload in wasm (the built Node.js package) and natively (examples/native_bench.rs
// on the core's MemDevice), and the wasm/native speed ratio.
//
//   bash wasm/build.sh --no-pack && node wasm/bench.mjs [--origin-mib 64] [--chunk 4096] [--write 4096]
//                                                       [--read 65536] [--rounds 3] [--check 0.5]
//
// Phases: "COW first writes": a fresh snapshot, then one origin write at the start of every chunk (each
// copies the old chunk into the COW and commits its exception record); "snapshot reads": the whole
// snapshot (every chunk now in the COW) read with readInto into one reused buffer. Best of N rounds.
// --check R exits 1 when a phase's wasm/native ratio is below R.
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';

const HERE = dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    'origin-mib': { type: 'string', default: '64' },
    chunk: { type: 'string', default: '4096' },
    write: { type: 'string', default: '4096' },
    read: { type: 'string', default: '65536' },
    rounds: { type: 'string', default: '3' },
    check: { type: 'string' },
  },
});
const originMib = Number(values['origin-mib']);
const chunk = Number(values.chunk);
const write = Number(values.write);
const read = Number(values.read);
const rounds = Number(values.rounds);

const { Volume } = createRequire(import.meta.url)(join(HERE, 'pkg/node/cowsnap.js'));

function wasmRound() {
  const origin = originMib * 1024 * 1024;
  const chunks = origin / chunk;
  const cowLen = origin + (origin / chunk) * 16 * 2 + 4 * chunk;
  const vol = Volume.memory(origin);
  vol.write(0, new Uint8Array(origin).fill(0x5a));
  const snap = vol.snapshot({ cowSize: cowLen, chunkSize: chunk });
  const data = new Uint8Array(write).fill(0xab);
  let t = process.hrtime.bigint();
  for (let c = 0; c < chunks; c++) vol.write(c * chunk, data);
  const firstWrites = Number(process.hrtime.bigint() - t) / 1e9;
  if (snap.status().exceptions !== chunks) throw new Error('workload did not copy every chunk');
  const buf = new Uint8Array(read);
  let checksum = 0;
  t = process.hrtime.bigint();
  for (let off = 0; off < origin; off += read) {
    snap.readInto(off, buf);
    checksum += buf[0];
  }
  const snapshotReads = Number(process.hrtime.bigint() - t) / 1e9;
  snap.free();
  vol.free();
  return { firstWrites, snapshotReads, chunks, checksum };
}

function nativeRound() {
  const args = [String(originMib), String(chunk), String(write), String(read), '1'];
  const out = execFileSync(
    'cargo',
    ['run', '-q', '--release', '-p', 'cowsnap-wasm', '--example', 'native_bench', '--', ...args],
    { cwd: join(HERE, '..'), encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] },
  );
  return JSON.parse(out.trim().split('\n').at(-1));
}

// Rounds alternate native and wasm so that load from other processes hits both alike; best of each.
const best = (a, b) => (a ? { ...b, firstWrites: Math.min(a.firstWrites, b.firstWrites), snapshotReads: Math.min(a.snapshotReads, b.snapshotReads) } : b);
let native;
let wasm;
nativeRound(); // builds the example, warms caches
for (let r = 0; r < rounds; r++) {
  native = best(native, nativeRound());
  wasm = best(wasm, wasmRound());
}
if (native.checksum !== wasm.checksum) throw new Error(`checksums differ: native ${native.checksum}, wasm ${wasm.checksum}`);
const mib = originMib;
const rows = [];
let ok = true;
for (const [phase, label] of [
  ['firstWrites', `COW first writes (${native.chunks} x ${write} B, chunk ${chunk} B)`],
  ['snapshotReads', `snapshot reads (${mib} MiB in ${read} B pieces)`],
]) {
  const ratio = native[phase] / wasm[phase]; // wasm speed / native speed
  rows.push({
    phase: label,
    'native MiB/s': +(mib / native[phase]).toFixed(0),
    'wasm MiB/s': +(mib / wasm[phase]).toFixed(0),
    'wasm/native': +ratio.toFixed(2),
  });
  if (values.check && ratio < Number(values.check)) ok = false;
}
console.log(`node ${process.version}, ${mib} MiB origin, best of ${rounds} rounds`);
console.table(rows);
console.log(JSON.stringify({ native, wasm, rows }));
if (!ok) {
  console.error(`wasm/native ratio below ${values.check}`);
  process.exit(1);
}
