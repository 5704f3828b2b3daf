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
//!   and resolves its unsent records by the watermarks (`spooling.rs`).

use std::collections::{HashMap, VecDeque};

use bytes::BytesMut;
use postgres_protocol::message::backend::Message;

use super::batch::Batch;
use super::session::{Conn, ConnState};
use super::spooling::SpoolLane;
use crate::frame::{self, ErrorCode};
use crate::ingress::{PeerPolicy, RateLimitedLog};
use crate::limits::{
    BATCH_FLUSH_INTERVAL_MS, CONNECTION_CREDIT_BYTES, LANE_BUFFER_BYTES_MAX, LANE_CONNECTIONS_MAX,
    PG_RECONNECT_BACKOFF_MAX_MS, PG_RECONNECT_BACKOFF_MIN_MS,
};
use crate::matrix::Module;
use crate::pg::pipeline::{self, Outcome, Pipeline};
use crate::pg::wire::decode_message;
use crate::spool::{Recovery, Spool};
use crate::sys::PeerCred;

/// Smallest CREDIT grant worth a frame (unless it fills the window).
const CREDIT_GRANT_MIN_BYTES: usize = 64 * 1024;

/// The driver's view of time: monotonic for deadlines, wall clock for ingest_time.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub mono_ms: u64,
    pub wall_us: i64,
}

/// What the lane knows about one producer.
#[derive(Debug, Clone)]
pub(super) struct Producer {
    pub epoch: u64,
    pub committed_seq: u64,
    pub received_seq: u64,
    pub active: Option<(usize, u64)>,
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
    Pg,
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

/// Counters reported in logs and by the supervisor.
#[derive(Debug, Default, Clone)]
pub struct LaneStats {
    pub events_committed: u64,
    pub events_rejected: u64,
    pub duplicates_skipped: u64,
    pub batches_committed: u64,
    pub connections_refused: u64,
    pub protocol_errors: u64,
    pub resets: u64,
    /// Spooled batches read back from their segment because they did not
    /// fit `SPOOL_CACHE_BYTES_MAX` (re-parsed before sending).
    pub batches_read_back: u64,
    /// Acknowledged events recorded as lost (damaged spool records).
    pub events_lost: u64,
}

pub struct LaneCore {
    pub(super) module: Module,
    pub(super) policy: PeerPolicy,
    pub(super) conns: Vec<Option<Conn>>,
    next_generation: u64,
    pub(super) producers: HashMap<u64, Producer>,
    pub(super) lookups_wanted: VecDeque<u64>,
    pub(super) pending: Batch,
    pub(super) sealed: VecDeque<Batch>,
    pub(super) credit_outstanding: usize,
    pub(super) buffered: usize,
    pub(super) pg: PgState,
    pub(super) pg_out: BytesMut,
    pg_in: BytesMut,
    pub(super) draining: bool,
    pub stats: LaneStats,
    refusal_log: RateLimitedLog,
    /// Protocol errors a peer can provoke at will: logged rate-limited.
    error_log: RateLimitedLog,
    pub(super) now: Now,
    /// The durable spool: every ACK waits for it (`spooling.rs`).
    pub(super) spool: SpoolLane,
    /// A failpoint that stops the lane once the next write to this peer completed.
    pub(super) stop_after_send: Option<(SendTarget, &'static str)>,
    /// An error after which the lane must exit (a failed spool fsync).
    pub(super) fatal: Option<String>,
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
        spool: Spool,
        recovery: Recovery<Vec<super::batch::ProducerRange>>,
        disk_reserve: u64,
    ) -> LaneCore {
        let mut core = LaneCore {
            module,
            policy,
            conns: (0..LANE_CONNECTIONS_MAX).map(|_| None).collect(),
            next_generation: 1,
            producers: HashMap::new(),
            lookups_wanted: VecDeque::new(),
            pending: Batch::new(module, now.mono_ms),
            sealed: VecDeque::new(),
            credit_outstanding: 0,
            buffered: 0,
            pg: PgState::Down { retry_at_ms: 0, backoff_ms: PG_RECONNECT_BACKOFF_MIN_MS },
            pg_out: BytesMut::new(),
            pg_in: BytesMut::new(),
            draining: false,
            stats: LaneStats::default(),
            refusal_log: RateLimitedLog::default(),
            error_log: RateLimitedLog::default(),
            now,
            spool: SpoolLane::new(spool, disk_reserve),
            stop_after_send: None,
            fatal: None,
        };
        core.recover_spool(recovery);
        core
    }

