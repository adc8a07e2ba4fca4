//! The mount daemon's protocol: how a command reaches the `cowsnap mount` process that holds a
//! volume open (over the unix socket `DIR/.cowsnap.sock`, see [`crate::client`]).
//!
//! Wire format (one connection per command): the client sends one frame `R` holding the JSON
//! [`Envelope`] (protocol [`VERSION`], `quiet`, the request); the server answers with any number of
//! `O` frames (bytes for the client's stdout) and exactly one final frame, `K` (success) or `E` (the
//! error: JSON with its stable code, see [`error_payload`]). `write --from` data flows as `G` (server:
//! send it now) and `D` frames (client: bytes; an empty one ends them). A frame is a tag byte, a
//! big-endian u32 length and that many bytes.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use serde::{Deserialize, Serialize};

use crate::{Code, Error, ErrorKind, Result};

/// Version of this protocol. 1: no version field in the request, errors as a kind tag byte and a
/// line of text. 2: the request carries its version; errors are JSON with a stable code
/// (`{"version":2,"kind":"R","code":"UNKNOWN_SNAPSHOT","message":"..."}`). A server answers a
/// version-1 client in version 1, and refuses a version it does not know with code `PROTOCOL`.
pub const VERSION: u32 = 2;

fn version_1() -> u32 {
    1
}

/// What the client sends: the protocol version, the request and its `--quiet`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<R> {
    /// Absent in version 1.
    #[serde(default = "version_1")]
    pub version: u32,
    pub quiet: bool,
    pub request: R,
}

impl<R> Envelope<R> {
    /// An envelope of this version.
    pub fn new(request: R, quiet: bool) -> Self {
        Envelope {
            version: VERSION,
            quiet,
            request,
        }
    }

    /// Refuses a version this server does not speak.
    pub fn check_version(&self) -> Result {
        if (1..=VERSION).contains(&self.version) {
            return Ok(());
        }
        Err(Error::msg(format!(
            "the mount daemon speaks protocol version {VERSION} (and 1), the client {}: use the \
             same cowsnap for both (unmount and mount again after an upgrade)",
            self.version
        ))
        .with_code(Code::Protocol))
    }
}

pub const TAG_REQUEST: u8 = b'R';
pub const TAG_OUT: u8 = b'O';
pub const TAG_OK: u8 = b'K';
pub const TAG_ERR: u8 = b'E';
/// Server to client: send the input now (`write --from`).
pub const TAG_GO: u8 = b'G';
/// Client to server: input bytes; an empty frame ends the input.
pub const TAG_DATA: u8 = b'D';
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

/// Writes to a socket without SIGPIPE (the client keeps the default action of SIGPIPE for stdout):
/// a peer that went away is an `EPIPE` error.
pub struct NoSigPipe<'a>(pub &'a UnixStream);

