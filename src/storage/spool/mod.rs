//! The durable spool of one lane: append-only segment files of checksummed
//! records, each record one sealed batch (hardening/DATA-PLANE.md §4.7).
//!
//! Layout: `<state>/spool/<module>/<first record id, 20 digits>.seg`, plus
//! `quarantine/` for damaged records. The record format and the scan that
//! tells a torn append from a damaged record are in [`record`]. Rules:
//! - records are appended at the end of the newest segment only; a segment
//!   is closed (fdatasync'd) when the next would pass [`SPOOL_SEGMENT_BYTES`]
//!   (or a quarter of the quota, if smaller), or when its length is not a
//!   multiple of [`SPOOL_BLOCK_BYTES`] (written by an earlier release);
//! - a record is written from an aligned buffer ([`SPOOL_WRITE_BUFFER_BYTES`])
//!   with `O_DIRECT` where the filesystem takes it: no copy into the page
//!   cache, no page-cache pages to allocate and write back. Where it does
//!   not (the open or the first write is refused), the same bytes go
//!   through the page cache; durability is the same either way (fdatasync
//!   before any acknowledgement);
//! - a new segment file, and every directory the spool creates, is made
//!   durable in its parent (fsync of the parent) before any record in it is
//!   acknowledged;
//! - nothing is acknowledged from the spool before [`Spool::sync`] returned
//!   (fdatasync of the segment);
//! - a segment is unlinked only once every record in it is committed in
//!   PostgreSQL; an unlink lost in a crash only means replaying records the
//!   watermark already covers, which replay skips;
//! - on open, only a torn append (the scan's verdict, from evidence on disk,
//!   never from a record's position alone) is truncated, and only at the
//!   tail of the newest segment; every damaged record is copied to
//!   `quarantine/`, reported to the caller with what could be salvaged from
//!   it, and never replayed; a record of a newer format than this release
//!   reads makes open fail: it is never quarantined;
//! - the total size of all segments is bounded by the quota; an append that
//!   would pass it fails with [`SpoolError::Full`] and writes nothing.

pub mod record;
/// The spool operations a lane needs, and an in-memory spool with faults.
pub mod store;
/// An in-memory spool with injectable faults (tests, fuzzing).
#[cfg(any(test, feature = "testkit"))]
pub mod memory;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zerocopy::IntoBytes;

use crate::base::limits::{SPOOL_BLOCK_BYTES, SPOOL_RECORD_BYTES_MAX, SPOOL_SEGMENT_BYTES, SPOOL_WRITE_BUFFER_BYTES};
use record::{Extent, NewerRecord, RECORD_VERSION, RECORD_VERSION_3, record_bytes};

#[cfg(any(test, feature = "testkit"))]
pub use memory::{Fault, MemoryRecord, MemorySpool};
pub use record::{HEADER_BYTES, TRAILER_BYTES};
pub use store::SpoolStore;

/// Where a record is: enough to read it back, check it, and release its segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub id: u64,
    pub segment: u64,
    /// Offset of the record's header in the segment.
    pub offset: u64,
    /// Payload bytes.
    pub length: u32,
    pub version: u16,
    /// The CRC the payload must have when read back (S12: checked on the
    /// way in, at recovery, and again on the way out).
    pub payload_crc32c: u32,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "record {} (segment {:020}.seg offset {}, {} payload bytes, format {})",
            self.id, self.segment, self.offset, self.length, self.version
        )
    }
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
    /// A record, or a payload, of a format this release does not read:
    /// written by a newer release. The lane refuses to start.
    NewerFormat {
        path: PathBuf,
        offset: u64,
        what: String,
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
            SpoolError::Corrupted { location, why } => write!(f, "spool {location} corrupted: {why}"),
            SpoolError::NewerFormat { path, offset, what } => write!(
                f,
                "spool {} holds at offset {offset} {what}, written by a newer release of applianced: \
                 refusing to start (install that release, or one that reads it; nothing was changed)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for SpoolError {}

fn io_error<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io { step, path: path.to_path_buf(), source }
}

/// Why the caller could not read an intact payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// It does not parse: treated as a damaged record.
    Damaged(String),
    /// Its format is newer than this release reads: open fails.
    Newer(String),
}

struct Segment {
    first_id: u64,
    /// Highest record id in the segment; 0 while empty.
    last_id: u64,
    path: PathBuf,
    /// Read, synced, cut back through this one (the page cache).
    file: File,
    /// Appends go through this `O_DIRECT` descriptor while the segment is
    /// the one appended to (a segment this process created).
    direct: Option<File>,
    len: u64,
}

/// The aligned buffer records are copied through on their way to disk.
struct WriteBuffer {
    bytes: Vec<u8>,
    /// Offset of the first byte aligned to `SPOOL_BLOCK_BYTES`.
    start: usize,
}

