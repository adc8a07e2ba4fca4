//! cowsnap for JavaScript: `Volume` and `Snapshot` classes over the core, through wasm-bindgen.
//!
//! Translation only: argument checks (types and ranges, thrown as `TypeError`/`RangeError`), copies
//! between `Uint8Array`s and wasm memory, and core errors turned into `Error` objects whose `code` is
//! the core's stable [`ErrorCode::name`]. Every semantic lives in `cowsnap-core` (built `no_std`).
//!
//! A `Snapshot` holds a shared handle to its volume (`Rc<RefCell<Volume>>`) and its id, so it stays
//! usable whatever the JS code frees first, and a deleted or merged snapshot answers
//! `UNKNOWN_SNAPSHOT` instead of trapping. No borrow of the volume is held while JS code runs (the
//! merge progress callback is called between merge steps), so a re-entrant call cannot fail a borrow.

use std::cell::RefCell;
use std::rc::Rc;

use cowsnap_core::{
    limits, Autoextend, BlockDevice, ChunkSize, Error, ErrorCode, MemDevice, MergeEvent,
    MergeProgress, MergeStepper, OverflowMode, SnapshotId, SnapshotOptions, SnapshotState,
    StoreKind, Volume as CoreVolume,
};
use js_sys::{Array, Function, Object, Reflect, Uint8Array};
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

type Shared = Rc<RefCell<CoreVolume>>;

/// Largest integer a JS number holds exactly (`Number.MAX_SAFE_INTEGER`).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

// ------------------------------------------------------------------------------------------ errors

fn with_code(err: impl Into<JsValue>, code: ErrorCode) -> JsValue {
    let err = err.into();
    // Setting a property on a fresh Error object cannot fail.
    let _ = Reflect::set(&err, &JsValue::from_str("code"), &code.name().into());
    err
}

/// A core error as a JS `Error` with its stable `code`.
fn core_err(e: Error) -> JsValue {
    with_code(js_sys::Error::new(&e.to_string()), e.code())
}

/// [`core_err`] with a prefix saying which argument it was about.
fn core_err_in(what: &str, e: Error) -> JsValue {
    with_code(js_sys::Error::new(&format!("{what}: {e}")), e.code())
}

fn type_err(msg: &str) -> JsValue {
    with_code(js_sys::TypeError::new(msg), ErrorCode::InvalidArgument)
}

fn range_err(msg: &str) -> JsValue {
    with_code(js_sys::RangeError::new(msg), ErrorCode::InvalidArgument)
}

/// Allocation failure: a `RangeError` (as `new ArrayBuffer(huge)` throws) with code `NO_SPACE`.
fn oom(bytes: u64) -> JsValue {
    let msg = format!("out of memory: cannot allocate {bytes} bytes");
    with_code(js_sys::RangeError::new(&msg), ErrorCode::NoSpace)
}

/// Only reachable if JS re-enters the engine while it holds the volume, which no code path allows.
fn busy() -> JsValue {
    let msg = "the volume is in use by another call";
    with_code(js_sys::Error::new(msg), ErrorCode::InvalidArgument)
}

// --------------------------------------------------------------------------------------- arguments

fn kind_of(v: &JsValue) -> String {
    if v.is_null() {
        "null".into()
    } else if Array::is_array(v) {
        "an array".into()
    } else {
        v.js_typeof().as_string().unwrap_or_default()
    }
}

/// Checks that an offset, length or size is a non-negative safe integer.
fn check_count(n: f64, what: &str) -> Result<u64, String> {
    if n.is_nan() || n.fract() != 0.0 || !(0.0..=MAX_SAFE_INTEGER).contains(&n) {
        return Err(format!(
            "{what} must be a non-negative safe integer, got {}",
            show_number(n)
        ));
    }
    Ok(n as u64)
}

/// A number as JavaScript prints it. In the module JavaScript formats it: Rust's float formatting
/// would add ~20 KiB to the `.wasm`. (The crate's native unit tests have no JavaScript engine.)
fn show_number(n: f64) -> String {
    #[cfg(target_arch = "wasm32")]
    {
        String::from(
            js_sys::Number::from(n)
                .to_string_with_radix(10)
                .unwrap_or_default(),
        )
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        format!("{n}")
    }
}

