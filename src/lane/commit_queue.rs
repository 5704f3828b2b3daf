//! The lane's commit queue (part of the sans-I/O core): the spool's
//! records from the moment a sealed batch is appended until PostgreSQL
//! committed it, and every decision about them. It never touches a
//! connection: what producers must be told comes back to the core
//! (`spooling.rs`) as values.
//!
//! Sealed batch → appended to the spool → fdatasync → `Durable` (the core
//! acknowledges it and returns its credit) → queued (`unsent`) → sent in
//! one transaction with the consecutive records that fit the batch bounds
//! → on COMMIT released (a segment is unlinked once all of it is
//! committed). Up to one transaction per commit stream is in flight: the
//! records at the front of `unsent` that are sent (`in_flight`), oldest
//! first. Invariants:
//! - records reach PostgreSQL in spool order, each inside exactly one
//!   transaction (never split), and transactions commit in spool order
//!   (the core sends a transaction's COMMIT only once the one before it
//!   committed), so per producer the watermark advances through the spool
//!   contiguously and the committed records are always a prefix of it;
//! - whether a record whose transaction's fate is unknown (connection lost,
//!   lane killed) committed is decided by the producers' watermarks, read
//!   after every (re)connect: a record every range of which the watermark
//!   covers is committed and skipped, never sent twice;
//! - a database error never drops acknowledged events: the record stays
//!   at the front and is retried with backoff;
//! - memory: spooled batches are cached up to `SPOOL_CACHE_BYTES_MAX` and
//!   read back from the spool beyond it (the next transaction's records
//!   ahead of their turn, up to `SPOOL_READ_AHEAD_BYTES_MAX` more); nothing is appended while pushed
//!   back (quota reached, the filesystem below its free-space reserve, or a
//!   write failed), and the push-back is reported once per change;
//! - disk: no record is appended that would leave less than the free-space
//!   reserve (`disk::DiskReserve`) on the spool's filesystem, so PostgreSQL
//!   on the same filesystem can always commit what the spool holds.

use std::collections::{HashMap, HashSet, VecDeque};

use super::batch::{Batch, ProducerRange, Quarantined, Release};
use super::error::LaneFatal;
use crate::base::failpoint;
use crate::base::limits::{
    DISK_RESERVE_RECHECK_MS, DISK_RESERVE_RESUME_BYTES, PG_RECONNECT_BACKOFF_MAX_MS, PG_RECONNECT_BACKOFF_MIN_MS,
    SPOOL_CACHE_BYTES_MAX, SPOOL_READ_AHEAD_BYTES_MAX, SPOOL_RETRY_INTERVAL_MS, TRANSACTION_BYTES_MAX,
    TRANSACTION_ROWS_MAX, WINDOW_REFRESH_INTERVAL_MS,
};
use crate::codec::frame::{RejectCode, StatusCode};
use crate::model::matrix::Module;
use crate::storage::spool::{DamagedRecord, Location, Recovered, Recovery, Spool, SpoolError, SpoolStore};

/// A batch made durable: what the core acknowledges and releases.
#[derive(Debug)]
pub(super) struct Durable {
    pub ranges: Vec<ProducerRange>,
    pub releases: Vec<Release>,
}

/// What an append pass did.
#[derive(Debug, Default)]
pub(super) struct Appended {
    /// Batches appended and synced, in spool order.
    pub durable: Vec<Durable>,
    /// A push-back that began (or changed), or `Resumed`: to broadcast.
    pub status: Option<(StatusCode, String)>,
    /// The lane must exit (nothing of this pass is acknowledged).
    pub fatal: Option<LaneFatal>,
    /// Whether appending was tried (sealed batches, and no push-back
    /// waiting for its timer).
    pub attempted: bool,
}

/// What the commit queue wants of PostgreSQL next.
#[derive(Debug)]
pub(super) enum Next {
    /// Nothing to send.
    Idle,
    /// Read this producer's watermark (after a reconnect, before sending).
    Mark(u64),
    /// Read the module's partition window.
    Window,
    /// Send these records' batch (merged) as one transaction.
    Send(Box<Batch>, usize),
    /// Reading a record back failed: the lane must exit.
    Fatal(LaneFatal),
}

