// Typed usage of the installed package: `tsc --noEmit -p test/tsconfig.json` must accept every line,
// and each `@ts-expect-error` line must really be an error (tsc fails on an unused one), which proves
// the declarations are precise rather than `any`.
import init, {
  Volume,
  Snapshot,
  version,
  errorCodes,
  type SnapshotStatus,
  type ExceptionEntry,
  type ByteRange,
  type MergeProgress,
  type CowsnapError,
  type ErrorCode,
  type SnapshotOptions,
} from 'cowsnap';

export async function main(): Promise<number> {
  await init();
  const v: string = version();
  const codes: Record<string, number> = errorCodes();
  const vol: Volume = Volume.memory(1 << 20);
  const size: number = vol.size;
  vol.write(0, new Uint8Array([1, 2, 3]));
  const data: Uint8Array = vol.read(0, 3);
  vol.readInto(0, data);
  const opts: SnapshotOptions = { cowSize: 256 * 1024, chunkSize: 8192, persistent: true, overflow: 'report' };
  const snap: Snapshot = vol.snapshot(opts);
  vol.snapshot({ cowSize: 65536, autoextend: [70, 20] }).free();
  vol.snapshot({ cowSize: 65536, autoextend: { threshold: 70, percent: 20 } }).free();
  const st: SnapshotStatus = snap.status();
  const pct: number | null = st.dataPercent;
  const state: 'active' | 'overflow' | 'invalid' | 'merging' = st.state;
  const ex: ExceptionEntry[] = snap.exceptions();
  const first: number | undefined = ex[0]?.oldChunk;
  const changed: ByteRange[] = snap.changedRanges();
  const since: number | undefined = snap.changedRanges(snap.id)[0]?.offset;
  snap.setAutoextend(null);
  snap.extend(512 * 1024);
  const cow: Uint8Array = snap.exportCow();
  const again: Volume = Volume.fromImages(vol.originImage(), [cow]);
  const snaps: Snapshot[] = again.snapshots();
  const id: number = snaps[0].id;
  snap.merge((p: MergeProgress) => {
    const done: boolean = p.done;
    return done;
  });
  try {
    vol.read(1 << 30, 1);
  } catch (e) {
    const code: ErrorCode = (e as CowsnapError).code;
    void code;
  }
  snap[Symbol.dispose]();
  again.free();
  vol.free();

  // @ts-expect-error offsets are numbers
  vol.read('0', 1);
  // @ts-expect-error bytes are Uint8Array
  vol.write(0, 'text');
  // @ts-expect-error cowSize is required
  vol.snapshot({ chunkSize: 4096 });
  // @ts-expect-error overflow is 'invalidate' | 'report'
  vol.snapshot({ cowSize: 4096, overflow: 'PO' });
  // @ts-expect-error no public constructor
  new Volume();
  // @ts-expect-error status fields are typed
  const bad: string = st.exceptions;
  // @ts-expect-error the size is read-only
  vol.size = 1;

  return size + (pct ?? 0) + (first ?? 0) + changed.length + (since ?? 0) + id + v.length + Object.keys(codes).length + state.length + bad.length;
}
