//! `cowsnap`: LVM-like snapshots of image files, and tools for dm-snapshot COW devices.
//!
//! Managed volumes are directories (origin image, COW images, `cowsnap.json` manifest); raw commands
//! (`inspect`, `export`, `merge --origin --cow`) work on images copied off a real LVM/dm system.

mod backupstore;
mod exec;
mod managed;
mod mount;
mod progress;
mod raw;
mod request;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Errors of every command: the managed-volume library's (one line, a kind for the exit code, a
/// stable code).
pub use cowsnap_managed::{Error as CliError, ErrorKind, Result as CliResult};
// The library's modules, under the names the commands have always used.
use cowsnap_managed::files::Access;
use cowsnap_managed::{manifest, output, size};

/// Parses an LVM-style size (`512M`, `4K`, `1G`, plain bytes).
fn size_arg(s: &str) -> Result<u64, String> {
    size::parse_size(s)
}

fn size_delta_arg(s: &str) -> Result<size::SizeArg, String> {
    size::parse_size_arg(s)
}

fn byte_arg(s: &str) -> Result<u8, String> {
    let t = s.trim();
    let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u8::from_str_radix(h, 16)
    } else {
        t.parse::<u8>()
    };
    v.map_err(|_| format!("bad byte {s:?}: expected 0..255 or 0x00..0xff"))
}