impl WriteBuffer {
    fn new() -> WriteBuffer {
        let (bytes, start) = aligned_zeroed(SPOOL_WRITE_BUFFER_BYTES);
        WriteBuffer { bytes, start }
    }

    /// `SPOOL_WRITE_BUFFER_BYTES`, aligned (`aligned_zeroed`).
    fn window(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + SPOOL_WRITE_BUFFER_BYTES]
    }

    /// Write the concatenation of `pieces`, then zeros to `padded` bytes,
    /// at `at` (one `pwrite` per buffer-full; every write starts and ends
    /// on a block boundary when `at` and `padded` do).
    fn write<'a>(
        &mut self,
        file: &File,
        mut at: u64,
        pieces: impl Iterator<Item = &'a [u8]>,
        padded: usize,
    ) -> std::io::Result<()> {
        let window = self.window();
        let mut filled = 0;
        let mut total = 0;
        for mut piece in pieces {
            total += piece.len();
            while !piece.is_empty() {
                let n = piece.len().min(window.len() - filled);
                window[filled..filled + n].copy_from_slice(&piece[..n]);
                filled += n;
                piece = &piece[n..];
                if filled == window.len() {
                    file.write_all_at(window, at)?;
                    at += filled as u64;
                    filled = 0;
                }
            }
        }
        debug_assert!(padded >= total && padded - total < SPOOL_BLOCK_BYTES, "padding is less than a block");
        let end = filled + (padded - total);
        window[filled..end].fill(0);
        if end > 0 {
            file.write_all_at(&window[..end], at)?;
        }
        Ok(())
    }
}

/// A damaged record found at open: quarantined, never replayed.
#[derive(Debug)]
pub struct DamagedRecord<T> {
    /// Its id, when an intact header or trailer names it.
    pub id: Option<u64>,
    pub segment: u64,
    pub offset: u64,
    pub bytes: u64,
    /// The copy in `quarantine/`.
    pub quarantined: PathBuf,
    /// What the caller could salvage from its payload (the events it held).
    pub salvaged: Option<T>,
    pub why: String,
}

/// One entry of what opening the spool found, in spool order.
#[derive(Debug)]
pub enum Recovered<T> {
    /// An intact record, with what the caller made of its payload.
    Record(Location, T),
    Damaged(DamagedRecord<T>),
}

/// What opening the spool found.
#[derive(Debug, Default)]
pub struct Recovery<T> {
    pub entries: Vec<Recovered<T>>,
    /// Bytes cut off the newest segment's torn tail.
    pub truncated_bytes: u64,
    /// Intact records with a damaged header or trailer (their payload checks out).
    pub repaired: u64,
}

