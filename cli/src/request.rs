//! Commands on a managed volume as data, so that they run the same way in this process or in the
//! `cowsnap mount` daemon that holds the volume open (forwarded over its unix socket).
//!
//! Wire format on the socket (one connection per command): the client sends one frame `R` holding the
//! JSON request; the server answers with any number of `O` frames (bytes for the client's stdout) and
//! exactly one final frame, `K` (success) or `E` (one-line error message). A frame is a tag byte, a
//! big-endian u32 length and that many bytes.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::size::SizeArg;
use crate::{CliError, CliResult};

/// A command on a managed volume, with every path already absolute.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    Snapshot {
        name: String,
        size: u64,
        store: String,
        autoextend: Option<String>,
        chunk_size: Option<u64>,
    },
    Lvs {
        json: bool,
    },
    Write {
        snap: Option<String>,
        offset: u64,
        fill: Option<u8>,
        from: Option<PathBuf>,
        len: u64,
    },
    Read {
        snap: Option<String>,
        offset: u64,
        len: u64,
        out: Option<PathBuf>,
    },
    Remove {
        snap: String,
    },
    Merge {
        snap: String,
    },
    Extend {
        snap: String,
        size: SizeArg,
    },
    Backup {
        snap: String,
        out: PathBuf,
    },
}

impl Request {
    /// True when the command changes the volume (exclusive lock; the daemon's write lock).
    pub fn writes(&self) -> bool {
        !matches!(
            self,
            Request::Lvs { .. } | Request::Read { .. } | Request::Backup { .. }
        )
    }
}

pub const TAG_REQUEST: u8 = b'R';
pub const TAG_OUT: u8 = b'O';
pub const TAG_OK: u8 = b'K';
pub const TAG_ERR: u8 = b'E';
/// Largest frame accepted (requests are small; output frames are cut at `OUT_FRAME`).
const MAX_FRAME: u32 = 16 << 20;
/// Output is sent in frames of this size.
const OUT_FRAME: usize = 1 << 20;

pub fn write_frame(w: &mut impl Write, tag: u8, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut head = [0u8; 5];
    head[0] = tag;
    head[1..].copy_from_slice(&len.to_be_bytes());
    w.write_all(&head)?;
    w.write_all(payload)
}

/// Reads one frame; `None` at a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is too large"),
        ));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    Ok(Some((head[0], payload)))
}

/// A `Write` that sends everything as `O` frames (buffered up to 1 MiB).
pub struct FrameWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
        FrameWriter {
            inner,
            buf: Vec::new(),
        }
    }
}

impl<W: Write> Write for FrameWriter<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = b.len().min(OUT_FRAME - self.buf.len());
        self.buf.extend_from_slice(&b[..n]);
        if self.buf.len() >= OUT_FRAME {
            self.flush()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            write_frame(&mut self.inner, TAG_OUT, &self.buf)?;
            self.buf.clear();
        }
        self.inner.flush()
    }
}

/// Client side: sends `req` to the mount daemon on `stream`, copies its output to stdout, and returns
/// its result.
pub fn call(mut stream: UnixStream, req: &Request) -> CliResult {
    let lost =
        |e: io::Error| CliError::msg(format!("lost the connection to the mount daemon: {e}"));
    let json =
        serde_json::to_vec(req).map_err(|e| CliError::msg(format!("encode request: {e}")))?;
    write_frame(&mut stream, TAG_REQUEST, &json).map_err(lost)?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    loop {
        match read_frame(&mut stream).map_err(lost)? {
            Some((TAG_OUT, b)) => out
                .write_all(&b)
                .map_err(|e| CliError::msg(format!("stdout: {e}")))?,
            Some((TAG_OK, _)) => {
                return out
                    .flush()
                    .map_err(|e| CliError::msg(format!("stdout: {e}")))
            }
            Some((TAG_ERR, b)) => {
                let _ = out.flush();
                return Err(CliError(String::from_utf8_lossy(&b).into_owned()));
            }
            Some((t, _)) => {
                return Err(CliError::msg(format!(
                    "mount daemon sent an unknown frame {t:#x}"
                )))
            }
            None => {
                return Err(CliError::msg(
                    "the mount daemon closed the connection before answering",
                ))
            }
        }
    }
}
