//! The lane's state machine (sans-I/O): connections, producers, credit,
//! batches and the PostgreSQL request in flight.
//!
//! A driver (io_uring or poll) owns the file descriptors and moves bytes;
//! it calls into this core with what arrived and takes what is to be sent.
//! Runs single-threaded in the lane process. Invariants:
//! - an ACK is sent only once the batch holding those events is durable:
//!   fdatasync'd in the lane's spool (`spooling.rs`);
//! - `credit_outstanding + buffered <= LANE_BUFFER_BYTES_MAX`, and every
//!   received frame byte was covered by credit, so memory is bounded;
//! - a database failure drops nothing acknowledged: the lane reconnects
//!   and resolves its unsent records by the watermarks (`spooling.rs`);
//! - spooled transactions go over up to `COMMIT_STREAMS_MAX` PostgreSQL
//!   connections (links) at once, and commit in spool order: a
//!   transaction's tail (watermark advances, COMMIT) is sent only once the
//!   one before it committed (`commits`);
//! - ingest_time never decreases through the spool, and every batch's rows
//!   are later than the batch before (`ingest_floor_us`): with the commit
//!   order, a reader tailing a table by (ingest_time, producer_id,
//!   producer_seq) never sees a row become visible behind its position.

use std::collections::VecDeque;

use bytes::BytesMut;
use postgres_protocol::message::backend::Message;

use super::batch::Batch;
use super::commit_queue::CommitQueue;
use super::conns::{Conn, ConnState, Connections};
pub use super::error::{LaneFatal, PgLinkError};
use super::producers::Producers;
use crate::base::limits::{
    BATCH_FLUSH_INTERVAL_MS, COMMIT_STREAMS_MAX, CONNECTION_IDLE_TIMEOUT_MS, CONNECTION_LINGER_MS,
    CONNECTION_OUTPUT_BYTES_MAX, CONNECTION_OUTPUT_PAUSE_BYTES, HANDSHAKE_TIMEOUT_MS, LANE_CONNECTIONS_MAX,
    LOOKUPS_PER_TRANSACTION_MAX, PG_RECONNECT_BACKOFF_MAX_MS, PG_RECONNECT_BACKOFF_MIN_MS,
};
use crate::base::ratelimit::RateLimitedLog;
use crate::base::sendq::SendQueue;
use crate::base::sys::PeerCred;
use crate::codec::frame::{self, ErrorCode};
use crate::lane::ingress::PeerPolicy;
use crate::model::matrix::Module;
use crate::pg::pipeline::{self, Outcome, Pipeline};
use crate::pg::wire::decode_message;
use crate::storage::spool::{Recovery, SpoolStore};

/// The driver's view of time: monotonic for deadlines, wall clock for ingest_time.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub mono_ms: u64,
    pub wall_us: i64,
}

/// What becomes of a connection the driver accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Served in this slot.
    Slot(usize),
    /// Every slot is taken; an idle connection's slot is being freed for
    /// it: keep it and offer it again once `has_free_slot`.
    Wait,
    /// Close it (peer not allowed, draining, or no slot can be freed).
    Refused,
}

pub(super) enum Request {
    Lookup(u64),
    /// A producer's watermark, wanted before spooled batches are sent.
    Mark(u64),
    /// The module's partition window (`appliance.partition_window()`).
    Window,
    /// The oldest unsent spooled records (how many), as one transaction.
    Spooled(Box<Batch>, usize),
}

/// Who a write-completion failpoint waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SendTarget {
    Client,
    /// This PostgreSQL link.
    Pg(usize),
}

pub(super) enum PgState {
    Down {
        retry_at_ms: u64,
        backoff_ms: u64,
    },
    /// A connection was asked of the lane's connector; its reply is awaited
    /// (the event loop keeps serving producers meanwhile).
    Connecting {
        backoff_ms: u64,
    },
    Idle,
    Busy(Box<Pipeline>, Request),
}

/// One PostgreSQL connection of the lane (a commit stream): its state and
/// the bytes to and from it.
pub(super) struct PgLink {
    pub(super) state: PgState,
    /// Requests to send: encoded messages, and the COPY chunks of the
    /// transactions shared (not copied) from their batches.
    pub(super) out: SendQueue,
    pub(super) input: BytesMut,
}

impl PgLink {
    fn new() -> PgLink {
        PgLink {
            state: PgState::Down { retry_at_ms: 0, backoff_ms: PG_RECONNECT_BACKOFF_MIN_MS },
            out: SendQueue::default(),
            input: BytesMut::new(),
        }
    }

    fn is_connected(&self) -> bool {
        matches!(self.state, PgState::Idle | PgState::Busy(..))
    }
}

/// Counters reported in logs and by the supervisor.
#[derive(Debug, Default, Clone)]
pub struct LaneStats {
    /// Events acknowledged to producers (durable in the spool), rejected
    /// ones included.
    pub events_acknowledged: u64,
    pub events_committed: u64,
    pub events_rejected: u64,
    pub duplicates_skipped: u64,
    pub batches_committed: u64,
    /// Transactions whose body was sent while an earlier one was in flight.
    pub transactions_overlapped: u64,
    pub connections_refused: u64,
    /// Connections given a slot (admitted by their peer credentials).
    pub connections_admitted: u64,
    /// EVENTS that used up their connection's credit: the producer then
    /// waits for a CREDIT frame (a lane that cannot keep up shows here).
    pub credit_stalls: u64,
    /// Connections whose slot was given to a new one (`Admission::Wait`).
    pub connections_evicted: u64,
    /// Connections closed for a missed deadline: no HELLO in time, idle,
    /// or replies not read.
    pub connections_timed_out: u64,
    /// Producers forgotten beyond `LANE_PRODUCERS_MAX`.
    pub producers_forgotten: u64,
    pub protocol_errors: u64,
    pub resets: u64,
    /// Spooled batches read back from their segment because they did not
    /// fit `SPOOL_CACHE_BYTES_MAX` (re-parsed before sending).
    pub batches_read_back: u64,
    /// Acknowledged events recorded as lost (damaged spool records).
    pub events_lost: u64,
    /// Requests PostgreSQL refused, by SQLSTATE (at most
    /// `LANE_SQLSTATES_MAX` codes; later new codes count under `other`).
    pub database_errors: std::collections::BTreeMap<String, u64>,
    /// Why the last database reset happened (a refusal with its SQLSTATE,
    /// or a lost connection), cut to `LANE_LAST_ERROR_BYTES_MAX`.
    pub last_error: Option<String>,
}

impl LaneStats {
    /// Count one refusal under its SQLSTATE (five digits or capitals; any
    /// other text, or a new code beyond the bound, counts as `other`).
    pub fn count_database_error(&mut self, sqlstate: &str) {
        use crate::base::limits::LANE_SQLSTATES_MAX;
        let valid = sqlstate.len() == 5 && sqlstate.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase());
        let known = self.database_errors.contains_key(sqlstate);
        let key = if valid && (known || self.database_errors.len() < LANE_SQLSTATES_MAX) { sqlstate } else { "other" };
        *self.database_errors.entry(key.to_string()).or_default() += 1;
    }
}

