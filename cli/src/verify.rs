//! Optional integrity checks: the dm-snapshot format has no checksums (the kernel reads a zeroed
//! record or a wrong chunk number as data), so `backup` writes a checksum sidecar beside its output and
//! `verify` compares a snapshot, or an image, with it. Nothing in the COW format changes.
//!
//! The sidecar (`OUT.sums`) is text: a header, one BLAKE3 hash per block of the image, and a last
//! line hashing all the lines before it (so a damaged sidecar is told apart from damaged data):
//!
//! ```text
//! cowsnap-sums 1
//! hash blake3
//! block 65536
//! size 268435456
//! blocks 4096
//! <64 hex digits>      (block 0, bytes 0..65536)
//! ...
//! end <64 hex digits>
//! ```
//!
//! BLAKE3 because it is cryptographic (a sidecar kept apart from the backup also catches deliberate
//! changes, like a `sha256sum` list) yet runs at several GB/s on one core with SIMD, so the checksums
//! cost little next to the I/O; the crate is the reference implementation, kept by its authors.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::output::{entry_of, Guard, Kind, Target, Writer};
use crate::{CliError, CliResult};
use cowsnap_managed::{Io, Opened};

/// Bytes per checksum: 32 bytes of hash (65 of text) per 64 KiB, 0.1% of the image.
pub const BLOCK: u64 = 64 << 10;
/// First line of a sums file.
const MAGIC: &str = "cowsnap-sums 1";
/// Mismatching blocks listed by `verify` (all are counted).
const SHOWN: usize = 10;
/// Bytes read per step.
const STEP: u64 = 1 << 20;

/// Where `backup` writes its checksums.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SumsTo {
    /// `OUT.sums`, when the output is a file (a device gets none).
    #[default]
    Beside,
    /// This path.
    Path(PathBuf),
    /// No checksums.
    Nowhere,
}

/// Hashes a byte stream block by block.
struct Summer {
    cur: blake3::Hasher,
    in_block: u64,
    pos: u64,
    /// Blocks completed and not yet taken.
    done: Vec<[u8; 32]>,
}

impl Summer {
    fn new() -> Self {
        Summer {
            cur: blake3::Hasher::new(),
            in_block: 0,
            pos: 0,
            done: Vec::new(),
        }
    }

    fn update(&mut self, mut b: &[u8]) {
        self.pos += b.len() as u64;
        while !b.is_empty() {
            let n = ((BLOCK - self.in_block) as usize).min(b.len());
            self.cur.update(&b[..n]);
            self.in_block += n as u64;
            if self.in_block == BLOCK {
                self.done.push(*self.cur.finalize().as_bytes());
                self.cur.reset();
                self.in_block = 0;
            }
            b = &b[n..];
        }
    }

    /// Closes the last, partial block.
    fn finish(&mut self) {
        if self.in_block > 0 {
            self.done.push(*self.cur.finalize().as_bytes());
            self.in_block = 0;
        }
    }
}

fn blocks_of(size: u64) -> u64 {
    size.div_ceil(BLOCK)
}

fn hex(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks(2).enumerate() {
        let d = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
        out[i] = d(pair[0])? << 4 | d(pair[1])?;
    }
    Some(out)
}

/// Writes a sums file through an output, line by line, in bounded memory.
struct SumsWriter {
    w: Writer,
    buf: Vec<u8>,
    at: u64,
    check: blake3::Hasher,
}

impl SumsWriter {
    fn new(w: Writer, size: u64) -> CliResult<Self> {
        let mut s = SumsWriter {
            w,
            buf: Vec::new(),
            at: 0,
            check: blake3::Hasher::new(),
        };
        for line in [
            MAGIC.to_string(),
            "hash blake3".into(),
            format!("block {BLOCK}"),
            format!("size {size}"),
            format!("blocks {}", blocks_of(size)),
        ] {
            s.line(&line)?;
        }
        Ok(s)
    }