/// What a COMMIT settled.
#[derive(Debug)]
pub(super) struct Settled {
    /// Acknowledged ranges whose loss the transaction recorded.
    pub lost: Vec<ProducerRange>,
    /// The spool was full before: batches may be appended again.
    pub was_full: bool,
}

/// One spooled, acknowledged, not yet committed entry of the spool.
struct Spooled {
    /// Where the record is; None for a damaged record whose id is unknown.
    location: Option<Location>,
    ranges: Vec<ProducerRange>,
    kind: SpooledKind,
    /// When this lane process acknowledged it (recovered records: when
    /// the lane started): the commit lag counts from here.
    since_ms: u64,
}

enum SpooledKind {
    /// An intact record: its batch while it fits the cache, else read back.
    Record { cached: Option<Box<Batch>> },
    /// A damaged record whose events are known (its summary survived):
    /// committed as quarantine rows (reason 10) with the watermark advance,
    /// so the loss is recorded and later records continue; or skipped as
    /// harmless when the watermark shows it had committed before the damage.
    Lost { why: String },
}

impl Spooled {
    fn cached_bytes(&self) -> usize {
        match &self.kind {
            SpooledKind::Record { cached: Some(batch) } => batch.bytes,
            SpooledKind::Record { cached: None } | SpooledKind::Lost { .. } => 0,
        }
    }
}

pub(super) struct CommitQueue {
    module: Module,
    spool: Box<dyn SpoolStore>,
    /// Bytes that must stay free on the spool's filesystem (`lane
    /// --disk-reserve`; 0: no reserve).
    disk_reserve: u64,
    unsent: VecDeque<Spooled>,
    /// The records at the front of `unsent` sent in transactions still in
    /// flight (their fate is decided by the COMMIT, or after a reset by the
    /// watermarks).
    in_flight: usize,
    cached_bytes: usize,
    /// PostgreSQL's watermark per producer (epoch, last seq) as last read
    /// or advanced by this lane's commits.
    marks: HashMap<u64, (u64, u64)>,
    /// Producers whose watermark is still to be read before sending
    /// (None: resolution done for this connection).
    resolve: Option<Vec<u64>>,
    /// Watermark reads of the resolution sent and not yet answered: no
    /// record is sent before all are.
    marks_in_flight: usize,
    /// A read of the partition window is in flight.
    window_in_flight: bool,
    blocked: Option<StatusCode>,
    /// Why, as the STATUS frame said it (repeated to producers that
    /// connect while it holds).
    blocked_reason: String,
    retry_at_ms: u64,
    /// The module's partition window [lo, hi) in Unix µs, as last read;
    /// re-read after every (re)connect and every `WINDOW_REFRESH_INTERVAL_MS`.
    window: Option<(i64, i64)>,
    window_read_at_ms: Option<u64>,
    failure_backoff_ms: u64,
    /// Per producer, ranges of acknowledged events whose loss is recorded
    /// and that its next connection must be told of.
    loss_notices: HashMap<u64, Vec<ProducerRange>>,
    /// Damaged records whose events are unknown (quarantined on disk):
    /// their seqs show up as gaps, which are recorded in the quarantine
    /// table, not refused.
    corrupted_records: u64,
    records_committed: u64,
    /// Spooled batches read back because they did not fit the cache.
    batches_read_back: u64,
    /// The record a read-ahead could not read or parse: not tried again
    /// ahead of its turn (`next` reads it then and reports it).
    read_ahead_failed: Option<u64>,
}

impl CommitQueue {
    pub fn new(module: Module, spool: Box<dyn SpoolStore>, disk_reserve: u64) -> CommitQueue {
        CommitQueue {
            module,
            spool,
            disk_reserve,
            unsent: VecDeque::new(),
            in_flight: 0,
            cached_bytes: 0,
            marks: HashMap::new(),
            resolve: None,
            marks_in_flight: 0,
            window_in_flight: false,
            blocked: None,
            blocked_reason: String::new(),
            retry_at_ms: 0,
            window: None,
            window_read_at_ms: None,
            failure_backoff_ms: PG_RECONNECT_BACKOFF_MIN_MS,
            loss_notices: HashMap::new(),
            corrupted_records: 0,
            records_committed: 0,
            batches_read_back: 0,
            read_ahead_failed: None,
        }
    }