fn arg_u64(v: &JsValue, what: &str) -> Result<u64, JsValue> {
    // Every call passes offsets and lengths: a safe integer (a number, never converted) is read
    // with two calls that return their answer, not with `as_f64`, whose answer goes through wasm
    // memory (two DataView writes, each checking that the memory's buffer is current).
    if js_sys::Number::is_safe_integer(v) {
        let n = v.unchecked_ref::<js_sys::Number>().value_of();
        return check_count(n, what).map_err(|m| range_err(&m));
    }
    let n = v
        .as_f64()
        .ok_or_else(|| type_err(&format!("{what} must be a number, got {}", kind_of(v))))?;
    check_count(n, what).map_err(|m| range_err(&m))
}

/// An offset the glue has checked to be a number (see [`returned`]).
fn arg_offset(n: f64) -> Result<u64, JsValue> {
    check_count(n, "offset").map_err(|m| range_err(&m))
}

/// A size that must also fit in wasm memory (a buffer length).
fn arg_len(v: &JsValue, what: &str) -> Result<usize, JsValue> {
    let n = arg_u64(v, what)?;
    usize::try_from(n).map_err(|_| oom(n))
}

fn arg_bytes<'a>(v: &'a JsValue, what: &str) -> Result<&'a Uint8Array, JsValue> {
    v.dyn_ref::<Uint8Array>()
        .ok_or_else(|| type_err(&format!("{what} must be a Uint8Array, got {}", kind_of(v))))
}

/// Zeroed wasm memory, or a `NO_SPACE` error instead of a trap ([`MemDevice::try_new`]).
fn zeroed(n: usize) -> Result<Vec<u8>, JsValue> {
    MemDevice::try_new(n as u64)
        .map(MemDevice::into_vec)
        .map_err(|_| oom(n as u64))
}

/// Copies a `Uint8Array` into wasm memory.
fn copy_in(a: &Uint8Array) -> Result<Vec<u8>, JsValue> {
    let mut v = zeroed(a.length() as usize)?;
    copy_to(a, &mut v);
    Ok(v)
}

/// `src.copy_to(dst)` (their lengths are equal) through a view of exactly `dst` kept from the last
/// call: writes copy in through the same scratch buffer call after call, and the new view per call
/// that `Uint8Array::copy_to` makes (an allocation in JavaScript, then `set` through
/// `Function.prototype.call`) was about 8% of a first write's time in a profile. The view covers
/// `dst` and no more: `set` refuses a source longer than it, whatever its `length` getter says.
fn copy_to(src: &Uint8Array, dst: &mut [u8]) {
    #[cfg(target_arch = "wasm32")]
    DST_VIEW.with(|view| match view.try_borrow_mut() {
        Ok(mut view) => {
            let key = (
                core::arch::wasm32::memory_size::<0>(),
                dst.as_mut_ptr() as usize,
                dst.len(),
            );
            match &*view {
                Some((k, v)) if *k == key => v.set(src, 0),
                _ => {
                    let memory: js_sys::WebAssembly::Memory =
                        wasm_bindgen::memory().unchecked_into();
                    // wasm32 addresses and lengths fit a u32.
                    let v = Uint8Array::new_with_byte_offset_and_length(
                        &memory.buffer(),
                        key.1 as u32,
                        key.2 as u32,
                    );
                    v.set(src, 0);
                    *view = Some((key, v));
                }
            }
        }
        // A `set` that threw (a source longer than it said) left the view borrowed: from then
        // on, a view per call.
        Err(_) => src.copy_to(dst),
    });
    #[cfg(not(target_arch = "wasm32"))]
    src.copy_to(dst);
}

/// Memory size in pages (growing the memory detaches the `ArrayBuffer` under every view),
/// address and length of the bytes a view covers.
#[cfg(target_arch = "wasm32")]
type ViewKey = (usize, usize, usize);

#[cfg(target_arch = "wasm32")]
thread_local! {
    /// The view [`copy_to`] copied through last, and what it covers.
    static DST_VIEW: RefCell<Option<(ViewKey, Uint8Array)>> = const { RefCell::new(None) };
}

/// Buffers up to this size go through one reused wasm-side buffer instead of a fresh allocation.
const SCRATCH_MAX: usize = 1 << 20;

thread_local! {
    static SCRATCH: Rc<RefCell<Vec<u8>>> = Rc::new(RefCell::new(Vec::new()));
}