impl<T> Recovery<T> {
    /// The damaged records, in spool order.
    pub fn damaged(&self) -> impl Iterator<Item = &DamagedRecord<T>> {
        self.entries.iter().filter_map(|e| match e {
            Recovered::Damaged(d) => Some(d),
            Recovered::Record(..) => None,
        })
    }
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
    /// Whether new segments are written with `O_DIRECT` (cleared, for the
    /// spool's life, the first time the filesystem refuses it).
    direct_io: bool,
    /// Allocated at the first append.
    buffer: Option<WriteBuffer>,
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

/// Create `path` (and missing ancestors) if it is missing, mode 2750, each
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

/// `len` zeroed bytes starting at `start` of the returned buffer, aligned
/// to `SPOOL_BLOCK_BYTES` (one block of slack; where `align_offset` could
/// not say, the `O_DIRECT` I/O on it is refused and the caller falls back
/// to the page cache).
fn aligned_zeroed(len: usize) -> (Vec<u8>, usize) {
    let bytes = vec![0u8; len + SPOOL_BLOCK_BYTES];
    let start = bytes.as_ptr().align_offset(SPOOL_BLOCK_BYTES).min(SPOOL_BLOCK_BYTES);
    (bytes, start)
}

/// Read a version-3 record's payload with `O_DIRECT`: the whole record
/// (it starts and ends on a block) into an aligned buffer, straight from
/// the disk, without page-cache pages; the payload is then moved to the
/// buffer's front. On any error the caller reads through the page cache.
fn read_direct(path: &Path, location: &Location) -> std::io::Result<Vec<u8>> {
    let file = OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path)?;
    let extent = record_bytes(location.version, location.length as usize);
    let (mut bytes, start) = aligned_zeroed(extent);
    // The newest record's padding may be cut short by the file's end: the
    // bytes up to its trailer are what must be there.
    let needed = HEADER_BYTES + location.length as usize + TRAILER_BYTES;
    let mut got = 0;
    while got < needed {
        match file.read_at(&mut bytes[start + got..start + extent], location.offset + got as u64) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let payload = start + HEADER_BYTES..start + HEADER_BYTES + location.length as usize;
    bytes.copy_within(payload, 0);
    bytes.truncate(location.length as usize);
    Ok(bytes)
}

fn fsync_dir(dir: &File, path: &Path) -> Result<(), SpoolError> {
    dir.sync_all().map_err(|source| SpoolError::Sync { path: path.to_path_buf(), source })
}

/// What `Spool::open` does with payloads: `summarize` turns an intact
/// payload into what the caller keeps per record; `salvage` makes what it
/// can of a damaged record's payload (whose own checks failed).
pub struct Readers<S, V> {
    pub summarize: S,
    pub salvage: V,
}

impl Spool {
    /// Open (creating if needed) the spool in `dir` and recover it.
    /// Runs before the lane's sandbox (it lists and reads the directory).
    pub fn open<T, S, V>(
        dir_path: &Path,
        quota: u64,
        mut readers: Readers<S, V>,
    ) -> Result<(Spool, Recovery<T>), SpoolError>
    where
        S: FnMut(&[u8]) -> Result<T, Unreadable>,
        V: FnMut(&[u8]) -> Option<T>,
    {
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
        crate::base::sys::try_lock_exclusive(&lock).map_err(|source| SpoolError::Io {
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
            direct_io: true,
            buffer: None,
        };
        let mut recovery = Recovery { entries: Vec::new(), truncated_bytes: 0, repaired: 0 };
        let count = firsts.len();
        for (index, first) in firsts.into_iter().enumerate() {
            spool.recover_segment(first, index + 1 == count, &mut readers, &mut recovery)?;
        }
        Ok((spool, recovery))
    }

    fn recover_segment<T, S, V>(
        &mut self,
        first_id: u64,
        newest: bool,
        readers: &mut Readers<S, V>,
        recovery: &mut Recovery<T>,
    ) -> Result<(), SpoolError>
    where
        S: FnMut(&[u8]) -> Result<T, Unreadable>,
        V: FnMut(&[u8]) -> Option<T>,
    {
        let path = self.dir_path.join(segment_name(first_id));
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(io_error("open", &path))?;
        let bytes = std::fs::read(&path).map_err(io_error("read", &path))?;
        let scan = record::scan(&bytes, newest, self.next_id.max(first_id)).map_err(
            |NewerRecord { offset, version, kind }| SpoolError::NewerFormat {
                path: path.clone(),
                offset: offset as u64,
                what: format!("a record of version {version}, kind {kind}"),
            },
        )?;
        let mut last_id = 0u64;
        for extent in scan.extents {
            match extent {
                Extent::Intact(r) => {
                    let location = Location {
                        id: r.id,
                        segment: first_id,
                        offset: r.offset as u64,
                        length: r.payload.len() as u32,
                        version: r.version,
                        payload_crc32c: r.payload_crc32c,
                    };
                    if let Some(note) = r.note {
                        tracing::warn!(%location, note, "spool record repaired: its payload is intact");
                        recovery.repaired += 1;
                    }
                    last_id = r.id;
                    match (readers.summarize)(&bytes[r.payload.clone()]) {
                        Ok(summary) => recovery.entries.push(Recovered::Record(location, summary)),
                        Err(Unreadable::Newer(what)) => {
                            return Err(SpoolError::NewerFormat { path, offset: r.offset as u64, what });
                        }
                        Err(Unreadable::Damaged(why)) => {
                            let extent = record::DamagedExtent {
                                offset: r.offset,
                                end: r.end,
                                id: Some(r.id),
                                payload: Some(r.payload),
                                why: "payload intact but unreadable",
                            };
                            tracing::error!(%location, why, "spool record unreadable: quarantined");
                            recovery
                                .entries
                                .push(Recovered::Damaged(self.quarantine(first_id, &bytes, extent, readers)?));
                        }
                    }
                }
                Extent::Damaged(extent) => {
                    if let Some(id) = extent.id {
                        last_id = id;
                    }
                    recovery.entries.push(Recovered::Damaged(self.quarantine(first_id, &bytes, extent, readers)?));
                }
            }
        }
        let mut len = bytes.len() as u64;
        if let Some(torn) = scan.torn {
            file.set_len(torn.offset as u64).map_err(io_error("truncate torn tail of", &path))?;
            file.sync_all().map_err(|source| SpoolError::Sync { path: path.clone(), source })?;
            recovery.truncated_bytes += len - torn.offset as u64;
            tracing::warn!(segment = %path.display(), bytes = len - torn.offset as u64, why = torn.why, "spool: torn append truncated (never acknowledged)");
            len = torn.offset as u64;
        }
        if last_id > 0 {
            self.next_id = self.next_id.max(last_id + 1);
        }
        self.used += len;
        self.next_id = self.next_id.max(first_id);
        self.segments.push_back(Segment { first_id, last_id, path, file, direct: None, len });
        Ok(())
    }

    /// Copy a damaged extent to `quarantine/<segment>-<offset>.bad` (once:
    /// a later open finds the copy in place) and salvage what its payload holds.
    fn quarantine<T, S, V>(
        &self,
        segment: u64,
        bytes: &[u8],
        extent: record::DamagedExtent,
        readers: &mut Readers<S, V>,
    ) -> Result<DamagedRecord<T>, SpoolError>
    where
        V: FnMut(&[u8]) -> Option<T>,
    {
        let data = &bytes[extent.offset..extent.end];
        let path = self.quarantine_dir.join(format!("{segment:020}-{:012}.bad", extent.offset));
        let present = std::fs::metadata(&path).is_ok_and(|m| m.len() == data.len() as u64);
        if !present {
            let mut file = File::create(&path).map_err(io_error("create", &path))?;
            file.write_all(data).map_err(io_error("write", &path))?;
            file.sync_all().map_err(io_error("fsync", &path))?;
            fsync_dir(&File::open(&self.quarantine_dir).map_err(io_error("open", &self.quarantine_dir))?, &path)?;
        }
        let salvaged = extent.payload.as_ref().and_then(|p| (readers.salvage)(&bytes[p.clone()]));
        tracing::error!(
            file = %path.display(),
            segment,
            offset = extent.offset,
            bytes = data.len(),
            id = extent.id,
            why = extent.why,
            salvaged = salvaged.is_some(),
            "spool: damaged record quarantined, never replayed"
        );
        Ok(DamagedRecord {
            id: extent.id,
            segment,
            offset: extent.offset as u64,
            bytes: data.len() as u64,
            quarantined: path,
            salvaged,
            why: extent.why.to_string(),
        })
    }

    /// Write a description beside a quarantined copy (`<name>.meta`), for
    /// selftest and the operator; written once, durable.
    pub fn describe_quarantined(&self, quarantined: &Path, text: &str) -> Result<(), SpoolError> {
        let path = quarantined.with_extension("meta");
        if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
            return Ok(());
        }
        let partial = quarantined.with_extension("meta.partial");
        let mut file = File::create(&partial).map_err(io_error("create", &partial))?;
        file.write_all(text.as_bytes()).map_err(io_error("write", &partial))?;
        file.sync_all().map_err(io_error("fsync", &partial))?;
        std::fs::rename(&partial, &path).map_err(io_error("rename", &path))?;
        fsync_dir(&File::open(&self.quarantine_dir).map_err(io_error("open", &self.quarantine_dir))?, &path)
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

    /// Bytes an unprivileged writer may still allocate on the spool's
    /// filesystem (fstatfs of the open spool directory).
    pub fn available_bytes(&self) -> std::io::Result<u64> {
        crate::base::sys::fs_space(std::os::fd::AsFd::as_fd(&self.dir)).map(|space| space.available)
    }

    /// The size a record of `payload_len` bytes takes on disk.
    pub fn record_bytes(payload_len: usize) -> u64 {
        record_bytes(RECORD_VERSION, payload_len) as u64
    }

    /// Whether a record of `payload_len` bytes fits under the quota now.
    pub fn has_room(&self, payload_len: usize) -> bool {
        self.used + record_bytes(RECORD_VERSION, payload_len) as u64 <= self.quota
    }

    /// Append one record (not yet durable: call [`Spool::sync`] before
    /// acknowledging anything in it). On a failed write the segment is cut
    /// back to its previous length, so nothing partial stays behind.
    #[cfg(test)]
    pub fn append(&mut self, payload: &[u8]) -> Result<Location, SpoolError> {
        self.append_parts(&[payload])
    }

    /// Append one record whose payload is the concatenation of `parts`:
    /// header, parts, trailer and padding copied in order through the
    /// aligned write buffer, one `pwrite` per buffer-full, at the end of
    /// the newest segment (a new one when this would pass its size, or its
    /// length is off a block).
    pub fn append_parts(&mut self, parts: &[&[u8]]) -> Result<Location, SpoolError> {
        let length: usize = parts.iter().map(|p| p.len()).sum();
        if length > SPOOL_RECORD_BYTES_MAX {
            return Err(SpoolError::TooLarge(length));
        }
        let wanted = record_bytes(RECORD_VERSION, length) as u64;
        if self.used + wanted > self.quota {
            return Err(SpoolError::Full { used: self.used, quota: self.quota, wanted });
        }
        let rotate = self.segments.back().is_none_or(|s| {
            (s.len > 0 && s.len + wanted > self.segment_bytes) || s.len % SPOOL_BLOCK_BYTES as u64 != 0
        });
        if rotate {
            self.new_segment()?;
        }
        let id = self.next_id;
        let (header, trailer) = record::encode(id, parts);
        let buffer = self.buffer.get_or_insert_with(WriteBuffer::new);
        let Some(segment) = self.segments.back_mut() else {
            return Err(SpoolError::Io {
                step: "append",
                path: self.dir_path.clone(),
                source: std::io::Error::other("no segment"),
            });
        };
        let offset = segment.len;
        let pieces = || std::iter::once(header.as_bytes()).chain(parts.iter().copied()).chain([trailer.as_bytes()]);
        let mut written =
            buffer.write(segment.direct.as_ref().unwrap_or(&segment.file), offset, pieces(), wanted as usize);
        if let (Err(e), Some(_)) = (&written, &segment.direct)
            && e.raw_os_error() == Some(libc::EINVAL)
        {
            // Refused as misaligned for this device or filesystem: the same
            // bytes through the page cache, from now on.
            tracing::warn!(segment = %segment.path.display(), error = %e, "spool: O_DIRECT write refused; writing through the page cache");
            segment.direct = None;
            self.direct_io = false;
            written = buffer.write(&segment.file, offset, pieces(), wanted as usize);
        }
        if let Err(source) = written {
            // Leave no partial record behind (a failed cut-back is caught by
            // recovery as a torn append).
            let _ = segment.file.set_len(offset);
            return Err(SpoolError::Io { step: "write", path: segment.path.clone(), source });
        }
        segment.len += wanted;
        segment.last_id = id;
        self.used += wanted;
        self.next_id += 1;
        self.unsynced = true;
        Ok(Location {
            id,
            segment: segment.first_id,
            offset,
            length: length as u32,
            version: RECORD_VERSION,
            payload_crc32c: header.payload_crc32c.get(),
        })
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
        let direct = self.direct_io.then(|| self.open_direct(&path)).flatten();
        if let Some(closed) = self.segments.back_mut() {
            closed.direct = None;
        }
        self.segments.push_back(Segment { first_id, last_id: 0, path, file, direct, len: 0 });
        Ok(())
    }

    /// A second descriptor of a new segment, `O_DIRECT`, for its appends;
    /// none (for the spool's life, logged) where the filesystem refuses it.
    fn open_direct(&mut self, path: &Path) -> Option<File> {
        match OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path) {
            Ok(file) => Some(file),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::warn!(segment = %path.display(), error = %e, "spool: O_DIRECT refused; writing through the page cache");
                self.direct_io = false;
                None
            }
            Err(e) => {
                // Not a refusal (out of descriptors, memory): this segment
                // through the page cache, the next one tries again.
                tracing::warn!(segment = %path.display(), error = %e, "spool: no O_DIRECT descriptor for this segment; writing it through the page cache");
                None
            }
        }
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

