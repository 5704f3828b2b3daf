//! The lane's spool (part of the sans-I/O core, with the spool's
//! synchronous file I/O): the acknowledgement point is the spool's
//! fdatasync, and PostgreSQL is fed from the spool in record order.
//!
//! Sealed batch → appended to the spool → fdatasync → ACK and credit →
//! queued (`unsent`) → sent in one transaction with the consecutive
//! records that fit the batch bounds → on COMMIT the records are released
//! (a segment is unlinked once all of it is committed).
//! Invariants:
//! - records reach PostgreSQL in spool order, each inside exactly one
//!   transaction (never split), so per producer the watermark advances
//!   through the spool contiguously;
//! - whether a record whose transaction's fate is unknown (connection lost,
//!   lane killed) committed is decided by the producers' watermarks, read
//!   after every (re)connect: a record every range of which the watermark
//!   covers is committed and skipped, never sent twice;
//! - a database error never drops acknowledged events: the record stays
//!   at the front and is retried with backoff;
//! - memory: spooled batches are cached up to `SPOOL_CACHE_BYTES_MAX` and
//!   read back from disk beyond it; producers get no credit while a sealed
//!   batch cannot be spooled (quota reached, the filesystem below its
//!   free-space reserve, or a write failed), and a STATUS frame says why;
//! - disk: no record is appended that would leave less than the free-space
//!   reserve (`disk::DiskReserve`) on the spool's filesystem, so PostgreSQL
//!   on the same filesystem can always commit what the spool holds.

use std::collections::{HashMap, VecDeque};

use super::batch::{Batch, ProducerRange, Quarantined};
use super::conns::ConnState;
use super::core::{LaneCore, LaneFatal, PgState, Request, SendTarget};
use crate::base::failpoint;
use crate::base::limits::{
    DISK_RESERVE_RECHECK_MS, DISK_RESERVE_RESUME_BYTES, PG_RECONNECT_BACKOFF_MAX_MS, PG_RECONNECT_BACKOFF_MIN_MS,
    SPOOL_CACHE_BYTES_MAX, SPOOL_RETRY_INTERVAL_MS, TRANSACTION_BYTES_MAX, TRANSACTION_ROWS_MAX,
    WINDOW_REFRESH_INTERVAL_MS,
};
use crate::codec::frame::{self, RejectCode, StatusCode};
use crate::pg::pipeline;
use crate::storage::spool::{DamagedRecord, Location, Recovered, Recovery, Spool, SpoolError, SpoolStore};

