//! The metadata areas of a persistent store, read in order from area 0 up to the one holding the
//! end marker, as activation reads them.
//!
//! With `std`, when the COW device gives a [`ReadHandle`](crate::device::ReadHandle), another
//! thread reads the areas ahead, a batch at a time, while the caller checks and sorts the records
//! of the ones already read: reading the metadata (a `pread` per area) and parsing it overlap
//! instead of taking turns. The reader reads exactly the areas the caller would (it stops after
//! the end marker, at the first error, or as soon as the caller stops), so what the caller sees,
//! errors included, is what reading one area after the other gives.

use alloc::vec::Vec;

use super::{past_end, read_area, Geometry, EXCEPTION_RECORD_BYTES};
use crate::chunk::ChunkSize;
use crate::device::{self, BlockDevice};
use crate::error::Result;

/// The areas of one COW device, handed over one at a time by [`Areas::next_area`].
pub(super) struct Areas<'a> {
    cow: &'a dyn BlockDevice,
    geo: Geometry,
    cow_chunks: u64,
    /// The next area to hand over.
    next: u64,
    /// No area follows (the end marker or an error was handed over).
    done: bool,
    buf: Vec<u8>,
    #[cfg(feature = "std")]
    ahead: Option<ahead::ReadAhead>,
}

impl<'a> Areas<'a> {
    /// The areas of `cow` (`cow_chunks` whole chunks), read ahead in another thread when the
    /// device allows it and the device can hold enough areas for that to pay.
    pub(super) fn new(cow: &'a dyn BlockDevice, chunk: ChunkSize, cow_chunks: u64) -> Self {
        let geo = Geometry { chunk };
        Areas {
            cow,
            geo,
            cow_chunks,
            next: 0,
            done: false,
            buf: Vec::new(),
            #[cfg(feature = "std")]
            ahead: ahead::ReadAhead::start(cow, geo, cow_chunks),
        }
    }

    /// The next area's number and its records up to the end marker (whole records), or the error
    /// reading it met (an area past the end of the device, a failed read). `None` after the area
    /// holding the end marker or after an error.
    pub(super) fn next_area(&mut self) -> Option<Result<(u64, &[u8])>> {
        if self.done {
            return None;
        }
        #[cfg(feature = "std")]
        if let Some(ahead) = self.ahead.as_mut() {
            let got = ahead.next_area();
            let epa = self.geo.exceptions_per_area() as usize;
            let rec = EXCEPTION_RECORD_BYTES as usize;
            self.done = !matches!(&got, Some(Ok((_, b))) if b.len() == epa * rec);
            return got;
        }
        let area = self.next;
        let got = read_one(
            &|at, b| device::read(self.cow, at, b),
            self.geo,
            self.cow_chunks,
            area,
            &mut self.buf,
            0,
        );
        self.next += 1;
        let epa = self.geo.exceptions_per_area();
        self.done = !matches!(got, Ok(n) if n as u64 == epa);
        Some(got.map(|n| (area, &self.buf[..n * EXCEPTION_RECORD_BYTES as usize])))
    }
}

/// Reads area `area` into `buf[from..]`: how many records precede the end marker.
fn read_one(
    read: &dyn Fn(u64, &mut [u8]) -> Result<()>,
    geo: Geometry,
    cow_chunks: u64,
    area: u64,
    buf: &mut Vec<u8>,
    from: usize,
) -> Result<usize> {
    let loc = geo.area_location(area);
    if loc >= cow_chunks {
        return Err(past_end(area, loc));
    }
    let epa = geo.exceptions_per_area();
    read_area(read, geo.chunk.offset_of(loc), epa, buf, from)
}