    /// Read a record's payload back, checking it again against the CRC
    /// recorded for it.
    pub fn read(&self, location: &Location) -> Result<Vec<u8>, SpoolError> {
        let segment = self.segments.iter().find(|s| s.first_id == location.segment).ok_or_else(|| {
            SpoolError::Corrupted { location: *location, why: "segment no longer in the spool".into() }
        })?;
        // Whatever keeps the direct read from answering (a refusal, no
        // descriptor left), the page cache reads the same bytes; either way
        // the payload is checked against its CRC below.
        let direct = (self.direct_io && location.version >= RECORD_VERSION_3)
            .then(|| read_direct(&segment.path, location))
            .and_then(Result::ok);
        let payload = match direct {
            Some(payload) => Ok(payload),
            None => {
                let mut payload = vec![0u8; location.length as usize];
                segment.file.read_exact_at(&mut payload, location.offset + HEADER_BYTES as u64).map(|()| payload)
            }
        }
        .map_err(io_error("read", &segment.path))?;
        record::check_payload(&payload, location.payload_crc32c)
            .map_err(|why| SpoolError::Corrupted { location: *location, why: why.to_string() })?;
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

    /// What the tests keep per record: its payload; a damaged record's
    /// "salvage" is its payload as found.
    type Readers_ = Readers<fn(&[u8]) -> Result<Vec<u8>, Unreadable>, fn(&[u8]) -> Option<Vec<u8>>>;

    fn readers() -> Readers_ {
        Readers { summarize: |p| Ok(p.to_vec()), salvage: |p| Some(p.to_vec()) }
    }

    fn payload(i: u8) -> Vec<u8> {
        vec![i; 1000 + i as usize]
    }

    fn open(dir: &Path) -> (Spool, Recovery<Vec<u8>>) {
        Spool::open(dir, 64 * 1024 * 1024, readers()).unwrap()
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

    fn ids(recovery: &Recovery<Vec<u8>>) -> Vec<(u64, bool)> {
        recovery
            .entries
            .iter()
            .map(|e| match e {
                Recovered::Record(l, _) => (l.id, true),
                Recovered::Damaged(d) => (d.id.unwrap_or(0), false),
            })
            .collect()
    }

    #[test]
    fn records_survive_reopen_in_order() {
        let dir = temp_dir();
        let (mut spool, recovery) = open(&dir);
        assert!(recovery.entries.is_empty());
        let locations: Vec<Location> = (0..5).map(|i| spool.append(&payload(i)).unwrap()).collect();
        spool.sync().unwrap();
        assert_eq!(spool.read(&locations[3]).unwrap(), payload(3));
        drop(spool);
        let (mut spool, recovery) = open(&dir);
        let found: Vec<Vec<u8>> = recovery
            .entries
            .iter()
            .map(|e| match e {
                Recovered::Record(_, p) => p.clone(),
                Recovered::Damaged(_) => panic!("damaged"),
            })
            .collect();
        assert_eq!(found, (0..5).map(payload).collect::<Vec<_>>());
        assert_eq!(recovery.truncated_bytes, 0);
        // Ids continue after the recovered ones.
        assert_eq!(spool.append(&payload(9)).unwrap().id, 6);
    }

    #[test]
    fn an_append_that_did_not_complete_is_truncated() {
        let dir = temp_dir();
        write_records(&dir, 3);
        let path = segment_path(&dir);
        let valid_len = std::fs::metadata(&path).unwrap().len();
        // A crash inside the next append: header, half the payload, no trailer.
        let torn = payload(7);
        let (header, trailer) = record::encode(4, &[&torn]);
        let cases: [Vec<u8>; 4] = [
            [header.as_bytes(), &torn[..torn.len() / 2]].concat(),
            header.as_bytes()[..10].to_vec(),
            [header.as_bytes(), &torn[..]].concat(),
            [header.as_bytes(), &torn[..], &trailer.as_bytes()[..5]].concat(),
        ];
        for bytes in cases {
            let file = OpenOptions::new().append(true).open(&path).unwrap();
            (&file).write_all(&bytes).unwrap();
            drop(file);
            let (_, recovery) = open(&dir);
            assert_eq!(ids(&recovery), vec![(1, true), (2, true), (3, true)]);
            assert_eq!(recovery.truncated_bytes, bytes.len() as u64);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), valid_len);
        }
    }

