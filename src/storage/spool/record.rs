//! The spool's on-disk record format and the scan that classifies a
//! segment's bytes (sans-I/O: bytes in, a verdict per extent out; the
//! files are `mod.rs`'s business).
//!
//! A record is a 28-byte header, its payload, (from version 2) a 24-byte
//! trailer and (from version 3) zeros up to the next multiple of
//! [`SPOOL_BLOCK_BYTES`] from the record's start, all big-endian:
//!
//! ```text
//! header  magic "RESP" u32 | version u16 | kind u16 | length u32 | id u64 |
//!         payload_crc32c u32 | header_crc32c u32 (of the 24 bytes before)
//! payload length bytes (a sealed batch, `lane::batch`)
//! trailer magic u32 ("RESE" in version 2, "RES3" in version 3) | length u32 |
//!         id u64 | payload_crc32c u32 | trailer_crc32c u32 (of the 20 bytes
//!         before)                                   (versions 2 and 3)
//! padding zeros, so the record ends on a block boundary  (version 3 only)
//! ```
//!
//! Version 3 records start and end on a block boundary of their segment,
//! so the spool writes them with `O_DIRECT` from an aligned buffer (no copy
//! into the page cache, `mod.rs`). The padding carries nothing and is not
//! checked; the trailer's magic names its version, so a record whose header
//! was damaged is still found to its padded end.
//!
//! Why a trailer: records are appended header first, trailer last, in
//! one process, and a record is acknowledged only after the segment's
//! `fdatasync`. So a record whose trailer is on disk was written to its end,
//! and one that was acknowledged has all its bytes on disk. The scan uses
//! that evidence instead of a record's position:
//! - **torn** (an append that never completed, so never acknowledged): the
//!   record's bytes end before its trailer does, or what follows the last
//!   complete record is not yet a full header, or is zeros; only the tail
//!   of the newest segment may be torn, and only a torn tail is truncated.
//!   A version-3 record whose trailer is on disk but whose padding is cut
//!   short (the file ends inside it) is complete: intact, nothing truncated;
//! - **damaged** (a complete record whose bytes changed): everything else
//!   that fails a check, wherever it is: reported, never replayed, its
//!   extent known from the header or, when the header is what was damaged,
//!   from a trailer that points back to it;
//! - a record whose payload checks out against its header (or, when the
//!   header is damaged, against its trailer) is intact, whatever else
//!   around it was damaged.
//!
//! Version-1 records (no trailer, written by earlier releases) keep the
//! rule those releases had: a bad last record of the newest segment is a
//! torn append.
//!
//! Invariants: record ids strictly increase through a spool; a header or
//! trailer is trusted only with its own CRC; a length is checked against
//! `SPOOL_RECORD_BYTES_MAX` before anything is sliced (S7).

use std::ops::Range;

use zerocopy::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::base::limits::{SPOOL_BLOCK_BYTES, SPOOL_RECORD_BYTES_MAX};