/// Runs `f` on a wasm-side buffer of `n` bytes whose contents are unspecified (`f` fills it first):
/// the reused scratch buffer for small sizes, saving an allocation and a zero fill per call.
fn with_buffer<R>(n: usize, f: impl FnOnce(&mut [u8]) -> Result<R, JsValue>) -> Result<R, JsValue> {
    let scratch = SCRATCH.with(Rc::clone);
    if n <= SCRATCH_MAX {
        if let Ok(mut s) = scratch.try_borrow_mut() {
            if s.len() < n {
                let extra = n - s.len();
                s.try_reserve_exact(extra).map_err(|_| oom(n as u64))?;
                s.resize(n, 0);
            }
            return f(&mut s[..n]);
        }
    }
    f(&mut zeroed(n)?)
}

/// Reads `len` bytes with `read` into a new `Uint8Array`.
fn read_new(
    len: &JsValue,
    read: impl FnOnce(&mut [u8]) -> Result<(), JsValue>,
) -> Result<Uint8Array, JsValue> {
    let n = arg_len(len, "length")?;
    let n32 = u32::try_from(n).map_err(|_| oom(n as u64))?;
    // Allocated first, before anything is borrowed: if JS cannot allocate it, nothing is held.
    let out = Uint8Array::new_with_length(n32);
    with_buffer(n, |buf| {
        read(buf)?;
        out.copy_from(buf);
        Ok(())
    })?;
    Ok(out)
}

/// Reads into a caller's `Uint8Array` with `read`.
fn read_into(
    buf: &JsValue,
    read: impl FnOnce(&mut [u8]) -> Result<(), JsValue>,
) -> Result<(), JsValue> {
    let out = arg_bytes(buf, "buffer")?;
    with_buffer(out.length() as usize, |tmp| {
        read(tmp)?;
        out.copy_from(tmp);
        Ok(())
    })
}

/// Copies `data` (a `Uint8Array`) into wasm memory and hands it to `write`.
fn write_from(
    data: &JsValue,
    write: impl FnOnce(&[u8]) -> Result<(), JsValue>,
) -> Result<(), JsValue> {
    let data = arg_bytes(data, "data")?;
    with_buffer(data.length() as usize, |buf| {
        copy_to(data, buf);
        write(buf)
    })
}

/// The error of `r`, `undefined` for success. A `Result` crosses into JavaScript as a new
/// two-element array per call (wasm multi-value), and a JS value as an argument is read with
/// calls back into JavaScript. So the hot calls (`write`, `readInto`) have a twin export (`__write`, `__readInto`) that returns this
/// instead and takes `offset` as a number (no calls back into JavaScript to read it), and
/// wasm/js/freed-handles.js makes the method call the twin when `offset` is a number, the method
/// itself otherwise (which throws its `TypeError`), and throw what the twin returns: callers see
/// the same `void` method that throws the same errors.
fn returned(r: Result<(), JsValue>) -> JsValue {
    r.err().unwrap_or(JsValue::UNDEFINED)
}

fn get(obj: &JsValue, key: &str) -> Result<JsValue, JsValue> {
    Reflect::get(obj, &JsValue::from_str(key))
}

fn is_absent(v: &JsValue) -> bool {
    v.is_undefined() || v.is_null()
}

fn arg_u32(v: &JsValue, what: &str) -> Result<u32, JsValue> {
    let n = arg_u64(v, what)?;
    u32::try_from(n).map_err(|_| range_err(&format!("{what} must be at most {}", u32::MAX)))
}

/// `[threshold, percent]` or `{ threshold, percent }`; `null`/`undefined` switch autoextend off.
fn arg_autoextend(v: &JsValue) -> Result<Option<Autoextend>, JsValue> {
    if is_absent(v) {
        return Ok(None);
    }
    let (t, p) = if Array::is_array(v) {
        let a: &Array = v.unchecked_ref();
        if a.length() != 2 {
            return Err(type_err(
                "autoextend must be [threshold, percent] or { threshold, percent }",
            ));
        }
        (a.get(0), a.get(1))
    } else if v.is_object() {
        (get(v, "threshold")?, get(v, "percent")?)
    } else {
        return Err(type_err(&format!(
            "autoextend must be [threshold, percent] or {{ threshold, percent }}, got {}",
            kind_of(v)
        )));
    };
    // The numbers are checked by the core (Autoextend::validate), as for every front end.
    Ok(Some(Autoextend {
        threshold_percent: arg_u32(&t, "autoextend threshold")?,
        extend_percent: arg_u32(&p, "autoextend percent")?,
    }))
}