    /// The case: the newest record, complete and fdatasync'd, with
    /// one bit flipped in its payload, is damaged, never a torn append.
    #[test]
    fn a_damaged_newest_record_is_reported_not_truncated() {
        let dir = temp_dir();
        let locations = write_records(&dir, 3);
        let path = segment_path(&dir);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[locations[2].offset as usize + HEADER_BYTES + 17] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let (spool, recovery) = open(&dir);
        assert_eq!(ids(&recovery), vec![(1, true), (2, true), (3, false)]);
        assert_eq!(recovery.truncated_bytes, 0);
        let damaged = recovery.damaged().next().unwrap();
        assert_eq!(damaged.bytes as usize, record_bytes(RECORD_VERSION, payload(2).len()));
        assert!(damaged.salvaged.is_some(), "the payload's extent is known, so it is offered for salvage");
        assert!(std::fs::metadata(&damaged.quarantined).is_ok());
        assert!(matches!(spool.read(&locations[2]), Err(SpoolError::Corrupted { .. })));
        // Reopening finds the same, and keeps the one quarantined copy.
        drop(spool);
        let (_, again) = open(&dir);
        assert_eq!(ids(&again), vec![(1, true), (2, true), (3, false)]);
        assert_eq!(std::fs::read_dir(dir.join("quarantine")).unwrap().count(), 1);
    }

