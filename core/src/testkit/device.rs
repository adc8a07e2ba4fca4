//! Instrumented devices for tests and benches: one wrapper, [`Hooked`], that shows every access to
//! a hook which may let it through, fail it, or claim it done (to count flushes, fail a write, refuse
//! to grow...), and [`SharedMem`], a memory device whose bytes the test keeps a handle on.

use alloc::sync::Arc;
use alloc::vec::Vec;
use std::sync::Mutex;

use crate::device::{BlockDevice, DeviceId};
use crate::error::{Error, Result};

/// One access to a device, as a [`Hooked`] device's hook sees it before the device does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// `read_at(offset, buf)` of `len` bytes.
    Read {
        /// First byte.
        offset: u64,
        /// Bytes to read.
        len: usize,
    },
    /// `write_at(offset, data)`.
    Write {
        /// First byte.
        offset: u64,
        /// The bytes to write.
        data: &'a [u8],
    },
    /// `flush()`.
    Flush,
    /// `set_len(len)`.
    SetLen(u64),
    /// `write_behind(offset, len)`: a hint, which has no result; any verdict but `Pass` drops it.
    WriteBehind {
        /// First byte.
        offset: u64,
        /// Bytes.
        len: u64,
    },
}

/// What a hook decides about an access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let the wrapped device do it.
    Pass,
    /// Claim success without doing it (a device that says yes and does nothing).
    Skip,
    /// Fail with this error; the wrapped device never sees the access.
    Fail(Error),
}

type Hook = dyn Fn(Access<'_>) -> Verdict + Send + Sync;

/// A device that shows every access to a hook first. The hook runs on `&self` (reads too), so
/// whatever it counts or decides lives in atomics or locks it captured.
pub struct Hooked<D> {
    /// The wrapped device.
    pub inner: D,
    hook: Arc<Hook>,
}

impl<D: BlockDevice> Hooked<D> {
    /// Wraps `inner` with `hook`.
    pub fn new(inner: D, hook: impl Fn(Access<'_>) -> Verdict + Send + Sync + 'static) -> Self {
        Hooked {
            inner,
            hook: Arc::new(hook),
        }
    }

    fn ask(&self, a: Access<'_>) -> Result<bool> {
        match (self.hook)(a) {
            Verdict::Pass => Ok(true),
            Verdict::Skip => Ok(false),
            Verdict::Fail(e) => Err(e),
        }
    }
}

impl<D: BlockDevice> BlockDevice for Hooked<D> {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len();
        if self.ask(Access::Read { offset, len })? {
            self.inner.read_at(offset, buf)?;
        }
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if self.ask(Access::Write { offset, data })? {
            self.inner.write_at(offset, data)?;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        if self.ask(Access::Flush)? {
            self.inner.flush()?;
        }
        Ok(())
    }
    fn set_len(&mut self, len: u64) -> Result<()> {
        if self.ask(Access::SetLen(len))? {
            self.inner.set_len(len)?;
        }
        Ok(())
    }
    fn identity(&self) -> Option<DeviceId> {
        self.inner.identity()
    }
    fn write_behind(&self, offset: u64, len: u64) {
        if let Ok(true) = self.ask(Access::WriteBehind { offset, len }) {
            self.inner.write_behind(offset, len);
        }
    }
    /// Not an access (nothing is read or written): the wrapped device answers.
    fn known_zeros(&self, offset: u64, len: u64) -> u64 {
        self.inner.known_zeros(offset, len)
    }
}

/// A memory device whose bytes the test keeps a handle on (a clone shares them): to look at what
/// the engine wrote, even through a refused call or after the volume dropped the device.
#[derive(Clone, Default)]
pub struct SharedMem(Arc<Mutex<Vec<u8>>>);

impl SharedMem {
    /// A device holding `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        SharedMem(Arc::new(Mutex::new(bytes)))
    }

    /// A zero-filled device of `len` bytes.
    pub fn zeroed(len: usize) -> Self {
        Self::new(alloc::vec![0; len])
    }

    /// A copy of the device's bytes now.
    pub fn bytes(&self) -> Vec<u8> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        // A test that panicked while holding the lock has failed already: its bytes are still the
        // best answer.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn range(&self, offset: u64, len: usize) -> Result<core::ops::Range<usize>> {
        let size = self.lock().len() as u64;
        crate::chunk::check_range(offset, len, size)?;
        Ok(offset as usize..offset as usize + len)
    }
}

impl BlockDevice for SharedMem {
    fn len(&self) -> u64 {
        self.lock().len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let r = self.range(offset, buf.len())?;
        buf.copy_from_slice(&self.lock()[r]);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let r = self.range(offset, data.len())?;
        self.lock()[r].copy_from_slice(data);
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    fn set_len(&mut self, len: u64) -> Result<()> {
        let len = usize::try_from(len).map_err(|_| Error::NoSpace)?;
        self.lock().resize(len, 0);
        Ok(())
    }
    /// Exactly the zeros there now, as a sparse file's holes (the most a device may claim).
    fn known_zeros(&self, offset: u64, len: u64) -> u64 {
        let data = self.lock();
        let len = len.min((data.len() as u64).saturating_sub(offset));
        if len == 0 {
            return 0;
        }
        let o = offset as usize;
        crate::device::zero_prefix(&data[o..o + len as usize]) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemDevice;
    use core::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn hooks_see_every_access_and_decide() {
        let flushes = Arc::new(AtomicUsize::new(0));
        let f = flushes.clone();
        let mut d = Hooked::new(MemDevice::new(4096), move |a| match a {
            Access::Flush => {
                f.fetch_add(1, Ordering::SeqCst);
                Verdict::Pass
            }
            Access::Write { offset: 0, .. } => Verdict::Fail(Error::io("injected")),
            Access::Write { offset: 512, .. } => Verdict::Skip,
            Access::SetLen(_) => Verdict::Skip,
            _ => Verdict::Pass,
        });
        assert!(matches!(d.write_at(0, &[1]), Err(Error::Io(_))));
        d.write_at(512, &[2]).unwrap();
        d.write_at(1024, &[3]).unwrap();
        d.flush().unwrap();
        d.set_len(1 << 20).unwrap();
        let mut b = [9u8; 1];
        d.read_at(0, &mut b).unwrap();
        assert_eq!(b, [0], "the failed write never reached the device");
        d.read_at(512, &mut b).unwrap();
        assert_eq!(b, [0], "the skipped write did nothing");
        d.read_at(1024, &mut b).unwrap();
        assert_eq!(b, [3]);
        assert_eq!(d.len(), 4096, "the skipped set_len did nothing");
        assert_eq!(flushes.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn shared_mem_is_shared_and_bounds_checked() {
        let mut d = SharedMem::zeroed(16);
        let view = d.clone();
        d.write_at(4, &[7, 7]).unwrap();
        assert_eq!(&view.bytes()[3..7], &[0, 7, 7, 0]);
        assert!(d.write_at(15, &[1, 1]).is_err());
        assert!(d.read_at(u64::MAX, &mut [0u8; 1]).is_err());
        d.set_len(32).unwrap();
        assert_eq!(view.len(), 32);
    }
}
