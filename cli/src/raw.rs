//! Commands on raw dm-snapshot devices or images (no manifest): inspect, export, offline merge, and
//! the replay of operation scripts.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use cowsnap_core::check::{check, Report};
use cowsnap_core::store::persistent::{for_each_record, survey, Geometry, Scan, SNAP_MAGIC};
use cowsnap_core::testkit::replay::{replay_on, ReplayDevices, RunSnapshot, Script};
use cowsnap_core::{
    BlockDevice, Error, Exception, FileDevice, SnapshotOptions, SnapshotState, SnapshotStatus,
    Volume,
};
use serde_json::json;

use crate::manifest::check_name;
use crate::output::{aliases, entry_of, write_image, Guard, Target, TempFile};
use crate::progress::Progress;
use crate::size::human;
use crate::{CliError, CliResult};

const STEP: u64 = 1 << 20;

/// Opens an image file as a device (read-only unless `writable`; `O_DIRECT` with `--direct`),
/// naming the file in errors.
pub(crate) fn open(path: &Path, writable: bool) -> CliResult<FileDevice> {
    let f = cowsnap_managed::files::open_path(path, writable, crate::access())?;
    cowsnap_managed::files::device(f, crate::access())
        .map_err(|e| CliError::core(path.display(), e))
}

/// Reads and checks a COW's header and metadata (once, without keeping the records), refusing
/// corrupt or foreign devices with the reason.
fn scan(cow: &dyn BlockDevice, path: &Path) -> CliResult<Scan> {
    survey(cow, None).map_err(|e| match e {
        Error::Corrupt(_) => CliError::corrupt(format!(
            "{}: not a usable dm-snapshot persistent COW: {e}",
            path.display()
        )),
        e => CliError::core(path.display(), e),
    })
}

/// The problems of a checked COW, as JSON objects.
fn problems_json(r: &Report) -> serde_json::Value {
    r.problems
        .iter()
        .map(|p| {
            json!({
                "location": p.location.to_string(),
                "problem": p.kind.to_string(),
                "damage": p.kind.is_damage(),
            })
        })
        .collect()
}