    pub fn module(&self) -> Module {
        self.module
    }

    // ----- connections -----

    /// Whether the driver should keep an accept outstanding.
    pub fn wants_accept(&self) -> bool {
        !self.draining && self.conns.iter().any(Option::is_none)
    }

    /// Decide on a new connection from its kernel credentials, before any
    /// byte of it is read. Returns its slot, or None: close it. `pidfd`
    /// tells whether the driver holds an SO_PEERPIDFD for the peer (kept
    /// for the connection's life: it keeps naming the connecting process
    /// even if that pid number is later reused; it does not reserve it).
    pub fn accept(&mut self, peer: PeerCred, pidfd: bool, now: Now) -> Option<usize> {
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
            return None;
        }
        let slot = self.conns.iter().position(Option::is_none)?;
        let generation = self.next_generation;
        self.next_generation += 1;
        tracing::info!(
            lane = self.module.name(),
            slot,
            peer_pid = peer.pid,
            peer_uid = peer.uid,
            peer_gid = peer.gid,
            pidfd,
            "connection admitted"
        );
        self.conns[slot] = Some(Conn::new(generation, peer));
        Some(slot)
    }

    pub fn client_wants_read(&self, slot: usize) -> bool {
        !self.draining && self.conns.get(slot).and_then(Option::as_ref).is_some_and(|c| !c.closing)
    }

    /// Take the bytes queued for a client, if any.
    pub fn take_client_output(&mut self, slot: usize) -> Option<BytesMut> {
        let conn = self.conns.get_mut(slot)?.as_mut()?;
        if conn.out.is_empty() { None } else { Some(std::mem::take(&mut conn.out)) }
    }

    /// Whether the driver should close this client now (all output sent).
    pub fn client_should_close(&self, slot: usize) -> bool {
        self.conns.get(slot).and_then(Option::as_ref).is_some_and(|c| c.closing && c.out.is_empty())
    }