    #[test]
    fn a_damaged_header_or_trailer_leaves_an_intact_payload_readable() {
        let dir = temp_dir();
        let locations = write_records(&dir, 3);
        let path = segment_path(&dir);
        let clean = std::fs::read(&path).unwrap();
        let header_at = locations[1].offset as usize;
        let trailer_at = header_at + HEADER_BYTES + payload(1).len();
        for flip in [header_at + 3, header_at + 20, trailer_at + 1, trailer_at + 22] {
            let mut bytes = clean.clone();
            bytes[flip] ^= 0x80;
            std::fs::write(&path, &bytes).unwrap();
            let (_, recovery) = open(&dir);
            assert_eq!(ids(&recovery), vec![(1, true), (2, true), (3, true)], "flip at {flip}");
            assert_eq!(recovery.repaired, 1);
        }
    }

    #[test]
    fn bytes_that_are_no_record_in_the_middle_are_quarantined_and_the_rest_survives() {
        let dir = temp_dir();
        let locations = write_records(&dir, 4);
        let path = segment_path(&dir);
        let mut bytes = std::fs::read(&path).unwrap();
        // Header and trailer of record 3 destroyed: nothing says where it ends.
        let third = locations[2].offset as usize;
        bytes[third..third + 4].copy_from_slice(b"XXXX");
        let trailer = third + HEADER_BYTES + payload(2).len();
        bytes[trailer..trailer + 4].copy_from_slice(b"YYYY");
        std::fs::write(&path, &bytes).unwrap();
        let (_, recovery) = open(&dir);
        assert_eq!(ids(&recovery), vec![(1, true), (2, true), (0, false), (4, true)]);
    }