    /// Push-backs that clear on their own (a write error, the free-space
    /// reserve): checked again every `retry_at_ms`, not on every tick.
    fn rechecks_on_timer(&self) -> bool {
        matches!(self.blocked, Some(StatusCode::SpoolUnwritable | StatusCode::DiskReserve))
    }

    /// Why a record of `payload_len` bytes may not be appended because of
    /// the free-space reserve, if it may not.
    fn below_disk_reserve(&self, payload_len: usize) -> Option<(StatusCode, String)> {
        if self.disk_reserve == 0 {
            return None;
        }
        let wanted = Spool::record_bytes(payload_len);
        // Once pushed back at the reserve, resume only above it by a margin.
        let resume = if self.blocked == Some(StatusCode::DiskReserve) { DISK_RESERVE_RESUME_BYTES } else { 0 };
        match self.spool.available_bytes() {
            Ok(available) if crate::storage::disk::admits(self.disk_reserve + resume, available, wanted) => None,
            Ok(available) => Some((
                StatusCode::DiskReserve,
                format!(
                    "the spool's filesystem would have {} MiB free after this batch, below its reserve of {} MiB \
                     kept for PostgreSQL; credit resumes once {} MiB are free",
                    available.saturating_sub(wanted) >> 20,
                    self.disk_reserve >> 20,
                    (self.disk_reserve + DISK_RESERVE_RESUME_BYTES) >> 20
                ),
            )),
            Err(e) => {
                Some((StatusCode::SpoolUnwritable, format!("cannot read the spool filesystem's free space: {e}")))
            }
        }
    }

    /// Whether a damaged record of this producer is still undecided.
    pub fn loss_pending(&self, producer_id: u64) -> bool {
        self.unsent.iter().any(|s| {
            matches!(s.kind, SpooledKind::Lost { .. }) && s.ranges.iter().any(|r| r.producer_id == producer_id)
        })
    }

    fn covered(&self, ranges: &[ProducerRange]) -> bool {
        ranges.iter().all(|r| {
            self.marks
                .get(&r.producer_id)
                .is_some_and(|&(epoch, seq)| epoch > r.epoch || (epoch == r.epoch && seq >= r.last_seq))
        })
    }

    pub fn note_mark(&mut self, producer_id: u64, mark: (u64, u64)) {
        self.marks.insert(producer_id, mark);
    }

    /// A watermark the resolution asked for (`Next::Mark`) arrived.
    pub fn mark_read(&mut self, producer_id: u64, mark: (u64, u64)) {
        debug_assert!(self.marks_in_flight > 0, "a resolution mark arrived unasked");
        self.marks_in_flight = self.marks_in_flight.saturating_sub(1);
        self.note_mark(producer_id, mark);
    }

    /// Drop a forgotten producer's watermark (the producer table's bound).
    pub fn forget_mark(&mut self, producer_id: u64) {
        self.marks.remove(&producer_id);
    }

    /// The producers with events spooled and not yet committed (or an
    /// undecided damaged record).
    pub fn producers_unsent(&self) -> HashSet<u64> {
        self.unsent.iter().flat_map(|s| s.ranges.iter().map(|r| r.producer_id)).collect()
    }

    fn note_committed(&mut self, ranges: &[ProducerRange]) {
        advance_marks(&mut self.marks, ranges);
    }

    /// Records sent in transactions still in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    // ----- recovery -----

