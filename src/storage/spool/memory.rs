//! An in-memory spool with injectable faults, for the lane core's table
//! tests, property test and fuzz target (the `testkit` feature): see
//! [`super::store`] for the contract it keeps. It also tells the checks
//! which records are durable, and what a crash would leave.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::Path;
use std::rc::Rc;

use super::store::SpoolStore;
use super::{Location, Recovered, Recovery, Spool, SpoolError, record};
use crate::base::limits::SPOOL_RECORD_BYTES_MAX;

/// A fault the next matching operation of a [`MemorySpool`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The next append fails (as a failed pwrite: nothing is kept).
    Append,
    /// The next sync fails (as a failed fdatasync: fatal for the lane).
    Sync,
    /// Every later read of record `id` finds it damaged.
    Damage(u64),
}

/// One record held by a [`MemorySpool`].
#[derive(Clone, Debug)]
pub struct MemoryRecord {
    pub location: Location,
    pub payload: Vec<u8>,
    /// Whether a `sync` returned Ok after it was appended.
    pub durable: bool,
}

#[derive(Debug, Default)]
struct MemoryState {
    records: VecDeque<MemoryRecord>,
    next_id: u64,
    used: u64,
    quota: u64,
    available: u64,
    faults: Vec<Fault>,
    damaged: Vec<u64>,
    syncs: u64,
    reads: u64,
}

/// An in-memory spool with injectable faults. Cloning gives another handle
/// on the same spool: a test keeps one to inject faults and to read what is
/// durable while the lane core owns the other.
#[derive(Clone, Debug)]
pub struct MemorySpool {
    state: Rc<RefCell<MemoryState>>,
}

impl MemorySpool {
    /// An empty spool of `quota` bytes on a filesystem with `available` bytes free.
    pub fn new(quota: u64, available: u64) -> MemorySpool {
        let state = MemoryState { next_id: 1, quota, available, ..MemoryState::default() };
        MemorySpool { state: Rc::new(RefCell::new(state)) }
    }

    /// Arm a fault (appends and syncs: once, in order; damage: for good).
    pub fn inject(&self, fault: Fault) {
        let mut state = self.state.borrow_mut();
        match fault {
            Fault::Damage(id) => state.damaged.push(id),
            other => state.faults.push(other),
        }
    }

    /// Disarm every append and sync fault not yet returned.
    pub fn clear_faults(&self) {
        self.state.borrow_mut().faults.clear();
    }

    /// Set the filesystem's free bytes.
    pub fn set_available(&self, bytes: u64) {
        self.state.borrow_mut().available = bytes;
    }

    /// The records still held (not released), oldest first.
    pub fn records(&self) -> Vec<MemoryRecord> {
        self.state.borrow().records.iter().cloned().collect()
    }

    /// What a crash leaves and recovery finds: the records appended but
    /// not synced are gone; the others are returned with what `summarize`
    /// makes of their payload (as `Spool::open` does).
    pub fn crash<T>(&self, summarize: impl Fn(&[u8]) -> T) -> Recovery<T> {
        let mut state = self.state.borrow_mut();
        while state.records.back().is_some_and(|r| !r.durable) {
            if let Some(record) = state.records.pop_back() {
                let bytes = Spool::record_bytes(record.payload.len());
                state.used -= bytes;
                state.available += bytes;
            }
        }
        state.faults.clear();
        let entries = state.records.iter().map(|r| Recovered::Record(r.location, summarize(&r.payload))).collect();
        Recovery { entries, truncated_bytes: 0, repaired: 0 }
    }

    /// How many syncs returned Ok.
    pub fn syncs(&self) -> u64 {
        self.state.borrow().syncs
    }

    /// How many records were read back (damaged ones included).
    pub fn reads(&self) -> u64 {
        self.state.borrow().reads
    }

    fn take_fault(state: &mut MemoryState, fault: Fault) -> bool {
        match state.faults.iter().position(|f| *f == fault) {
            Some(i) => {
                state.faults.remove(i);
                true
            }
            None => false,
        }
    }
}

impl SpoolStore for MemorySpool {
    fn has_room(&self, payload_len: usize) -> bool {
        let state = self.state.borrow();
        state.used + Spool::record_bytes(payload_len) <= state.quota
    }
    fn used_bytes(&self) -> u64 {
        self.state.borrow().used
    }
    fn quota_bytes(&self) -> u64 {
        self.state.borrow().quota
    }
    fn available_bytes(&self) -> std::io::Result<u64> {
        Ok(self.state.borrow().available)
    }
    fn append_parts(&mut self, parts: &[&[u8]]) -> Result<Location, SpoolError> {
        let mut state = self.state.borrow_mut();
        let payload: Vec<u8> = parts.concat();
        if payload.len() > SPOOL_RECORD_BYTES_MAX {
            return Err(SpoolError::TooLarge(payload.len()));
        }
        let wanted = Spool::record_bytes(payload.len());
        if state.used + wanted > state.quota {
            return Err(SpoolError::Full { used: state.used, quota: state.quota, wanted });
        }
        if MemorySpool::take_fault(&mut state, Fault::Append) || wanted > state.available {
            return Err(SpoolError::Io {
                step: "write",
                path: "memory".into(),
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            });
        }
        let id = state.next_id;
        let (header, _) = record::encode(id, &[&payload]);
        let location = Location {
            id,
            segment: 1,
            offset: state.used,
            length: payload.len() as u32,
            version: record::RECORD_VERSION,
            payload_crc32c: header.payload_crc32c.get(),
        };
        state.next_id += 1;
        state.used += wanted;
        state.available -= wanted;
        state.records.push_back(MemoryRecord { location, payload, durable: false });
        Ok(location)
    }
    fn sync(&mut self) -> Result<(), SpoolError> {
        let mut state = self.state.borrow_mut();
        if MemorySpool::take_fault(&mut state, Fault::Sync) {
            return Err(SpoolError::Sync {
                path: "memory".into(),
                source: std::io::Error::from_raw_os_error(libc::EIO),
            });
        }
        state.records.iter_mut().for_each(|r| r.durable = true);
        state.syncs += 1;
        Ok(())
    }
    fn read(&self, location: &Location) -> Result<Vec<u8>, SpoolError> {
        self.state.borrow_mut().reads += 1;
        let state = self.state.borrow();
        let corrupted = |why: &str| SpoolError::Corrupted { location: *location, why: why.into() };
        if state.damaged.contains(&location.id) {
            return Err(corrupted("payload CRC mismatch (injected)"));
        }
        let record =
            state.records.iter().find(|r| r.location.id == location.id).ok_or_else(|| corrupted("released"))?;
        Ok(record.payload.clone())
    }
    fn release_through(&mut self, id: u64) -> Result<(), SpoolError> {
        let mut state = self.state.borrow_mut();
        while state.records.front().is_some_and(|r| r.location.id <= id) {
            if let Some(record) = state.records.pop_front() {
                let bytes = Spool::record_bytes(record.payload.len());
                state.used -= bytes;
                state.available += bytes;
            }
        }
        Ok(())
    }
    fn describe_quarantined(&self, _quarantined: &Path, _text: &str) -> Result<(), SpoolError> {
        Ok(())
    }
}
