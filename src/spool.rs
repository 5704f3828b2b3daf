//! The durable spool of one lane: append-only segment files of checksummed
//! records, each record one sealed batch (hardening/DATA-PLANE.md Step 5).
//!
//! Layout: `<state>/spool/<module>/<first record id, 20 digits>.seg`, plus
//! `quarantine/` for records found corrupted. A record is a 28-byte
//! big-endian header ([`RecordHeader`]) and its payload. Rules:
//! - records are appended at the end of the newest segment only; a segment
//!   is closed (fdatasync'd) when the next would pass [`SPOOL_SEGMENT_BYTES`]
//!   (or a quarter of the quota, if smaller);
//! - a new segment file is made durable in its directory (fsync of the
//!   directory) before any record in it is acknowledged;
//! - nothing is acknowledged from the spool before [`Spool::sync`] returned
//!   (fdatasync of the segment);
//! - a segment is unlinked only once every record in it is committed in
//!   PostgreSQL; an unlink lost in a crash only means replaying records the
//!   watermark already covers, which replay skips;
//! - on open, a torn tail of the newest segment (a crash inside an append,
//!   never acknowledged) is truncated to the last valid record; any other
//!   invalid bytes are a corrupted record: copied to `quarantine/`, reported,
//!   and never replayed;
//! - the total size of all segments is bounded by the quota; an append that
//!   would pass it fails with [`SpoolError::Full`] and writes nothing.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zerocopy::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::limits::{SPOOL_RECORD_BYTES_MAX, SPOOL_SEGMENT_BYTES};

/// "RESP": RansomEye spool record.
pub const RECORD_MAGIC: u32 = 0x5245_5350;
pub const RECORD_VERSION: u16 = 1;
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

pub const HEADER_BYTES: usize = size_of::<RecordHeader>();

/// Where a record is: enough to read it back and to release its segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub id: u64,
    pub segment: u64,
    pub offset: u64,
    pub length: u32,
}

#[derive(Debug)]
pub enum SpoolError {
    /// The quota would be exceeded: producers are pushed back.
    Full {
        used: u64,
        quota: u64,
        wanted: u64,
    },
    TooLarge(usize),
    Io {
        step: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// fdatasync/fsync failed: the page cache can no longer be trusted for
    /// this file (fatal for the lane; it must not retry and acknowledge).
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A record read back does not match what was written.
    Corrupted {
        location: Location,
        why: String,
    },
}

impl std::fmt::Display for SpoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpoolError::Full { used, quota, wanted } => {
                write!(f, "spool full: {used} of {quota} bytes used, {wanted} more wanted")
            }
            SpoolError::TooLarge(n) => write!(f, "spool record of {n} bytes exceeds {SPOOL_RECORD_BYTES_MAX}"),
            SpoolError::Io { step, path, source } => write!(f, "spool {step} {}: {source}", path.display()),
            SpoolError::Sync { path, source } => write!(f, "spool fsync {}: {source} (fatal)", path.display()),
            SpoolError::Corrupted { location, why } => write!(f, "spool record {location:?} corrupted: {why}"),
        }
    }
}

impl std::error::Error for SpoolError {}

fn io_error<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io { step, path: path.to_path_buf(), source }
}

struct Segment {
    first_id: u64,
    /// Highest record id in the segment; 0 while empty.
    last_id: u64,
    path: PathBuf,
    file: File,
    len: u64,
}

/// What opening the spool found.
#[derive(Debug, Default)]
pub struct Recovery<T> {
    /// Valid records, oldest first, with what the summarizer made of each.
    pub records: Vec<(Location, T)>,
    /// Bytes cut off the newest segment's torn tail.
    pub truncated_bytes: u64,
    /// Invalid byte runs copied to `quarantine/` and skipped.
    pub quarantined: Vec<PathBuf>,
}

pub struct Spool {
    /// Held (flock, exclusive) for the spool's life.
    _lock: File,
    dir_path: PathBuf,
    dir: File,
    quarantine_dir: PathBuf,
    segments: VecDeque<Segment>,
    quota: u64,
    /// Size at which the newest segment is closed: at most a quarter of the
    /// quota, so committed records in the newest segment never hold more
    /// than a quarter of it.
    segment_bytes: u64,
    used: u64,
    next_id: u64,
    unsynced: bool,
}