    /// Queue the records recovery found (and the events of damaged ones
    /// whose summary survived); returns every producer range they hold,
    /// from which the core learns each producer's acknowledged position.
    /// Each damaged record is described beside its quarantined copy.
    pub fn recover(&mut self, recovery: Recovery<Vec<ProducerRange>>, now_ms: u64) -> Vec<ProducerRange> {
        let (truncated_bytes, repaired) = (recovery.truncated_bytes, recovery.repaired);
        let mut learnt = Vec::new();
        for entry in recovery.entries {
            let (location, ranges, kind) = match entry {
                Recovered::Record(location, ranges) => (Some(location), ranges, SpooledKind::Record { cached: None }),
                Recovered::Damaged(damaged) => {
                    self.describe_damaged(&damaged);
                    let location = damaged.id.map(|id| Location {
                        id,
                        segment: damaged.segment,
                        offset: damaged.offset,
                        length: 0,
                        version: 0,
                        payload_crc32c: 0,
                    });
                    match damaged.salvaged {
                        Some(ranges) => (location, ranges, SpooledKind::Lost { why: damaged.why }),
                        None => {
                            self.corrupted_records += 1;
                            continue;
                        }
                    }
                }
            };
            learnt.extend_from_slice(&ranges);
            self.unsent.push_back(Spooled { location, ranges, kind, since_ms: now_ms });
        }
        let lost = self.unsent.iter().filter(|s| matches!(s.kind, SpooledKind::Lost { .. })).count();
        tracing::info!(
            lane = self.module.name(),
            records = self.unsent.len() - lost,
            used_bytes = self.spool.used_bytes(),
            truncated_bytes,
            repaired,
            damaged_with_known_events = lost,
            damaged_events_unknown = self.corrupted_records,
            "spool recovered: replaying into PostgreSQL"
        );
        learnt
    }

    /// Write what is known of a damaged record beside its quarantined copy
    /// (`.meta`, read by selftest): where it was and which events it held.
    fn describe_damaged(&self, damaged: &DamagedRecord<Vec<ProducerRange>>) {
        let ranges: Vec<String> = damaged
            .salvaged
            .iter()
            .flatten()
            .map(|r| format!("{}:{}:{}-{}", r.producer_id, r.epoch, r.first_seq, r.last_seq))
            .collect();
        let text = format!(
            "module = \"{}\"\nsegment = {}\noffset = {}\nbytes = {}\nid = {}\nwhy = \"{}\"\nranges = \"{}\"\n",
            self.module.name(),
            damaged.segment,
            damaged.offset,
            damaged.bytes,
            damaged.id.unwrap_or(0),
            damaged.why,
            ranges.join(",")
        );
        if let Err(e) = self.spool.describe_quarantined(&damaged.quarantined, &text) {
            tracing::error!(lane = self.module.name(), error = %e, "cannot describe a quarantined spool record");
        }
    }

    // ----- appending -----

    /// Append the sealed batches (in order) and make them durable. A batch
    /// that cannot be appended stays at the front of `sealed`.
    pub fn append(&mut self, sealed: &mut VecDeque<Batch>, now_ms: u64) -> Appended {
        let mut appended = Appended::default();
        if sealed.is_empty() || (self.rechecks_on_timer() && now_ms < self.retry_at_ms) {
            return appended;
        }
        appended.attempted = true;
        let mut spooled = Vec::new();
        let mut blocked = None;
        while let Some(batch) = sealed.front() {
            // Checked before serializing: while pushed back this runs on
            // every tick, and must not copy a whole batch each time.
            if !self.spool.has_room(batch.bytes) {
                let (used, quota) = (self.spool.used_bytes(), self.spool.quota_bytes());
                blocked = Some((StatusCode::SpoolFull, format!("spool full: {used} of {quota} bytes used")));
                break;
            }
            if let Some(shortfall) = self.below_disk_reserve(batch.bytes) {
                self.retry_at_ms = now_ms + DISK_RESERVE_RECHECK_MS;
                blocked = Some(shortfall);
                break;
            }
            match self.spool.append_parts(&batch.spool_parts().slices()) {
                Ok(location) => {
                    failpoint::check(failpoint::SPOOL_WRITE);
                    if let Some(batch) = sealed.pop_front() {
                        spooled.push((location, batch));
                    }
                }
                Err(e @ SpoolError::Full { .. }) => {
                    blocked = Some((StatusCode::SpoolFull, e.to_string()));
                    break;
                }
                Err(e @ SpoolError::Sync { .. }) => {
                    // Closing a segment failed its fdatasync: never retry and acknowledge.
                    appended.fatal = Some(LaneFatal::SpoolSync(e));
                    return appended;
                }
                Err(e) => {
                    self.retry_at_ms = now_ms + SPOOL_RETRY_INTERVAL_MS;
                    blocked = Some((StatusCode::SpoolUnwritable, e.to_string()));
                    break;
                }
            }
        }
        if !spooled.is_empty() {
            if let Err(e) = self.spool.sync() {
                // After a failed fsync the page cache cannot be trusted: exit
                // without acknowledging; the restarted lane recovers from disk.
                appended.fatal = Some(LaneFatal::SpoolSync(e));
                return appended;
            }
            failpoint::check(failpoint::SPOOL_FSYNC);
        }
        let resumed = blocked.is_none() && self.blocked.is_some();
        for (location, batch) in spooled {
            appended.durable.push(Durable { ranges: batch.ranges.clone(), releases: batch.releases.clone() });
            let ranges = batch.ranges.clone();
            let cached = (self.cached_bytes + batch.bytes <= SPOOL_CACHE_BYTES_MAX).then(|| {
                self.cached_bytes += batch.bytes;
                Box::new(batch)
            });
            let since_ms = now_ms;
            self.unsent.push_back(Spooled {
                location: Some(location),
                ranges,
                kind: SpooledKind::Record { cached },
                since_ms,
            });
        }
        match blocked {
            Some((code, reason)) if self.blocked != Some(code) => {
                tracing::warn!(
                    lane = self.module.name(),
                    ?code,
                    reason,
                    "producers pushed back: no credit until the spool accepts batches"
                );
                self.blocked = Some(code);
                self.blocked_reason.clone_from(&reason);
                appended.status = Some((code, reason));
            }
            Some(_) => {}
            None if resumed => {
                tracing::info!(lane = self.module.name(), "spool accepts batches again");
                self.blocked = None;
                appended.status = Some((StatusCode::Resumed, "spool accepts batches again".into()));
            }
            None => {}
        }
        appended
    }