const SNAPSHOT_KEYS: [&str; 5] = [
    "cowSize",
    "chunkSize",
    "persistent",
    "overflow",
    "autoextend",
];

/// Parses `vol.snapshot(options)`: returns the COW size and the core options.
fn arg_snapshot_options(v: &JsValue) -> Result<(usize, SnapshotOptions), JsValue> {
    if !v.is_object() || Array::is_array(v) {
        return Err(type_err(&format!(
            "snapshot options must be an object like {{ cowSize: 1048576 }}, got {}",
            kind_of(v)
        )));
    }
    for k in Object::keys(v.unchecked_ref::<Object>()).iter() {
        let k = k.as_string().unwrap_or_default();
        if !SNAPSHOT_KEYS.contains(&k.as_str()) {
            return Err(type_err(&format!(
                "unknown snapshot option {k:?} (known: {})",
                SNAPSHOT_KEYS.join(", ")
            )));
        }
    }
    let cow = get(v, "cowSize")?;
    if is_absent(&cow) {
        return Err(type_err("snapshot options need cowSize (bytes)"));
    }
    let cow_size = arg_len(&cow, "cowSize")?;
    let chunk = get(v, "chunkSize")?;
    let chunk_size = if chunk.is_undefined() {
        ChunkSize::DEFAULT
    } else {
        ChunkSize::new(arg_u64(&chunk, "chunkSize")?).map_err(core_err)?
    };
    let persistent = get(v, "persistent")?;
    let store = match persistent.as_bool() {
        _ if persistent.is_undefined() => StoreKind::Persistent,
        Some(true) => StoreKind::Persistent,
        Some(false) => StoreKind::Transient,
        None => {
            return Err(type_err(&format!(
                "persistent must be a boolean, got {}",
                kind_of(&persistent)
            )))
        }
    };
    let overflow = get(v, "overflow")?;
    let overflow = match overflow.as_string().as_deref() {
        _ if overflow.is_undefined() => OverflowMode::Invalidate,
        Some("invalidate") => OverflowMode::Invalidate,
        Some("report") => OverflowMode::Report,
        _ => {
            return Err(type_err(
                "overflow must be \"invalidate\" (dm's P) or \"report\" (dm's PO)",
            ))
        }
    };
    let autoextend = arg_autoextend(&get(v, "autoextend")?)?;
    Ok((
        cow_size,
        SnapshotOptions {
            chunk_size,
            store,
            overflow,
            autoextend,
        },
    ))
}

/// Refuses one memory given as two devices: the same `Uint8Array`, or views sharing bytes of one
/// buffer (the images are copied into wasm memory, but a caller who passes one image twice has a
/// bug that would corrupt it on disk in the C or Python front ends: every front end refuses it).
fn check_distinct(images: &[(String, &Uint8Array)]) -> Result<(), JsValue> {
    for (i, (name, a)) in images.iter().enumerate() {
        let (a_buf, a_start) = (a.buffer(), a.byte_offset());
        let a_end = a_start + a.byte_length();
        for (first, b) in &images[..i] {
            let (b_start, b_end) = (b.byte_offset(), b.byte_offset() + b.byte_length());
            let overlap = a_start < b_end && b_start < a_end;
            if overlap && Object::is(&a_buf, &b.buffer()) {
                let msg = format!(
                    "{name} is the same memory as {first} (bytes of one ArrayBuffer): one image \
                     cannot be two devices of a volume"
                );
                return Err(with_code(
                    js_sys::Error::new(&msg),
                    ErrorCode::InvalidArgument,
                ));
            }
        }
    }
    Ok(())
}

/// The core's option and COW size rules, checked before the COW is allocated.
fn check_snapshot(cow_size: usize, opts: &SnapshotOptions) -> Result<(), JsValue> {
    let opts = opts.validate().map_err(core_err)?;
    opts.check_cow_len(cow_size as u64).map_err(core_err)
}

fn with<R>(vol: &Shared, f: impl FnOnce(&CoreVolume) -> Result<R, Error>) -> Result<R, JsValue> {
    let v = vol.try_borrow().map_err(|_| busy())?;
    f(&v).map_err(core_err)
}

fn with_mut<R>(
    vol: &Shared,
    f: impl FnOnce(&mut CoreVolume) -> Result<R, Error>,
) -> Result<R, JsValue> {
    let mut v = vol.try_borrow_mut().map_err(|_| busy())?;
    f(&mut v).map_err(core_err)
}

