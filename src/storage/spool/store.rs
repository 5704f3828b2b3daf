//! What a lane needs of its spool, as a trait: the file-backed [`Spool`]
//! in production, [`super::memory::MemorySpool`] in the lane core's table tests, property
//! test and fuzz target, where it also injects the faults a disk can
//! produce (a failed write, a failed fdatasync, a record read back damaged,
//! a filesystem running out of space) and tells the checks what is
//! durable.
//!
//! Contract (both implementations): `append_parts` writes a whole record or
//! nothing; nothing appended is durable before `sync` returned Ok; a failed
//! `sync` is final (the lane stops); `read` returns exactly the payload
//! appended, or `SpoolError::Corrupted`; `release_through(id)` only frees
//! space of records up to `id`.

use std::path::Path;

use super::{Location, Spool, SpoolError};

/// The spool operations of a lane (see the module's contract).
pub trait SpoolStore {
    /// Whether a record of `payload_len` bytes fits under the quota now.
    fn has_room(&self, payload_len: usize) -> bool;
    fn used_bytes(&self) -> u64;
    fn quota_bytes(&self) -> u64;
    /// Bytes an unprivileged writer may still allocate on the filesystem.
    fn available_bytes(&self) -> std::io::Result<u64>;
    /// Append one record whose payload is the concatenation of `parts`.
    fn append_parts(&mut self, parts: &[&[u8]]) -> Result<Location, SpoolError>;
    /// Make every appended record durable.
    fn sync(&mut self) -> Result<(), SpoolError>;
    /// Read a record's payload back, checked against its CRC.
    fn read(&self, location: &Location) -> Result<Vec<u8>, SpoolError>;
    /// Every record up to and including `id` is committed: free its space.
    fn release_through(&mut self, id: u64) -> Result<(), SpoolError>;
    /// Describe a quarantined copy of a damaged record, durably.
    fn describe_quarantined(&self, quarantined: &Path, text: &str) -> Result<(), SpoolError>;
}

impl SpoolStore for Spool {
    fn has_room(&self, payload_len: usize) -> bool {
        Spool::has_room(self, payload_len)
    }
    fn used_bytes(&self) -> u64 {
        Spool::used_bytes(self)
    }
    fn quota_bytes(&self) -> u64 {
        Spool::quota_bytes(self)
    }
    fn available_bytes(&self) -> std::io::Result<u64> {
        Spool::available_bytes(self)
    }
    fn append_parts(&mut self, parts: &[&[u8]]) -> Result<Location, SpoolError> {
        Spool::append_parts(self, parts)
    }
    fn sync(&mut self) -> Result<(), SpoolError> {
        Spool::sync(self)
    }
    fn read(&self, location: &Location) -> Result<Vec<u8>, SpoolError> {
        Spool::read(self, location)
    }
    fn release_through(&mut self, id: u64) -> Result<(), SpoolError> {
        Spool::release_through(self, id)
    }
    fn describe_quarantined(&self, quarantined: &Path, text: &str) -> Result<(), SpoolError> {
        Spool::describe_quarantined(self, quarantined, text)
    }
}