    /// The push-back in force, with its reason (told to producers that
    /// connect while it holds).
    pub fn blocked(&self) -> Option<(StatusCode, &str)> {
        self.blocked.map(|code| (code, self.blocked_reason.as_str()))
    }

    // ----- sending -----

    /// A (re)connect: every unsent record is in doubt until the watermarks
    /// of its producers are read.
    pub fn connected(&mut self) {
        debug_assert_eq!(self.in_flight, 0, "a reconnect starts with nothing in flight");
        self.in_flight = 0;
        self.marks_in_flight = 0;
        self.window_in_flight = false;
        self.marks.clear();
        self.window_read_at_ms = None;
        let mut producers: Vec<u64> = self.unsent.iter().flat_map(|s| s.ranges.iter().map(|r| r.producer_id)).collect();
        producers.sort_unstable();
        producers.dedup();
        self.resolve = Some(producers);
    }

    /// The next request for PostgreSQL, and the producers a damaged record
    /// of which was just decided (their HELLOs may be answered now).
    /// `may_send`: a transaction may start (else only reads are asked for).
    pub fn next(&mut self, now_ms: u64, may_send: bool) -> (Next, Vec<u64>) {
        let mut decided = Vec::new();
        if let Some(resolve) = self.resolve.as_mut() {
            if let Some(producer_id) = resolve.pop() {
                self.marks_in_flight += 1;
                return (Next::Mark(producer_id), decided);
            }
            if self.marks_in_flight > 0 {
                // Another stream reads the last watermarks: nothing is
                // decided or sent before all of them arrived.
                return (Next::Idle, decided);
            }
            self.resolve = None;
            debug_assert_eq!(self.in_flight, 0, "records are resolved only with nothing in flight");
            while self.unsent.front().is_some_and(|s| self.covered(&s.ranges)) {
                let Some(done) = self.unsent.pop_front() else { break };
                let record = done.location.map(|l| l.id);
                match &done.kind {
                    SpooledKind::Record { .. } => {
                        tracing::info!(lane = self.module.name(), record, "spooled batch already committed: skipped")
                    }
                    SpooledKind::Lost { why } => tracing::warn!(
                        lane = self.module.name(),
                        record,
                        why,
                        ranges = %done.ranges.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                        "damaged spool record had committed before the damage: no event lost"
                    ),
                }
                self.cached_bytes -= done.cached_bytes();
                if let Some(id) = record {
                    if let Err(e) = self.spool.release_through(id) {
                        tracing::warn!(lane = self.module.name(), error = %e, "spool release failed");
                    }
                }
                if matches!(done.kind, SpooledKind::Lost { .. }) {
                    decided.extend(done.ranges.iter().map(|r| r.producer_id));
                }
            }
        }
        let waiting = self.unsent.len() > self.in_flight;
        let stale = self.window_read_at_ms.is_none_or(|at| now_ms >= at + WINDOW_REFRESH_INTERVAL_MS);
        if stale && waiting && !self.window_in_flight {
            self.window_in_flight = true;
            return (Next::Window, decided);
        }
        if !may_send || (self.window_in_flight && self.window_read_at_ms.is_none()) {
            // No transaction may start now, or the first window read after
            // a (re)connect is still on another stream.
            return (Next::Idle, decided);
        }
        loop {
            let first = self.in_flight;
            let Some(front_id) = self.unsent.get(first).map(|s| s.location.map(|l| l.id)) else {
                return (Next::Idle, decided);
            };
            match self.load_unsent(first, now_ms) {
                Ok(mut batch) => {
                    // Consecutive records share one transaction up to the transaction bounds.
                    let mut records = 1;
                    while let Some(next) = self.unsent.get(first + records) {
                        let rows: u64 = next.ranges.iter().map(|r| r.rows).sum();
                        let bytes = next.location.map_or(0, |l| l.length as usize);
                        if batch.rows + rows as usize > TRANSACTION_ROWS_MAX
                            || batch.bytes + bytes > TRANSACTION_BYTES_MAX
                        {
                            break;
                        }
                        match self.load_unsent(first + records, now_ms) {
                            Ok(next) => batch.absorb(*next),
                            Err(_) => break,
                        }
                        records += 1;
                    }
                    if self.corrupted_records > 0 {
                        // The watermarks as the transactions in flight
                        // leave them (they commit first).
                        let mut marks = self.marks.clone();
                        for spooled in self.unsent.iter().take(first) {
                            advance_marks(&mut marks, &spooled.ranges);
                        }
                        record_gaps(&marks, &mut batch);
                    }
                    if let Some((lo, hi)) = self.window {
                        match batch.quarantine_outside_window(lo, hi) {
                            Ok(0) => {}
                            Ok(moved) => tracing::warn!(
                                lane = self.module.name(),
                                moved,
                                lo,
                                hi,
                                "rows outside every partition window: quarantined, the batch commits"
                            ),
                            Err(why) => {
                                tracing::error!(lane = self.module.name(), why, "partition window check failed")
                            }
                        }
                    }
                    self.in_flight += records;
                    return (Next::Send(batch, records), decided);
                }
                Err(Unloadable::Failed(fatal)) => return (Next::Fatal(fatal), decided),
                Err(Unloadable::Corrupted(why)) => {
                    // Changed on disk since it was written: never committed,
                    // reported; its seqs become a recorded gap.
                    tracing::error!(
                        lane = self.module.name(),
                        record = front_id,
                        why,
                        "spooled batch unreadable: dropped"
                    );
                    self.corrupted_records += 1;
                    self.unsent.remove(first);
                }
            }
        }
    }

