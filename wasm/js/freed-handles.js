
// --- appended to wasm-bindgen's glue by wasm/build.sh (from wasm/js/freed-handles.js) ---
// A handle used after `free()` (or `Symbol.dispose`) throws an `Error` whose `code` is
// INVALID_ARGUMENT, as a call on a closed volume does in Python, instead of wasm-bindgen's bare
// "null pointer passed to rust"; and `free()` twice is harmless, as Python's `close()`.
// Plain script: valid in the CommonJS (node) and ES module (web) glue.
(function guardFreedHandles(classes) {
  const TWINS = new Set(['write', 'readInto']);
  for (const [name, cls] of classes) {
    const proto = cls.prototype;
    const freed = () => {
      const e = new Error(`this ${name} handle was freed (free() or Symbol.dispose): it cannot be used any more`);
      e.code = 'INVALID_ARGUMENT';
      return e;
    };
    // Methods of up to two parameters (all of them today) get a guard with two: a rest parameter
    // and `apply` allocate on every call.
    const guard = (fn) =>
      fn.length <= 2
        ? function guarded(a, b) {
            if (this.__wbg_ptr === 0) throw freed();
            return fn.call(this, a, b);
          }
        : function guarded(...args) {
            if (this.__wbg_ptr === 0) throw freed();
            return fn.apply(this, args);
          };
    // The hot calls go, with a number for an offset, to a twin export that returns its error
    // (undefined for success) instead of a Result, which costs a new array per call (`returned` in
    // wasm/src/lib.rs); the error is thrown here. Any other offset goes to the method, which
    // refuses it as it always did.
    const twinned = (method, twin) =>
      function guarded(offset, bytes) {
        if (this.__wbg_ptr === 0) throw freed();
        if (typeof offset !== 'number') return method.call(this, offset, bytes);
        const err = twin.call(this, offset, bytes);
        if (err !== undefined) throw err;
      };
    for (const key of Object.getOwnPropertyNames(proto)) {
      if (key === 'constructor' || key === 'free' || key.startsWith('__')) continue;
      const d = Object.getOwnPropertyDescriptor(proto, key);
      if (typeof d.value === 'function') d.value = TWINS.has(key) ? twinned(d.value, proto[`__${key}`]) : guard(d.value);
      if (d.get) d.get = guard(d.get);
      Object.defineProperty(proto, key, d);
    }
    const free = proto.free;
    proto.free = function free_once() {
      if (this.__wbg_ptr !== 0) free.call(this);
    };
    if (Symbol.dispose) proto[Symbol.dispose] = proto.free;
  }
})([
  ['Volume', Volume],
  ['Snapshot', Snapshot],
]);