/// "RESP": RansomEye spool record.
pub const RECORD_MAGIC: u32 = 0x5245_5350;
/// "RESE": RansomEye spool record end (version 2).
pub const TRAILER_MAGIC: u32 = 0x5245_5345;
/// "RES3": the end of a version-3 record (padding follows).
pub const TRAILER_MAGIC_3: u32 = 0x5245_5333;
/// Records without a trailer (written by earlier releases; still read).
pub const RECORD_VERSION_1: u16 = 1;
/// Records with a trailer (written by earlier releases; still read).
pub const RECORD_VERSION_2: u16 = 2;
/// Records with a trailer, padded to a block: what this release writes.
pub const RECORD_VERSION_3: u16 = 3;
/// The version this release writes.
pub const RECORD_VERSION: u16 = RECORD_VERSION_3;
/// Record kind: one sealed batch.
pub const KIND_BATCH: u16 = 1;

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct RecordHeader {
    pub magic: U32,
    pub version: U16,
    pub kind: U16,
    /// Payload bytes after this header.
    pub length: U32,
    /// Record id: increases by one per record in the spool's life.
    pub id: U64,
    pub payload_crc32c: U32,
    /// CRC32C of the 24 header bytes before this field.
    pub header_crc32c: U32,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct RecordTrailer {
    pub magic: U32,
    /// Payload bytes: with this, the record's start is found from its end.
    pub length: U32,
    pub id: U64,
    pub payload_crc32c: U32,
    /// CRC32C of the 20 trailer bytes before this field.
    pub trailer_crc32c: U32,
}

pub const HEADER_BYTES: usize = size_of::<RecordHeader>();
pub const TRAILER_BYTES: usize = size_of::<RecordTrailer>();

/// Bytes a version-`version` record of `payload` bytes takes on disk.
pub fn record_bytes(version: u16, payload: usize) -> usize {
    let unpadded = trailer_end(version, payload);
    if version >= RECORD_VERSION_3 { unpadded.next_multiple_of(SPOOL_BLOCK_BYTES) } else { unpadded }
}

/// Bytes from a record's start to the end of its trailer (its end, before version 3).
fn trailer_end(version: u16, payload: usize) -> usize {
    HEADER_BYTES + payload + if version >= RECORD_VERSION_2 { TRAILER_BYTES } else { 0 }
}

/// Where the record at `offset` ends in `bytes`, padding included: a
/// version-3 record's padding may be cut short by the file's end (its last
/// write persisted up to the trailer), and then the record ends there.
fn record_end(bytes: &[u8], offset: usize, version: u16, payload: usize) -> usize {
    (offset + record_bytes(version, payload)).min(bytes.len())
}

/// The trailer magic of a record version.
fn trailer_magic(version: u16) -> u32 {
    if version >= RECORD_VERSION_3 { TRAILER_MAGIC_3 } else { TRAILER_MAGIC }
}

/// The header of record `id` (this release's version) whose payload is the
/// concatenation of `parts`, and its trailer.
pub fn encode(id: u64, parts: &[&[u8]]) -> (RecordHeader, RecordTrailer) {
    encode_version(RECORD_VERSION, id, parts)
}

/// The header and trailer of a record of `version` (2 or 3; tests write the
/// versions earlier releases wrote with it).
pub fn encode_version(version: u16, id: u64, parts: &[&[u8]]) -> (RecordHeader, RecordTrailer) {
    debug_assert!((RECORD_VERSION_2..=RECORD_VERSION).contains(&version));
    let length: usize = parts.iter().map(|p| p.len()).sum();
    let crc = parts.iter().fold(0, |crc, part| crc32c::crc32c_append(crc, part));
    let mut header = RecordHeader {
        magic: U32::new(RECORD_MAGIC),
        version: U16::new(version),
        kind: U16::new(KIND_BATCH),
        length: U32::new(length as u32),
        id: U64::new(id),
        payload_crc32c: U32::new(crc),
        header_crc32c: U32::new(0),
    };
    header.header_crc32c = U32::new(crc32c::crc32c(&header.as_bytes()[..HEADER_BYTES - 4]));
    let mut trailer = RecordTrailer {
        magic: U32::new(trailer_magic(version)),
        length: U32::new(length as u32),
        id: U64::new(id),
        payload_crc32c: U32::new(crc),
        trailer_crc32c: U32::new(0),
    };
    trailer.trailer_crc32c = U32::new(crc32c::crc32c(&trailer.as_bytes()[..TRAILER_BYTES - 4]));
    (header, trailer)
}

/// What the bytes at a position say about a header.
#[derive(Debug)]
enum HeaderCheck {
    Valid(RecordHeader),
    /// A well-formed header (own CRC valid) of a version or kind this
    /// release does not know: written by a newer release.
    Newer {
        version: u16,
        kind: u16,
    },
    Invalid,
}

fn check_header(bytes: &[u8]) -> HeaderCheck {
    let Ok((header, _)) = RecordHeader::read_from_prefix(bytes) else { return HeaderCheck::Invalid };
    if header.magic.get() != RECORD_MAGIC || header.header_crc32c.get() != crc32c::crc32c(&bytes[..HEADER_BYTES - 4]) {
        return HeaderCheck::Invalid;
    }
    let (version, kind) = (header.version.get(), header.kind.get());
    if version > RECORD_VERSION || kind != KIND_BATCH {
        return HeaderCheck::Newer { version, kind };
    }
    if version < RECORD_VERSION_1 || header.length.get() as usize > SPOOL_RECORD_BYTES_MAX {
        return HeaderCheck::Invalid;
    }
    HeaderCheck::Valid(header)
}

/// A trailer with its own CRC intact, and the record version its magic names.
fn check_trailer(bytes: &[u8]) -> Option<(RecordTrailer, u16)> {
    let (trailer, _) = RecordTrailer::read_from_prefix(bytes).ok()?;
    let version =
        [RECORD_VERSION_2, RECORD_VERSION_3].into_iter().find(|v| trailer_magic(*v) == trailer.magic.get())?;
    let ok = trailer.trailer_crc32c.get() == crc32c::crc32c(&bytes[..TRAILER_BYTES - 4])
        && trailer.length.get() as usize <= SPOOL_RECORD_BYTES_MAX;
    ok.then_some((trailer, version))
}

/// A record whose payload checks out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntactRecord {
    pub id: u64,
    pub version: u16,
    /// Offset of the record (its header) in the segment.
    pub offset: usize,
    pub payload: Range<usize>,
    pub payload_crc32c: u32,
    /// Offset just past the record.
    pub end: usize,
    /// What was damaged around an intact payload (header or trailer), if anything.
    pub note: Option<&'static str>,
}