    /// Read back, ahead of its turn, every record of the next transaction
    /// (the records after those in flight, up to the transaction bounds)
    /// that is not cached: called while every commit stream is busy, so the
    /// stream that frees up starts it without waiting for the disk. The
    /// cache passes `SPOOL_CACHE_BYTES_MAX` by at most
    /// `SPOOL_READ_AHEAD_BYTES_MAX` for them. A record that cannot be read
    /// or parsed here is left as it is: `next` reads it at its turn and
    /// reports it as always (damaged: a recorded gap; failed: fatal), and is
    /// not tried again before then.
    pub fn read_ahead(&mut self, now_ms: u64) {
        if self.resolve.is_some() {
            return;
        }
        let (mut rows, mut bytes) = (0usize, 0usize);
        for index in self.in_flight..self.unsent.len() {
            let spooled = &self.unsent[index];
            let record_rows: usize = spooled.ranges.iter().map(|r| r.rows as usize).sum();
            let length = spooled.location.map_or(0, |l| l.length as usize);
            let first = index == self.in_flight;
            if !first && (rows + record_rows > TRANSACTION_ROWS_MAX || bytes + length > TRANSACTION_BYTES_MAX) {
                return;
            }
            rows += record_rows;
            bytes += length;
            let (SpooledKind::Record { cached: None }, Some(location)) = (&spooled.kind, spooled.location) else {
                continue;
            };
            if self.cached_bytes + length > SPOOL_CACHE_BYTES_MAX + SPOOL_READ_AHEAD_BYTES_MAX
                || self.read_ahead_failed == Some(location.id)
            {
                return;
            }
            let Ok(batch) = self.load_unsent(index, now_ms) else {
                self.read_ahead_failed = Some(location.id);
                return;
            };
            self.cached_bytes += batch.bytes;
            if let Some(Spooled { kind: SpooledKind::Record { cached }, .. }) = self.unsent.get_mut(index) {
                *cached = Some(batch);
            }
        }
    }