pub struct LaneCore {
    pub(super) module: Module,
    pub(super) policy: PeerPolicy,
    /// Connections and their credit (`conns.rs`).
    pub(super) conns: Connections,
    /// The producers known and the lookups waiting (`producers.rs`).
    pub(super) producers: Producers,
    pub(super) pending: Batch,
    pub(super) sealed: VecDeque<Batch>,
    /// The smallest ingest_time the next row may take (Unix µs): rows take
    /// the wall clock, but never less than this; a sealed batch moves it
    /// past its newest row.
    pub(super) ingest_floor_us: i64,
    /// The PostgreSQL links (`commit_streams` of them).
    pub(super) pg: Vec<PgLink>,
    /// How many spooled transactions may be in flight at once (at most
    /// one per link): the supervisor shares the commit streams among the
    /// lanes with a backlog (`set_active_streams`); beyond it, idle links
    /// carry only watermark and window reads.
    pub(super) active_streams: usize,
    /// The links whose requests are spooled transactions, in spool order:
    /// only the front one has its tail (and COMMIT) sent.
    pub(super) commits: VecDeque<usize>,
    pub(super) draining: bool,
    pub stats: LaneStats,
    refusal_log: RateLimitedLog,
    /// Admissions and evictions, which a peer can provoke at will.
    admission_log: RateLimitedLog,
    /// Producers forgotten beyond the table's bound.
    forget_log: RateLimitedLog,
    /// Protocol errors a peer can provoke at will: logged rate-limited.
    error_log: RateLimitedLog,
    /// Watermark lookups sent since the last spooled transaction started.
    lookups_in_a_row: u32,
    pub(super) now: Now,
    /// The durable spool and the records not yet committed: every ACK
    /// waits for it (`commit_queue.rs`, used by `spooling.rs`).
    pub(super) spool: CommitQueue,
    /// A failpoint that stops the lane once the next write to this peer completed.
    pub(super) stop_after_send: Option<(SendTarget, &'static str)>,
    /// An error after which the lane must exit (a failed spool fsync).
    pub(super) fatal: Option<LaneFatal>,
}

impl LaneCore {
    /// A lane over `spool` (opened and recovered before the sandbox):
    /// recovered records are queued for PostgreSQL and tell the lane each
    /// producer's acknowledged position. `disk_reserve`: bytes to keep free
    /// on the spool's filesystem (0: none).
    pub fn new(
        module: Module,
        policy: PeerPolicy,
        now: Now,
        spool: Box<dyn SpoolStore>,
        recovery: Recovery<Vec<super::batch::ProducerRange>>,
        disk_reserve: u64,
    ) -> LaneCore {
        let mut core = LaneCore {
            module,
            policy,
            conns: Connections::new(),
            producers: Producers::default(),
            pending: Batch::new(module, now.mono_ms),
            sealed: VecDeque::new(),
            ingest_floor_us: now.wall_us,
            pg: vec![PgLink::new()],
            active_streams: 1,
            commits: VecDeque::new(),
            draining: false,
            stats: LaneStats::default(),
            refusal_log: RateLimitedLog::default(),
            admission_log: RateLimitedLog::default(),
            forget_log: RateLimitedLog::default(),
            error_log: RateLimitedLog::default(),
            lookups_in_a_row: 0,
            now,
            spool: CommitQueue::new(module, spool, disk_reserve),
            stop_after_send: None,
            fatal: None,
        };
        for range in core.spool.recover(recovery, now.mono_ms) {
            core.producers.learn_from_spool(&range, now.mono_ms);
        }
        core
    }

    pub fn module(&self) -> Module {
        self.module
    }

    /// Commit over `streams` PostgreSQL connections (1 to
    /// `COMMIT_STREAMS_MAX`); set before the lane serves.
    pub fn set_commit_streams(&mut self, streams: usize) {
        assert!((1..=COMMIT_STREAMS_MAX).contains(&streams), "commit streams out of bounds: {streams}");
        assert!(!self.pg_is_connected(), "commit streams are set before connecting");
        self.pg = (0..streams).map(|_| PgLink::new()).collect();
        self.active_streams = streams;
    }

    /// Allow `streams` spooled transactions in flight at once (at least 1,
    /// at most one per link).
    pub fn set_active_streams(&mut self, streams: usize) {
        let streams = streams.clamp(1, self.pg.len());
        if streams != self.active_streams {
            tracing::debug!(lane = self.module.name(), streams, "commit streams in use");
            self.active_streams = streams;
            self.start_request();
        }
    }

    /// Whether spooled records wait with every link in use busy: the lane
    /// could use more commit streams (reported to the supervisor).
    pub fn backlogged(&self) -> bool {
        let (unsent, _) = self.spool.backlog();
        unsent > self.spool.in_flight()
    }

    /// The number of PostgreSQL links.
    pub fn commit_streams(&self) -> usize {
        self.pg.len()
    }

    // ----- connections -----

    /// Whether the driver should keep an accept outstanding: a slot is
    /// free, or one can be freed for a new connection.
    pub fn wants_accept(&self) -> bool {
        !self.draining && (self.has_free_slot() || self.eviction_candidate().is_some())
    }

    /// Whether a slot is free now.
    pub fn has_free_slot(&self) -> bool {
        self.conns.free_slot().is_some()
    }

    fn eviction_candidate(&self) -> Option<usize> {
        self.conns.eviction_candidate(self.now.mono_ms)
    }

    /// Decide on a new connection from its kernel credentials, before any
    /// byte of it is read. `pidfd` tells whether the driver holds an
    /// SO_PEERPIDFD for the peer (kept for the connection's life: it keeps
    /// naming the connecting process even if that pid number is later
    /// reused; it does not reserve it). When every slot is taken, an idle
    /// connection is evicted for it (`Admission::Wait`).
    pub fn admit(&mut self, peer: PeerCred, pidfd: bool, now: Now) -> Admission {
        self.now = now;
        if !self.policy.admits(&peer) || self.draining {
            self.stats.connections_refused += 1;
            if let Some(suppressed) = self.refusal_log.allow(now.mono_ms) {
                tracing::warn!(
                    lane = self.module.name(),
                    peer_pid = peer.pid,
                    peer_uid = peer.uid,
                    peer_gid = peer.gid,
                    suppressed,
                    "connection refused: peer not allowed on this lane"
                );
            }
            return Admission::Refused;
        }
        let Some(slot) = self.conns.free_slot() else {
            return match self.eviction_candidate() {
                Some(victim) => {
                    self.evict(victim);
                    Admission::Wait
                }
                None => {
                    self.stats.connections_refused += 1;
                    Admission::Refused
                }
            };
        };
        if let Some(suppressed) = self.admission_log.allow(now.mono_ms) {
            tracing::info!(
                lane = self.module.name(),
                slot,
                peer_pid = peer.pid,
                peer_uid = peer.uid,
                peer_gid = peer.gid,
                pidfd,
                suppressed,
                "connection admitted"
            );
        }
        self.stats.connections_admitted += 1;
        self.conns.open(slot, peer, now.mono_ms);
        self.check_invariants();
        Admission::Slot(slot)
    }

