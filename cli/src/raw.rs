//! Commands on raw dm-snapshot devices or images (no manifest): inspect, export, offline merge, and
//! the replay of operation scripts.

use std::fs::{self, OpenOptions};
use std::path::Path;

use cowsnap_core::replay::{replay as core_replay, Script};
use cowsnap_core::store::persistent::{inspect as core_inspect, Geometry, Scan, SNAP_MAGIC};
use cowsnap_core::{
    BlockDevice, Error, FileDevice, SnapshotOptions, SnapshotState, SnapshotStatus, Volume,
};
use serde_json::json;

use crate::managed::write_image;
use crate::progress::Progress;
use crate::size::human;
use crate::{CliError, CliResult};

const STEP: u64 = 1 << 20;

/// Opens an image file as a device (read-only unless `writable`), naming the file in errors.
pub(crate) fn open(path: &Path, writable: bool) -> CliResult<FileDevice> {
    let f = OpenOptions::new()
        .read(true)
        .write(writable)
        .open(path)
        .map_err(|e| CliError::msg(format!("cannot open {}: {e}", path.display())))?;
    FileDevice::from_file(f).map_err(|e| CliError::core(path.display(), e))
}

/// Reads and checks a COW's header and metadata, refusing corrupt or foreign devices with the reason.
fn scan(cow: &dyn BlockDevice, path: &Path) -> CliResult<Scan> {
    core_inspect(cow, None).map_err(|e| match e {
        Error::Corrupt(_) => CliError::msg(format!(
            "{}: not a usable dm-snapshot persistent COW: {e}",
            path.display()
        )),
        e => CliError::core(path.display(), e),
    })
}

/// An origin that only has a size: lets the core compute a COW's status without the origin.
struct SizeOnly(u64);

impl BlockDevice for SizeOnly {
    fn len(&self) -> u64 {
        self.0
    }
    fn read_at(&self, _: u64, _: &mut [u8]) -> cowsnap_core::Result<()> {
        Err(Error::Unsupported("inspect has no origin"))
    }
    fn write_at(&mut self, _: u64, _: &[u8]) -> cowsnap_core::Result<()> {
        Err(Error::Unsupported("inspect has no origin"))
    }
    fn flush(&mut self) -> cowsnap_core::Result<()> {
        Ok(())
    }
}

pub fn inspect(path: &Path, as_json: bool, list: bool) -> CliResult {
    let cow = open(path, false)?;
    let cow_len = cow.len();
    let s = scan(&cow, path)?;
    // Status through the core's own activation, on a read-only device and a size-only origin.
    let origin_len = s
        .records
        .iter()
        .map(|r| r.old + 1)
        .max()
        .unwrap_or(1)
        .saturating_mul(s.chunk.bytes());
    let mut vol = Volume::new(SizeOnly(origin_len));
    let id = vol
        .activate_snapshot(cow, SnapshotOptions::default())
        .map_err(|e| CliError::core(path.display(), e))?;
    let st: SnapshotStatus = vol.snapshot_status(id)?;
    let geo = Geometry { chunk: s.chunk };
    let h = s.header;
    let magic_ok = h.magic == SNAP_MAGIC;
    if as_json {
        let mut doc = json!({
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
            "exception_count": s.records.len(),
            "state": st.state.name(),
            "dm_status": st.dm_status(),
            "data_percent": st.data_percent(),
            "sectors_allocated": st.sectors_allocated,
            "total_sectors": st.total_sectors,
            "metadata_sectors": st.metadata_sectors,
        });
        if list {
            doc["exceptions"] = s.records.iter().map(|r| json!([r.old, r.new])).collect();
        }
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(());
    }
    println!("COW:            {} ({})", path.display(), human(cow_len));
    println!(
        "magic:          {:#010x}{}",
        h.magic,
        if magic_ok { " (SnAp)" } else { "" }
    );
    println!(
        "valid:          {}{}",
        h.valid,
        if h.valid == 0 { " (invalidated)" } else { "" }
    );
    println!("version:        {}", h.version);
    println!(
        "chunk size:     {} sectors ({})",
        h.chunk_sectors,
        human(s.chunk.bytes())
    );
    println!("per area:       {} exceptions", geo.exceptions_per_area());
    println!("areas:          {}", s.areas);
    println!("exceptions:     {}", s.records.len());
    println!("state:          {}", st.state.name());
    match st.data_percent() {
        Some(p) => println!("Data%:          {p:.2}"),
        None => println!("Data%:          -"),
    }
    println!("dm status:      {}", st.dm_status());
    if list {
        println!("exceptions (origin chunk -> COW chunk, on-disk order):");
        for r in &s.records {
            println!("  {} -> {}", r.old, r.new);
        }
    }
    Ok(())
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
            Error::Corrupt(_) => CliError::msg(format!(
                "{}: not a usable dm-snapshot persistent COW: {e}",
                cow_path.display()
            )),
            e => CliError::core(cow_path.display(), e),
        })?;
    Ok((vol, id))
}

pub fn export(origin: &Path, cow: &Path, out: &Path, quiet: bool) -> CliResult {
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
    let r = write_image(out, len, |sink| {
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

pub fn replay(script: &Path, out_dir: &Path, quiet: bool) -> CliResult {
    let text = fs::read_to_string(script)
        .map_err(|e| CliError::msg(format!("cannot read {}: {e}", script.display())))?;
    let s: Script = serde_json::from_str(&text)
        .map_err(|e| CliError::msg(format!("bad script {}: {e}", script.display())))?;
    let r = core_replay(&s)
        .map_err(|e| CliError::core(format!("replay of {}", script.display()), e))?;
    fs::create_dir_all(out_dir)
        .map_err(|e| CliError::msg(format!("cannot create {}: {e}", out_dir.display())))?;
    let put = |name: String, data: &[u8]| {
        let p = out_dir.join(name);
        fs::write(&p, data).map_err(|e| CliError::msg(format!("cannot write {}: {e}", p.display())))
    };
    put("origin.img".into(), &r.origin)?;
    let mut status = serde_json::Map::new();
    for snap in &r.snapshots {
        put(format!("{}.cow", snap.name), &snap.cow)?;
        if let Some(img) = &snap.image {
            put(format!("{}.img", snap.name), img)?;
        }
        status.insert(snap.name.clone(), json!(snap.status));
    }
    let doc = json!({"status": status, "errors": r.errors});
    put(
        "status.json".into(),
        format!(
            "{}\n",
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        )
        .as_bytes(),
    )?;
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
