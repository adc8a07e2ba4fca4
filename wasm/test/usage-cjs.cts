// Typed usage of the installed package from CommonJS (`require`): tsc resolves `cowsnap` with the
// "require" condition (index.d.cts). Each `@ts-expect-error` must really be an error (tsc fails on an
// unused one): CommonJS has no default export, and the classes are as precise as for `import`.
import cowsnap = require('cowsnap');

export async function mainCjs(): Promise<number> {
  await cowsnap.init();
  cowsnap.initSync();
  const vol: cowsnap.Volume = cowsnap.Volume.memory(1 << 20);
  const snap: cowsnap.Snapshot = vol.snapshot({ cowSize: 256 * 1024 });
  vol.write(0, new Uint8Array([1, 2, 3]));
  const st: cowsnap.SnapshotStatus = snap.status();
  const code: cowsnap.ErrorCode = 'NO_SPACE';
  const data: Uint8Array = snap.read(0, 3);
  snap.free();
  vol.free();
  // @ts-expect-error require('cowsnap') has no default export
  void cowsnap.default;
  // @ts-expect-error bytes are Uint8Array
  vol.write(0, 'text');
  return st.exceptions + data.length + code.length + cowsnap.version().length;
}
