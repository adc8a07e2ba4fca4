//! Errors of managed volumes: one line for a person, an [`ErrorKind`] that decides the CLI's exit code,
//! and a stable [`Code`] for programs (the mount daemon's wire, the C ABI, Python).

use core::fmt;

use cowsnap_core::ErrorCode;

/// What kind of failure an error is; it decides the CLI's exit code (see the table in
/// `cli/README.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The operation was refused: bad state, conflict, exists, invalid snapshot, bad argument
    /// value. Nothing was changed. Exit code 3.
    Refused,
    /// The command did what was asked but something was lost on the way (an origin write that
    /// invalidated a full snapshot). Exit code 3, printed as a warning.
    Degraded,
    /// An I/O error from the host, or corrupt data / metadata. Exit code 4.
    Io,
}

impl ErrorKind {
    /// The process exit code. 2 is clap's usage error; 1 stays unused so that scripts can tell
    /// these apart from a crash of an older version.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Refused | ErrorKind::Degraded => 3,
            ErrorKind::Io => 4,
        }
    }

    /// One character on the mount daemon's wire.
    pub fn tag(self) -> u8 {
        match self {
            ErrorKind::Refused => b'R',
            ErrorKind::Degraded => b'D',
            ErrorKind::Io => b'I',
        }
    }

    pub fn from_tag(t: u8) -> Option<Self> {
        match t {
            b'R' => Some(ErrorKind::Refused),
            b'D' => Some(ErrorKind::Degraded),
            b'I' => Some(ErrorKind::Io),
            _ => None,
        }
    }
}

/// A stable error code: the core's codes, plus what only a managed volume can say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The engine's code (`OUT_OF_RANGE`, `UNKNOWN_SNAPSHOT`, `IO`, ...).
    Core(ErrorCode),
    /// Refused for a reason of the managed volume (state, name, option), nothing changed.
    Refused,
    /// Done, with a loss to report (a snapshot invalidated by a write).
    Degraded,
    /// Not a cowsnap volume directory (no manifest), or no such directory.
    NotAVolume,
    /// The name is taken (a snapshot, a file).
    Exists,
    /// A snapshot of the manifest could not be activated: see `cowsnap lvs`.
    Broken,
    /// The mount daemon and this client do not speak the same protocol version, or a frame is bad.
    Protocol,
}

impl Code {
    /// The stable name (the core's names for core codes, as `COWSNAP_<NAME>` in C).
    pub fn name(self) -> &'static str {
        match self {
            Code::Core(c) => c.name(),
            Code::Refused => "REFUSED",
            Code::Degraded => "DEGRADED",
            Code::NotAVolume => "NOT_A_VOLUME",
            Code::Exists => "EXISTS",
            Code::Broken => "BROKEN",
            Code::Protocol => "PROTOCOL",
        }
    }

    /// The codes only a managed volume has (the rest are the core's).
    pub const OWN: [Code; 6] = [
        Code::Refused,
        Code::Degraded,
        Code::NotAVolume,
        Code::Exists,
        Code::Broken,
        Code::Protocol,
    ];

    /// Every code: the managed volume's own, then the core's.
    pub fn all() -> impl Iterator<Item = Code> {
        Code::OWN
            .into_iter()
            .chain(ErrorCode::ALL.into_iter().map(Code::Core))
    }

    /// The code of a stable name; `None` for a name this version does not know.
    pub fn from_name(s: &str) -> Option<Code> {
        Code::all().find(|c| c.name() == s)
    }

    /// The nearest code of the core's table (what the C ABI returns): a protocol mismatch with the daemon a host condition (`IO`), a missing volume or taken name a
    /// bad argument.
    pub fn core(self) -> ErrorCode {
        match self {
            Code::Core(c) => c,
            Code::Protocol => ErrorCode::Io,
            Code::Broken => ErrorCode::SnapshotInvalid,
            Code::Refused | Code::Degraded | Code::NotAVolume | Code::Exists => {
                ErrorCode::InvalidArgument
            }
        }
    }
}

/// An error for the user: one line, already explained, its kind and its code.
#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub code: Code,
    pub msg: String,
}

/// `Result` of this crate.
pub type Result<T = (), E = Error> = core::result::Result<T, E>;

impl Error {
    /// A refused operation (the default: most messages say why something is not done).
    pub fn msg(m: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Refused,
            code: Code::Refused,
            msg: m.into(),
        }
    }

    /// An error with one of the core's codes (its kind follows from the code).
    pub fn coded(code: ErrorCode, m: impl Into<String>) -> Self {
        Error {
            kind: code_kind(code),
            code: Code::Core(code),
            msg: m.into(),
        }
    }

    /// A bad argument value (the core's `INVALID_ARGUMENT`), nothing changed.
    pub fn invalid(m: impl Into<String>) -> Self {
        Error::coded(ErrorCode::InvalidArgument, m)
    }

    /// A host I/O error or corrupt data.
    pub fn io(m: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Io,
            code: Code::Core(ErrorCode::Io),
            msg: m.into(),
        }
    }

    /// Done, but with a loss the user must hear about.
    pub fn degraded(m: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Degraded,
            code: Code::Degraded,
            msg: m.into(),
        }
    }

    /// An operation refused before anything was changed (an output that is an input, a device too
    /// small, a hostile script...).
    pub fn refused(m: impl Into<String>) -> Self {
        Error::msg(m)
    }

    /// Data that does not match what it should be (a verify mismatch, a damaged sums file).
    pub fn corrupt(m: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Io,
            code: Code::Core(ErrorCode::CorruptMetadata),
            msg: m.into(),
        }
    }

    /// A core error with what was being done.
    pub fn core(context: impl fmt::Display, e: cowsnap_core::Error) -> Self {
        Error {
            kind: core_kind(&e),
            code: Code::Core(e.code()),
            msg: format!("{context}: {e}"),
        }
    }

    /// The same error with another code.
    pub fn with_code(mut self, code: Code) -> Self {
        self.code = code;
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

/// A host I/O error about `what`, as a `map_err` argument.
pub fn io_err(what: &std::path::Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(format!("{}: {e}", what.display()))
}

/// I/O and corruption are kind `Io`; everything else the core refuses is a refused operation.
fn core_kind(e: &cowsnap_core::Error) -> ErrorKind {
    code_kind(e.code())
}

fn code_kind(code: ErrorCode) -> ErrorKind {
    match code {
        ErrorCode::Io | ErrorCode::CorruptMetadata => ErrorKind::Io,
        _ => ErrorKind::Refused,
    }
}

impl From<cowsnap_core::Error> for Error {
    fn from(e: cowsnap_core::Error) -> Self {
        Error {
            kind: core_kind(&e),
            code: Code::Core(e.code()),
            msg: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_name_reads_back() {
        for c in Code::all() {
            assert_eq!(Code::from_name(c.name()), Some(c), "{}", c.name());
        }
        assert_eq!(Code::from_name("NO_SUCH_CODE"), None);
    }
}