    /// Give a connection's slot to a newer one: a connection that has not
    /// said HELLO is cut silently, an idle producer gets ERROR `Evicted`
    /// (it reconnects when it has events).
    fn evict(&mut self, slot: usize) {
        let now = self.now.mono_ms;
        let Some(conn) = self.conns.get_mut(slot) else { return };
        if conn.state != ConnState::AwaitHello {
            let idle_ms = now.saturating_sub(conn.active_ms);
            frame::encode_error(
                &mut conn.out,
                ErrorCode::Evicted,
                &format!("every slot is taken; idle for {idle_ms} ms"),
            );
        }
        conn.close(now);
        // Before HELLO there is nobody to tell: cut at once. An idle
        // producer gets its ERROR, within the linger bound.
        conn.abort = conn.state == ConnState::AwaitHello;
        self.stats.connections_evicted += 1;
        if let Some(suppressed) = self.admission_log.allow(now) {
            tracing::info!(
                lane = self.module.name(),
                slot,
                peer_pid = conn.peer.pid,
                suppressed,
                "connection evicted for a new one"
            );
        }
    }

    pub fn client_wants_read(&self, slot: usize) -> bool {
        !self.draining && self.conns.get(slot).is_some_and(|c| !c.closing)
    }

    /// Take the bytes queued for a client, if any.
    pub fn take_client_output(&mut self, slot: usize) -> Option<BytesMut> {
        let conn = self.conns.get_mut(slot)?;
        if conn.out.is_empty() {
            return None;
        }
        conn.paused |= conn.out.len() > CONNECTION_OUTPUT_PAUSE_BYTES;
        Some(std::mem::take(&mut conn.out))
    }

    /// Whether the driver should close this client now (all output sent).
    pub fn client_should_close(&self, slot: usize) -> bool {
        self.conns.get(slot).is_some_and(|c| c.closing && c.out.is_empty())
    }

    /// Whether the driver must cut this client now, whatever is queued or
    /// in flight for it (shutdown(2) of its socket): evicted before HELLO,
    /// or closing for longer than `CONNECTION_LINGER_MS` (it does not read).
    pub fn client_must_abort(&self, slot: usize) -> bool {
        self.conns.get(slot).is_some_and(|c| {
            c.abort || (c.closing && self.now.mono_ms.saturating_sub(c.closing_since_ms) >= CONNECTION_LINGER_MS)
        })
    }

    /// The peer closed, a socket error happened, or the driver closed the fd.
    pub fn client_gone(&mut self, slot: usize) {
        let Some(conn) = self.conns.remove(slot) else { return };
        if let ConnState::Streaming { producer_id, .. } = conn.state {
            self.producers.disconnected(producer_id, slot, conn.generation);
        }
        self.regrant_all();
    }

    /// Bytes arrived from a client.
    pub fn on_client_bytes(&mut self, slot: usize, data: &[u8], now: Now) {
        self.now = now;
        let Some(conn) = self.conns.get_mut(slot) else { return };
        if conn.closing {
            return;
        }
        conn.inbuf.extend_from_slice(data);
        loop {
            let Some(conn) = self.conns.get_mut(slot) else { return };
            if conn.closing {
                return;
            }
            // Judge a frame by its header, before its body is buffered: what
            // this state accepts, and an EVENTS body within the credit.
            if let Some((kind, body_len)) = frame::peek_header(&conn.inbuf) {
                if let Some(error) = refuse_by_header(conn, kind, body_len) {
                    self.fail_connection(slot, error);
                    continue;
                }
            }
            match frame::decode_frame(&mut conn.inbuf) {
                Ok(Some(frame)) => {
                    conn.active_ms = now.mono_ms;
                    if frame.kind == frame::Kind::Events {
                        crate::base::failpoint::check(crate::base::failpoint::FRAME_READ);
                    }
                    if let Err(error) = self.on_frame(slot, frame) {
                        self.fail_connection(slot, error);
                    }
                    self.bound_output(slot);
                }
                Ok(None) => break,
                Err(error) => self.fail_connection(slot, error),
            }
        }
        self.maybe_seal();
        self.check_invariants();
    }

    /// A producer that does not read its replies: past
    /// `CONNECTION_OUTPUT_BYTES_MAX` queued, it is closed with ERROR
    /// `NotReading` (cut after the linger if it still does not read).
    fn bound_output(&mut self, slot: usize) {
        let Some(queued) = self.conns.get(slot).filter(|c| !c.closing).map(|c| c.out.len()) else { return };
        if queued > CONNECTION_OUTPUT_BYTES_MAX {
            self.stats.connections_timed_out += 1;
            let reason = format!("{queued} bytes of replies not read (at most {CONNECTION_OUTPUT_BYTES_MAX})");
            self.fail_connection(slot, frame::FrameError::new(ErrorCode::NotReading, reason));
        }
    }

    /// The peer ended its side of the connection. Bytes of an unfinished
    /// frame are a protocol error (a truncated frame), answered with ERROR.
    pub fn on_client_eof(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else { return };
        if conn.closing {
            return;
        }
        if conn.inbuf.is_empty() {
            conn.close(self.now.mono_ms);
        } else {
            let reason = format!("connection ended inside a frame ({} bytes buffered)", conn.inbuf.len());
            self.fail_connection(slot, frame::FrameError::new(ErrorCode::Malformed, reason));
        }
    }

    /// The driver finished writing what it took for a client: a producer
    /// paused for unread replies may get credit again.
    pub fn client_sent(&mut self, slot: usize) {
        self.sent(SendTarget::Client);
        let Some(conn) = self.conns.get_mut(slot) else { return };
        if conn.paused && conn.out.len() <= CONNECTION_OUTPUT_PAUSE_BYTES {
            conn.paused = false;
            self.regrant_all();
        }
    }

    /// The driver finished writing everything queued for PostgreSQL link `link`.
    pub fn pg_sent(&mut self, link: usize) {
        self.sent(SendTarget::Pg(link));
    }

    fn sent(&mut self, target: SendTarget) {
        if let Some((_, name)) = self.stop_after_send.filter(|(t, _)| *t == target) {
            self.stop_after_send = None;
            crate::base::failpoint::stop(name);
        }
    }

    /// Set once the lane must exit.
    pub fn fatal(&self) -> Option<&LaneFatal> {
        self.fatal.as_ref()
    }

    /// Why the lane must exit, taken by the driver to return as its error.
    pub fn take_fatal(&mut self) -> Option<LaneFatal> {
        self.fatal.take()
    }

    /// Send an ERROR frame and close the connection after it.
    pub(super) fn fail_connection(&mut self, slot: usize, error: frame::FrameError) {
        let Some(conn) = self.conns.get_mut(slot).filter(|c| !c.closing) else { return };
        self.stats.protocol_errors += 1;
        if let Some(suppressed) = self.error_log.allow(self.now.mono_ms) {
            tracing::warn!(
                lane = self.module.name(),
                slot,
                peer_pid = conn.peer.pid,
                peer_uid = conn.peer.uid,
                code = error.code as u16,
                reason = %error.reason,
                suppressed,
                "closing connection"
            );
        }
        frame::encode_error(&mut conn.out, error.code, &error.reason);
        conn.close(self.now.mono_ms);
    }

    // ----- credit -----

    pub(super) fn regrant_all(&mut self) {
        self.conns.regrant_all();
    }