/// Bytes that were a complete record (or are no record at all) and fail a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedExtent {
    pub offset: usize,
    pub end: usize,
    /// The record's id, when a header or trailer that names it is intact.
    pub id: Option<u64>,
    /// Where its payload lies, when its extent is known.
    pub payload: Option<Range<usize>>,
    pub why: &'static str,
}

/// One extent of a segment, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Extent {
    Intact(IntactRecord),
    Damaged(DamagedExtent),
}

/// A torn append at the tail of the newest segment: truncate from `offset`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Torn {
    pub offset: usize,
    pub why: &'static str,
}

/// The verdict on one segment's bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    pub extents: Vec<Extent>,
    pub torn: Option<Torn>,
}

/// A record this release cannot read: the lane must refuse to start, not
/// quarantine it (an upgrade's spool must survive a downgrade's refusal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewerRecord {
    pub offset: usize,
    pub version: u16,
    pub kind: u16,
}

/// Classify every byte of a segment. `newest`: whether appends may have
/// been cut short at its end. `first_id`: the smallest id a record here
/// may have (ids strictly increase).
pub fn scan(bytes: &[u8], newest: bool, first_id: u64) -> Result<Scan, NewerRecord> {
    let mut scan = Scan::default();
    let mut offset = 0;
    let mut min_id = first_id;
    while offset < bytes.len() {
        let step = match check_header(&bytes[offset..]) {
            HeaderCheck::Newer { version, kind } => return Err(NewerRecord { offset, version, kind }),
            HeaderCheck::Valid(header) if header.id.get() >= min_id => at_header(bytes, offset, &header, newest),
            HeaderCheck::Valid(_) | HeaderCheck::Invalid => no_header_at(bytes, offset, newest, min_id),
        };
        match step {
            Step::Extent(extent) => {
                let (end, id) = match &extent {
                    Extent::Intact(r) => (r.end, Some(r.id)),
                    Extent::Damaged(d) => (d.end, d.id),
                };
                if let Some(id) = id {
                    min_id = id + 1;
                }
                debug_assert!(end > offset, "the scan always advances");
                offset = end;
                scan.extents.push(extent);
            }
            Step::Torn(torn) => {
                scan.torn = Some(torn);
                break;
            }
        }
    }
    Ok(scan)
}

enum Step {
    Extent(Extent),
    Torn(Torn),
}

/// A valid header at `offset`.
fn at_header(bytes: &[u8], offset: usize, header: &RecordHeader, newest: bool) -> Step {
    let version = header.version.get();
    let length = header.length.get() as usize;
    let payload = offset + HEADER_BYTES..offset + HEADER_BYTES + length;
    let end = offset + trailer_end(version, length);
    let id = header.id.get();
    if end > bytes.len() {
        return if newest {
            Step::Torn(Torn { offset, why: "the last append ends before its record does" })
        } else {
            damaged(offset, bytes.len(), Some(id), None, "a closed segment ends inside a record")
        };
    }
    let payload_ok = crc32c::crc32c(&bytes[payload.clone()]) == header.payload_crc32c.get();
    let trailer_bytes = &bytes[payload.end..end];
    let trailer = check_trailer(trailer_bytes).filter(|(t, trailer_version)| {
        *trailer_version == version
            && t.id.get() == id
            && t.length.get() as usize == length
            && t.payload_crc32c == header.payload_crc32c
    });
    // Past the trailer, the padding.
    let end = record_end(bytes, offset, version, length);
    let intact = |note| {
        Step::Extent(Extent::Intact(IntactRecord {
            id,
            version,
            offset,
            payload: payload.clone(),
            payload_crc32c: header.payload_crc32c.get(),
            end,
            note,
        }))
    };
    match version {
        RECORD_VERSION_1 if payload_ok => intact(None),
        RECORD_VERSION_1 if newest && end == bytes.len() => {
            Step::Torn(Torn { offset, why: "a version-1 last record with a bad payload (no trailer to tell)" })
        }
        RECORD_VERSION_1 => damaged(offset, end, Some(id), Some(payload), "payload checksum mismatch"),
        _ if payload_ok && trailer.is_some() => intact(None),
        _ if payload_ok => intact(Some("trailer damaged; the payload matches its header")),
        _ if trailer.is_some() => {
            damaged(offset, end, Some(id), Some(payload), "payload checksum mismatch in a complete record")
        }
        _ if newest && end == bytes.len() && bytes[payload.end..].iter().all(|b| *b == 0) => {
            Step::Torn(Torn { offset, why: "the last append's payload and trailer were never written" })
        }
        _ => damaged(offset, end, Some(id), Some(payload), "payload and trailer both fail their checks"),
    }
}