/// Refuses a COW the checker found damaged, listing every problem (and, with `--json`, printing
/// the report as JSON first).
fn refuse_damaged(path: &Path, r: &Report, as_json: bool) -> CliResult {
    if as_json {
        let doc = json!({
            "file": path.display().to_string(),
            "size": r.len,
            "problems": problems_json(r),
            "problems_omitted": r.omitted,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    }
    let mut lines: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
    if r.omitted > 0 {
        lines.push(format!("... and {} more", r.omitted));
    }
    let what = if lines.len() == 1 {
        lines.remove(0)
    } else {
        format!("{} problems:\n  {}", lines.len(), lines.join("\n  "))
    };
    Err(CliError::corrupt(format!(
        "{}: not a usable dm-snapshot persistent COW: {what}",
        path.display()
    )))
}

/// Describes a COW. The checker (`cowsnap_core::check`) reads the header and every metadata area
/// once, in memory that does not grow with the number of records, and lists every problem with its
/// place; a COW activation would refuse is refused with the whole list. Otherwise the same pass
/// gave the counts and the status (what activating it reports: `Report::scan`), so the metadata is
/// read once; `--exceptions` then streams the records area by area to the output, so memory stays
/// bounded by one area whatever the number of records. Warnings (records that look lost) are
/// printed with the rest.
pub fn inspect(path: &Path, as_json: bool, list: bool) -> CliResult {
    let cow = open(path, false)?;
    let cow_len = cow.len();
    let report = check(&cow, None).map_err(|e| CliError::core(path.display(), e))?;
    let Some(s) = report.scan.as_ref() else {
        return refuse_damaged(path, &report, as_json);
    };
    let st: SnapshotStatus = s.status(cow_len);
    let geo = Geometry { chunk: s.chunk };
    let h = s.header;
    let magic_ok = h.magic == SNAP_MAGIC;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let w = |e: std::io::Error| CliError::msg(format!("stdout: {e}"));
    if as_json {
        let doc = json!({
            "file": path.display().to_string(),
            "size": cow_len,
            "header": {
                "magic": h.magic,
                "magic_hex": format!("{:#010x}", h.magic),
                "valid": h.valid,
                "version": h.version,
                "chunk_sectors": h.chunk_sectors,
            },
            "chunk_size": s.chunk.bytes(),
            "exceptions_per_area": geo.exceptions_per_area(),
            "areas": s.areas,
            "exception_count": s.exceptions,
            "state": st.state.name(),
            "dm_status": st.dm_status(),
            "data_percent": st.data_percent(),
            "sectors_allocated": st.sectors_allocated,
            "total_sectors": st.total_sectors,
            "metadata_sectors": st.metadata_sectors,
            "problems": problems_json(&report),
        });
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        if !list {
            writeln!(out, "{text}").map_err(w)?;
            return out.flush().map_err(w);
        }
        // The document as serde_json prints it with a last member `"exceptions": [[old, new], ..]`,
        // written record by record.
        let body = text.strip_suffix("\n}").unwrap_or(&text);
        write!(out, "{body},\n  \"exceptions\": [").map_err(w)?;
        let mut first = true;
        stream(&cow, s, path, |r| {
            let sep = if first { "" } else { "," };
            first = false;
            write!(
                out,
                "{sep}\n    [\n      {},\n      {}\n    ]",
                r.old, r.new
            )
        })?;
        let close = if first { "]" } else { "\n  ]" };
        writeln!(out, "{close}\n}}").map_err(w)?;
        return out.flush().map_err(w);
    }
    let mut lines = vec![
        format!("COW:            {} ({})", path.display(), human(cow_len)),
        format!(
            "magic:          {:#010x}{}",
            h.magic,
            if magic_ok { " (SnAp)" } else { "" }
        ),
        format!(
            "valid:          {}{}",
            h.valid,
            if h.valid == 0 { " (invalidated)" } else { "" }
        ),
        format!("version:        {}", h.version),
        format!(
            "chunk size:     {} sectors ({})",
            h.chunk_sectors,
            human(s.chunk.bytes())
        ),
        format!("per area:       {} exceptions", geo.exceptions_per_area()),
        format!("areas:          {}", s.areas),
        format!("exceptions:     {}", s.exceptions),
        format!("state:          {}", st.state.name()),
    ];
    lines.push(match st.data_percent() {
        Some(p) => format!("Data%:          {p:.2}"),
        None => "Data%:          -".to_string(),
    });
    lines.push(format!("dm status:      {}", st.dm_status()));
    lines.extend(report.problems.iter().map(|p| p.to_string()));
    for l in lines {
        writeln!(out, "{l}").map_err(w)?;
    }
    if list {
        writeln!(
            out,
            "exceptions (origin chunk -> COW chunk, on-disk order):"
        )
        .map_err(w)?;
        stream(&cow, s, path, |r| writeln!(out, "  {} -> {}", r.old, r.new))?;
    }
    out.flush().map_err(w)
}

/// Feeds `f` the records of the COW `s` describes, in on-disk order.
fn stream(
    cow: &dyn BlockDevice,
    s: &Scan,
    path: &Path,
    mut f: impl FnMut(Exception) -> std::io::Result<()>,
) -> CliResult {
    for_each_record(cow, s, |r| f(r).map_err(Listing::Out)).map_err(|e| match e {
        Listing::Out(e) => CliError::msg(format!("stdout: {e}")),
        Listing::Core(e) => CliError::core(path.display(), e),
    })
}

/// Why streaming records stopped.
enum Listing {
    Out(std::io::Error),
    Core(Error),
}

impl From<Error> for Listing {
    fn from(e: Error) -> Self {
        Listing::Core(e)
    }
}

/// Activates `cow` on `origin` and checks the snapshot can be read.
fn activate(
    origin: FileDevice,
    cow: FileDevice,
    cow_path: &Path,
) -> CliResult<(Volume, cowsnap_core::SnapshotId)> {
    let mut vol = Volume::new(origin);
    let id = vol
        .activate_snapshot(cow, SnapshotOptions::default())
        .map_err(|e| match e {
            Error::Corrupt(_) => CliError::corrupt(format!(
                "{}: not a usable dm-snapshot persistent COW: {e}",
                cow_path.display()
            )),
            e => CliError::core(cow_path.display(), e),
        })?;
    Ok((vol, id))
}

/// Refuses an origin and a COW that are one file: the COW would be read (merge: written) as the
/// origin's copy of itself.
fn distinct(origin: &Path, cow: &Path) -> CliResult {
    if aliases(origin, cow) {
        return Err(CliError::refused(format!(
            "refusing to use {} as the COW of {}: they are the same file",
            cow.display(),
            origin.display()
        )));
    }
    Ok(())
}

pub fn export(origin: &Path, cow: &Path, out: &Path, quiet: bool) -> CliResult {
    distinct(origin, cow)?;
    let mut guard = Guard::new();
    guard.input(origin, "the --origin input");
    guard.input(cow, "the --cow input");
    guard.volume_of(origin);
    guard.volume_of(cow);
    let o = open(origin, false)?;
    let c = open(cow, false)?;
    scan(&c, cow)?;
    let (vol, id) = activate(o, c, cow)?;
    if vol.snapshot_status(id)?.state == SnapshotState::Invalid {
        return Err(CliError::msg(format!(
            "{}: the snapshot is invalid (header valid = 0): its image is lost, as the kernel \
             would refuse to read it",
            cow.display()
        )));
    }
    let len = vol.len();
    let bar = Progress::new(len, "export", true, quiet);
    let mut buf = vec![0u8; len.min(STEP) as usize];
    let r = write_image(out, len, &guard, |sink| {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(STEP) as usize;
            vol.snapshot_read_at(id, done, &mut buf[..n])
                .map_err(|e| CliError::core(format!("read at offset {done}"), e))?;
            sink(done, &buf[..n])?;
            done += n as u64;
            bar.set(done);
        }
        Ok(())
    });
    bar.finish();
    r?;
    if !quiet {
        println!(
            "exported {} ({}) to {}",
            cow.display(),
            human(len),
            out.display()
        );
    }
    Ok(())
}

pub fn merge(origin: &Path, cow: &Path, quiet: bool) -> CliResult {
    distinct(origin, cow)?;
    let o = open(origin, true)?;
    let c = open(cow, true)?;
    scan(&c, cow)?;
    let (mut vol, id) = activate(o, c, cow)?;
    let ctx = format!("merge of {} into {}", cow.display(), origin.display());
    let bar = Progress::new(0, "merging", false, quiet);
    let mut total = 0;
    let r = vol.merge_snapshot(id, |p| {
        total = p.total;
        bar.set_total(p.total);
        bar.set(p.merged);
    });
    bar.finish();
    let mut dev = r.map_err(|e| CliError::core(&ctx, e))?;
    dev.flush().map_err(|e| CliError::core(&ctx, e))?;
    vol.flush().map_err(|e| CliError::core(&ctx, e))?;
    if !quiet {
        println!(
            "merged {total} chunks of {} into {}",
            cow.display(),
            origin.display()
        );
    }
    Ok(())
}

/// Largest origin or COW a replayed script may declare. Outputs are sparse files, but replay reads
/// every snapshot image through once to write it, so the limit bounds the time a script can take.
pub const MAX_REPLAY_DEVICE: u64 = 64 << 30;
/// Largest script file read.
const MAX_SCRIPT: u64 = 64 << 20;

/// Checks a script before anything is created: names usable as file names (the rules of managed
/// snapshot names: no `/`, no leading `.`, so no `..` and no absolute path), sizes within limits.
fn check_script(s: &Script) -> CliResult {
    let bad = |m: String| Err(CliError::refused(format!("refusing the script: {m}")));
    if s.origin_size == 0 || s.origin_size > MAX_REPLAY_DEVICE {
        return bad(format!(
            "origin_size {} is outside 1..{} bytes ({})",
            s.origin_size,
            MAX_REPLAY_DEVICE,
            human(MAX_REPLAY_DEVICE)
        ));
    }
    for d in &s.snapshots {
        check_name(&d.name).or_else(bad)?;
        if d.cow_size > MAX_REPLAY_DEVICE {
            return bad(format!(
                "snapshot {}: cow_size {} is above {} bytes ({})",
                d.name,
                d.cow_size,
                MAX_REPLAY_DEVICE,
                human(MAX_REPLAY_DEVICE)
            ));
        }
    }
    cowsnap_core::testkit::replay::check(s).or_else(|e| bad(e.to_string()))
}

/// The replay's devices: temporary files beside the outputs they become.
struct FileDevices {
    /// Outputs not yet created, by file name.
    plan: BTreeMap<String, Target>,
    /// Created, by file name.
    made: BTreeMap<String, TempFile>,
    /// Why the last device could not be made (the core only carries its own error type).
    failure: Option<CliError>,
}

impl FileDevices {
    fn make(&mut self, file: String, size: u64) -> cowsnap_core::Result<Box<dyn BlockDevice>> {
        let made = self
            .plan
            .remove(&file)
            .ok_or_else(|| CliError::msg(format!("internal error: no output planned for {file}")))
            .and_then(|t| t.into_temp(size))
            .and_then(|t| {
                let f = t
                    .file
                    .try_clone()
                    .map_err(|e| CliError::io(format!("{}: {e}", t.tmp.display())))?;
                let dev =
                    FileDevice::from_file(f).map_err(|e| CliError::core(t.tmp.display(), e))?;
                Ok((t, dev))
            });
        match made {
            Ok((t, dev)) => {
                self.made.insert(file, t);
                Ok(Box::new(dev))
            }
            Err(e) => {
                let m = e.msg.clone();
                self.failure = Some(e);
                Err(Error::Io(m))
            }
        }
    }
}

impl ReplayDevices for FileDevices {
    fn origin(&mut self, size: u64) -> cowsnap_core::Result<Box<dyn BlockDevice>> {
        self.make("origin.img".into(), size)
    }
    fn cow(&mut self, name: &str, size: u64) -> cowsnap_core::Result<Box<dyn BlockDevice>> {
        self.make(format!("{name}.cow"), size)
    }
}

/// The directories `create_dir_all(dir)` would create, outermost first.
fn missing_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && fs::symlink_metadata(p).is_err())
        .map(Path::to_path_buf)
        .collect();
    v.reverse();
    v
}