    // ----- batches -----

    fn maybe_seal(&mut self) {
        let age = self.now.mono_ms.saturating_sub(self.pending.started_ms);
        // Sealing is what acknowledges (through the spool), so it never
        // waits for PostgreSQL; spooled records are merged when sent.
        let due = self.pending.is_full() || self.draining || age >= BATCH_FLUSH_INTERVAL_MS;
        if self.pending.is_empty() || !due {
            return;
        }
        let batch = std::mem::replace(&mut self.pending, Batch::new(self.module, self.now.mono_ms));
        if batch.rows > 0 {
            self.ingest_floor_us = self.ingest_floor_us.max(batch.ingest_max_us.saturating_add(1));
        }
        if batch.has_events() {
            self.sealed.push_back(batch);
            self.spool_sealed();
        } else {
            // Only duplicates: nothing to commit, return the credit now.
            self.release(&batch);
            self.regrant_all();
        }
    }

    pub(super) fn release(&mut self, batch: &Batch) {
        self.conns.release(&batch.releases);
    }

    /// Wanted a producer's watermark before answering its HELLO.
    pub(super) fn want_lookup(&mut self, producer_id: u64) {
        self.producers.want_lookup(producer_id);
    }

    // ----- time -----

    /// Advance time: seal due batches, start the next database request.
    /// Once a drain has committed everything, every connection is closed
    /// (after its last ACK is sent).
    pub fn tick(&mut self, now: Now) {
        self.now = now;
        self.maybe_seal();
        self.spool_sealed();
        self.start_request();
        self.enforce_deadlines();
        if self.drained() {
            for conn in self.conns.iter_mut() {
                conn.close(now.mono_ms);
            }
        }
        self.check_invariants();
    }

    /// Called by the driver once it has handed everything queued to the
    /// kernel, before it waits: while every commit stream allowed is busy,
    /// read back the next transaction's records (`CommitQueue::read_ahead`),
    /// so the stream that frees up starts it without waiting for the disk.
    pub fn read_ahead(&mut self, now: Now) {
        self.now = now;
        if self.pg_is_connected() && !self.commits.is_empty() && self.commits.len() >= self.active_streams {
            self.spool.read_ahead(now.mono_ms);
            self.stats.batches_read_back = self.spool.batches_read_back();
        }
        self.check_invariants();
    }

    /// Close connections past a deadline: no HELLO within
    /// `HANDSHAKE_TIMEOUT_MS`; nothing in flight and silent for
    /// `CONNECTION_IDLE_TIMEOUT_MS`.
    fn enforce_deadlines(&mut self) {
        let now = self.now.mono_ms;
        for slot in 0..LANE_CONNECTIONS_MAX {
            let Some(conn) = self.conns.get(slot).filter(|c| !c.closing) else { continue };
            let why = match conn.state {
                ConnState::AwaitHello if now.saturating_sub(conn.opened_ms) >= HANDSHAKE_TIMEOUT_MS => {
                    format!("no HELLO within {HANDSHAKE_TIMEOUT_MS} ms")
                }
                ConnState::Streaming { .. }
                    if conn.unreleased == 0 && now.saturating_sub(conn.active_ms) >= CONNECTION_IDLE_TIMEOUT_MS =>
                {
                    format!("idle for {CONNECTION_IDLE_TIMEOUT_MS} ms")
                }
                _ => continue,
            };
            self.stats.connections_timed_out += 1;
            self.fail_connection(slot, frame::FrameError::new(ErrorCode::Timeout, why));
        }
    }

    /// The core's invariants, asserted after every entry point (debug
    /// builds and tests; `cargo test` runs them on every table test and the
    /// lane integration tests):
    /// - the bytes granted or buffered never pass the lane's budget by more
    ///   than the guaranteed shares (which a slot freed by a closed
    ///   connection may briefly overlap with bytes it left buffered);
    /// - no connection holds more than its window;
    /// - the outstanding credit is exactly what the connections hold;
    /// - every active producer's connection exists and streams for it.
    pub fn check_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        self.conns.check_invariants();
        self.producers.check_invariants();
        self.check_commit_order();
        for (id, p) in self.producers.iter() {
            if let Some((slot, generation)) = p.active {
                let conn = self.conns.get(slot);
                debug_assert!(
                    conn.is_none_or(|c| c.generation != generation
                        || matches!(c.state, ConnState::Streaming { producer_id, .. } if producer_id == id)),
                    "producer {id} is active on a connection streaming for another"
                );
            }
        }
    }

    /// When the driver must call `tick` again at the latest.
    pub fn next_deadline_ms(&self) -> u64 {
        let mut deadline = self.now.mono_ms + 1000;
        if !self.pending.is_empty() {
            deadline = deadline.min(self.pending.started_ms + BATCH_FLUSH_INTERVAL_MS);
        }
        for link in &self.pg {
            if let PgState::Down { retry_at_ms, .. } = link.state {
                deadline = deadline.min(retry_at_ms);
            }
        }
        if let Some(retry_at_ms) = self.spool.deadline() {
            deadline = deadline.min(retry_at_ms);
        }
        if let Some(at) = self.conns.deadline() {
            deadline = deadline.min(at);
        }
        deadline.max(self.now.mono_ms)
    }

    // ----- PostgreSQL links -----

    /// The commit order's invariants: every link in `commits` once, each
    /// holding a spooled transaction; only the front one's tail is sent;
    /// together they hold exactly the records in flight.
    fn check_commit_order(&self) {
        let mut records = 0;
        for (position, &link) in self.commits.iter().enumerate() {
            debug_assert!(
                self.commits.iter().filter(|&&l| l == link).count() == 1,
                "link {link} twice in the commit order"
            );
            match &self.pg[link].state {
                PgState::Busy(pipeline, Request::Spooled(_, n)) => {
                    records += n;
                    debug_assert!(
                        position == 0 || pipeline.awaits_tail(),
                        "link {link}: a tail was sent before the transaction ahead of it committed"
                    );
                }
                _ => debug_assert!(false, "link {link} is in the commit order without a transaction"),
            }
        }
        debug_assert_eq!(records, self.spool.in_flight(), "transactions in flight and records in flight differ");
    }

    /// Whether the driver should ask the connector a connection for `link` now.
    pub fn pg_wants_connect(&self, link: usize, now: Now) -> bool {
        matches!(self.pg[link].state, PgState::Down { retry_at_ms, .. } if now.mono_ms >= retry_at_ms)
    }

    /// Whether a connection asked of the connector is awaited.
    pub fn pg_awaits_connection(&self) -> bool {
        self.connecting_link().is_some()
    }

    /// The first link waiting for a connection from the connector (they
    /// are interchangeable: each reply goes to the first one waiting).
    fn connecting_link(&self) -> Option<usize> {
        self.pg.iter().position(|l| matches!(l.state, PgState::Connecting { .. }))
    }

    /// The driver asked the connector for a connection for `link`.
    pub fn pg_connect_requested(&mut self, link: usize) {
        if let PgState::Down { backoff_ms, .. } = self.pg[link].state {
            self.pg[link].state = PgState::Connecting { backoff_ms };
        }
    }