/// One spooled, acknowledged, not yet committed entry of the spool.
struct Spooled {
    /// Where the record is; None for a damaged record whose id is unknown.
    location: Option<Location>,
    ranges: Vec<ProducerRange>,
    kind: SpooledKind,
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

pub struct SpoolLane {
    pub spool: Box<dyn SpoolStore>,
    /// Bytes that must stay free on the spool's filesystem (`lane
    /// --disk-reserve`; 0: no reserve).
    disk_reserve: u64,
    unsent: VecDeque<Spooled>,
    cached_bytes: usize,
    /// PostgreSQL's watermark per producer (epoch, last seq) as last read
    /// or advanced by this lane's commits.
    marks: HashMap<u64, (u64, u64)>,
    /// Producers whose watermark is still to be read before sending
    /// (None: resolution done for this connection).
    resolve: Option<Vec<u64>>,
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
    pub corrupted_records: u64,
    pub records_committed: u64,
}

impl SpoolLane {
    pub fn new(spool: Box<dyn SpoolStore>, disk_reserve: u64) -> SpoolLane {
        SpoolLane {
            spool,
            disk_reserve,
            unsent: VecDeque::new(),
            cached_bytes: 0,
            marks: HashMap::new(),
            resolve: None,
            blocked: None,
            blocked_reason: String::new(),
            retry_at_ms: 0,
            window: None,
            window_read_at_ms: None,
            failure_backoff_ms: PG_RECONNECT_BACKOFF_MIN_MS,
            loss_notices: HashMap::new(),
            corrupted_records: 0,
            records_committed: 0,
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

    pub fn unsent_records(&self) -> usize {
        self.unsent.len()
    }

    /// Whether a damaged record of this producer is still undecided.
    pub(super) fn loss_pending(&self, producer_id: u64) -> bool {
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

    pub(super) fn note_mark(&mut self, producer_id: u64, mark: (u64, u64)) {
        self.marks.insert(producer_id, mark);
    }

    /// Drop a forgotten producer's watermark (the producer table's bound).
    pub(super) fn forget_mark(&mut self, producer_id: u64) {
        self.marks.remove(&producer_id);
    }

    /// The producers with events spooled and not yet committed (or an
    /// undecided damaged record).
    pub(super) fn producers_unsent(&self) -> std::collections::HashSet<u64> {
        self.unsent.iter().flat_map(|s| s.ranges.iter().map(|r| r.producer_id)).collect()
    }

    fn note_committed(&mut self, ranges: &[ProducerRange]) {
        for r in ranges {
            let mark = self.marks.entry(r.producer_id).or_insert((r.epoch, 0));
            if r.epoch > mark.0 || (r.epoch == mark.0 && r.last_seq > mark.1) {
                *mark = (r.epoch, r.last_seq);
            }
        }
    }
}

impl LaneCore {
    /// Queue the recovered records (and the events of damaged ones) and
    /// learn each producer's acknowledged position from them (called once,
    /// by `LaneCore::new`, before the sandbox: it also describes each
    /// quarantined copy for selftest).
    pub(super) fn recover_spool(&mut self, recovery: Recovery<Vec<ProducerRange>>) {
        let (truncated_bytes, repaired) = (recovery.truncated_bytes, recovery.repaired);
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
                            self.spool.corrupted_records += 1;
                            continue;
                        }
                    }
                }
            };
            for range in &ranges {
                self.producers.learn_from_spool(range, self.now.mono_ms);
            }
            self.spool.unsent.push_back(Spooled { location, ranges, kind });
        }
        let lane = &self.spool;
        let lost = lane.unsent.iter().filter(|s| matches!(s.kind, SpooledKind::Lost { .. })).count();
        tracing::info!(
            lane = self.module.name(),
            records = lane.unsent.len() - lost,
            used_bytes = lane.spool.used_bytes(),
            truncated_bytes,
            repaired,
            damaged_with_known_events = lost,
            damaged_events_unknown = lane.corrupted_records,
            "spool recovered: replaying into PostgreSQL"
        );
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
        if let Err(e) = self.spool.spool.describe_quarantined(&damaged.quarantined, &text) {
            tracing::error!(lane = self.module.name(), error = %e, "cannot describe a quarantined spool record");
        }
    }

    /// Spool the sealed batches (in order), make them durable, then
    /// acknowledge them and return their credit.
    pub(super) fn spool_sealed(&mut self) {
        let now_ms = self.now.mono_ms;
        let lane = &mut self.spool;
        if self.sealed.is_empty() || (lane.rechecks_on_timer() && now_ms < lane.retry_at_ms) {
            return;
        }
        let mut spooled = Vec::new();
        let mut blocked = None;
        while let Some(batch) = self.sealed.front() {
            // Checked before serializing: while pushed back this runs on
            // every tick, and must not copy a whole batch each time.
            if !lane.spool.has_room(batch.bytes) {
                let (used, quota) = (lane.spool.used_bytes(), lane.spool.quota_bytes());
                blocked = Some((StatusCode::SpoolFull, format!("spool full: {used} of {quota} bytes used")));
                break;
            }
            if let Some(shortfall) = lane.below_disk_reserve(batch.bytes) {
                lane.retry_at_ms = now_ms + DISK_RESERVE_RECHECK_MS;
                blocked = Some(shortfall);
                break;
            }
            match lane.spool.append_parts(&batch.spool_parts().slices()) {
                Ok(location) => {
                    failpoint::check(failpoint::SPOOL_WRITE);
                    if let Some(batch) = self.sealed.pop_front() {
                        spooled.push((location, batch));
                    }
                }
                Err(e @ SpoolError::Full { .. }) => {
                    blocked = Some((StatusCode::SpoolFull, e.to_string()));
                    break;
                }
                Err(e @ SpoolError::Sync { .. }) => {
                    // Closing a segment failed its fdatasync: never retry and acknowledge.
                    self.fatal = Some(LaneFatal::SpoolSync(e));
                    return;
                }
                Err(e) => {
                    lane.retry_at_ms = now_ms + SPOOL_RETRY_INTERVAL_MS;
                    blocked = Some((StatusCode::SpoolUnwritable, e.to_string()));
                    break;
                }
            }
        }
        if !spooled.is_empty() {
            if let Err(e) = lane.spool.sync() {
                // After a failed fsync the page cache cannot be trusted: exit
                // without acknowledging; the restarted lane recovers from disk.
                self.fatal = Some(LaneFatal::SpoolSync(e));
                return;
            }
            failpoint::check(failpoint::SPOOL_FSYNC);
        }
        let resumed = blocked.is_none() && lane.blocked.is_some();
        for (location, batch) in spooled {
            let ranges = batch.ranges.clone();
            self.ack_ranges(&ranges);
            self.release(&batch);
            let lane = &mut self.spool;
            let cached = (lane.cached_bytes + batch.bytes <= SPOOL_CACHE_BYTES_MAX).then(|| {
                lane.cached_bytes += batch.bytes;
                Box::new(batch)
            });
            lane.unsent.push_back(Spooled { location: Some(location), ranges, kind: SpooledKind::Record { cached } });
            if failpoint::fires(failpoint::ACK_SENT) {
                self.stop_after_send = Some((SendTarget::Client, failpoint::ACK_SENT));
            }
        }
        match blocked {
            Some((code, reason)) => self.push_back(code, &reason),
            None if resumed => {
                tracing::info!(lane = self.module.name(), "spool accepts batches again");
                self.spool.blocked = None;
                self.broadcast_status(StatusCode::Resumed, "spool accepts batches again");
            }
            None => {}
        }
        self.regrant_all();
    }

    /// Tell every streaming producer, once per change, why no credit comes.
    fn push_back(&mut self, code: StatusCode, reason: &str) {
        let lane = &mut self.spool;
        if lane.blocked == Some(code) {
            return;
        }
        lane.blocked = Some(code);
        lane.blocked_reason = reason.to_string();
        tracing::warn!(
            lane = self.module.name(),
            ?code,
            reason,
            "producers pushed back: no credit until the spool accepts batches"
        );
        self.broadcast_status(code, reason);
    }

    /// A producer welcomed while its lane pushes back is told why at once
    /// (the others were told when it began).
    pub(super) fn tell_push_back(&mut self, slot: usize) {
        let Some(code) = self.spool.blocked else { return };
        if let Some(conn) = self.conns.get_mut(slot) {
            frame::encode_status(&mut conn.out, code, &self.spool.blocked_reason);
        }
    }

    fn broadcast_status(&mut self, code: StatusCode, reason: &str) {
        self.conns.broadcast_status(code, reason);
    }

    /// A (re)connect: every unsent record is in doubt until the watermarks
    /// of its producers are read.
    pub(super) fn spool_connected(&mut self) {
        let lane = &mut self.spool;
        lane.marks.clear();
        lane.window_read_at_ms = None;
        let mut producers: Vec<u64> = lane.unsent.iter().flat_map(|s| s.ranges.iter().map(|r| r.producer_id)).collect();
        producers.sort_unstable();
        producers.dedup();
        lane.resolve = Some(producers);
    }

    /// The next database request after the lookups for waiting HELLOs.
    pub(super) fn spool_start_request(&mut self) {
        let lane = &mut self.spool;
        if let Some(resolve) = lane.resolve.as_mut() {
            if let Some(producer_id) = resolve.pop() {
                return self.query_watermark(producer_id, Request::Mark(producer_id));
            }
            lane.resolve = None;
            let mut decided = Vec::new();
            while lane.unsent.front().is_some_and(|s| lane.covered(&s.ranges)) {
                if let Some(done) = lane.unsent.pop_front() {
                    let record = done.location.map(|l| l.id);
                    match &done.kind {
                        SpooledKind::Record { .. } => {
                            tracing::info!(
                                lane = self.module.name(),
                                record,
                                "spooled batch already committed: skipped"
                            )
                        }
                        SpooledKind::Lost { why } => tracing::warn!(
                            lane = self.module.name(),
                            record,
                            why,
                            ranges = ?done.ranges,
                            "damaged spool record had committed before the damage: no event lost"
                        ),
                    }
                    lane.cached_bytes -= done.cached_bytes();
                    if let Some(id) = record {
                        if let Err(e) = lane.spool.release_through(id) {
                            tracing::warn!(lane = self.module.name(), error = %e, "spool release failed");
                        }
                    }
                    if matches!(done.kind, SpooledKind::Lost { .. }) {
                        decided.extend(done.ranges.iter().map(|r| r.producer_id));
                    }
                }
            }
            for producer_id in decided {
                self.welcome_waiting(producer_id);
            }
        }
        let now_ms = self.now.mono_ms;
        {
            let lane = &self.spool;
            let stale = lane.window_read_at_ms.is_none_or(|at| now_ms >= at + WINDOW_REFRESH_INTERVAL_MS);
            if stale && !lane.unsent.is_empty() {
                match pipeline::encode_query(&mut self.pg_out, "SELECT lo_us, hi_us FROM appliance.partition_window()")
                {
                    Ok(p) => self.pg = PgState::Busy(Box::new(p), Request::Window),
                    Err(e) => self.reset(&e.to_string()),
                }
                return;
            }
        }
        loop {
            let Some(front_id) = self.spool.unsent.front().map(|s| s.location.map(|l| l.id)) else {
                return;
            };
            match self.load_unsent(0) {
                Ok(mut batch) => {
                    // Consecutive records share one transaction up to the transaction bounds.
                    let mut records = 1;
                    while let Some(next) = self.spool.unsent.get(records) {
                        let rows: u64 = next.ranges.iter().map(|r| r.rows).sum();
                        let bytes = next.location.map_or(0, |l| l.length as usize);
                        if batch.rows + rows as usize > TRANSACTION_ROWS_MAX
                            || batch.bytes + bytes > TRANSACTION_BYTES_MAX
                        {
                            break;
                        }
                        match self.load_unsent(records) {
                            Ok(next) => batch.absorb(*next),
                            Err(_) => break,
                        }
                        records += 1;
                    }
                    if self.spool.corrupted_records > 0 {
                        record_gaps(&self.spool.marks, &mut batch);
                    }
                    if let Some((lo, hi)) = self.spool.window {
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
                    return self.send_spooled(batch, records);
                }
                Err(None) => return,
                Err(Some(why)) => {
                    // Changed on disk since it was written: never committed,
                    // reported; its seqs become a recorded gap.
                    tracing::error!(
                        lane = self.module.name(),
                        record = front_id,
                        why,
                        "spooled batch unreadable: dropped"
                    );
                    self.spool.corrupted_records += 1;
                    self.spool.unsent.pop_front();
                }
            }
        }
    }

    /// The `index`-th unsent record's batch: from the cache, or read back.
    /// `Err(Some(why))`: the record is corrupted (never to be committed);
    /// `Err(None)`: reading failed otherwise, and the lane is set to exit
    /// (the restarted lane recovers the spool from disk; nothing is dropped).
    fn load_unsent(&mut self, index: usize) -> Result<Box<Batch>, Option<String>> {
        let (module, now_ms) = (self.module, self.now.mono_ms);
        let lane = &mut self.spool;
        let spooled = lane.unsent.get_mut(index).ok_or(None)?;
        let location = match &mut spooled.kind {
            SpooledKind::Lost { why } => return Ok(Box::new(Batch::lost(module, now_ms, &spooled.ranges, why))),
            SpooledKind::Record { cached } => {
                if let Some(batch) = cached.take() {
                    lane.cached_bytes -= batch.bytes;
                    return Ok(batch);
                }
                spooled.location.ok_or(None)?
            }
        };
        let payload = match lane.spool.read(&location) {
            Ok(payload) => payload,
            Err(e @ SpoolError::Corrupted { .. }) => return Err(Some(e.to_string())),
            Err(e) => {
                self.fatal = Some(LaneFatal::SpoolRead(e));
                return Err(None);
            }
        };
        self.stats.batches_read_back += 1;
        Batch::from_spool_payload(module, now_ms, &payload).map(Box::new).map_err(Some)
    }

    fn send_spooled(&mut self, batch: Box<Batch>, records: usize) {
        let start = self.pg_out.len();
        let pipeline = match batch.encode(&mut self.pg_out) {
            Ok(p) => p,
            Err(e) => return self.reset(&e.to_string()),
        };
        let stages = [
            (failpoint::BEGIN, pipeline.stages.begin),
            (failpoint::MID_COPY, pipeline.stages.mid_copy),
            (failpoint::AFTER_COPY_DONE, pipeline.stages.after_copy_done),
            (failpoint::AFTER_WATERMARK, pipeline.stages.after_tail),
        ];
        if let Some((name, cut)) = stages.into_iter().find(|(name, _)| failpoint::fires(name)) {
            self.pg_out.truncate(start + cut);
            self.stop_after_send = Some((SendTarget::Pg, name));
        } else if failpoint::fires(failpoint::COMMIT_SENT) {
            self.stop_after_send = Some((SendTarget::Pg, failpoint::COMMIT_SENT));
        }
        self.pg = PgState::Busy(Box::new(pipeline), Request::Spooled(batch, records));
    }

    pub(super) fn window_done(&mut self, rows: &[crate::pg::Row]) {
        let now_ms = self.now.mono_ms;
        let window = match rows {
            [row] => match row.as_slice() {
                [Some(lo), Some(hi)] => lo.parse().ok().zip(hi.parse().ok()),
                _ => None,
            },
            _ => None,
        };
        if window != self.spool.window {
            tracing::info!(lane = self.module.name(), ?window, "partition window");
        }
        self.spool.window = window;
        self.spool.window_read_at_ms = Some(now_ms);
    }

    pub(super) fn mark_done(&mut self, producer_id: u64, rows: &[crate::pg::Row]) {
        match super::core::parse_watermark(rows) {
            Ok(mark) => {
                self.spool.note_mark(producer_id, mark);
            }
            Err(why) => self.reset(why),
        }
    }

    /// The transaction of the first `records` unsent records committed.
    pub(super) fn spooled_committed(&mut self, batch: &Batch, records: usize) {
        failpoint::check(failpoint::AFTER_COMMIT);
        self.stats.batches_committed += 1;
        self.stats.events_committed += batch.rows as u64;
        let lane = &mut self.spool;
        lane.failure_backoff_ms = PG_RECONNECT_BACKOFF_MIN_MS;
        lane.note_committed(&batch.ranges);
        lane.records_committed += records as u64;
        let mut last = None;
        for _ in 0..records {
            if let Some(done) = lane.unsent.pop_front() {
                lane.cached_bytes -= done.cached_bytes();
                last = done.location.map(|l| l.id).or(last);
            }
        }
        if let Some(id) = last {
            if let Err(e) = lane.spool.release_through(id) {
                tracing::warn!(lane = self.module.name(), error = %e, "spool release failed");
            }
        }
        let spool_full = lane.blocked == Some(StatusCode::SpoolFull);
        // The loss is now recorded in PostgreSQL: tell the producers, and
        // answer the HELLOs that waited for it.
        self.notify_lost(&batch.lost);
        for range in &batch.lost {
            self.welcome_waiting(range.producer_id);
        }
        // Space may have been freed for batches waiting for the quota.
        if spool_full {
            self.spool_sealed();
        }
    }

    /// A database failure: nothing acknowledged is dropped;
    /// the connection is closed and retried with backoff, and the front
    /// record is decided again from the watermarks after reconnect.
    pub(super) fn spool_db_reset(&mut self, why: &str) {
        self.stats.resets += 1;
        let now_ms = self.now.mono_ms;
        let lane = &mut self.spool;
        let backoff_ms = lane.failure_backoff_ms;
        lane.failure_backoff_ms = (backoff_ms * 2).min(PG_RECONNECT_BACKOFF_MAX_MS);
        tracing::error!(
            lane = self.module.name(),
            why,
            retry_in_ms = backoff_ms,
            unsent_records = lane.unsent.len(),
            "database request failed: spooled batches kept, retrying"
        );
        self.pg = PgState::Down { retry_at_ms: now_ms + backoff_ms, backoff_ms: PG_RECONNECT_BACKOFF_MIN_MS };
        self.pg_out.clear();
        // HELLOs whose lookup was in flight ask again after the reconnect.
        let waiting: Vec<u64> = self
            .conns
            .iter()
            .filter_map(|(_, c)| match c.state {
                ConnState::Waiting { producer_id, .. } => Some(producer_id),
                _ => None,
            })
            .collect();
        for producer_id in waiting {
            self.want_lookup(producer_id);
        }
    }

    /// Acknowledged events whose loss was just recorded: tell each
    /// producer (STATUS `AcknowledgedLost`) now if it is connected, else at
    /// its next WELCOME.
    fn notify_lost(&mut self, lost: &[ProducerRange]) {
        for range in lost {
            self.stats.events_lost += range.last_seq - range.first_seq + 1;
            self.spool.loss_notices.entry(range.producer_id).or_default().push(*range);
            self.send_loss_notices(range.producer_id);
        }
    }

    /// Send a producer its pending loss notices, if it has a connection.
    pub(super) fn send_loss_notices(&mut self, producer_id: u64) {
        let Some((slot, generation)) = self.producers.get(producer_id).and_then(|p| p.active) else { return };
        let Some(conn) = self.conns.get_mut(slot).filter(|c| c.generation == generation && !c.closing) else {
            return;
        };
        for range in self.spool.loss_notices.remove(&producer_id).unwrap_or_default() {
            let reason = format!(
                "seqs {}..{} of epoch {} were acknowledged and then lost: their spool record was damaged on disk; \
                 recorded in {} with reason code 10",
                range.first_seq,
                range.last_seq,
                range.epoch,
                self.module.quarantine_table()
            );
            tracing::error!(lane = self.module.name(), producer_id, reason, "producer told of lost events");
            frame::encode_status(&mut conn.out, StatusCode::AcknowledgedLost, &reason);
        }
    }

    pub(super) fn spool_drained(&self) -> bool {
        let lane = &self.spool;
        let stuck = lane.blocked.is_some() || !self.pg_is_connected();
        self.pending.is_empty()
            && (self.sealed.is_empty() || lane.blocked.is_some())
            && (lane.unsent.is_empty() || stuck)
    }

    pub(super) fn spool_deadline(&self) -> Option<u64> {
        let lane = &self.spool;
        lane.rechecks_on_timer().then_some(lane.retry_at_ms)
    }
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
            tracing::error!(?gap, "acknowledged events lost to a damaged spool record: recorded in quarantine");
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