/// A whole device's bytes.
fn device_bytes(dev: &dyn BlockDevice) -> Result<Vec<u8>, JsValue> {
    let n = usize::try_from(dev.len()).map_err(|_| oom(dev.len()))?;
    let mut v = zeroed(n)?;
    dev.read_at(0, &mut v).map_err(core_err)?;
    Ok(v)
}

fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::new().serialize_missing_as_null(true))
        .map_err(JsValue::from)
}

// ------------------------------------------------------------------------------------------ Volume

/// An origin volume in memory and its snapshots.
#[wasm_bindgen]
pub struct Volume {
    inner: Shared,
}

#[wasm_bindgen]
impl Volume {
    /// A zero-filled origin of `size` bytes (at least 1, as in C and Python).
    pub fn memory(size: JsValue) -> Result<Volume, JsValue> {
        let n = arg_len(&size, "size")?;
        limits::check_origin_len(n as u64).map_err(|e| range_err(&e.to_string()))?;
        Ok(Volume::wrap(CoreVolume::new(MemDevice::from_vec(zeroed(
            n,
        )?))))
    }

    /// An origin holding `origin` (copied) with one snapshot per dm-format COW image in `cows`,
    /// activated as the kernel loads a snapshot table (chunk size from each header).
    #[wasm_bindgen(js_name = fromImages)]
    pub fn from_images(origin: JsValue, cows: JsValue) -> Result<Volume, JsValue> {
        let origin = arg_bytes(&origin, "origin image")?;
        let cows: Vec<Uint8Array> = if cows.is_undefined() {
            Vec::new()
        } else if Array::is_array(&cows) {
            let a: &Array = cows.unchecked_ref();
            a.iter()
                .enumerate()
                .map(|(i, c)| arg_bytes(&c, &format!("COW image {i}")).cloned())
                .collect::<Result<_, _>>()?
        } else {
            return Err(type_err(&format!(
                "COW images must be an array of Uint8Array, got {}",
                kind_of(&cows)
            )));
        };
        if origin.length() == 0 {
            return Err(range_err("origin image is empty"));
        }
        let mut images = vec![("origin image".to_string(), origin)];
        images.extend(
            cows.iter()
                .enumerate()
                .map(|(i, c)| (format!("COW image {i}"), c)),
        );
        check_distinct(&images)?;
        let mut vol = CoreVolume::new(MemDevice::from_vec(copy_in(origin)?));
        for (i, c) in cows.iter().enumerate() {
            let cow = MemDevice::from_vec(copy_in(c)?);
            vol.activate_snapshot(cow, SnapshotOptions::default())
                .map_err(|e| core_err_in(&format!("COW image {i}"), e))?;
        }
        Ok(Volume::wrap(vol))
    }

    fn wrap(v: CoreVolume) -> Volume {
        Volume {
            inner: Rc::new(RefCell::new(v)),
        }
    }

    /// Size of the origin (and of every snapshot) in bytes.
    #[wasm_bindgen(getter)]
    pub fn size(&self) -> Result<f64, JsValue> {
        with(&self.inner, |v| Ok(v.len() as f64))
    }

    /// Reads `len` bytes of the origin at `offset` into a new `Uint8Array`.
    pub fn read(&self, offset: JsValue, len: JsValue) -> Result<Uint8Array, JsValue> {
        let offset = arg_u64(&offset, "offset")?;
        read_new(&len, |buf| with(&self.inner, |v| v.read_at(offset, buf)))
    }

    /// Fills `buf` (a `Uint8Array`) from the origin at `offset`.
    #[wasm_bindgen(js_name = readInto)]
    pub fn read_into(&self, offset: JsValue, buf: JsValue) -> Result<(), JsValue> {
        self.read_into_impl(arg_u64(&offset, "offset")?, &buf)
    }

    /// `readInto` with a number for `offset`, returning its error (see `returned`).
    #[wasm_bindgen(js_name = __readInto, skip_typescript)]
    pub fn read_into_returning(&self, offset: f64, buf: JsValue) -> JsValue {
        returned(arg_offset(offset).and_then(|o| self.read_into_impl(o, &buf)))
    }