    /// A connection arrived: it serves the first link waiting for one
    /// (connections are interchangeable), returned; None: none waits (the
    /// driver closes it).
    pub fn pg_connected(&mut self, leftover: BytesMut) -> Option<usize> {
        let link = self.connecting_link()?;
        // The first link up after every link was down resolves the spool
        // (watermarks, window) before anything is sent on any link.
        let first = !self.pg_is_connected();
        tracing::info!(lane = self.module.name(), link, "connected to PostgreSQL");
        let l = &mut self.pg[link];
        l.state = PgState::Idle;
        l.input = leftover;
        l.out.clear();
        if first {
            self.spool.connected();
        }
        self.start_request();
        Some(link)
    }

    /// A connect attempt failed: back off exponentially, up to the cap.
    pub fn pg_connect_failed(&mut self, error: &str, now: Now) {
        let Some(link) = self.connecting_link() else { return };
        let backoff_ms = match self.pg[link].state {
            PgState::Down { backoff_ms, .. } | PgState::Connecting { backoff_ms } => backoff_ms,
            PgState::Idle | PgState::Busy(..) => PG_RECONNECT_BACKOFF_MIN_MS,
        };
        tracing::warn!(lane = self.module.name(), link, retry_in_ms = backoff_ms, error, "PostgreSQL connect failed");
        self.pg[link].state = PgState::Down {
            retry_at_ms: now.mono_ms + backoff_ms,
            backoff_ms: (backoff_ms * 2).min(PG_RECONNECT_BACKOFF_MAX_MS),
        };
    }

    /// Whether any link is connected.
    pub fn pg_is_connected(&self) -> bool {
        self.pg.iter().any(PgLink::is_connected)
    }

    /// Whether `link` is connected (else the driver closes its socket).
    pub fn pg_link_connected(&self, link: usize) -> bool {
        self.pg.get(link).is_some_and(PgLink::is_connected)
    }

    /// What is queued for PostgreSQL link `link`, moved out (the driver
    /// sends it after anything it still holds).
    pub fn take_pg_output(&mut self, link: usize) -> Option<SendQueue> {
        let out = &mut self.pg[link].out;
        if out.is_empty() { None } else { Some(std::mem::take(out)) }
    }

    /// PostgreSQL link `link` failed or closed.
    pub fn pg_lost(&mut self, link: usize, why: &str, now: Now) {
        self.now = now;
        let was_busy = matches!(self.pg[link].state, PgState::Busy(..));
        tracing::warn!(lane = self.module.name(), link, why, was_busy, "PostgreSQL connection lost");
        self.pg[link].state = PgState::Down { retry_at_ms: now.mono_ms, backoff_ms: PG_RECONNECT_BACKOFF_MIN_MS };
        // Batches not yet sent simply wait for the reconnect; only a request
        // in flight has an unknown fate, and the watermarks resolve it.
        if was_busy {
            self.reset("database connection lost with a request in flight");
        }
    }

    /// Bytes arrived from PostgreSQL link `link`. Only the replies are
    /// handled here: what they make the lane send at once (the tail of the
    /// transaction next in the commit order) is queued, and everything that
    /// may wait for the lane's disk (spool appends, records read back for
    /// the next transaction, new requests) waits for the driver's next
    /// `tick`, which it calls after handing this output to the kernel: a
    /// COMMIT never waits behind the lane's own disk writes and reads.
    pub fn on_pg_bytes(&mut self, link: usize, data: &[u8], now: Now) {
        self.now = now;
        self.pg[link].input.extend_from_slice(data);
        loop {
            let message = match decode_message(&mut self.pg[link].input) {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(e) => return self.pg_protocol_failure(link, &PgLinkError::Wire(e)),
            };
            if let Err(e) = self.on_pg_message(link, message) {
                return self.pg_protocol_failure(link, &e);
            }
        }
        self.check_invariants();
    }

    fn pg_protocol_failure(&mut self, link: usize, error: &PgLinkError) {
        self.pg[link].input.clear();
        self.reset(&error.to_string());
    }

    fn on_pg_message(&mut self, link: usize, message: Message) -> Result<(), PgLinkError> {
        let PgState::Busy(pipeline, _) = &mut self.pg[link].state else {
            return match message {
                Message::NoticeResponse(_) | Message::ParameterStatus(_) => Ok(()),
                // A FATAL while idle (backend terminated, server shutting
                // down): the connection is gone but nothing was in flight.
                Message::ErrorResponse(_) => {
                    tracing::warn!(lane = self.module.name(), link, "PostgreSQL ended the idle connection");
                    let l = &mut self.pg[link];
                    l.state = PgState::Down { retry_at_ms: self.now.mono_ms, backoff_ms: PG_RECONNECT_BACKOFF_MIN_MS };
                    l.input.clear();
                    Ok(())
                }
                _ => Err(PgLinkError::Unsolicited),
            };
        };
        let Some(outcome) = pipeline.on_message(message).map_err(PgLinkError::Wire)? else {
            return Ok(());
        };
        let PgState::Busy(_, request) = std::mem::replace(&mut self.pg[link].state, PgState::Idle) else {
            return Ok(());
        };
        match (request, outcome) {
            (Request::Lookup(producer_id), Outcome::Rows(rows)) => self.lookup_done(producer_id, &rows),
            (Request::Mark(producer_id), Outcome::Rows(rows)) => self.mark_done(producer_id, &rows),
            (Request::Window, Outcome::Rows(rows)) => self.window_done(&rows),
            (Request::Spooled(batch, records), Outcome::Committed) => self.spooled_committed(link, &batch, records),
            (_, Outcome::Failed(error)) => {
                self.stats.count_database_error(&error.sqlstate);
                self.reset(&format!("database refused a request: {} {}", error.sqlstate, error.message));
            }
            (Request::Lookup(_) | Request::Mark(_) | Request::Window, Outcome::Committed)
            | (Request::Spooled(..), Outcome::Rows(_)) => {
                return Err(PgLinkError::Mismatched);
            }
        }
        Ok(())
    }

    /// Start the next database request on every idle link: HELLOs'
    /// watermark lookups first, but after `LOOKUPS_PER_TRANSACTION_MAX` of
    /// them in a row a waiting spooled transaction goes first, so HELLO
    /// churn cannot hold back commits.
    fn start_request(&mut self) {
        for link in 0..self.pg.len() {
            self.start_request_on(link);
        }
    }

    fn start_request_on(&mut self, link: usize) {
        if !matches!(self.pg[link].state, PgState::Idle) {
            return;
        }
        if self.lookups_in_a_row >= LOOKUPS_PER_TRANSACTION_MAX || !self.producers.lookups_waiting() {
            self.spool_start_request(link);
            if !matches!(self.pg[link].state, PgState::Idle) {
                self.lookups_in_a_row = 0;
                return;
            }
        }
        if let Some(producer_id) = self.producers.next_lookup() {
            self.lookups_in_a_row += 1;
            self.query_watermark(link, producer_id, Request::Lookup(producer_id));
        }
    }

    /// Send `appliance.watermark_get(producer_id)` on `link`, answered as `request`.
    pub(super) fn query_watermark(&mut self, link: usize, producer_id: u64, request: Request) {
        let sql = format!("SELECT producer_epoch, last_seq FROM appliance.watermark_get({producer_id})");
        match pipeline::encode_query(self.pg[link].out.buffer(), &sql) {
            Ok(p) => self.pg[link].state = PgState::Busy(Box::new(p), request),
            Err(e) => self.reset(&e.to_string()),
        }
    }