    /// The `index`-th unsent record's batch: from the cache, or read back.
    fn load_unsent(&mut self, index: usize, now_ms: u64) -> Result<Box<Batch>, Unloadable> {
        let module = self.module;
        let spooled = self.unsent.get_mut(index).ok_or(Unloadable::Corrupted("no such record".into()))?;
        let location = match &mut spooled.kind {
            SpooledKind::Lost { why } => return Ok(Box::new(Batch::lost(module, now_ms, &spooled.ranges, why))),
            SpooledKind::Record { cached } => {
                if let Some(batch) = cached.take() {
                    self.cached_bytes -= batch.bytes;
                    return Ok(batch);
                }
                spooled.location.ok_or(Unloadable::Corrupted("record without a location".into()))?
            }
        };
        let payload = match self.spool.read(&location) {
            Ok(payload) => payload,
            Err(e @ SpoolError::Corrupted { .. }) => return Err(Unloadable::Corrupted(e.to_string())),
            Err(e) => return Err(Unloadable::Failed(LaneFatal::SpoolRead(e))),
        };
        self.batches_read_back += 1;
        Batch::from_spool_payload(module, now_ms, &payload).map(Box::new).map_err(Unloadable::Corrupted)
    }

    /// The partition window read (`appliance.partition_window()`).
    pub fn window_read(&mut self, rows: &[crate::pg::Row], now_ms: u64) {
        let window = match rows {
            [row] => match row.as_slice() {
                [Some(lo), Some(hi)] => lo.parse().ok().zip(hi.parse().ok()),
                _ => None,
            },
            _ => None,
        };
        if window != self.window {
            let shown = window.map_or_else(|| "none".to_string(), |(lo, hi)| format!("[{lo}, {hi}) us"));
            tracing::info!(lane = self.module.name(), window = shown, "partition window");
        }
        self.window = window;
        self.window_read_at_ms = Some(now_ms);
        self.window_in_flight = false;
    }

    /// The transaction of the first `records` unsent records committed.
    pub fn committed(&mut self, batch: &Batch, records: usize) -> Settled {
        debug_assert!(records <= self.in_flight, "only records in flight commit");
        self.in_flight -= records.min(self.in_flight);
        self.failure_backoff_ms = PG_RECONNECT_BACKOFF_MIN_MS;
        self.note_committed(&batch.ranges);
        self.records_committed += records as u64;
        let mut last = None;
        for _ in 0..records {
            if let Some(done) = self.unsent.pop_front() {
                self.cached_bytes -= done.cached_bytes();
                last = done.location.map(|l| l.id).or(last);
            }
        }
        if let Some(id) = last {
            if let Err(e) = self.spool.release_through(id) {
                tracing::warn!(lane = self.module.name(), error = %e, "spool release failed");
            }
        }
        for range in &batch.lost {
            self.loss_notices.entry(range.producer_id).or_default().push(*range);
        }
        Settled { lost: batch.lost.clone(), was_full: self.blocked == Some(StatusCode::SpoolFull) }
    }