pub fn replay(script: &Path, out_dir: &Path, quiet: bool) -> CliResult {
    let size = fs::metadata(script)
        .map_err(|e| CliError::io(format!("cannot read {}: {e}", script.display())))?
        .len();
    if size > MAX_SCRIPT {
        return Err(CliError::refused(format!(
            "refusing the script {}: {} is above the limit of {}",
            script.display(),
            human(size),
            human(MAX_SCRIPT)
        )));
    }
    let text = fs::read_to_string(script)
        .map_err(|e| CliError::io(format!("cannot read {}: {e}", script.display())))?;
    let s: Script = serde_json::from_str(&text)
        .map_err(|e| CliError::msg(format!("bad script {}: {e}", script.display())))?;
    check_script(&s)?;
    // Created only once the script is known good; removed again if the replay fails.
    let created = missing_dirs(out_dir);
    fs::create_dir_all(out_dir)
        .map_err(|e| CliError::io(format!("cannot create {}: {e}", out_dir.display())))?;
    let r = replay_into(&s, script, out_dir);
    if r.is_err() {
        for d in created.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    }
    r?;
    if !quiet {
        println!(
            "replayed {} ({} ops) into {}",
            script.display(),
            s.ops.len(),
            out_dir.display()
        );
    }
    Ok(())
}