/// The header of record `id` whose payload is the concatenation of `parts`.
fn header_for(id: u64, parts: &[&[u8]]) -> RecordHeader {
    let length: usize = parts.iter().map(|p| p.len()).sum();
    let crc = parts.iter().fold(0, |crc, part| crc32c::crc32c_append(crc, part));
    let mut header = RecordHeader {
        magic: U32::new(RECORD_MAGIC),
        version: U16::new(RECORD_VERSION),
        kind: U16::new(KIND_BATCH),
        length: U32::new(length as u32),
        id: U64::new(id),
        payload_crc32c: U32::new(crc),
        header_crc32c: U32::new(0),
    };
    header.header_crc32c = U32::new(crc32c::crc32c(&header.as_bytes()[..HEADER_BYTES - 4]));
    header
}

/// A header that is internally consistent (magic, version, kind, its own CRC, a bounded length).
fn valid_header(bytes: &[u8]) -> Option<RecordHeader> {
    let (header, _) = RecordHeader::read_from_prefix(bytes).ok()?;
    let ok = header.magic.get() == RECORD_MAGIC
        && header.version.get() == RECORD_VERSION
        && header.kind.get() == KIND_BATCH
        && header.length.get() as usize <= SPOOL_RECORD_BYTES_MAX
        && header.header_crc32c.get() == crc32c::crc32c(&bytes[..HEADER_BYTES - 4]);
    ok.then_some(header)
}

fn segment_name(first_id: u64) -> String {
    format!("{first_id:020}.seg")
}

/// The segment files of a spool directory, oldest first: (first record id, path).
pub fn segment_files(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else { continue };
        if let Ok(first) = stem.parse::<u64>() {
            segments.push((first, entry.path()));
        }
    }
    segments.sort_unstable();
    Ok(segments)
}

/// Create `path` (and missing ancestors) if it is missing, mode 0750, each
/// new directory made durable in its parent (fsync of the parent) before
/// anything is written inside it. An existing directory is left as it is:
/// its entry was made durable by whoever created it (the supervisor, the
/// package, or an earlier open).
fn create_dir_durable(path: &Path) -> Result<(), SpoolError> {
    if path.is_dir() {
        return Ok(());
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    create_dir_durable(parent)?;
    match std::fs::DirBuilder::new().mode(0o750).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(SpoolError::Io { step: "create", path: path.to_path_buf(), source: e }),
    }
    // Explicitly, whatever the umask (the unit's is 0077): selftest, run
    // by the server account (the directory's group), lists it.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o2750)).map_err(io_error("chmod", path))?;
    let parent_dir = File::open(parent).map_err(io_error("open directory", parent))?;
    fsync_dir(&parent_dir, parent)
}

fn fsync_dir(dir: &File, path: &Path) -> Result<(), SpoolError> {
    dir.sync_all().map_err(|source| SpoolError::Sync { path: path.to_path_buf(), source })
}