    #[inline(never)]
    fn read_into_impl(&self, offset: u64, buf: &JsValue) -> Result<(), JsValue> {
        read_into(buf, |tmp| with(&self.inner, |v| v.read_at(offset, tmp)))
    }

    /// Writes `data` to the origin at `offset`, first copying the old chunks to every snapshot.
    pub fn write(&self, offset: JsValue, data: JsValue) -> Result<(), JsValue> {
        self.write_impl(arg_u64(&offset, "offset")?, &data)
    }

    /// `write` with a number for `offset`, returning its error (see `returned`).
    #[wasm_bindgen(js_name = __write, skip_typescript)]
    pub fn write_returning(&self, offset: f64, data: JsValue) -> JsValue {
        returned(arg_offset(offset).and_then(|o| self.write_impl(o, &data)))
    }

    #[inline(never)]
    fn write_impl(&self, offset: u64, data: &JsValue) -> Result<(), JsValue> {
        write_from(data, |d| with_mut(&self.inner, |v| v.write_at(offset, d)))
    }

    /// Takes a snapshot on a new in-memory COW device of `cowSize` bytes (like `lvcreate -s -L`).
    pub fn snapshot(&self, options: JsValue) -> Result<Snapshot, JsValue> {
        let (cow_size, opts) = arg_snapshot_options(&options)?;
        check_snapshot(cow_size, &opts)?;
        let cow = MemDevice::from_vec(zeroed(cow_size)?);
        let id = with_mut(&self.inner, |v| v.create_snapshot(cow, opts))?;
        Ok(Snapshot {
            vol: self.inner.clone(),
            id,
        })
    }

    /// The origin's 10-character `lvs` attribute string: `-wi-a-----`, `owi-a-s---` with snapshots,
    /// `Owi-a-s---` while one merges (the core's rule, as the CLI's `lvs`).
    #[wasm_bindgen(getter, js_name = lvsAttr)]
    pub fn lvs_attr(&self) -> Result<String, JsValue> {
        with(&self.inner, |v| Ok(v.origin_lvs_attr().into()))
    }

    /// The current snapshots, oldest first (new handles to the same snapshots).
    pub fn snapshots(&self) -> Result<Vec<Snapshot>, JsValue> {
        let ids = with(&self.inner, |v| Ok(v.snapshot_ids()))?;
        Ok(ids
            .into_iter()
            .map(|id| Snapshot {
                vol: self.inner.clone(),
                id,
            })
            .collect())
    }

    /// The origin device's bytes (pair it with `exportCow()` images for `fromImages`).
    #[wasm_bindgen(js_name = originImage)]
    pub fn origin_image(&self) -> Result<Vec<u8>, JsValue> {
        // Writes waiting for a group commit go to the devices first.
        with_mut(&self.inner, |v| v.commit())?;
        let v = self.inner.try_borrow().map_err(|_| busy())?;
        device_bytes(v.origin())
    }
}

// ---------------------------------------------------------------------------------------- Snapshot

/// A snapshot of a volume. It keeps its volume alive; once deleted or merged, every call on it
/// throws `UNKNOWN_SNAPSHOT`.
#[wasm_bindgen]
pub struct Snapshot {
    vol: Shared,
    id: SnapshotId,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusJs {
    state: &'static str,
    persistent: bool,
    overflow: &'static str,
    chunk_size: f64,
    cow_size: f64,
    sectors_allocated: f64,
    total_sectors: f64,
    metadata_sectors: f64,
    exceptions: f64,
    data_percent: Option<f64>,
    dm_status: String,
    lvs_attr: &'static str,
    merge_progress: Option<ProgressJs>,
}

#[derive(Serialize)]
struct ProgressJs {
    merged: f64,
    total: f64,
    done: bool,
}

impl From<MergeProgress> for ProgressJs {
    fn from(p: MergeProgress) -> Self {
        ProgressJs {
            merged: p.merged as f64,
            total: p.total as f64,
            done: p.done,
        }
    }
}

#[derive(Serialize)]
struct RangeJs {
    offset: f64,
    length: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExceptionJs {
    old_chunk: f64,
    new_chunk: f64,
}

#[wasm_bindgen]
impl Snapshot {
    /// The snapshot's id within its volume (ids are never reused).
    #[wasm_bindgen(getter)]
    pub fn id(&self) -> u32 {
        self.id.0
    }