/// Runs the script on sparse temporary files in `out_dir` and puts them in place when all went well.
fn replay_into(s: &Script, script: &Path, out_dir: &Path) -> CliResult {
    // Every output is classified before anything is written: regular files (or new ones) only, none
    // the script itself, no two the same.
    let mut guard = Guard::new();
    guard.input(script, "the script");
    let mut names = vec!["origin.img".to_string(), "status.json".to_string()];
    for d in &s.snapshots {
        names.push(format!("{}.cow", d.name));
        names.push(format!("{}.img", d.name));
    }
    let mut plan = BTreeMap::new();
    let mut entries = Vec::new();
    for n in names {
        let t = Target::classify(&out_dir.join(&n), 0, &guard)?;
        if t.kind() != crate::output::Kind::Replace {
            return Err(CliError::refused(format!(
                "refusing to write {}: replay writes regular files only",
                out_dir.join(&n).display()
            )));
        }
        let e = entry_of(&t)?;
        if entries.contains(&e) {
            return Err(CliError::refused(format!(
                "refusing to write {}: it is the same file as another output of this replay",
                out_dir.join(&n).display()
            )));
        }
        entries.push(e);
        plan.insert(n, t);
    }
    let mut devs = FileDevices {
        plan,
        made: BTreeMap::new(),
        failure: None,
    };
    let run = match replay_on(s, &mut devs) {
        Ok(run) => run,
        Err(e) => {
            return Err(devs
                .failure
                .take()
                .unwrap_or_else(|| CliError::core(format!("replay of {}", script.display()), e)))
        }
    };
    let mut vol = run.volume;
    let mut errors = run.errors;
    vol.flush()
        .map_err(|e| CliError::core(format!("replay of {}", script.display()), e))?;
    let mut status = serde_json::Map::new();
    let mut pending = Vec::new();
    for (name, snap) in run.snapshots {
        let st = match snap {
            RunSnapshot::Live(id) => {
                let file = format!("{name}.img");
                let t = devs.plan.remove(&file).ok_or_else(|| {
                    CliError::msg(format!("internal error: no output planned for {file}"))
                })?;
                let origin = devs.made.get("origin.img").map(|t| &t.file);
                match write_snapshot_image(&vol, id, t, origin)? {
                    Some(p) => pending.push(p),
                    None => errors.push(format!("READ-ERR {name}")),
                }
                vol.snapshot_status(id)?.dm_status()
            }
            RunSnapshot::Gone { mut cow, status } => {
                cow.flush()
                    .map_err(|e| CliError::core(format!("{name}.cow"), e))?;
                status
            }
        };
        status.insert(name, json!(st));
    }
    let doc = json!({"status": status, "errors": errors});
    let text = format!(
        "{}\n",
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    );
    let t = devs
        .plan
        .remove("status.json")
        .ok_or_else(|| CliError::msg("internal error: no output planned for status.json"))?;
    let mut w = t.open(text.len() as u64)?;
    w.write_at(0, text.as_bytes())?;
    pending.push(w.finish()?);
    // Everything durable first, then in place.
    for t in devs.made.values() {
        t.sync()?;
    }
    for (_, t) in std::mem::take(&mut devs.made) {
        t.commit()?;
    }
    for p in pending {
        p.commit()?;
    }
    Ok(())
}