    /// A database request failed: the records stay at the front; returns
    /// the backoff before the next attempt (doubling up to the cap).
    pub fn failed(&mut self, why: &str) -> u64 {
        // Every transaction in flight is abandoned with its connection;
        // the watermarks decide after the reconnect.
        self.in_flight = 0;
        self.marks_in_flight = 0;
        self.window_in_flight = false;
        let backoff_ms = self.failure_backoff_ms;
        self.failure_backoff_ms = (backoff_ms * 2).min(PG_RECONNECT_BACKOFF_MAX_MS);
        tracing::error!(
            lane = self.module.name(),
            why,
            retry_in_ms = backoff_ms,
            unsent_records = self.unsent.len(),
            "database request failed: spooled batches kept, retrying"
        );
        backoff_ms
    }

    /// The loss notices a producer has not been told yet.
    pub fn take_loss_notices(&mut self, producer_id: u64) -> Vec<ProducerRange> {
        self.loss_notices.remove(&producer_id).unwrap_or_default()
    }

    /// The records waiting to be committed, and since when the oldest has
    /// been acknowledged (the commit lag counts from it).
    pub fn backlog(&self) -> (usize, Option<u64>) {
        (self.unsent.len(), self.unsent.front().map(|s| s.since_ms))
    }

    /// Spool bytes in use and the quota.
    pub fn spool_bytes(&self) -> (u64, u64) {
        (self.spool.used_bytes(), self.spool.quota_bytes())
    }

    /// Whether nothing waits to be committed.
    pub fn is_empty(&self) -> bool {
        self.unsent.is_empty()
    }

    /// When a push-back that clears on its own is checked again.
    pub fn deadline(&self) -> Option<u64> {
        self.rechecks_on_timer().then_some(self.retry_at_ms)
    }

    /// Spooled batches read back from the spool (not cached).
    pub fn batches_read_back(&self) -> u64 {
        self.batches_read_back
    }
}

/// Advance `marks` over committed `ranges`.
fn advance_marks(marks: &mut HashMap<u64, (u64, u64)>, ranges: &[ProducerRange]) {
    for r in ranges {
        let mark = marks.entry(r.producer_id).or_insert((r.epoch, 0));
        if r.epoch > mark.0 || (r.epoch == mark.0 && r.last_seq > mark.1) {
            *mark = (r.epoch, r.last_seq);
        }
    }
}

/// Why an unsent record could not be loaded.
enum Unloadable {
    /// Damaged: never committed; its seqs become a recorded gap.
    Corrupted(String),
    /// Reading failed otherwise: the lane exits (the restarted lane
    /// recovers the spool from disk; nothing is dropped).
    Failed(LaneFatal),
}

/// After corrupted records: a producer range that starts above the
/// watermark + 1 (or above the end of the producer's previous range in the
/// batch) lost the seqs between to a corrupted record. They are recorded as
/// one quarantine row each and covered by the watermark advance, so the
/// lane never refuses later batches over them.
fn record_gaps(marks: &HashMap<u64, (u64, u64)>, batch: &mut Batch) {
    let mut next: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut ranges = Vec::with_capacity(batch.ranges.len());
    for r in std::mem::take(&mut batch.ranges) {
        let expected = match next.get(&r.producer_id).or(marks.get(&r.producer_id)) {
            Some(&(epoch, seq)) if epoch == r.epoch => Some(seq + 1),
            Some(&(epoch, _)) if epoch < r.epoch => Some(1),
            _ => None,
        };
        if let Some(first) = expected.filter(|first| r.first_seq > *first) {
            let gap = ProducerRange {
                producer_id: r.producer_id,
                epoch: r.epoch,
                first_seq: first,
                last_seq: r.first_seq - 1,
                rows: 0,
            };
            tracing::error!(%gap, "acknowledged events lost to a damaged spool record: recorded in quarantine");
            batch.lost.push(gap);
            batch.quarantined.push(Quarantined {
                producer_id: gap.producer_id,
                epoch: gap.epoch,
                seq: gap.first_seq,
                table_name: super::batch::LOST_TABLE_NAME.to_string(),
                code: RejectCode::SpoolRecordCorrupted,
                reason: super::batch::lost_reason(&gap, "its events are unknown"),
                raw: Vec::new(),
            });
            ranges.push(gap);
        }
        next.insert(r.producer_id, (r.epoch, r.last_seq));
        ranges.push(r);
    }
    batch.ranges = ranges;
}