    /// Reads `len` bytes of the snapshot at `offset` into a new `Uint8Array`.
    pub fn read(&self, offset: JsValue, len: JsValue) -> Result<Uint8Array, JsValue> {
        let offset = arg_u64(&offset, "offset")?;
        read_new(&len, |buf| {
            with(&self.vol, |v| v.snapshot_read_at(self.id, offset, buf))
        })
    }

    /// Fills `buf` (a `Uint8Array`) from the snapshot at `offset`.
    #[wasm_bindgen(js_name = readInto)]
    pub fn read_into(&self, offset: JsValue, buf: JsValue) -> Result<(), JsValue> {
        self.read_into_impl(arg_u64(&offset, "offset")?, &buf)
    }

    /// `readInto` with a number for `offset`, returning its error (see `returned`).
    #[wasm_bindgen(js_name = __readInto, skip_typescript)]
    pub fn read_into_returning(&self, offset: f64, buf: JsValue) -> JsValue {
        returned(arg_offset(offset).and_then(|o| self.read_into_impl(o, &buf)))
    }

    #[inline(never)]
    fn read_into_impl(&self, offset: u64, buf: &JsValue) -> Result<(), JsValue> {
        read_into(buf, |tmp| {
            with(&self.vol, |v| v.snapshot_read_at(self.id, offset, tmp))
        })
    }

    /// Writes `data` to the snapshot (never to the origin).
    pub fn write(&self, offset: JsValue, data: JsValue) -> Result<(), JsValue> {
        self.write_impl(arg_u64(&offset, "offset")?, &data)
    }

    /// `write` with a number for `offset`, returning its error (see `returned`).
    #[wasm_bindgen(js_name = __write, skip_typescript)]
    pub fn write_returning(&self, offset: f64, data: JsValue) -> JsValue {
        returned(arg_offset(offset).and_then(|o| self.write_impl(o, &data)))
    }

    #[inline(never)]
    fn write_impl(&self, offset: u64, data: &JsValue) -> Result<(), JsValue> {
        write_from(data, |d| {
            with_mut(&self.vol, |v| v.snapshot_write_at(self.id, offset, d))
        })
    }

    /// The snapshot's status as a plain object (sizes in bytes, counts in sectors as dm reports them).
    pub fn status(&self) -> Result<JsValue, JsValue> {
        let (s, cow_len) = with(&self.vol, |v| {
            Ok((v.snapshot_status(self.id)?, v.snapshot_cow(self.id)?.len()))
        })?;
        to_js(&StatusJs {
            state: s.state.name(),
            persistent: s.store == StoreKind::Persistent,
            overflow: if s.overflow_reporting {
                "report"
            } else {
                "invalidate"
            },
            chunk_size: s.chunk_bytes as f64,
            cow_size: cow_len as f64,
            sectors_allocated: s.sectors_allocated as f64,
            total_sectors: s.total_sectors as f64,
            metadata_sectors: s.metadata_sectors as f64,
            exceptions: s.exceptions as f64,
            data_percent: s.data_percent(),
            dm_status: s.dm_status(),
            lvs_attr: s.lvs_attr(),
            merge_progress: s.merge_progress.map(|(merged, total)| ProgressJs {
                merged: merged as f64,
                total: total as f64,
                done: s.state == SnapshotState::Merging && merged == total,
            }),
        })
    }

    /// The exception table, `[{ oldChunk, newChunk }]` in origin-chunk order.
    pub fn exceptions(&self) -> Result<JsValue, JsValue> {
        let list = with(&self.vol, |v| v.snapshot_exceptions(self.id))?;
        let list: Vec<ExceptionJs> = list
            .into_iter()
            .map(|e| ExceptionJs {
                old_chunk: e.old as f64,
                new_chunk: e.new as f64,
            })
            .collect();
        to_js(&list)
    }

    /// Byte ranges `[{ offset, length }]` of the origin, sorted and merged, outside which this
    /// snapshot reads exactly as the current origin; with `olderId` (the id of an older snapshot of
    /// this volume), outside which the two snapshots read the same (what an incremental backup must
    /// read). Throws `SNAPSHOT_INVALID` for an invalid snapshot, `MERGING` during a merge.
    #[wasm_bindgen(js_name = changedRanges)]
    pub fn changed_ranges(&self, older_id: JsValue) -> Result<JsValue, JsValue> {
        let older = if is_absent(&older_id) {
            self.id
        } else {
            SnapshotId(arg_u32(&older_id, "olderId")?)
        };
        let list = with(&self.vol, |v| v.changed_between(older, self.id))?;
        let list: Vec<RangeJs> = list
            .into_iter()
            .map(|(offset, length)| RangeJs {
                offset: offset as f64,
                length: length as f64,
            })
            .collect();
        to_js(&list)
    }