    #[test]
    fn a_record_of_a_newer_format_refuses_the_open_and_changes_nothing() {
        let dir = temp_dir();
        write_records(&dir, 2);
        let path = segment_path(&dir);
        let before = std::fs::read(&path).unwrap();
        let mut header = record::encode(3, &[b"future"]).0;
        header.version = zerocopy::big_endian::U16::new(RECORD_VERSION + 1);
        header.header_crc32c = zerocopy::big_endian::U32::new(crc32c::crc32c(&header.as_bytes()[..HEADER_BYTES - 4]));
        let mut bytes = before.clone();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(b"future");
        std::fs::write(&path, &bytes).unwrap();
        let error = Spool::open(&dir, 64 * 1024 * 1024, readers()).err().expect("refused");
        assert!(matches!(error, SpoolError::NewerFormat { .. }), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing truncated or quarantined");
        assert_eq!(std::fs::read_dir(dir.join("quarantine")).unwrap().count(), 0);
        // A payload of a newer format (the caller's verdict) refuses the open too.
        std::fs::write(&path, &before).unwrap();
        let newer = Readers {
            summarize: |_: &[u8]| Err::<Vec<u8>, _>(Unreadable::Newer("a batch payload of format 9".into())),
            salvage: |_: &[u8]| None,
        };
        assert!(matches!(Spool::open(&dir, 64 * 1024 * 1024, newer), Err(SpoolError::NewerFormat { .. })));
    }

    /// Version-1 records (no trailer, earlier releases) are still read, and
    /// keep their rule: a bad last record of the newest segment is torn.
    #[test]
    fn version_1_records_are_read_with_their_own_rule() {
        let dir = temp_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let mut bytes = Vec::new();
        for (id, body) in [(1u64, payload(1)), (2, payload(2))] {
            let mut header = record::encode(id, &[&body]).0;
            header.version = zerocopy::big_endian::U16::new(record::RECORD_VERSION_1);
            header.header_crc32c =
                zerocopy::big_endian::U32::new(crc32c::crc32c(&header.as_bytes()[..HEADER_BYTES - 4]));
            bytes.extend_from_slice(header.as_bytes());
            bytes.extend_from_slice(&body);
        }
        let path = dir.join(segment_name(1));
        std::fs::write(&path, &bytes).unwrap();
        let (mut spool, recovery) = open(&dir);
        assert_eq!(ids(&recovery), vec![(1, true), (2, true)]);
        // This release appends its own records in a new segment (this one
        // ends off a block boundary).
        let location = spool.append(&payload(3)).unwrap();
        assert_eq!((location.id, location.version, location.segment), (3, RECORD_VERSION, 3));
        spool.sync().unwrap();
        drop(spool);
        let mut bytes = std::fs::read(&path).unwrap();
        // Damage the last version-1 record: in a closed segment, it is damaged.
        bytes[HEADER_BYTES + payload(1).len() + HEADER_BYTES + 5] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (_, recovery) = open(&dir);
        assert_eq!(ids(&recovery), vec![(1, true), (2, false), (3, true)]);
    }

    /// Version-2 records (trailer, no padding: the release before this one)
    /// are read, and a damaged header is found from its version-2 trailer
    /// to the record's exact end.
    #[test]
    fn version_2_records_are_read_and_their_trailers_still_count() {
        let dir = temp_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let mut bytes = Vec::new();
        for id in 1..=3u64 {
            let body = payload(id as u8);
            let (header, trailer) = record::encode_version(record::RECORD_VERSION_2, id, &[&body]);
            bytes.extend_from_slice(header.as_bytes());
            bytes.extend_from_slice(&body);
            bytes.extend_from_slice(trailer.as_bytes());
        }
        let path = dir.join(segment_name(1));
        std::fs::write(&path, &bytes).unwrap();
        let (mut spool, recovery) = open(&dir);
        assert_eq!(ids(&recovery), vec![(1, true), (2, true), (3, true)]);
        assert_eq!(spool.append(&payload(4)).unwrap().segment, 4, "appends start a segment of this release's format");
        spool.sync().unwrap();
        drop(spool);
        // Record 2's header damaged: its trailer points back to it.
        let mut damaged = bytes.clone();
        damaged[record_bytes(record::RECORD_VERSION_2, payload(1).len()) + 2] ^= 0x40;
        std::fs::write(&path, &damaged).unwrap();
        let (_, recovery) = open(&dir);
        assert_eq!(ids(&recovery), vec![(1, true), (2, true), (3, true), (4, true)]);
        assert_eq!(recovery.repaired, 1);
    }

    /// Records start and end on block boundaries, whatever their size
    /// (empty, one byte short of or past a block, larger than the write
    /// buffer), their padding is zeros, and they read back and recover;
    /// written with and without `O_DIRECT`, the files are the same bytes.
    #[test]
    fn records_start_and_end_on_block_boundaries() {
        let block = SPOOL_BLOCK_BYTES;
        let sizes = [
            0,
            1,
            block - HEADER_BYTES - TRAILER_BYTES - 1,
            block - HEADER_BYTES - TRAILER_BYTES,
            block - HEADER_BYTES - TRAILER_BYTES + 1,
            SPOOL_WRITE_BUFFER_BYTES - HEADER_BYTES,
            SPOOL_WRITE_BUFFER_BYTES + 3,
            2 * SPOOL_WRITE_BUFFER_BYTES + 5000,
        ];
        let body = |i: usize, n: usize| (0..n).map(|b| (b * 31 + i) as u8).collect::<Vec<u8>>();
        let mut files = Vec::new();
        for direct_io in [true, false] {
            let dir = temp_dir();
            let (mut spool, _) = open(&dir);
            spool.direct_io = direct_io;
            let mut locations = Vec::new();
            for (i, &n) in sizes.iter().enumerate() {
                // A payload in three parts, as a batch's are.
                let b = body(i, n);
                let (x, y) = (n / 3, 2 * n / 3);
                let location = spool.append_parts(&[&b[..x], &b[x..y], &b[y..]]).unwrap();
                assert_eq!(location.offset % block as u64, 0, "record of {n} bytes starts on a block");
                locations.push(location);
            }
            spool.sync().unwrap();
            // Where the test's filesystem refuses O_DIRECT, the spool fell
            // back to the page cache (and both files must still match).
            let refused = OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(segment_path(&dir)).is_err();
            assert_eq!(spool.segments.back().unwrap().direct.is_some(), direct_io && !refused);
            for (i, location) in locations.iter().enumerate() {
                assert_eq!(spool.read(location).unwrap(), body(i, sizes[i]));
            }
            drop(spool);
            let path = segment_path(&dir);
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(bytes.len() % block, 0, "the segment ends on a block");
            for (i, location) in locations.iter().enumerate() {
                let trailer_end = location.offset as usize + HEADER_BYTES + sizes[i] + TRAILER_BYTES;
                let end = location.offset as usize + record_bytes(RECORD_VERSION, sizes[i]);
                assert!(bytes[trailer_end..end].iter().all(|b| *b == 0), "padding of record {i} is zeros");
            }
            let (_, recovery) = open(&dir);
            assert_eq!(ids(&recovery), (1..=sizes.len() as u64).map(|id| (id, true)).collect::<Vec<_>>());
            files.push(bytes);
        }
        assert!(files[0] == files[1], "O_DIRECT and the page cache write the same bytes");
    }

    /// The newest record's trailer is on disk but its padding is cut short
    /// (the file ends inside it): complete, so intact, nothing truncated;
    /// the next append starts a new segment.
    #[test]
    fn a_record_whose_padding_is_cut_short_is_intact() {
        let dir = temp_dir();
        let locations = write_records(&dir, 3);
        let path = segment_path(&dir);
        let trailer_end = locations[2].offset + (HEADER_BYTES + payload(2).len() + TRAILER_BYTES) as u64;
        let full = std::fs::metadata(&path).unwrap().len();
        for cut in [trailer_end, trailer_end + 1, full - 1] {
            OpenOptions::new().write(true).open(&path).unwrap().set_len(cut).unwrap();
            let (mut spool, recovery) = open(&dir);
            assert_eq!(ids(&recovery), vec![(1, true), (2, true), (3, true)], "cut at {cut}");
            assert_eq!((recovery.truncated_bytes, recovery.repaired), (0, 0), "cut at {cut}");
            assert_eq!(spool.read(&locations[2]).unwrap(), payload(2));
            if cut == full - 1 {
                let next = spool.append(&payload(4)).unwrap();
                assert_eq!((next.id, next.segment, next.offset), (4, 4, 0));
            }
        }
    }

    #[test]
    fn the_quota_refuses_appends_and_release_frees_space() {
        let dir = temp_dir();
        let quota = 40 * 1024;
        let (mut spool, _) = Spool::open(&dir, quota, readers()).unwrap();
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
        assert!(Spool::open(&dir, 64 * 1024 * 1024, readers()).is_err(), "a second opener got the spool");
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