impl Spool {
    /// Open (creating if needed) the spool in `dir` and recover it.
    /// `summarize` turns a valid payload into what the caller keeps per
    /// record; a payload it cannot read is quarantined like a bad checksum.
    /// Runs before the lane's sandbox (it lists and reads the directory).
    pub fn open<T>(
        dir_path: &Path,
        quota: u64,
        mut summarize: impl FnMut(&[u8]) -> Result<T, String>,
    ) -> Result<(Spool, Recovery<T>), SpoolError> {
        let quarantine_dir = dir_path.join("quarantine");
        create_dir_durable(dir_path)?;
        create_dir_durable(&quarantine_dir)?;
        let dir = File::open(dir_path).map_err(io_error("open directory", dir_path))?;
        // One lane per spool: a second appliance on the same state directory
        // (another --instance) must not interleave records with this one.
        let lock_path = dir_path.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_error("open", &lock_path))?;
        crate::sys::try_lock_exclusive(&lock).map_err(|source| SpoolError::Io {
            step: "lock (another lane holds this spool)",
            path: lock_path.clone(),
            source,
        })?;
        // The directory's own entries (the lock, a quarantine/ just made).
        fsync_dir(&dir, dir_path)?;
        let firsts: Vec<u64> =
            segment_files(dir_path).map_err(io_error("list", dir_path))?.into_iter().map(|(first, _)| first).collect();
        let mut spool = Spool {
            _lock: lock,
            dir_path: dir_path.to_path_buf(),
            dir,
            quarantine_dir,
            segments: VecDeque::new(),
            quota,
            segment_bytes: SPOOL_SEGMENT_BYTES.min(quota / 4).max(1),
            used: 0,
            next_id: 1,
            unsynced: false,
        };
        let mut recovery = Recovery { records: Vec::new(), truncated_bytes: 0, quarantined: Vec::new() };
        let count = firsts.len();
        for (index, first) in firsts.into_iter().enumerate() {
            spool.recover_segment(first, index + 1 == count, &mut summarize, &mut recovery)?;
        }
        Ok((spool, recovery))
    }

    fn recover_segment<T>(
        &mut self,
        first_id: u64,
        newest: bool,
        summarize: &mut impl FnMut(&[u8]) -> Result<T, String>,
        recovery: &mut Recovery<T>,
    ) -> Result<(), SpoolError> {
        let path = self.dir_path.join(segment_name(first_id));
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(io_error("open", &path))?;
        let bytes = std::fs::read(&path).map_err(io_error("read", &path))?;
        let mut offset = 0usize;
        let mut last_id = 0u64;
        let mut end = bytes.len();
        while offset < bytes.len() {
            let rest = &bytes[offset..];
            let header = valid_header(rest)
                .filter(|h| h.id.get() >= self.next_id && HEADER_BYTES + h.length.get() as usize <= rest.len());
            let Some(header) = header else {
                // Not a record here. A later valid header means corruption in
                // between; none means a torn tail (or, in an older segment,
                // corruption up to its end).
                let next = (1..rest.len()).find(|&i| {
                    valid_header(&rest[i..]).is_some_and(|h| HEADER_BYTES + h.length.get() as usize <= rest.len() - i)
                });
                match next {
                    Some(skip) => {
                        recovery.quarantined.push(self.quarantine(first_id, offset, &rest[..skip])?);
                        offset += skip;
                        continue;
                    }
                    None if newest => {
                        end = offset;
                        break;
                    }
                    None => {
                        recovery.quarantined.push(self.quarantine(first_id, offset, rest)?);
                        break;
                    }
                }
            };
            let length = header.length.get() as usize;
            let record_end = offset + HEADER_BYTES + length;
            let payload = &bytes[offset + HEADER_BYTES..record_end];
            let location =
                Location { id: header.id.get(), segment: first_id, offset: offset as u64, length: length as u32 };
            let summary = if crc32c::crc32c(payload) == header.payload_crc32c.get() {
                summarize(payload)
            } else {
                Err("payload checksum mismatch".to_string())
            };
            match summary {
                Ok(summary) => recovery.records.push((location, summary)),
                // The newest record of the newest segment with a bad payload is
                // an append torn inside its payload: never acknowledged.
                Err(_) if newest && record_end == bytes.len() => {
                    end = offset;
                    break;
                }
                Err(why) => {
                    tracing::error!(?location, why, "spool record corrupted: quarantined, not replayed");
                    recovery.quarantined.push(self.quarantine(first_id, offset, &bytes[offset..record_end])?);
                }
            }
            last_id = header.id.get();
            self.next_id = last_id + 1;
            offset = record_end;
        }
        if end < bytes.len() {
            file.set_len(end as u64).map_err(io_error("truncate torn tail of", &path))?;
            file.sync_all().map_err(io_error("fsync", &path))?;
            recovery.truncated_bytes += (bytes.len() - end) as u64;
            tracing::warn!(segment = %path.display(), bytes = bytes.len() - end, "spool: torn tail truncated");
        }
        let len = end.min(bytes.len()) as u64;
        self.used += len;
        self.next_id = self.next_id.max(first_id);
        self.segments.push_back(Segment { first_id, last_id, path, file, len });
        Ok(())
    }

    fn quarantine(&self, segment: u64, offset: usize, bytes: &[u8]) -> Result<PathBuf, SpoolError> {
        let path = self.quarantine_dir.join(format!("{segment:020}-{offset:012}.bad"));
        let mut file = File::create(&path).map_err(io_error("create", &path))?;
        file.write_all(bytes).map_err(io_error("write", &path))?;
        file.sync_all().map_err(io_error("fsync", &path))?;
        fsync_dir(&File::open(&self.quarantine_dir).map_err(io_error("open", &self.quarantine_dir))?, &path)?;
        tracing::error!(file = %path.display(), bytes = bytes.len(), "spool: corrupted bytes quarantined");
        Ok(path)
    }

    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    pub fn quota_bytes(&self) -> u64 {
        self.quota
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Whether a record of `payload_len` bytes fits under the quota now.
    pub fn has_room(&self, payload_len: usize) -> bool {
        self.used + (HEADER_BYTES + payload_len) as u64 <= self.quota
    }

    /// Append one record (not yet durable: call [`Spool::sync`] before
    /// acknowledging anything in it). On a failed write the segment is cut
    /// back to its previous length, so nothing partial stays behind.
    #[cfg(test)]
    pub fn append(&mut self, payload: &[u8]) -> Result<Location, SpoolError> {
        self.append_parts(&[payload])
    }

    /// Append one record whose payload is the concatenation of `parts`,
    /// written in place (one pwrite per part, no assembled copy).
    pub fn append_parts(&mut self, parts: &[&[u8]]) -> Result<Location, SpoolError> {
        let length: usize = parts.iter().map(|p| p.len()).sum();
        if length > SPOOL_RECORD_BYTES_MAX {
            return Err(SpoolError::TooLarge(length));
        }
        let wanted = (HEADER_BYTES + length) as u64;
        if self.used + wanted > self.quota {
            return Err(SpoolError::Full { used: self.used, quota: self.quota, wanted });
        }
        let rotate = self.segments.back().is_none_or(|s| s.len > 0 && s.len + wanted > self.segment_bytes);
        if rotate {
            self.new_segment()?;
        }
        let id = self.next_id;
        let header = header_for(id, parts);
        let Some(segment) = self.segments.back_mut() else {
            return Err(SpoolError::Io {
                step: "append",
                path: self.dir_path.clone(),
                source: std::io::Error::other("no segment"),
            });
        };
        let offset = segment.len;
        let mut at = offset;
        let mut written = Ok(());
        for part in std::iter::once(header.as_bytes()).chain(parts.iter().copied()) {
            written = segment.file.write_all_at(part, at);
            if written.is_err() {
                break;
            }
            at += part.len() as u64;
        }
        if let Err(source) = written {
            // Leave no partial record behind (a failed cut-back is caught by
            // recovery as a torn tail or a corrupted record).
            let _ = segment.file.set_len(offset);
            return Err(SpoolError::Io { step: "write", path: segment.path.clone(), source });
        }
        segment.len += wanted;
        segment.last_id = id;
        self.used += wanted;
        self.next_id += 1;
        self.unsynced = true;
        Ok(Location { id, segment: segment.first_id, offset, length: length as u32 })
    }

    fn new_segment(&mut self) -> Result<(), SpoolError> {
        self.sync()?;
        let first_id = self.next_id;
        let path = self.dir_path.join(segment_name(first_id));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_error("create", &path))?;
        // The new name must survive a crash before anything in it is acknowledged.
        fsync_dir(&self.dir, &self.dir_path)?;
        self.segments.push_back(Segment { first_id, last_id: 0, path, file, len: 0 });
        Ok(())
    }

    /// Make every appended record durable (fdatasync of the newest segment;
    /// older ones were synced when closed). An error here is fatal for the
    /// lane: after a failed fsync the page cache cannot be trusted.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if !self.unsynced {
            return Ok(());
        }
        if let Some(segment) = self.segments.back() {
            segment.file.sync_data().map_err(|source| SpoolError::Sync { path: segment.path.clone(), source })?;
        }
        self.unsynced = false;
        Ok(())
    }

    /// Read a record back, checking it again against its header.
    pub fn read(&self, location: &Location) -> Result<Vec<u8>, SpoolError> {
        let segment = self.segments.iter().find(|s| s.first_id == location.segment).ok_or_else(|| {
            SpoolError::Corrupted { location: *location, why: "segment no longer in the spool".into() }
        })?;
        let mut record = vec![0u8; HEADER_BYTES + location.length as usize];
        segment.file.read_exact_at(&mut record, location.offset).map_err(io_error("read", &segment.path))?;
        let corrupted = |why: &str| SpoolError::Corrupted { location: *location, why: why.to_string() };
        let header = valid_header(&record).ok_or_else(|| corrupted("bad header"))?;
        if header.id.get() != location.id || header.length.get() != location.length {
            return Err(corrupted("header names another record"));
        }
        let payload = record.split_off(HEADER_BYTES);
        if crc32c::crc32c(&payload) != header.payload_crc32c.get() {
            return Err(corrupted("payload checksum mismatch"));
        }
        Ok(payload)
    }

    /// Every record up to and including `id` is committed in PostgreSQL:
    /// unlink the segments that hold nothing else. The newest segment is
    /// kept (appends continue in it).
    pub fn release_through(&mut self, id: u64) -> Result<(), SpoolError> {
        while self.segments.len() > 1 {
            let Some(oldest) = self.segments.front() else { break };
            if oldest.last_id > id {
                break;
            }
            std::fs::remove_file(&oldest.path).map_err(io_error("unlink", &oldest.path))?;
            self.used -= oldest.len;
            self.segments.pop_front();
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    static NEXT: AtomicU32 = AtomicU32::new(0);

    fn temp_dir() -> PathBuf {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("spool-unit-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn keep(payload: &[u8]) -> Result<Vec<u8>, String> {
        Ok(payload.to_vec())
    }

    fn payload(i: u8) -> Vec<u8> {
        vec![i; 1000 + i as usize]
    }

    fn open(dir: &Path) -> (Spool, Recovery<Vec<u8>>) {
        Spool::open(dir, 64 * 1024 * 1024, keep).unwrap()
    }

    /// A spool in `dir` holding `count` durable records (ids 1..=count), closed.
    fn write_records(dir: &Path, count: u8) -> Vec<Location> {
        let (mut spool, _) = open(dir);
        let locations = (0..count).map(|i| spool.append(&payload(i)).unwrap()).collect();
        spool.sync().unwrap();
        locations
    }

    fn segment_path(dir: &Path) -> PathBuf {
        segment_files(dir).unwrap().pop().unwrap().1
    }

    #[test]
    fn records_survive_reopen_in_order() {
        let dir = temp_dir();
        let (mut spool, recovery) = open(&dir);
        assert!(recovery.records.is_empty());
        let locations: Vec<Location> = (0..5).map(|i| spool.append(&payload(i)).unwrap()).collect();
        spool.sync().unwrap();
        assert_eq!(spool.read(&locations[3]).unwrap(), payload(3));
        drop(spool);
        let (mut spool, recovery) = open(&dir);
        let found: Vec<Vec<u8>> = recovery.records.iter().map(|(_, p)| p.clone()).collect();
        assert_eq!(found, (0..5).map(payload).collect::<Vec<_>>());
        assert_eq!(recovery.truncated_bytes, 0);
        assert!(recovery.quarantined.is_empty());
        // Ids continue after the recovered ones.
        assert_eq!(spool.append(&payload(9)).unwrap().id, 6);
    }

    #[test]
    fn a_torn_tail_is_truncated_to_the_last_valid_record() {
        let dir = temp_dir();
        write_records(&dir, 3);
        let path = segment_path(&dir);
        let valid_len = std::fs::metadata(&path).unwrap().len();
        // A crash inside the next append: its header and half its payload.
        let torn = payload(7);
        let header = header_for(4, &[&torn]);
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(&torn[..torn.len() / 2]);
        let file = OpenOptions::new().append(true).open(&path).unwrap();
        (&file).write_all(&bytes).unwrap();
        drop(file);
        let (_, recovery) = open(&dir);
        assert_eq!(recovery.records.len(), 3);
        assert_eq!(recovery.truncated_bytes, bytes.len() as u64);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), valid_len);
        // A header cut short is a torn tail too.
        let file = OpenOptions::new().append(true).open(&path).unwrap();
        (&file).write_all(&header.as_bytes()[..10]).unwrap();
        drop(file);
        let (_, recovery) = open(&dir);
        assert_eq!((recovery.records.len(), recovery.truncated_bytes), (3, 10));
    }

    #[test]
    fn a_corrupted_record_is_quarantined_and_never_returned() {
        let dir = temp_dir();
        let locations = write_records(&dir, 4);
        let path = segment_path(&dir);
        let mut bytes = std::fs::read(&path).unwrap();
        // One bit flipped in the payload of record 2 (id 2).
        bytes[locations[1].offset as usize + HEADER_BYTES + 17] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let (spool, recovery) = open(&dir);
        let ids: Vec<u64> = recovery.records.iter().map(|(l, _)| l.id).collect();
        assert_eq!(ids, vec![1, 3, 4]);
        assert_eq!(recovery.quarantined.len(), 1);
        let kept = std::fs::read(&recovery.quarantined[0]).unwrap();
        assert_eq!(kept.len(), HEADER_BYTES + payload(1).len());
        // Reading it back directly fails too: never handed to PostgreSQL.
        assert!(matches!(spool.read(&locations[1]), Err(SpoolError::Corrupted { .. })));
        // A destroyed header in the middle: the bytes up to the next valid
        // header are quarantined, the records after it survive.
        drop(spool);
        let mut bytes = std::fs::read(&path).unwrap();
        let third = locations[2].offset as usize;
        bytes[third..third + 4].copy_from_slice(b"XXXX");
        std::fs::write(&path, &bytes).unwrap();
        let (_, recovery) = open(&dir);
        let ids: Vec<u64> = recovery.records.iter().map(|(l, _)| l.id).collect();
        assert_eq!(ids, vec![1, 4]);
        assert_eq!(recovery.quarantined.len(), 2);
    }

    #[test]
    fn a_summary_the_caller_cannot_read_is_quarantined() {
        let dir = temp_dir();
        write_records(&dir, 3);
        let picky = |p: &[u8]| if p[0] == 1 { Err("unreadable".to_string()) } else { Ok(p.len()) };
        let (_, recovery) = Spool::open(&dir, 64 * 1024 * 1024, picky).unwrap();
        assert_eq!(recovery.records.iter().map(|(l, _)| l.id).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(recovery.quarantined.len(), 1);
    }

    #[test]
    fn the_quota_refuses_appends_and_release_frees_space() {
        let dir = temp_dir();
        let quota = 40 * 1024;
        let (mut spool, _) = Spool::open(&dir, quota, keep).unwrap();
        let record = vec![7u8; 4000];
        let mut last = 0;
        loop {
            match spool.append(&record) {
                Ok(location) => last = location.id,
                Err(SpoolError::Full { used, quota: q, .. }) => {
                    assert!(used <= q);
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        spool.sync().unwrap();
        assert!(spool.used_bytes() <= quota);
        assert!(spool.segment_count() > 1, "segments are a quarter of the quota");
        spool.release_through(last).unwrap();
        assert_eq!(spool.segment_count(), 1, "only the newest segment is kept");
        assert!(spool.has_room(record.len()));
        spool.append(&record).unwrap();
    }

    #[test]
    fn a_spool_is_opened_by_one_lane_at_a_time() {
        let dir = temp_dir();
        let (first, _) = open(&dir);
        assert!(Spool::open(&dir, 64 * 1024 * 1024, keep).is_err(), "a second opener got the spool");
        drop(first);
        open(&dir);
    }

    #[test]
    fn a_record_above_the_limit_is_refused() {
        let dir = temp_dir();
        let (mut spool, _) = open(&dir);
        let huge = vec![0u8; SPOOL_RECORD_BYTES_MAX + 1];
        assert!(matches!(spool.append(&huge), Err(SpoolError::TooLarge(_))));
    }
}