#[cfg(feature = "std")]
mod ahead {
    use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};
    use std::sync::Arc;
    use std::thread::JoinHandle;

    use super::*;
    use crate::device::ReadHandle;
    use crate::error::Error;

    /// Bytes of metadata read per batch handed from the reader to the caller (at least one area).
    /// (The unit tests' stores are small: batches of two areas there, so that hand-overs and ends
    /// of batches are exercised.)
    const BATCH_BYTES: usize = if cfg!(test) { 8 * 1024 } else { 256 * 1024 };
    /// Batches the reader may be ahead of the caller.
    const DEPTH: usize = 4;
    /// Below this many areas that the device could hold, reading ahead does not pay for the
    /// thread (the unit tests read ahead whatever the size).
    const MIN_AREAS: u64 = 64;

    /// Consecutive areas read by the reader: their records (up to each end marker) one after the
    /// other, and what ended the batch early, if anything did.
    struct Batch {
        first: u64,
        /// The records are `bytes[..used]` (the buffer keeps its length from batch to batch:
        /// no zeroing of room that reads write over anyway).
        bytes: Vec<u8>,
        used: usize,
        /// Records of each area.
        records: Vec<usize>,
        error: Option<Error>,
    }

    pub(super) struct ReadAhead {
        /// `None` once dropping: the reader then stops at its next hand-over.
        batches: Option<Receiver<Batch>>,
        /// Emptied batches go back to the reader, which fills them again.
        spare: Sender<Batch>,
        current: Option<Batch>,
        /// Next area of `current` to hand over, and where its bytes start.
        index: usize,
        offset: usize,
        reader: Option<JoinHandle<()>>,
        failed: bool,
    }

    impl ReadAhead {
        pub(super) fn start(cow: &dyn BlockDevice, geo: Geometry, cow_chunks: u64) -> Option<Self> {
            if !cfg!(test) && cow_chunks / (geo.exceptions_per_area() + 1) < MIN_AREAS {
                return None;
            }
            let handle = cow.read_handle()?;
            let area_bytes = geo.chunk.bytes() as usize;
            let per_batch = (BATCH_BYTES / area_bytes).max(1);
            let (to_caller, batches) = sync_channel(DEPTH);
            let (spare, spares) = channel();
            let reader = std::thread::Builder::new()
                .name("cowsnap-read-ahead".into())
                .spawn(move || read_ahead(handle, geo, cow_chunks, per_batch, to_caller, spares))
                // No thread to be had: read in the caller's thread.
                .ok()?;
            Some(ReadAhead {
                batches: Some(batches),
                spare,
                current: None,
                index: 0,
                offset: 0,
                reader: Some(reader),
                failed: false,
            })
        }

        pub(super) fn next_area(&mut self) -> Option<Result<(u64, &[u8])>> {
            loop {
                let batch = match self.current.as_mut() {
                    Some(b) => b,
                    None => {
                        let got = self.batches.as_ref().and_then(|r| r.recv().ok());
                        let Some(b) = got else {
                            // The reader hands over the end marker or an error before it
                            // stops: it can only have gone by panicking.
                            if core::mem::replace(&mut self.failed, true) {
                                return None;
                            }
                            return Some(Err(Error::io(
                                "the thread reading the metadata areas stopped unexpectedly",
                            )));
                        };
                        (self.index, self.offset) = (0, 0);
                        self.current.insert(b)
                    }
                };
                if self.index < batch.records.len() {
                    let area = batch.first + self.index as u64;
                    let n = batch.records[self.index] * EXCEPTION_RECORD_BYTES as usize;
                    let start = self.offset;
                    (self.index, self.offset) = (self.index + 1, start + n);
                    let batch = self.current.as_ref().expect("set above");
                    return Some(Ok((area, &batch.bytes[start..start + n])));
                }
                if let Some(e) = batch.error.take() {
                    return Some(Err(e));
                }
                // Back to the reader for another batch (it may have stopped: then it is dropped).
                let _ = self.spare.send(self.current.take().expect("set above"));
            }
        }
    }

    impl Drop for ReadAhead {
        fn drop(&mut self) {
            // The reader's next hand-over fails and it stops; wait for it, so that no read of the
            // device is left running once activation returns.
            drop(self.batches.take());
            if let Some(r) = self.reader.take() {
                let _ = r.join();
            }
        }
    }

    /// The reader: areas from 0 in order, a batch at a time, until the area holding the end
    /// marker, an error, or a caller that no longer takes them.
    fn read_ahead(
        cow: Arc<dyn ReadHandle>,
        geo: Geometry,
        cow_chunks: u64,
        per_batch: usize,
        to_caller: std::sync::mpsc::SyncSender<Batch>,
        spares: Receiver<Batch>,
    ) {
        let epa = geo.exceptions_per_area() as usize;
        let rec = EXCEPTION_RECORD_BYTES as usize;
        let read = |at: u64, b: &mut [u8]| cow.read_at(at, b);
        let mut area = 0u64;
        loop {
            let mut b = spares.try_recv().unwrap_or(Batch {
                first: 0,
                bytes: Vec::new(),
                used: 0,
                records: Vec::with_capacity(per_batch),
                error: None,
            });
            b.first = area;
            b.used = 0;
            b.records.clear();
            let mut last = false;
            while b.records.len() < per_batch {
                match read_one(&read, geo, cow_chunks, area, &mut b.bytes, b.used) {
                    Ok(n) => {
                        b.used += n * rec;
                        b.records.push(n);
                        area += 1;
                        if n != epa {
                            last = true;
                            break;
                        }
                    }
                    Err(e) => {
                        b.error = Some(e);
                        last = true;
                        break;
                    }
                }
            }
            if to_caller.send(b).is_err() || last {
                return;
            }
        }
    }
}