    fn line(&mut self, l: &str) -> CliResult {
        self.check.update(l.as_bytes());
        self.check.update(b"\n");
        self.buf.extend_from_slice(l.as_bytes());
        self.buf.push(b'\n');
        if self.buf.len() >= STEP as usize {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> CliResult {
        self.w.write_at(self.at, &self.buf)?;
        self.at += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn finish(mut self) -> CliResult<Writer> {
        let end = format!("end {}", hex(self.check.finalize().as_bytes()));
        self.buf.extend_from_slice(end.as_bytes());
        self.buf.push(b'\n');
        self.flush()?;
        Ok(self.w)
    }
}

/// Size of a sums file for an image of `size` bytes (so it can be sized and checked up front).
fn sums_len(size: u64) -> u64 {
    let header = format!(
        "{MAGIC}\nhash blake3\nblock {BLOCK}\nsize {size}\nblocks {}\n",
        blocks_of(size)
    );
    header.len() as u64 + blocks_of(size) * 65 + 4 + 65
}

/// Writes the `len`-byte image that `fill` produces to `out`, and its checksums where `sums` says.
/// Both outputs are checked before anything is written; the image is put in place first. Returns
/// the sums file written, if any.
pub fn write_backup(
    out: &Path,
    sums: &SumsTo,
    len: u64,
    guard: &Guard,
    fill: impl FnOnce(&mut dyn FnMut(u64, &[u8]) -> CliResult) -> CliResult,
) -> CliResult<Option<PathBuf>> {
    let image = Target::classify(out, len, guard)?;
    let sums_path = match sums {
        SumsTo::Nowhere => None,
        SumsTo::Path(p) => Some(p.clone()),
        SumsTo::Beside if image.kind() == Kind::Replace => {
            let mut s = out.as_os_str().to_owned();
            s.push(".sums");
            Some(PathBuf::from(s))
        }
        SumsTo::Beside => None,
    };
    let sums_target = match &sums_path {
        Some(p) => {
            // The sidecar is checked like the image, and must not be the image either.
            let mut g = guard.clone();
            g.input(out, "the backup's own output");
            let t = Target::classify(p, sums_len(len), &g)?;
            if image.kind() == Kind::Replace
                && t.kind() == Kind::Replace
                && entry_of(&t)? == entry_of(&image)?
            {
                return Err(CliError::refused(format!(
                    "refusing to write the checksums to {}: it is the backup's own output",
                    p.display()
                )));
            }
            Some(t)
        }
        None => None,
    };
    let mut w = image.open(len)?;
    let mut sw = match sums_target {
        Some(t) => Some(SumsWriter::new(t.open(sums_len(len))?, len)?),
        None => None,
    };
    let mut summer = Summer::new();
    fill(&mut |at, b| {
        w.write_at(at, b)?;
        if let Some(sw) = sw.as_mut() {
            if at != summer.pos {
                return Err(CliError::msg("internal error: backup data out of order"));
            }
            summer.update(b);
            for h in summer.done.drain(..) {
                sw.line(&hex(&h))?;
            }
        }
        Ok(())
    })?;
    if summer.pos != len && sw.is_some() {
        return Err(CliError::msg(
            "internal error: backup shorter than the image",
        ));
    }
    let image_done = w.finish()?;
    let sums_done = match sw {
        Some(mut sw) => {
            summer.finish();
            for h in summer.done.drain(..) {
                sw.line(&hex(&h))?;
            }
            Some(sw.finish()?.finish()?)
        }
        None => None,
    };
    image_done.commit()?;
    if let Some(s) = sums_done {
        s.commit()?;
    }
    Ok(sums_path)
}

/// A sums file being read: its header, then its hashes in order.
struct SumsReader {
    path: PathBuf,
    r: BufReader<File>,
    /// A regular file ends at its end line; a device holding sums has other bytes after it.
    regular: bool,
    check: blake3::Hasher,
    size: u64,
    blocks: u64,
}

/// Longest line of a sums file (the end line: 4 + 64 characters).
const MAX_LINE: u64 = 80;

impl SumsReader {
    fn open(path: &Path) -> CliResult<Self> {
        let f = File::open(path)
            .map_err(|e| CliError::io(format!("cannot read {}: {e}", path.display())))?;
        let regular = f.metadata().map(|m| m.is_file()).unwrap_or(true);
        let mut r = SumsReader {
            path: path.to_path_buf(),
            r: BufReader::new(f),
            regular,
            check: blake3::Hasher::new(),
            size: 0,
            blocks: 0,
        };
        let magic = r.next_line()?;
        if magic != MAGIC {
            return Err(r.bad("not a cowsnap sums file (first line)"));
        }
        if r.next_line()? != "hash blake3" {
            return Err(r.bad("unknown hash (expected blake3)"));
        }
        if r.field("block")? != BLOCK {
            return Err(r.bad("unsupported block size"));
        }
        r.size = r.field("size")?;
        r.blocks = r.field("blocks")?;
        if r.blocks != blocks_of(r.size) {
            return Err(r.bad("block count does not match the size"));
        }
        Ok(r)
    }

    fn bad(&self, why: &str) -> CliError {
        CliError::corrupt(format!("{}: damaged sums file: {why}", self.path.display()))
    }

    /// The next line, without hashing it; `None` at the end of the file.
    fn raw_line(&mut self) -> CliResult<Option<String>> {
        let mut buf = Vec::new();
        let n = (&mut self.r)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| self.bad(&e.to_string()))?;
        if n == 0 {
            return Ok(None);
        }
        if buf.pop() != Some(b'\n') {
            return Err(self.bad("a line is too long or unterminated"));
        }
        String::from_utf8(buf)
            .map(Some)
            .map_err(|_| self.bad("not text"))
    }

    fn next_line(&mut self) -> CliResult<String> {
        let l = self.raw_line()?.ok_or_else(|| self.bad("it ends early"))?;
        self.check.update(l.as_bytes());
        self.check.update(b"\n");
        Ok(l)
    }

    fn field(&mut self, name: &str) -> CliResult<u64> {
        let l = self.next_line()?;
        l.strip_prefix(name)
            .and_then(|v| v.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| self.bad(&format!("expected \"{name} N\"")))
    }

    fn next_hash(&mut self) -> CliResult<[u8; 32]> {
        let l = self.next_line()?;
        unhex(&l).ok_or_else(|| self.bad("a block hash is not 64 hex digits"))
    }

    /// Checks the last line against everything read.
    fn end(mut self) -> CliResult {
        let want = hex(self.check.finalize().as_bytes());
        let Some(l) = self.raw_line()? else {
            return Err(self.bad("its end line is missing"));
        };
        if l.strip_prefix("end ") != Some(want.as_str()) {
            return Err(self.bad("its end line does not match its contents"));
        }
        let mut rest = [0u8; 1];
        if self.regular
            && self
                .r
                .read(&mut rest)
                .map_err(|e| self.bad(&e.to_string()))?
                > 0
        {
            return Err(self.bad("bytes after the end line"));
        }
        Ok(())
    }
}

/// Compares the image `read` produces (`size` bytes, read at offsets) with the sums file.
fn compare(
    label: &str,
    size: u64,
    sums_path: &Path,
    out: &mut dyn std::io::Write,
    mut read: impl FnMut(u64, &mut [u8]) -> CliResult,
) -> CliResult {
    let mut sums = SumsReader::open(sums_path)?;
    if sums.size != size {
        return Err(CliError::corrupt(format!(
            "{label} is {size} bytes, {} lists {} bytes",
            sums_path.display(),
            sums.size
        )));
    }
    let mut summer = Summer::new();
    let mut buf = vec![0u8; size.min(STEP) as usize];
    let mut bad: Vec<u64> = Vec::new();
    let mut block = 0u64;
    let mut check = |summer: &mut Summer, sums: &mut SumsReader| -> CliResult {
        for h in summer.done.drain(..) {
            if sums.next_hash()? != h {
                bad.push(block);
            }
            block += 1;
        }
        Ok(())
    };
    let mut at = 0;
    while at < size {
        let n = (size - at).min(STEP) as usize;
        read(at, &mut buf[..n])?;
        summer.update(&buf[..n]);
        check(&mut summer, &mut sums)?;
        at += n as u64;
    }
    summer.finish();
    check(&mut summer, &mut sums)?;
    // A damaged sidecar is reported as such, not as damaged data.
    sums.end()?;
    if bad.is_empty() {
        return Ok(());
    }
    for &b in bad.iter().take(SHOWN) {
        let end = ((b + 1) * BLOCK).min(size);
        writeln!(out, "mismatch: block {b}, bytes {}..{end}", b * BLOCK)
            .map_err(|e| CliError::io(format!("stdout: {e}")))?;
    }
    if bad.len() > SHOWN {
        writeln!(out, "... and {} more", bad.len() - SHOWN)
            .map_err(|e| CliError::io(format!("stdout: {e}")))?;
    }
    Err(CliError::corrupt(format!(
        "{label} does not match {}: {} of {} blocks differ, the first at byte {}",
        sums_path.display(),
        bad.len(),
        blocks_of(size),
        bad[0] * BLOCK
    )))
}

/// `verify DIR/NAME --sums FILE`, run on an opened volume (here or in the mount daemon).
pub fn exec_verify(v: &Opened, name: &str, sums: &Path, io: &mut Io) -> CliResult {
    let id = v.id(name)?;
    let size = v.vol.len();
    let label = format!("snapshot {name}");
    compare(&label, size, sums, io.out, |at, b| {
        v.vol
            .snapshot_read_at(id, at, b)
            .map_err(|e| CliError::core(format!("{label}: read at offset {at}"), e))
    })?;
    if !io.quiet {
        writeln!(
            io.out,
            "verified {label}: {} blocks match {}",
            blocks_of(size),
            sums.display()
        )
        .map_err(|e| CliError::io(format!("stdout: {e}")))?;
    }
    Ok(())
}

/// `verify --image IMG --sums FILE`: a file must be exactly the size listed; a device at least.
pub fn verify_image(image: &Path, sums: &Path, quiet: bool) -> CliResult {
    let mut f = File::open(image)
        .map_err(|e| CliError::io(format!("cannot open {}: {e}", image.display())))?;
    let meta = f
        .metadata()
        .map_err(|e| CliError::io(format!("{}: {e}", image.display())))?;
    let mut size = f
        .seek(SeekFrom::End(0))
        .map_err(|e| CliError::io(format!("{}: {e}", image.display())))?;
    if !meta.is_file() {
        // A device holds the image in its first bytes (backup writes it like dd).
        let listed = SumsReader::open(sums)?.size;
        if listed > size {
            return Err(CliError::corrupt(format!(
                "{} holds {size} bytes, {} lists {listed}",
                image.display(),
                sums.display()
            )));
        }
        size = listed;
    }
    let label = image.display().to_string();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    compare(&label, size, sums, &mut out, |at, b| {
        f.read_exact_at(b, at)
            .map_err(|e| CliError::io(format!("{label}: read at offset {at}: {e}")))
    })?;
    if !quiet {
        println!(
            "verified {label}: {} blocks match {}",
            blocks_of(size),
            sums.display()
        );
    }
    Ok(())
}