impl Write for NoSigPipe<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: send from a valid buffer on a socket we own.
            let n = unsafe {
                libc::send(
                    self.0.as_raw_fd(),
                    b.as_ptr().cast(),
                    b.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Server side: the client's input, asked for (`G`) on the first read and received as `D` frames.
pub struct FrameReader<'a> {
    stream: &'a UnixStream,
    asked: bool,
    eof: bool,
    buf: Vec<u8>,
    at: usize,
}

impl<'a> FrameReader<'a> {
    pub fn new(stream: &'a UnixStream) -> Self {
        FrameReader {
            stream,
            asked: false,
            eof: false,
            buf: Vec::new(),
            at: 0,
        }
    }
}

impl Read for FrameReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut s = self.stream;
        if !self.asked {
            write_frame(&mut s, TAG_GO, &[])?;
            self.asked = true;
        }
        while self.at == self.buf.len() && !self.eof {
            match read_frame(&mut s)? {
                Some((TAG_DATA, b)) if b.is_empty() => self.eof = true,
                Some((TAG_DATA, b)) => {
                    self.buf = b;
                    self.at = 0;
                }
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the client stopped sending data",
                    ))
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Error as sent in an `E` frame of version 2.
#[derive(Serialize, Deserialize)]
struct WireError {
    version: u32,
    kind: String,
    code: String,
    message: String,
}

/// The payload of an `E` frame for a client of `version`: JSON with the code (2), or the kind's tag
/// byte and the message (1).
pub fn error_payload_for(e: &Error, version: u32) -> Vec<u8> {
    if version < 2 {
        let mut v = vec![e.kind.tag()];
        v.extend_from_slice(e.msg.as_bytes());
        return v;
    }
    let w = WireError {
        version: VERSION,
        kind: char::from(e.kind.tag()).to_string(),
        code: e.code.name().to_string(),
        message: e.msg.clone(),
    };
    serde_json::to_vec(&w).unwrap_or_else(|_| error_payload_for(e, 1))
}

/// The payload of an `E` frame in this version.
pub fn error_payload(e: &Error) -> Vec<u8> {
    error_payload_for(e, VERSION)
}

/// Reads an `E` frame's payload back into an error: version 2 (JSON) or 1 (tag byte + text). An
/// unknown code keeps the kind and becomes `REFUSED`/`IO`; a payload without a known tag is
/// refused.
pub fn parse_error_payload(b: &[u8]) -> Error {
    if let Ok(w) = serde_json::from_slice::<WireError>(b) {
        let kind = w
            .kind
            .bytes()
            .next()
            .and_then(ErrorKind::from_tag)
            .unwrap_or(ErrorKind::Refused);
        let code = Code::from_name(&w.code).unwrap_or(match kind {
            ErrorKind::Io => Code::Core(cowsnap_core::ErrorCode::Io),
            ErrorKind::Degraded => Code::Degraded,
            ErrorKind::Refused => Code::Refused,
        });
        return Error {
            kind,
            code,
            msg: w.message,
        };
    }
    match b.split_first() {
        Some((&t, rest)) if ErrorKind::from_tag(t).is_some() => {
            let kind = ErrorKind::from_tag(t).unwrap_or(ErrorKind::Refused);
            Error {
                kind,
                code: match kind {
                    ErrorKind::Io => Code::Core(cowsnap_core::ErrorCode::Io),
                    ErrorKind::Degraded => Code::Degraded,
                    ErrorKind::Refused => Code::Refused,
                },
                msg: String::from_utf8_lossy(rest).into_owned(),
            }
        }
        _ => Error::msg(String::from_utf8_lossy(b).into_owned()),
    }
}

/// Client side: sends `req` to the mount daemon on `stream`, copies its output to stdout, and returns
/// its result.
pub fn call<R: Serialize>(
    mut stream: UnixStream,
    req: &R,
    quiet: bool,
    mut input: Option<File>,
) -> Result {
    let lost = |e: io::Error| Error::msg(format!("lost the connection to the mount daemon: {e}"));
    let env = Envelope::new(req, quiet);
    let json = serde_json::to_vec(&env).map_err(|e| Error::msg(format!("encode request: {e}")))?;
    write_frame(&mut NoSigPipe(&stream), TAG_REQUEST, &json).map_err(lost)?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    loop {
        match read_frame(&mut stream).map_err(lost)? {
            Some((TAG_OUT, b)) => out
                .write_all(&b)
                .map_err(|e| Error::msg(format!("stdout: {e}")))?,
            Some((TAG_GO, _)) => {
                // If the server stops reading (an error), its answer follows: keep reading frames.
                let mut buf = vec![0u8; OUT_FRAME];
                let mut w = NoSigPipe(&stream);
                if let Some(f) = input.as_mut() {
                    loop {
                        let n = f
                            .read(&mut buf)
                            .map_err(|e| Error::msg(format!("reading --from: {e}")))?;
                        if n == 0 || write_frame(&mut w, TAG_DATA, &buf[..n]).is_err() {
                            break;
                        }
                    }
                }
                let _ = write_frame(&mut w, TAG_DATA, &[]);
            }
            Some((TAG_OK, _)) => {
                return out.flush().map_err(|e| Error::msg(format!("stdout: {e}")))
            }
            Some((TAG_ERR, b)) => {
                let _ = out.flush();
                return Err(parse_error_payload(&b));
            }
            Some((t, _)) => {
                return Err(Error::msg(format!(
                    "mount daemon sent an unknown frame {t:#x}"
                )))
            }
            None => {
                return Err(Error::msg(
                    "the mount daemon closed the connection before answering",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cowsnap_core::ErrorCode;

    fn err(kind: ErrorKind, code: Code, msg: &str) -> Error {
        Error {
            kind,
            code,
            msg: msg.into(),
        }
    }

    #[test]
    fn errors_cross_the_wire_with_kind_code_and_message() {
        for e in [
            err(
                ErrorKind::Refused,
                Code::Core(ErrorCode::UnknownSnapshot),
                "no snapshot named \"x\"",
            ),
            err(ErrorKind::Io, Code::Core(ErrorCode::Io), "disk: EIO"),
            err(
                ErrorKind::Degraded,
                Code::Degraded,
                "snapshot s1 was invalidated",
            ),
            err(
                ErrorKind::Refused,
                Code::Busy,
                "in use\nsecond line {\"json\"}",
            ),
        ] {
            let back = parse_error_payload(&error_payload(&e));
            assert_eq!(
                (back.kind, back.code, back.msg.as_str()),
                (e.kind, e.code, &*e.msg)
            );
        }
    }

    #[test]
    fn version_1_clients_get_version_1_errors() {
        let e = err(ErrorKind::Io, Code::Core(ErrorCode::CorruptMetadata), "bad");
        assert_eq!(error_payload_for(&e, 1), b"Ibad");
        // And a version-1 payload still reads (an old daemon answering a new client).
        let back = parse_error_payload(b"Dlost s1");
        assert_eq!(
            (back.kind, back.code, back.msg.as_str()),
            (ErrorKind::Degraded, Code::Degraded, "lost s1")
        );
        let back = parse_error_payload(b"garbage");
        assert_eq!(
            (back.kind, back.msg.as_str()),
            (ErrorKind::Refused, "garbage")
        );
    }

    #[test]
    fn envelopes_carry_their_version_and_unknown_versions_are_refused() {
        let env = Envelope::new(7u32, true);
        let json = serde_json::to_string(&env).unwrap();
        assert_eq!(
            json,
            format!("{{\"version\":{VERSION},\"quiet\":true,\"request\":7}}")
        );
        let v1: Envelope<u32> = serde_json::from_str("{\"quiet\":false,\"request\":1}").unwrap();
        assert_eq!(v1.version, 1);
        assert!(v1.check_version().is_ok());
        for bad in [0, VERSION + 1, u32::MAX] {
            let e = Envelope::new(0u32, false);
            let e = Envelope { version: bad, ..e };
            assert_eq!(e.check_version().unwrap_err().code, Code::Protocol, "{bad}");
        }
    }

    #[test]
    fn frames_round_trip_and_oversized_frames_are_refused() {
        let mut buf = Vec::new();
        write_frame(&mut buf, TAG_OUT, b"hello").unwrap();
        write_frame(&mut buf, TAG_OK, b"").unwrap();
        let mut r = &buf[..];
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some((TAG_OUT, b"hello".to_vec()))
        );
        assert_eq!(read_frame(&mut r).unwrap(), Some((TAG_OK, Vec::new())));
        assert_eq!(read_frame(&mut r).unwrap(), None);
        let mut big = vec![TAG_OUT];
        big.extend_from_slice(&(MAX_FRAME + 1).to_be_bytes());
        assert!(read_frame(&mut &big[..]).is_err());
    }
}