    /// Removes the snapshot and drops its COW (like `lvremove`).
    pub fn delete(&self) -> Result<(), JsValue> {
        with_mut(&self.vol, |v| v.delete_snapshot(self.id).map(drop))
    }

    /// Merges the snapshot into the origin (like `lvconvert --merge`), then removes it. Calls
    /// `onProgress({ merged, total, done })` after each step; if it throws, the merge stops there and
    /// another `merge()` resumes it.
    pub fn merge(&self, on_progress: JsValue) -> Result<(), JsValue> {
        let cb: Option<Function> = if is_absent(&on_progress) {
            None
        } else {
            Some(on_progress.dyn_into::<Function>().map_err(|v| {
                type_err(&format!(
                    "onProgress must be a function, got {}",
                    kind_of(&v)
                ))
            })?)
        };
        let report = |p: MergeProgress| -> Result<(), JsValue> {
            match &cb {
                Some(f) => f
                    .call1(&JsValue::UNDEFINED, &to_js(&ProgressJs::from(p))?)
                    .map(drop),
                None => Ok(()),
            }
        };
        // The core's merge loop, with the borrow released while JS code runs.
        let mut merge = MergeStepper::new(self.id);
        loop {
            match with_mut(&self.vol, |v| merge.step(v))? {
                MergeEvent::Progress(p) => report(p)?,
                MergeEvent::Finished(_) => return Ok(()),
            }
        }
    }

    /// The COW device's bytes: for a persistent store, a dm-snapshot image the kernel can load.
    #[wasm_bindgen(js_name = exportCow)]
    pub fn export_cow(&self) -> Result<Vec<u8>, JsValue> {
        with_mut(&self.vol, |v| v.commit())?;
        let v = self.vol.try_borrow().map_err(|_| busy())?;
        device_bytes(v.snapshot_cow(self.id).map_err(core_err)?)
    }

    /// Grows the COW device to `newSize` bytes (like `lvextend` on the snapshot).
    pub fn extend(&self, new_size: JsValue) -> Result<(), JsValue> {
        let n = arg_len(&new_size, "newSize")? as u64;
        let mut v = self.vol.try_borrow_mut().map_err(|_| busy())?;
        v.extend_snapshot(self.id, n).map_err(|e| match e {
            // The core's "COW device too small" is about a full COW; here memory ran out.
            Error::NoSpace => oom(n),
            e => core_err(e),
        })
    }

    /// Sets (`[threshold, percent]` or `{ threshold, percent }`) or clears (`null`) autoextend.
    #[wasm_bindgen(js_name = setAutoextend)]
    pub fn set_autoextend(&self, policy: JsValue) -> Result<(), JsValue> {
        let policy = arg_autoextend(&policy)?;
        with_mut(&self.vol, |v| v.set_autoextend(self.id, policy))
    }
}

// ------------------------------------------------------------------------------------------- misc

/// The engine's version (the crate version).
#[wasm_bindgen]
pub fn version() -> String {
    cowsnap_core::VERSION.into()
}

/// Every stable error code: `{ OUT_OF_RANGE: -1, ... }` (the numbers of the C API).
#[wasm_bindgen(js_name = errorCodes)]
pub fn error_codes() -> Result<JsValue, JsValue> {
    let o = Object::new();
    for c in ErrorCode::ALL {
        Reflect::set(&o, &JsValue::from_str(c.name()), &JsValue::from(c as i32))?;
    }
    Ok(o.into())
}

#[cfg(test)]
mod tests {
    use super::check_count;

    #[test]
    fn counts_are_non_negative_safe_integers() {
        assert_eq!(check_count(0.0, "x"), Ok(0));
        assert_eq!(check_count(-0.0, "x"), Ok(0));
        assert_eq!(check_count(4096.0, "x"), Ok(4096));
        assert_eq!(check_count(9_007_199_254_740_991.0, "x"), Ok((1 << 53) - 1));
        for bad in [-1.0, 0.5, f64::NAN, f64::INFINITY, 9_007_199_254_740_992.0] {
            assert!(check_count(bad, "x").is_err(), "{bad}");
        }
    }
}
