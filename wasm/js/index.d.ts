// Types of the `cowsnap` npm package (hand-written: wasm-bindgen types every checked argument as `any`).
// wasm/build.sh appends loader-esm.d.ts (-> index.d.mts, for `import`, Node.js and browser) or
// loader-cjs.d.ts (-> index.d.cts, for `require`) to this file: the classes are the same in both.

// BEGIN GENERATED ErrorCode (from cowsnap_core::ErrorCode by ffi/tests/generated.rs; do not edit)
/** Stable error codes, shared with the C API and Python (`error.code`). */
export type ErrorCode =
  | 'OUT_OF_RANGE'
  | 'BAD_CHUNK_SIZE'
  | 'INVALID_ARGUMENT'
  | 'SNAPSHOT_INVALID'
  | 'SNAPSHOT_OVERFLOW'
  | 'NO_SPACE'
  | 'UNKNOWN_SNAPSHOT'
  | 'CORRUPT_METADATA'
  | 'IO'
  | 'MERGING'
  | 'UNSUPPORTED'
  | 'NULL_POINTER'
  | 'PANIC'
  | 'BUFFER_TOO_SMALL';
// END GENERATED ErrorCode

/**
 * What every function of the package throws: an `Error` (engine errors), a `TypeError` (an argument
 * of the wrong type) or a `RangeError` (a negative, fractional or unsafe number; out of memory), always
 * with a `code`. Wrong arguments have code `INVALID_ARGUMENT`, out of memory `NO_SPACE`.
 */
export interface CowsnapError extends Error {
  code: ErrorCode;
}

/** LVM's autoextend policy: grow the COW by `percent` % when Data% would pass `threshold` %. */
export interface AutoextendPolicy {
  /** 1–100; 100 switches autoextend off (as in lvm.conf). */
  threshold: number;
  /** At least 1. */
  percent: number;
}

/** Either `{ threshold, percent }` or `[threshold, percent]`. */
export type Autoextend = AutoextendPolicy | readonly [threshold: number, percent: number];

export interface SnapshotOptions {
  /**
   * Size of the snapshot's COW device in bytes (like `lvcreate -s -L`). Required. At least 3 chunks
   * for a persistent store (header, metadata area, one data chunk), 1 for a transient one.
   */
  cowSize: number;
  /** Chunk size in bytes: a power of two from 4096 to 524288. Default 4096. */
  chunkSize?: number;
  /** `true` (default): dm's persistent store, the kernel's on-disk format. `false`: transient (`N`). */
  persistent?: boolean;
  /**
   * What a snapshot write that finds the COW full does: `"invalidate"` (default, dm's `P`, what LVM
   * uses) or `"report"` (dm's `PO`: the snapshot enters state `overflow`, reads still work).
   * An origin write that finds the COW full always invalidates the snapshot.
   */
  overflow?: 'invalidate' | 'report';
  /** Grow the COW automatically (`null`/absent: never). */
  autoextend?: Autoextend | null;
}

export type SnapshotState = 'active' | 'overflow' | 'invalid' | 'merging';

export interface MergeProgress {
  /** Chunks copied back so far. */
  merged: number;
  /** Chunks to copy back in all. */
  total: number;
  /** True once every chunk is merged. */
  done: boolean;
}

/** `snap.status()`: the numbers of `dmsetup status` and `lvs`. */
export interface SnapshotStatus {
  state: SnapshotState;
  /** False for a transient (`N`) store. */
  persistent: boolean;
  overflow: 'invalidate' | 'report';
  /** Bytes. */
  chunkSize: number;
  /** Size of the COW device in bytes. */
  cowSize: number;
  /** Sectors (512 bytes) handed out, header and metadata included. */
  sectorsAllocated: number;
  /** COW device size in sectors. */
  totalSectors: number;
  /** Header plus metadata areas so far, in sectors (0 for a transient store). */
  metadataSectors: number;
  /** Number of exceptions (chunks copied). */
  exceptions: number;
  /** LVM's Data%: `null` for an invalid snapshot. */
  dataPercent: number | null;
  /** The `dmsetup status` string: `"alloc/total meta"`, `"Invalid"` or `"Overflow"`. */
  dmStatus: string;
  /** The `lvs` attribute string, e.g. `"swi-a-s---"`. */
  lvsAttr: string;
  /** While merging: progress; otherwise `null`. */
  mergeProgress: MergeProgress | null;
}

/** One entry of the exception table: origin chunk `oldChunk` is held in COW chunk `newChunk`. */
export interface ExceptionEntry {
  oldChunk: number;
  newChunk: number;
}