#[derive(Parser, Debug)]
#[command(
    name = "cowsnap",
    version,
    about = "LVM-like copy-on-write snapshots of image files, byte-compatible with dm-snapshot",
    long_about = "LVM-like copy-on-write snapshots of image files, byte-compatible with dm-snapshot.\n\n\
A managed volume is a directory holding the origin image (origin.img), one COW image per snapshot \
(<name>.cow, in the kernel's persistent format) and a manifest (cowsnap.json). Address the origin as \
DIR and a snapshot as DIR/NAME. Sizes take LVM suffixes: 512M, 4K, 1G, +64M; a plain number is bytes.",
    after_long_help = "Exit codes: 0 done; 2 usage error; 3 refused, nothing changed (or: done, but a \
snapshot was lost on the way, printed as a warning); 4 I/O error or corrupt data."
)]
struct Cli {
    /// No progress bars and no informational messages.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Use the volume's files with O_DIRECT (no page cache): sizes, offsets and lengths must be
    /// multiples of 4096 bytes; file systems without direct I/O (ramfs) are refused.
    #[arg(long, global = true)]
    direct: bool,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a managed volume: a directory with an empty (sparse) origin image.
    Create {
        /// Volume directory (must not exist, or be empty).
        dir: PathBuf,
        /// Origin size.
        #[arg(short = 'L', long, value_parser = size_arg)]
        size: u64,
        /// Default chunk size for snapshots: power of two, 4K..512K.
        #[arg(short = 'c', long, value_parser = size_arg, default_value = "4K")]
        chunk_size: u64,
    },
    /// Take a snapshot of the origin (like `lvcreate -s`).
    Snapshot {
        /// Volume directory.
        dir: PathBuf,
        /// Snapshot name.
        #[arg(short, long)]
        name: String,
        /// COW size (the snapshot's LSize).
        #[arg(short = 'L', long, value_parser = size_arg)]
        size: u64,
        /// dm store: P (invalidate on overflow, as LVM), PO (report overflow of snapshot writes).
        /// N (transient) is refused: it cannot outlive one command.
        #[arg(long, default_value = "P")]
        store: String,
        /// Autoextend policy THRESHOLD:PERCENT, e.g. 70:20 (grow by 20% when Data% would pass 70).
        #[arg(long)]
        autoextend: Option<String>,
        /// Chunk size (default: the volume's).
        #[arg(short = 'c', long, value_parser = size_arg)]
        chunk_size: Option<u64>,
    },
    /// List the origin and its snapshots (like `lvs`): LV, Attr, LSize, Origin, Data%.
    Lvs {
        /// Volume directory.
        dir: PathBuf,
        /// JSON output (like `lvs --reportformat json`, with more fields).
        #[arg(long)]
        json: bool,
    },
    /// Write to the origin (DIR) or a snapshot (DIR/NAME).
    Write(WriteArgs),
    /// Read from the origin (DIR) or a snapshot (DIR/NAME); raw bytes to stdout unless --out.
    Read {
        /// DIR or DIR/NAME.
        target: PathBuf,
        #[arg(long, value_parser = size_arg)]
        offset: u64,
        #[arg(long, value_parser = size_arg)]
        len: u64,
        /// Write the bytes to this file instead of stdout.
        #[arg(short, long)]
        out: Option<PathBuf>,
    },
    /// Remove a snapshot (like `lvremove`).
    Remove {
        /// DIR/NAME.
        target: PathBuf,
        /// Also drop a broken snapshot (missing or corrupt COW) from the manifest.
        #[arg(short, long)]
        force: bool,
    },
    /// Merge a snapshot into its origin (like `lvconvert --merge`), or, with --origin and --cow,
    /// merge a kernel COW device into its origin image offline. Both are resumable.
    Merge {
        /// DIR/NAME of a managed snapshot.
        #[arg(required_unless_present_all = ["origin", "cow"], conflicts_with_all = ["origin", "cow"])]
        target: Option<PathBuf>,
        /// Raw mode: origin image or device.
        #[arg(long, requires = "cow")]
        origin: Option<PathBuf>,
        /// Raw mode: COW image or device (kernel persistent format).
        #[arg(long, requires = "origin")]
        cow: Option<PathBuf>,
    },
    /// Grow a snapshot's COW (like `lvextend -L`): +64M or an absolute size.
    Extend {
        /// DIR/NAME.
        target: PathBuf,
        #[arg(short = 'L', long, value_parser = size_delta_arg, allow_hyphen_values = true)]
        size: size::SizeArg,
    },
    /// Copy a snapshot's whole image to a file (sparse where the image is zero) or onto a block
    /// device, with a checksum sidecar (OUT.sums) for `cowsnap verify`.
    ///
    /// With --to URL instead of OUT: a backup to object storage (s3://bucket/prefix or
    /// file:///path), incremental with --base ID; prints the new backup's id.
    Backup {
        /// DIR/NAME.
        target: PathBuf,
        /// Output file, block device (written in place, like dd of=), or character device.
        #[arg(required_unless_present = "to", conflicts_with = "to")]
        out: Option<PathBuf>,
        /// Where to write the checksums (default: OUT.sums beside a file output; none for devices).
        #[arg(long, conflicts_with_all = ["no_sums", "to"])]
        sums: Option<PathBuf>,
        /// Write no checksum sidecar.
        #[arg(long, conflicts_with = "to")]
        no_sums: bool,
        /// Back up to this object store instead: s3://bucket/prefix (AWS_* environment) or
        /// file:///path.
        #[arg(long)]
        to: Option<String>,
        /// Incremental against this earlier backup (of an older snapshot of this volume, still
        /// present): only the chunks its exception table names are read and uploaded.
        #[arg(long, requires = "to")]
        base: Option<String>,
        /// With --to: print one JSON object (id, bytes_read, bytes_uploaded, chunks, seconds...).
        #[arg(long, requires = "to")]
        json: bool,
        /// With --to: bytes per block object (default: the chunk size, at least 256K).
        #[arg(long, value_parser = size_arg, requires = "to")]
        block_size: Option<u64>,
        /// With --to: objects uploaded at once.
        #[arg(long, default_value_t = backupstore::DEFAULT_JOBS, requires = "to")]
        jobs: usize,
    },
    /// Restore a backup from object storage to a file, a block device or a new volume.
    Restore(backupstore::RestoreArgs),
    /// The backups in an object store: list, verify, prune.
    Backups {
        #[command(subcommand)]
        cmd: backupstore::BackupsCmd,
    },
    /// Check a snapshot (DIR/NAME) or an image (--image) against the checksums `backup` wrote.
    Verify {
        /// DIR/NAME of a managed snapshot.
        #[arg(required_unless_present = "image", conflicts_with = "image")]
        target: Option<PathBuf>,
        /// An image file or device instead of a snapshot (e.g. the backup itself).
        #[arg(long)]
        image: Option<PathBuf>,
        /// The checksum file (written by `cowsnap backup`).
        #[arg(long)]
        sums: PathBuf,
    },
    /// Describe a dm-snapshot COW device or image without changing it.
    Inspect {
        /// COW image or device.
        cow: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// List every exception (origin chunk -> COW chunk) in on-disk order.
        #[arg(long)]
        exceptions: bool,
    },
    /// Write a snapshot's image as the kernel would show it, from origin + COW (read-only on both).
    Export {
        #[arg(long)]
        origin: PathBuf,
        #[arg(long)]
        cow: PathBuf,
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Serve the origin and every snapshot as files under MOUNTPOINT (FUSE): MOUNTPOINT/origin and
    /// MOUNTPOINT/<snapshot>, to loop-mount or copy. Other cowsnap commands on DIR keep working
    /// (they are forwarded to the mount process). Foreground unless --daemon.
    Mount {
        /// Volume directory.
        dir: PathBuf,
        /// An existing directory.
        mountpoint: PathBuf,
        /// Return once mounted; the mount process runs on (log: DIR/.cowsnap-mount.log).
        #[arg(short, long)]
        daemon: bool,
        /// Snapshot files are writable (like lvcreate -s without -p r); default read-only.
        #[arg(long)]
        writable_snapshots: bool,
        /// Let other users use the files (allow_other, with permission checks).
        #[arg(long)]
        allow_other: bool,
        /// FUSE request threads.
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// The kernel's write-back cache for the files: writes return once in the page cache and
        /// reach the engine as large write-back requests; fsync stays the engine's flush, but a
        /// write's error (ENOSPC past the end, a failing COW) shows at fsync/close, not at write().
        /// Default: write-through (every write() reaches the engine before it returns).
        #[arg(long)]
        writeback_cache: bool,
    },
    /// Unmount a `cowsnap mount` and wait until its process has flushed the volume and exited.
    Umount { mountpoint: PathBuf },
    /// Replay an operation script (shared/vectors format): writes origin.img, <name>.cow,
    /// <name>.img (readable snapshots) and status.json.
    Replay {
        script: PathBuf,
        #[arg(long)]
        out_dir: PathBuf,
    },
}

#[derive(Args, Debug)]
struct WriteArgs {
    /// DIR or DIR/NAME.
    target: PathBuf,
    #[arg(long, value_parser = size_arg)]
    offset: u64,
    /// Fill with this byte (0..255 or 0xNN); needs --len.
    #[arg(long, value_parser = byte_arg, conflicts_with = "from", required_unless_present = "from", requires = "len")]
    fill: Option<u8>,
    /// Write the contents of this file.
    #[arg(long)]
    from: Option<PathBuf>,
    /// Bytes to write (default with --from: the whole file).
    #[arg(long, value_parser = size_arg)]
    len: Option<u64>,
}

fn run(cli: Cli) -> CliResult {
    let q = cli.quiet;
    match cli.cmd {
        Command::Create {
            dir,
            size,
            chunk_size,
        } => managed::create(&dir, size, chunk_size, q),
        Command::Snapshot {
            dir,
            name,
            size,
            store,
            autoextend,
            chunk_size,
        } => managed::snapshot(
            &dir,
            &name,
            size,
            &store,
            autoextend.as_deref(),
            chunk_size,
            q,
        ),
        Command::Lvs { dir, json } => managed::lvs(&dir, json, q),
        Command::Write(w) => {
            managed::write(&w.target, w.offset, w.fill, w.from.as_deref(), w.len, q)
        }
        Command::Read {
            target,
            offset,
            len,
            out,
        } => managed::read(&target, offset, len, out.as_deref(), q),
        Command::Remove { target, force } => managed::remove(&target, force, q),
        Command::Merge {
            target,
            origin,
            cow,
        } => match (target, origin, cow) {
            (Some(t), None, None) => managed::merge(&t, q),
            (None, Some(o), Some(c)) => raw::merge(&o, &c, q),
            _ => Err(CliError::msg(
                "merge takes either DIR/NAME or both --origin and --cow",
            )),
        },
        Command::Extend { target, size } => managed::extend(&target, size, q),
        Command::Backup {
            target,
            to: Some(to),
            base,
            json,
            block_size,
            jobs,
            ..
        } => {
            let a = backupstore::BackupTo {
                to,
                base,
                json,
                block_size,
                jobs,
            };
            managed::backup_to(&target, a, q)
        }
        Command::Restore(a) => backupstore::restore(&a, q),
        Command::Backups { cmd } => backupstore::backups(&cmd, q),
        Command::Backup {
            target,
            out,
            sums,
            no_sums,
            ..
        } => {
            let out = out.ok_or_else(|| CliError::msg("backup needs OUT or --to URL"))?;
            let sums = match (sums, no_sums) {
                (_, true) => verify::SumsTo::Nowhere,
                (Some(p), false) => verify::SumsTo::Path(p),
                (None, false) => verify::SumsTo::Beside,
            };
            managed::backup(&target, &out, sums, q)
        }
        Command::Verify {
            target,
            image,
            sums,
        } => match (target, image) {
            (Some(t), None) => managed::verify(&t, &sums, q),
            (None, Some(i)) => verify::verify_image(&i, &sums, q),
            _ => Err(CliError::msg("verify takes either DIR/NAME or --image")),
        },
        Command::Inspect {
            cow,
            json,
            exceptions,
        } => raw::inspect(&cow, json, exceptions),
        Command::Export { origin, cow, out } => raw::export(&origin, &cow, &out, q),
        Command::Replay { script, out_dir } => raw::replay(&script, &out_dir, q),
        Command::Mount {
            dir,
            mountpoint,
            daemon,
            writable_snapshots,
            allow_other,
            threads,
            writeback_cache,
        } => mount::mount(
            &dir,
            &mountpoint,
            &mount::MountOpts {
                daemon,
                writable_snapshots,
                allow_other,
                threads,
                writeback_cache,
            },
            q,
        ),
        Command::Umount { mountpoint } => mount::umount(&mountpoint, q),
    }
}

/// `--direct`: how this process opens volume and image files (the command line has one setting;
/// the library takes it as an argument).
static ACCESS: std::sync::OnceLock<Access> = std::sync::OnceLock::new();

/// The file access `--direct` asked for.
pub(crate) fn access() -> Access {
    ACCESS.get().copied().unwrap_or_default()
}

fn main() -> ExitCode {
    // Like other Unix tools: `cowsnap read ... | head` ends quietly when the reader goes away.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    progress::install();
    let _ = ACCESS.set(Access { direct: cli.direct });
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, always.
            let label = match e.kind {
                ErrorKind::Degraded => "warning",
                _ => "error",
            };
            // The stable code last, in brackets (as Python's errors print it), for scripts.
            eprintln!(
                "cowsnap: {label}: {} [{}]",
                e.msg.replace('\n', " "),
                e.code.name()
            );
            ExitCode::from(e.kind.exit_code())
        }
    }
}