fn damaged(offset: usize, end: usize, id: Option<u64>, payload: Option<Range<usize>>, why: &'static str) -> Step {
    Step::Extent(Extent::Damaged(DamagedExtent { offset, end, id, payload, why }))
}

/// No usable header at `offset`: a record whose header was damaged (found
/// by a trailer that points back here), bytes that are no record up to the
/// next header, or the tail.
fn no_header_at(bytes: &[u8], offset: usize, newest: bool, min_id: u64) -> Step {
    // The trailer first, over the longest record there can be: a header
    // found first might lie inside this record's own payload.
    let limit = bytes.len().min(offset + record_bytes(RECORD_VERSION, SPOOL_RECORD_BYTES_MAX));
    if let Some((trailer_at, trailer, version)) = trailer_pointing_to(bytes, offset, limit, min_id) {
        let payload = offset + HEADER_BYTES..trailer_at;
        let end = record_end(bytes, offset, version, payload.len());
        let id = trailer.id.get();
        return if crc32c::crc32c(&bytes[payload.clone()]) == trailer.payload_crc32c.get() {
            Step::Extent(Extent::Intact(IntactRecord {
                id,
                version,
                offset,
                payload,
                payload_crc32c: trailer.payload_crc32c.get(),
                end,
                note: Some("header damaged; the payload matches its trailer"),
            }))
        } else {
            damaged(offset, end, Some(id), Some(payload), "header and payload damaged in a complete record")
        };
    }
    match next_header(bytes, offset + 1, min_id) {
        Some(next) => damaged(offset, next, None, None, "bytes that are no record"),
        None if newest && incomplete_tail(&bytes[offset..]) => {
            Step::Torn(Torn { offset, why: "the last append did not complete its header" })
        }
        None => damaged(offset, bytes.len(), None, None, "bytes that are no record, up to the segment's end"),
    }
}

/// The first offset at or after `from` holding a valid header of an id at least `min_id`.
fn next_header(bytes: &[u8], from: usize, min_id: u64) -> Option<usize> {
    (from..bytes.len().saturating_sub(HEADER_BYTES - 1)).find(|&at| {
        matches!(check_header(&bytes[at..]), HeaderCheck::Valid(h) if h.id.get() >= min_id)
            || matches!(check_header(&bytes[at..]), HeaderCheck::Newer { .. })
    })
}

/// A valid trailer inside `offset..limit` whose record starts exactly at
/// `offset`, and the record version its magic names.
fn trailer_pointing_to(bytes: &[u8], offset: usize, limit: usize, min_id: u64) -> Option<(usize, RecordTrailer, u16)> {
    let first = offset + HEADER_BYTES;
    let last = limit.checked_sub(TRAILER_BYTES)?;
    (first..=last).find_map(|at| {
        let (trailer, version) = check_trailer(&bytes[at..])?;
        let starts_here = at.checked_sub(trailer.length.get() as usize) == Some(first);
        (starts_here && trailer.id.get() >= min_id).then_some((at, trailer, version))
    })
}

/// What an append cut short leaves after the last complete record: less
/// than a header, or zeros (pages never written before a crash).
fn incomplete_tail(rest: &[u8]) -> bool {
    rest.len() < HEADER_BYTES || rest.iter().all(|b| *b == 0)
}

/// Check a record read back at a known location: its payload against the
/// CRC recovery (or the append) recorded.
pub fn check_payload(payload: &[u8], payload_crc32c: u32) -> Result<(), &'static str> {
    if crc32c::crc32c(payload) == payload_crc32c { Ok(()) } else { Err("payload checksum mismatch on read-back") }
}