/** A byte range of the origin. */
export interface ByteRange {
  offset: number;
  length: number;
}

/**
 * An origin volume held in memory, and its snapshots. Offsets and sizes are byte counts given as
 * non-negative safe integers. Call `free()` (or use `using`) to release its memory at once; a
 * `FinalizationRegistry` releases forgotten objects eventually. Snapshots keep their volume's memory
 * alive until they are freed too.
 */
export class Volume {
  private constructor();
  /** A zero-filled origin of `size` bytes (at least 1: 0 throws `INVALID_ARGUMENT`). */
  static memory(size: number): Volume;
  /**
   * An origin holding a copy of `origin`, with one snapshot per dm-snapshot COW image (persistent
   * store, as written by the kernel, LVM or `exportCow()`), in order. Throws `CORRUPT_METADATA` for
   * an image that is not a valid COW store, an all-zero one included (never formatted here: only
   * `snapshot()` formats a COW), and `INVALID_ARGUMENT` for one memory given twice (the same array,
   * views sharing bytes of one buffer, the origin's bytes as a COW) or an empty origin.
   */
  static fromImages(origin: Uint8Array, cows?: readonly Uint8Array[]): Volume;
  /** Origin size in bytes (also the size of every snapshot). */
  readonly size: number;
  /** The origin's `lvs` attributes: `-wi-a-----`, `owi-a-s---` with snapshots, `Owi-a-s---` while one merges. */
  readonly lvsAttr: string;
  /** `len` bytes of the origin at `offset`, in a new array. */
  read(offset: number, len: number): Uint8Array;
  /** Fills `buf` from the origin at `offset`. */
  readInto(offset: number, buf: Uint8Array): void;
  /** Writes the origin; old chunks are first copied into every snapshot that needs them. */
  write(offset: number, data: Uint8Array): void;
  /** Takes a snapshot on a new in-memory COW device (like `lvcreate -s`). */
  snapshot(options: SnapshotOptions): Snapshot;
  /** The current snapshots, oldest first (new handles; free them like any other). */
  snapshots(): Snapshot[];
  /** The origin device's bytes (with `exportCow()` images, the input of `fromImages`). */
  originImage(): Uint8Array;
  /** Releases this handle. Further calls on it throw `INVALID_ARGUMENT`; a second `free()` does nothing. */
  free(): void;
  [Symbol.dispose](): void;
}

/** A snapshot of a volume. Once deleted or merged, every call on it throws `UNKNOWN_SNAPSHOT`. */
export class Snapshot {
  private constructor();
  /** Id within its volume; never reused. */
  readonly id: number;
  /** `len` bytes of the snapshot at `offset`, in a new array. */
  read(offset: number, len: number): Uint8Array;
  /** Fills `buf` from the snapshot at `offset`. */
  readInto(offset: number, buf: Uint8Array): void;
  /** Writes the snapshot (never the origin). */
  write(offset: number, data: Uint8Array): void;
  status(): SnapshotStatus;
  /** The exception table in origin-chunk order. */
  exceptions(): ExceptionEntry[];
  /**
   * Byte ranges, sorted and merged, outside which this snapshot reads as the current origin; given
   * an older snapshot's id, outside which the two snapshots read the same (what an incremental
   * backup reads). Throws `SNAPSHOT_INVALID` for an invalid snapshot, `MERGING` during a merge.
   */
  changedRanges(olderId?: number): ByteRange[];
  /** Removes the snapshot (like `lvremove`). */
  delete(): void;
  /**
   * Merges the snapshot into the origin (like `lvconvert --merge`), synchronously, then removes it.
   * `onProgress` is called after each step; if it throws, the merge stops (the snapshot stays in
   * state `merging`) and calling `merge()` again resumes it.
   */
  merge(onProgress?: ((progress: MergeProgress) => void) | null): void;
  /** The COW device's bytes (a dm-snapshot image for a persistent store). */
  exportCow(): Uint8Array;
  /** Grows the COW device to `newSize` bytes (like `lvextend`). */
  extend(newSize: number): void;
  /** Sets or (with `null`) clears the autoextend policy. */
  setAutoextend(policy: Autoextend | null): void;
  /**
   * Releases this handle (not the snapshot: see `delete()`). Further calls on it throw
   * `INVALID_ARGUMENT`; a second `free()` does nothing.
   */
  free(): void;
  [Symbol.dispose](): void;
}

/** The engine version. */
export function version(): string;

/** Every error code with its number in the C API: `{ OK: 0, OUT_OF_RANGE: -1, ... }`. */
export function errorCodes(): Record<ErrorCode | 'OK', number>;