    fn lookup_done(&mut self, producer_id: u64, rows: &[crate::pg::Row]) {
        let mark = match parse_watermark(rows) {
            Ok(mark) => mark,
            Err(why) => return self.reset(why),
        };
        self.spool.note_mark(producer_id, mark);
        self.producers.learn_from_lookup(producer_id, mark, self.now.mono_ms);
        self.welcome_waiting(producer_id);
        self.forget_producers();
    }

    /// Beyond `LANE_PRODUCERS_MAX` producers, forget idle ones whose
    /// watermark PostgreSQL holds (`Producers::forget_idle`), and their
    /// marks in the spool's bookkeeping.
    fn forget_producers(&mut self) {
        let max = crate::base::limits::lane_producers_max();
        let spool = &self.spool;
        let Some(forgotten) = self.producers.forget_idle(max, || spool.producers_unsent()) else { return };
        for id in &forgotten {
            self.spool.forget_mark(*id);
        }
        self.stats.producers_forgotten += forgotten.len() as u64;
        if let Some(suppressed) = self.forget_log.allow(self.now.mono_ms) {
            tracing::info!(
                lane = self.module.name(),
                forgotten = forgotten.len(),
                producers = self.producers.len(),
                bound = max,
                suppressed,
                "idle producers forgotten (their watermarks are in PostgreSQL)"
            );
        }
    }

    /// Answer every HELLO of `producer_id` still waiting, unless a damaged
    /// spool record of that producer is still undecided (committed before
    /// the damage, or to be recorded as lost): its WELCOME then waits, so
    /// that it reports a position PostgreSQL agrees with and any loss
    /// notice follows it at once.
    pub(super) fn welcome_waiting(&mut self, producer_id: u64) {
        if !self.producers.contains(producer_id) || self.spool.loss_pending(producer_id) {
            return;
        }
        let waiting = self.conns.slots_where(|c| {
            !c.closing && matches!(c.state, ConnState::Waiting { producer_id: p, .. } if p == producer_id)
        });
        for slot in waiting {
            self.welcome(slot);
        }
    }

    /// Everything in `ranges` is durable: advance and acknowledge, on each
    /// producer's active connection, unless it was told already.
    pub(super) fn ack_ranges(&mut self, ranges: &[super::batch::ProducerRange]) {
        for ack in self.producers.acknowledge(ranges) {
            let Some((slot, generation)) = ack.active else { continue };
            let conn = self.conns.get_mut(slot).filter(|c| c.generation == generation && ack.seq > c.acked_seq);
            if let Some(conn) = conn {
                conn.acked_seq = ack.seq;
                frame::encode_ack(&mut conn.out, ack.epoch, ack.seq);
            }
        }
    }

    /// A database request failed or the connection broke (`spooling.rs`:
    /// nothing acknowledged is dropped; reconnect with backoff).
    pub(super) fn reset(&mut self, why: &str) {
        self.spool_db_reset(why);
    }

    // ----- shutdown -----

    /// Stop accepting and reading; commit what is buffered.
    pub fn begin_drain(&mut self) {
        tracing::info!(lane = self.module.name(), "draining");
        self.draining = true;
        self.maybe_seal();
        self.start_request();
    }

    /// Whether everything buffered is committed and acknowledged.
    pub fn drained(&self) -> bool {
        self.draining && !self.pg.iter().any(|l| matches!(l.state, PgState::Busy(..))) && self.spool_drained()
    }

    // ----- metrics -----

    /// The lane's counters and gauges now, as `key = value` lines (the
    /// lane sends them to its supervisor every `LANE_METRICS_INTERVAL_MS`;
    /// `applianced metrics` renders them, `tools::metrics`). Counters count
    /// from the lane process's start.
    pub fn metrics_lines(&self) -> String {
        let s = &self.stats;
        let (unsent, oldest) = self.spool.backlog();
        let commit_lag_ms = oldest.map_or(0, |since| self.now.mono_ms.saturating_sub(since));
        let (used, quota) = self.spool.spool_bytes();
        let pushed_back = self.spool.blocked().map_or(0, |(code, _)| code as u16);
        let value = |key: &str| -> u64 {
            match key {
                "events_acknowledged" => s.events_acknowledged,
                "events_committed" => s.events_committed,
                "events_rejected" => s.events_rejected,
                "events_lost" => s.events_lost,
                "duplicates_skipped" => s.duplicates_skipped,
                "batches_committed" => s.batches_committed,
                "transactions_overlapped" => s.transactions_overlapped,
                "batches_read_back" => s.batches_read_back,
                "connections_refused" => s.connections_refused,
                "connections_admitted" => s.connections_admitted,
                "credit_stalls" => s.credit_stalls,
                "connections_evicted" => s.connections_evicted,
                "connections_timed_out" => s.connections_timed_out,
                "protocol_errors" => s.protocol_errors,
                "database_resets" => s.resets,
                "producers_forgotten" => s.producers_forgotten,
                "connections_open" => self.conns.iter().count() as u64,
                "producers" => self.producers.len() as u64,
                "spool_used_bytes" => used,
                "spool_quota_bytes" => quota,
                "unsent_records" => unsent as u64,
                "commit_lag_ms" => commit_lag_ms,
                "pushed_back" => u64::from(pushed_back),
                "postgresql_connected" => u64::from(self.pg_is_connected()),
                "commit_streams_connected" => self.pg.iter().filter(|l| l.is_connected()).count() as u64,
                "commit_streams_active" => self.active_streams as u64,
                other => {
                    debug_assert!(false, "metric {other} has no value");
                    0
                }
            }
        };
        let mut lines: String =
            super::metrics::LANE_METRICS.iter().map(|m| format!("{} = {}\n", m.key, value(m.key))).collect();
        for (sqlstate, count) in &s.database_errors {
            lines.push_str(&format!("{}{sqlstate} = {count}\n", super::metrics::DATABASE_ERRORS_PREFIX));
        }
        if let Some(error) = &s.last_error {
            lines.push_str(&format!("last_error = \"{}\"\n", super::metrics::printable(error)));
        }
        lines
    }
}

/// A `watermark_get` result: (epoch, last seq), (0, 0) for an unknown producer.
pub(super) fn parse_watermark(rows: &[crate::pg::Row]) -> Result<(u64, u64), &'static str> {
    match rows {
        [] => Ok((0, 0)),
        [row] => match row.as_slice() {
            [Some(epoch), Some(seq)] => match (epoch.parse(), seq.parse()) {
                (Ok(epoch), Ok(seq)) => Ok((epoch, seq)),
                _ => Err("unparsable watermark"),
            },
            _ => Err("unexpected watermark row"),
        },
        _ => Err("more than one watermark row"),
    }
}