/// True when `f` holds no data in `[at, at + n)`: a hole, which reads as zeros.
fn is_hole(f: &std::fs::File, at: u64, n: u64) -> bool {
    use std::os::unix::io::AsRawFd;
    let Ok(off) = libc::off_t::try_from(at) else {
        return false;
    };
    // SAFETY: lseek on a file descriptor we own; no memory is passed.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off, libc::SEEK_DATA) };
    if r < 0 {
        // ENXIO: no data at or after `at`.
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO);
    }
    r as u64 >= at.saturating_add(n)
}

/// Writes a snapshot's image (sparse) to its planned output; `None` when the snapshot is invalid
/// (the kernel refuses to read it: `READ-ERR`). Ranges where the origin file is a hole and the
/// snapshot has no exception are zero, and are skipped without reading (a 16 GiB sparse origin
/// is not read through).
fn write_snapshot_image(
    vol: &Volume,
    id: cowsnap_core::SnapshotId,
    t: Target,
    origin: Option<&std::fs::File>,
) -> CliResult<Option<crate::output::Pending>> {
    let len = vol.len();
    let chunk = vol.snapshot_status(id)?.chunk_bytes.max(1);
    let mut copied: Vec<u64> = vol.snapshot_exceptions(id)?.iter().map(|e| e.old).collect();
    copied.sort_unstable();
    let zero = |at: u64, n: u64| {
        let (first, last) = (at / chunk, (at + n - 1) / chunk);
        let i = copied.partition_point(|&c| c < first);
        origin.is_some_and(|f| is_hole(f, at, n)) && copied.get(i).is_none_or(|&c| c > last)
    };
    let mut buf = vec![0u8; len.min(STEP) as usize];
    let mut target = Some(t);
    let mut w = None;
    let mut at = 0;
    while at < len {
        let n = (len - at).min(STEP) as usize;
        if at > 0 && zero(at, n as u64) {
            at += n as u64;
            continue;
        }
        match vol.snapshot_read_at(id, at, &mut buf[..n]) {
            Ok(()) => {}
            Err(Error::SnapshotInvalid) if at == 0 => return Ok(None),
            Err(e) => return Err(CliError::core(format!("snapshot read at {at}"), e)),
        }
        if let Some(t) = target.take() {
            w = Some(t.open(len)?);
        }
        if let Some(w) = w.as_mut() {
            w.write_at(at, &buf[..n])?;
        }
        at += n as u64;
    }
    match w {
        Some(w) => Ok(Some(w.finish()?)),
        None => Ok(None),
    }
}