    /// The peer closed, a socket error happened, or the driver closed the fd.
    pub fn client_gone(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::take) else { return };
        self.credit_outstanding -= conn.credit_left;
        if let ConnState::Streaming { producer_id, .. } = conn.state {
            if let Some(p) = self.producers.get_mut(&producer_id) {
                if p.active == Some((slot, conn.generation)) {
                    p.active = None;
                }
            }
        }
        self.regrant_all();
    }

    /// Bytes arrived from a client.
    pub fn on_client_bytes(&mut self, slot: usize, data: &[u8], now: Now) {
        self.now = now;
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else { return };
        if conn.closing {
            return;
        }
        conn.inbuf.extend_from_slice(data);
        loop {
            let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else { return };
            if conn.closing {
                return;
            }
            // Refuse an EVENTS frame beyond the credit from its header alone,
            // before its body is buffered.
            let streaming = matches!(conn.state, ConnState::Streaming { .. });
            if let Some(body_len) = frame::peek_events_body_len(&conn.inbuf).filter(|_| streaming) {
                if body_len > conn.credit_left {
                    let reason = format!("{body_len} bytes announced with {} bytes of credit", conn.credit_left);
                    self.fail_connection(slot, frame::FrameError::new(ErrorCode::CreditExceeded, reason));
                    continue;
                }
            }
            match frame::decode_frame(&mut conn.inbuf) {
                Ok(Some(frame)) => {
                    if frame.kind == frame::Kind::Events {
                        crate::failpoint::check(crate::failpoint::FRAME_READ);
                    }
                    if let Err(error) = self.on_frame(slot, frame) {
                        self.fail_connection(slot, error);
                    }
                }
                Ok(None) => break,
                Err(error) => self.fail_connection(slot, error),
            }
        }
        self.maybe_seal();
    }

    /// The peer ended its side of the connection. Bytes of an unfinished
    /// frame are a protocol error (a truncated frame), answered with ERROR.
    pub fn on_client_eof(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else { return };
        if conn.closing {
            return;
        }
        if conn.inbuf.is_empty() {
            conn.closing = true;
        } else {
            let reason = format!("connection ended inside a frame ({} bytes buffered)", conn.inbuf.len());
            self.fail_connection(slot, frame::FrameError::new(ErrorCode::Malformed, reason));
        }
    }

    /// The driver finished writing everything queued for a client.
    pub fn client_sent(&mut self) {
        self.sent(SendTarget::Client);
    }

    /// The driver finished writing everything queued for PostgreSQL.
    pub fn pg_sent(&mut self) {
        self.sent(SendTarget::Pg);
    }

    fn sent(&mut self, target: SendTarget) {
        if let Some((_, name)) = self.stop_after_send.filter(|(t, _)| *t == target) {
            self.stop_after_send = None;
            crate::failpoint::stop(name);
        }
    }

    /// Set once the lane must exit (the driver returns this as its error).
    pub fn fatal(&self) -> Option<&str> {
        self.fatal.as_deref()
    }

    /// Send an ERROR frame and close the connection after it.
    pub(super) fn fail_connection(&mut self, slot: usize, error: frame::FrameError) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut).filter(|c| !c.closing) else { return };
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
        conn.closing = true;
        conn.inbuf.clear();
    }

    // ----- credit -----

    /// Credit a connection may be granted now.
    pub(super) fn grantable(&self, conn: &Conn) -> usize {
        let window = CONNECTION_CREDIT_BYTES as usize;
        let window_left = window.saturating_sub(conn.credit_left + conn.unreleased);
        let budget_left = LANE_BUFFER_BYTES_MAX.saturating_sub(self.credit_outstanding + self.buffered);
        let amount = window_left.min(budget_left);
        if amount == 0 || (amount < CREDIT_GRANT_MIN_BYTES && amount < window_left) { 0 } else { amount }
    }

    pub(super) fn regrant_all(&mut self) {
        for slot in 0..self.conns.len() {
            let amount = match self.conns[slot].as_ref() {
                Some(conn) if matches!(conn.state, ConnState::Streaming { .. }) && !conn.closing => {
                    self.grantable(conn)
                }
                _ => 0,
            };
            if amount > 0 {
                if let Some(conn) = self.conns[slot].as_mut() {
                    conn.credit_left += amount;
                    frame::encode_credit(&mut conn.out, amount as u32);
                }
                self.credit_outstanding += amount;
            }
        }
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
        for release in &batch.releases {
            self.buffered -= release.bytes;
            if let Some(conn) = self.conns.get_mut(release.slot).and_then(Option::as_mut) {
                if conn.generation == release.generation {
                    conn.unreleased -= release.bytes;
                }
            }
        }
    }

    /// Wanted a producer's watermark before answering its HELLO.
    pub(super) fn want_lookup(&mut self, producer_id: u64) {
        if !self.lookups_wanted.contains(&producer_id) {
            self.lookups_wanted.push_back(producer_id);
        }
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
        if self.drained() {
            for conn in self.conns.iter_mut().flatten() {
                conn.closing = true;
            }
        }
    }

    /// When the driver must call `tick` again at the latest.
    pub fn next_deadline_ms(&self) -> u64 {
        let mut deadline = self.now.mono_ms + 1000;
        if !self.pending.is_empty() {
            deadline = deadline.min(self.pending.started_ms + BATCH_FLUSH_INTERVAL_MS);
        }
        if let PgState::Down { retry_at_ms, .. } = self.pg {
            deadline = deadline.min(retry_at_ms);
        }
        if let Some(retry_at_ms) = self.spool_deadline() {
            deadline = deadline.min(retry_at_ms);
        }
        deadline.max(self.now.mono_ms)
    }

    // ----- PostgreSQL link -----

    /// Whether the driver should ask the connector for a connection now.
    pub fn pg_wants_connect(&self, now: Now) -> bool {
        matches!(self.pg, PgState::Down { retry_at_ms, .. } if now.mono_ms >= retry_at_ms)
    }

    /// Whether a connection asked of the connector is awaited.
    pub fn pg_awaits_connection(&self) -> bool {
        matches!(self.pg, PgState::Connecting { .. })
    }

    /// The driver asked the connector for a connection.
    pub fn pg_connect_requested(&mut self) {
        if let PgState::Down { backoff_ms, .. } = self.pg {
            self.pg = PgState::Connecting { backoff_ms };
        }
    }

    pub fn pg_connected(&mut self, leftover: BytesMut) {
        tracing::info!(lane = self.module.name(), "connected to PostgreSQL");
        self.pg = PgState::Idle;
        self.pg_in = leftover;
        self.pg_out.clear();
        self.spool_connected();
        self.start_request();
    }

    /// A connect attempt failed: back off exponentially, up to the cap.
    pub fn pg_connect_failed(&mut self, error: &str, now: Now) {
        let backoff_ms = match self.pg {
            PgState::Down { backoff_ms, .. } | PgState::Connecting { backoff_ms } => backoff_ms,
            PgState::Idle | PgState::Busy(..) => PG_RECONNECT_BACKOFF_MIN_MS,
        };
        tracing::warn!(lane = self.module.name(), retry_in_ms = backoff_ms, error, "PostgreSQL connect failed");
        self.pg = PgState::Down {
            retry_at_ms: now.mono_ms + backoff_ms,
            backoff_ms: (backoff_ms * 2).min(PG_RECONNECT_BACKOFF_MAX_MS),
        };
    }

    pub fn pg_is_connected(&self) -> bool {
        matches!(self.pg, PgState::Idle | PgState::Busy(..))
    }

    pub fn take_pg_output(&mut self) -> Option<BytesMut> {
        if self.pg_out.is_empty() { None } else { Some(std::mem::take(&mut self.pg_out)) }
    }

    /// A request buffer the driver has finished sending: the next request
    /// is encoded into the same memory (`BytesMut::reserve` reclaims the
    /// whole allocation of an emptied buffer) instead of a fresh one, whose
    /// pages the kernel would zero-fill on first touch: a 16 MiB
    /// transaction is 4,096 page faults. Kept only while nothing else is
    /// queued; at most one is kept, no larger than the largest request.
    pub fn recycle_pg_buffer(&mut self, mut buffer: BytesMut) {
        if self.pg_out.is_empty() {
            buffer.clear();
            // A sent buffer was advanced to its end: move the view back to
            // the allocation's start now (never allocates), or a larger next
            // request would grow it with the dead prefix kept in front.
            let _ = buffer.try_reclaim(buffer.capacity() + 1);
            self.pg_out = buffer;
        }
    }

    /// The PostgreSQL socket failed or closed.
    pub fn pg_lost(&mut self, why: &str, now: Now) {
        self.now = now;
        let was_busy = matches!(self.pg, PgState::Busy(..));
        tracing::warn!(lane = self.module.name(), why, was_busy, "PostgreSQL connection lost");
        self.pg = PgState::Down { retry_at_ms: now.mono_ms, backoff_ms: PG_RECONNECT_BACKOFF_MIN_MS };
        // Batches not yet sent simply wait for the reconnect; only the one in
        // flight has an unknown fate, and the watermark resolves it.
        if was_busy {
            self.reset("database connection lost with a request in flight");
        }
    }

    /// Bytes arrived from PostgreSQL.
    pub fn on_pg_bytes(&mut self, data: &[u8], now: Now) {
        self.now = now;
        self.pg_in.extend_from_slice(data);
        loop {
            let message = match decode_message(&mut self.pg_in) {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(e) => return self.pg_protocol_failure(&e.to_string()),
            };
            if let Err(e) = self.on_pg_message(message) {
                return self.pg_protocol_failure(&e);
            }
        }
        self.tick(now);
    }

    fn pg_protocol_failure(&mut self, why: &str) {
        self.pg = PgState::Down { retry_at_ms: self.now.mono_ms, backoff_ms: PG_RECONNECT_BACKOFF_MIN_MS };
        self.pg_in.clear();
        self.reset(why);
    }

    fn on_pg_message(&mut self, message: Message) -> Result<(), String> {
        let PgState::Busy(pipeline, _) = &mut self.pg else {
            return match message {
                Message::NoticeResponse(_) | Message::ParameterStatus(_) => Ok(()),
                // A FATAL while idle (backend terminated, server shutting
                // down): the connection is gone but nothing was in flight.
                Message::ErrorResponse(_) => {
                    tracing::warn!(lane = self.module.name(), "PostgreSQL ended the idle connection");
                    self.pg = PgState::Down { retry_at_ms: self.now.mono_ms, backoff_ms: PG_RECONNECT_BACKOFF_MIN_MS };
                    self.pg_in.clear();
                    Ok(())
                }
                _ => Err("PostgreSQL sent a message while no request was in flight".into()),
            };
        };
        let Some(outcome) = pipeline.on_message(message).map_err(|e| e.to_string())? else {
            return Ok(());
        };
        let PgState::Busy(_, request) = std::mem::replace(&mut self.pg, PgState::Idle) else {
            return Ok(());
        };
        match (request, outcome) {
            (Request::Lookup(producer_id), Outcome::Rows(rows)) => self.lookup_done(producer_id, &rows),
            (Request::Mark(producer_id), Outcome::Rows(rows)) => self.mark_done(producer_id, &rows),
            (Request::Window, Outcome::Rows(rows)) => self.window_done(&rows),
            (Request::Spooled(batch, records), Outcome::Committed) => self.spooled_committed(&batch, records),
            (_, Outcome::Failed(error)) => {
                self.reset(&format!("database refused a request: {} {}", error.sqlstate, error.message));
            }
            (Request::Lookup(_) | Request::Mark(_) | Request::Window, Outcome::Committed)
            | (Request::Spooled(..), Outcome::Rows(_)) => {
                return Err("mismatched response".into());
            }
        }
        Ok(())
    }

    fn start_request(&mut self) {
        if !matches!(self.pg, PgState::Idle) {
            return;
        }
        if let Some(producer_id) = self.lookups_wanted.pop_front() {
            return self.query_watermark(producer_id, Request::Lookup(producer_id));
        }
        self.spool_start_request();
    }

    /// Send `appliance.watermark_get(producer_id)`, answered as `request`.
    pub(super) fn query_watermark(&mut self, producer_id: u64, request: Request) {
        let sql = format!("SELECT producer_epoch, last_seq FROM appliance.watermark_get({producer_id})");
        match pipeline::encode_query(&mut self.pg_out, &sql) {
            Ok(p) => self.pg = PgState::Busy(Box::new(p), request),
            Err(e) => self.reset(&e.to_string()),
        }
    }

    fn lookup_done(&mut self, producer_id: u64, rows: &[crate::pg::Row]) {
        let (epoch, seq) = match parse_watermark(rows) {
            Ok(mark) => mark,
            Err(why) => return self.reset(why),
        };
        self.spool.note_mark(producer_id, (epoch, seq));
        // A second lookup for a producer already known (two HELLOs raced)
        // must not roll back what the lane learnt since the first.
        self.producers.entry(producer_id).or_insert(Producer {
            epoch,
            committed_seq: seq,
            received_seq: seq,
            active: None,
        });
        self.welcome_waiting(producer_id);
    }

    /// Answer every HELLO of `producer_id` still waiting, unless a damaged
    /// spool record of that producer is still undecided (committed before
    /// the damage, or to be recorded as lost): its WELCOME then waits, so
    /// that it reports a position PostgreSQL agrees with and any loss
    /// notice follows it at once.
    pub(super) fn welcome_waiting(&mut self, producer_id: u64) {
        if !self.producers.contains_key(&producer_id) || self.spool.loss_pending(producer_id) {
            return;
        }
        let waiting: Vec<usize> = (0..self.conns.len())
            .filter(|slot| {
                matches!(self.conns[*slot].as_ref().map(|c| &c.state), Some(ConnState::Waiting { producer_id: p, .. }) if *p == producer_id)
            })
            .collect();
        for slot in waiting {
            self.welcome(slot);
        }
    }

    /// Everything in `ranges` is durable: advance and acknowledge.
    pub(super) fn ack_ranges(&mut self, ranges: &[super::batch::ProducerRange]) {
        let mut touched = Vec::new();
        for range in ranges {
            if let Some(p) = self.producers.get_mut(&range.producer_id) {
                if p.epoch == range.epoch && range.last_seq > p.committed_seq {
                    p.committed_seq = range.last_seq;
                    touched.push(range.producer_id);
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for producer_id in touched {
            let Some(p) = self.producers.get(&producer_id) else { continue };
            let (epoch, seq, active) = (p.epoch, p.committed_seq, p.active);
            if let Some((slot, generation)) = active {
                if let Some(conn) = self.conns[slot].as_mut().filter(|c| c.generation == generation) {
                    frame::encode_ack(&mut conn.out, epoch, seq);
                }
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
        self.draining && !matches!(self.pg, PgState::Busy(..)) && self.spool_drained()
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