/// What a connection in its state refuses from a frame header alone, so
/// that no body it would refuse is ever buffered: before WELCOME only one
/// HELLO of exactly its size; while streaming only EVENTS within the
/// credit (a second HELLO is malformed).
fn refuse_by_header(conn: &Conn, kind: u8, body_len: usize) -> Option<frame::FrameError> {
    use frame::{FrameError, Kind};
    if body_len > crate::base::limits::FRAME_BODY_BYTES_MAX {
        return None; // `decode_frame` reports FrameTooLarge
    }
    let hello = kind == Kind::Hello as u8;
    match conn.state {
        ConnState::AwaitHello if hello && body_len != frame::HELLO_BODY_BYTES => Some(FrameError::new(
            ErrorCode::Malformed,
            format!("HELLO body of {body_len} bytes (it is {})", frame::HELLO_BODY_BYTES),
        )),
        ConnState::AwaitHello if !hello && Kind::from_u8(kind).is_some() => {
            Some(FrameError::new(ErrorCode::HandshakeRequired, "the first frame must be HELLO"))
        }
        ConnState::Waiting { .. } => {
            Some(FrameError::new(ErrorCode::HandshakeRequired, "wait for WELCOME before sending"))
        }
        ConnState::Streaming { .. } if hello => Some(FrameError::new(ErrorCode::Malformed, "HELLO sent twice")),
        ConnState::Streaming { .. } if kind == Kind::Events as u8 && body_len > conn.credit_left => {
            Some(FrameError::new(
                ErrorCode::CreditExceeded,
                format!("{body_len} bytes announced with {} bytes of credit", conn.credit_left),
            ))
        }
        ConnState::Streaming { .. } if kind != Kind::Events as u8 => Kind::from_u8(kind)
            .map(|k| FrameError::new(ErrorCode::UnknownKind, format!("{k:?} is not sent by producers"))),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Table tests of the core's connection handling, driven as a driver
    //! would (admit, bytes in, ticks), over an in-memory spool and with no
    //! PostgreSQL: a HELLO's watermark lookup is answered by calling
    //! `lookup_done` as the reply would. The data path with PostgreSQL
    //! replies and spool faults scripted is tested in `lane::scripted`.
    use super::*;
    use crate::base::limits::{
        CONNECTION_CREDIT_GUARANTEED_BYTES, CONNECTION_IDLE_EVICTABLE_MS, LANE_BUFFER_BYTES_MAX,
    };
    use crate::codec::frame::Kind;
    use crate::lane::ingress::PeerGrant;
    use crate::storage::spool::MemorySpool;

    const UID: u32 = 4242;

    fn now(mono_ms: u64) -> Now {
        Now { mono_ms, wall_us: 1_800_000_000_000_000 }
    }

    fn peer() -> PeerCred {
        PeerCred { pid: 1, uid: UID, gid: UID }
    }

    /// A lane core over an in-memory spool (kept by the test as well).
    fn core() -> (LaneCore, MemorySpool) {
        let spool = MemorySpool::new(64 << 20, 1 << 40);
        let policy = PeerPolicy { grants: vec![PeerGrant::parse(&format!("uid:{UID}:0-100000")).unwrap()] };
        let core = LaneCore::new(Module::Dpi, policy, now(0), Box::new(spool.clone()), Recovery::default(), 0);
        (core, spool)
    }

    fn slot_of(admission: Admission) -> usize {
        match admission {
            Admission::Slot(slot) => slot,
            other => panic!("expected a slot, got {other:?}"),
        }
    }

    /// The ERROR code queued for a slot, if its output ends with one.
    fn error_code(core: &mut LaneCore, slot: usize) -> Option<u16> {
        let mut out = core.take_client_output(slot)?;
        let mut last = None;
        while let Ok(Some(frame)) = frame::decode_frame(&mut out) {
            if frame.kind == Kind::Error {
                last = Some(frame::decode_error(&frame.body).unwrap().0);
            }
        }
        last
    }

    /// A connection that said HELLO as `producer` and was welcomed (its
    /// lookup answered with watermark (1, 0)).
    fn streaming(core: &mut LaneCore, producer: u64, at: u64) -> usize {
        let slot = slot_of(core.admit(peer(), false, now(at)));
        let mut hello = BytesMut::new();
        frame::encode_hello(&mut hello, 2, producer, 1);
        core.on_client_bytes(slot, &hello, now(at));
        if !core.producers.contains(producer) {
            core.producers.cancel_lookup(producer);
            core.lookup_done(producer, &[vec![Some("1".into()), Some("0".into())]]);
        }
        assert!(matches!(core.conns.get(slot).unwrap().state, ConnState::Streaming { .. }));
        slot
    }

    #[test]
    fn frames_are_refused_by_their_header_before_any_body_is_buffered() {
        let (mut core, _spool) = core();
        // (state reached, kind, announced body length, expected ERROR code or None)
        let hello_len = frame::HELLO_BODY_BYTES;
        let cases: [(&str, Kind, usize, Option<ErrorCode>); 6] = [
            ("await", Kind::Events, 16, Some(ErrorCode::HandshakeRequired)),
            ("await", Kind::Hello, hello_len + 1, Some(ErrorCode::Malformed)),
            ("await", Kind::Hello, 1 << 30, Some(ErrorCode::FrameTooLarge)),
            ("streaming", Kind::Hello, hello_len, Some(ErrorCode::Malformed)),
            ("streaming", Kind::Ack, 16, Some(ErrorCode::UnknownKind)),
            ("streaming", Kind::Events, 1001, Some(ErrorCode::CreditExceeded)),
        ];
        for (i, (state, kind, body_len, expected)) in cases.into_iter().enumerate() {
            let slot = match state {
                "await" => slot_of(core.admit(peer(), false, now(0))),
                _ => {
                    let slot = streaming(&mut core, 100 + i as u64, 0);
                    // 1,000 bytes of credit left (the lane's count follows).
                    let held = core.conns.get(slot).unwrap().credit_left;
                    core.conns.shrink_credit(slot, held - 1000);
                    slot
                }
            };
            let _ = core.take_client_output(slot);
            // Only the 16 header bytes arrive.
            let mut header = BytesMut::new();
            frame::encode_frame(&mut header, kind, &[]);
            header[8..12].copy_from_slice(&(body_len as u32).to_be_bytes());
            core.on_client_bytes(slot, &header[..16], now(0));
            assert_eq!(
                error_code(&mut core, slot),
                expected.map(|c| c as u16),
                "case {i}: {state} {kind:?} {body_len}"
            );
            let conn = core.conns.get(slot).unwrap();
            assert!(conn.closing && conn.inbuf.is_empty(), "case {i}: nothing buffered, closing");
            core.client_gone(slot);
        }
    }

    #[test]
    fn idle_connections_holding_full_windows_leave_every_newcomer_its_share() {
        let (mut core, _spool) = core();
        let mut held = 0;
        for producer in 0..40 {
            let slot = streaming(&mut core, producer, 0);
            held += core.conns.get(slot).unwrap().credit_left;
        }
        assert!(held <= LANE_BUFFER_BYTES_MAX - 24 * CONNECTION_CREDIT_GUARANTEED_BYTES, "{held}");
        for producer in 40..LANE_CONNECTIONS_MAX as u64 {
            let slot = streaming(&mut core, producer, 0);
            let credit = core.conns.get(slot).unwrap().credit_left;
            assert!(credit >= CONNECTION_CREDIT_GUARANTEED_BYTES, "producer {producer}: {credit}");
        }
        core.check_invariants();
    }

    #[test]
    fn a_full_lane_evicts_the_oldest_silent_connection_then_the_longest_idle() {
        let (mut core, _spool) = core();
        let silent: Vec<usize> = (0..4).map(|i| slot_of(core.admit(peer(), false, now(i)))).collect();
        let busy: Vec<usize> = (0..LANE_CONNECTIONS_MAX as u64 - 4).map(|p| streaming(&mut core, p, 10)).collect();
        // Full: the oldest silent one is cut at once for the newcomer.
        assert_eq!(core.admit(peer(), false, now(20)), Admission::Wait);
        assert!(core.client_must_abort(silent[0]));
        assert!(!core.client_must_abort(silent[1]));
        core.client_gone(silent[0]);
        assert_eq!(core.admit(peer(), false, now(20)), Admission::Slot(silent[0]));
        for &slot in &silent[1..] {
            core.client_gone(slot);
            assert!(matches!(core.admit(peer(), false, now(30)), Admission::Slot(_)));
        }
        // The 4 newcomers have not said HELLO either: they are the silent ones now.
        for _ in 0..4 {
            assert_eq!(core.admit(peer(), false, now(40)), Admission::Wait);
            let victim = (0..LANE_CONNECTIONS_MAX).find(|s| core.client_must_abort(*s)).unwrap();
            core.client_gone(victim);
            let _ = core.admit(peer(), false, now(40));
        }
        // Streaming connections idle for less than a second keep their slot...
        let victim_streaming = busy[0];
        for slot in 0..LANE_CONNECTIONS_MAX {
            if core.conns.get(slot).is_some_and(|c| c.state == ConnState::AwaitHello) {
                core.client_gone(slot);
                assert!(matches!(core.admit(peer(), false, now(40)), Admission::Slot(_)));
                let mut hello = BytesMut::new();
                frame::encode_hello(&mut hello, 2, 500 + slot as u64, 1);
                core.on_client_bytes(slot, &hello, now(40));
            }
        }
        let at = 10 + CONNECTION_IDLE_EVICTABLE_MS - 1;
        core.tick(now(at));
        assert_eq!(core.admit(peer(), false, now(at)), Admission::Refused);
        // ...after it, the one idle longest gets ERROR Evicted.
        let at = 10 + CONNECTION_IDLE_EVICTABLE_MS;
        core.tick(now(at));
        assert_eq!(core.admit(peer(), false, now(at)), Admission::Wait);
        let evicted = (0..LANE_CONNECTIONS_MAX).find(|s| core.conns.get(*s).is_some_and(|c| c.closing)).unwrap();
        assert_eq!(core.conns.get(evicted).unwrap().active_ms, 10, "{victim_streaming} {evicted}");
        assert_eq!(error_code(&mut core, evicted), Some(ErrorCode::Evicted as u16));
    }

    #[test]
    fn deadlines_close_silent_and_idle_connections_and_cut_those_that_do_not_read() {
        let (mut core, _spool) = core();
        let silent = slot_of(core.admit(peer(), false, now(0)));
        let idle = streaming(&mut core, 7, 0);
        let _ = core.take_client_output(idle);
        // (time, slot, expected ERROR or None, must abort)
        core.tick(now(HANDSHAKE_TIMEOUT_MS - 1));
        assert_eq!(error_code(&mut core, silent), None);
        core.tick(now(HANDSHAKE_TIMEOUT_MS));
        assert_eq!(error_code(&mut core, silent), Some(ErrorCode::Timeout as u16));
        assert!(!core.client_must_abort(silent), "its ERROR may still be read");
        core.tick(now(HANDSHAKE_TIMEOUT_MS + CONNECTION_LINGER_MS));
        assert!(core.client_must_abort(silent), "cut after the linger");
        core.tick(now(CONNECTION_IDLE_TIMEOUT_MS));
        assert_eq!(error_code(&mut core, idle), Some(ErrorCode::Timeout as u16));
    }

    #[test]
    fn metrics_report_every_known_metric_and_only_those() {
        let (mut core, _spool) = core();
        let _ = streaming(&mut core, 3, 0);
        let lines = core.metrics_lines();
        assert_eq!(lines.lines().count(), super::super::metrics::LANE_METRICS.len());
        assert_eq!(super::super::metrics::accepted_lines(&lines), lines, "every line is a known metric");
        assert!(lines.contains("connections_open = 1\n") && lines.contains("producers = 1\n"), "{lines}");
    }

    #[test]
    fn a_connection_closed_while_its_hello_waits_is_never_welcomed() {
        let (mut core, _spool) = core();
        // A HELLO of a producer the lane does not know waits for its lookup.
        let waiting = slot_of(core.admit(peer(), false, now(0)));
        let mut hello = BytesMut::new();
        frame::encode_hello(&mut hello, 2, 12, 1);
        core.on_client_bytes(waiting, &hello, now(0));
        assert!(matches!(core.conns.get(waiting).unwrap().state, ConnState::Waiting { .. }));
        // EVENTS before WELCOME: ERROR 8, closing.
        let mut early = BytesMut::new();
        frame::encode_frame(&mut early, Kind::Events, &[0; 16]);
        core.on_client_bytes(waiting, &early, now(0));
        assert_eq!(error_code(&mut core, waiting), Some(ErrorCode::HandshakeRequired as u16));
        // The lookup completes: the closing connection gets no WELCOME and
        // does not become the producer's connection.
        core.producers.cancel_lookup(12);
        core.lookup_done(12, &[vec![Some("1".into()), Some("0".into())]]);
        assert!(core.take_client_output(waiting).is_none(), "nothing queued after its ERROR");
        assert_eq!(core.producers.get(12).unwrap().active, None);
        core.check_invariants();
    }

    #[test]
    fn a_producer_that_does_not_read_is_paused_then_closed() {
        let (mut core, _spool) = core();
        let slot = streaming(&mut core, 9, 0);
        // Replies it never read (CREDIT frames), as the driver leaves them queued.
        let unread = |core: &mut LaneCore, bytes: usize| {
            let out = &mut core.conns.get_mut(slot).unwrap().out;
            let target = out.len() + bytes;
            while out.len() < target {
                frame::encode_credit(out, 1);
            }
        };
        unread(&mut core, CONNECTION_OUTPUT_PAUSE_BYTES + 1);
        let reserved = core.conns.reserved_shares();
        assert_eq!(core.conns.grantable(core.conns.get(slot).unwrap(), reserved), 0, "paused: no credit");
        unread(&mut core, CONNECTION_OUTPUT_BYTES_MAX);
        let mut body = BytesMut::new();
        frame::encode_events_header(&mut body, 1, 1);
        let mut fields = BytesMut::new();
        let event = crate::producer::synth::synthesize(Module::Dpi, 9, 1, &mut fields);
        frame::encode_record(&mut body, event.table, &event.source_id, event.event_time_us, event.field_count, &fields);
        let mut wire = BytesMut::new();
        frame::encode_frame(&mut wire, Kind::Events, &body);
        core.on_client_bytes(slot, &wire, now(1));
        assert_eq!(error_code(&mut core, slot), Some(ErrorCode::NotReading as u16));
    }
}
