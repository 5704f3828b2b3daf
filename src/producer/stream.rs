//! A module's reliable event stream to its lane: the producer library's
//! main type. Events are numbered (seq), kept until the lane acknowledges
//! them (ACK: durable in the lane's spool), sent within the credit the lane
//! grants, and resent after a reconnect from the position the lane's
//! WELCOME reports (PROTOCOL.md §7, §9). Blocking use: `send` then `flush`.
//! Inside a module's own event loop: `send`, then `pump(Duration::ZERO)`
//! whenever `fd()` is readable, or writable while `pending_output()` is
//! not 0, or a timer fires; a pump never blocks.
//!
//! Bounds: at most `PRODUCER_UNACKED_BYTES_MAX` bytes of events are kept
//! unacknowledged (`send` returns `Full` beyond it: pump or flush first);
//! frames are at most `PRODUCER_FRAME_BYTES` of body.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::client::{ClientError, ModuleClient, Reply, is_final, welcome_regression};
use super::event::{EventBuilder, EventError};
use crate::base::limits::{FRAME_EVENTS_MAX, RECORD_BYTES_MAX};
use crate::base::sys;
use crate::codec::frame::{self, StatusCode};
use crate::model::matrix::Module;

/// Events kept until acknowledged, in bytes of encoded records.
pub const PRODUCER_UNACKED_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Body size of one EVENTS frame the stream sends.
pub const PRODUCER_FRAME_BYTES: usize = 256 * 1024;
/// Wait between reconnect attempts: doubling from the first to the second.
pub const PRODUCER_RETRY_MIN_MS: u64 = 20;
pub const PRODUCER_RETRY_MAX_MS: u64 = 2_000;

/// Where and as whom a stream sends.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// The appliance instance (`demo` for the embedded default).
    pub instance: String,
    pub module: Module,
    pub producer_id: u64,
    pub epoch: u64,
    /// The uid the appliance runs as: a socket bound by any other uid gets no byte.
    pub server_uid: u32,
}

/// Why a stream call failed.
#[derive(Debug)]
pub enum StreamError {
    /// The lane cannot be reached or refused this connection; the stream
    /// keeps its events and retries on the next `pump` or `flush`.
    Disconnected(ClientError),
    /// The lane refused for good (fenced epoch, wrong module, producer id
    /// not granted, a gap): the stream cannot continue.
    Refused { code: u16, reason: String },
    /// The event is invalid (not sent; its seq not used).
    Event(EventError),
    /// `PRODUCER_UNACKED_BYTES_MAX` are waiting for ACK: pump or flush first.
    Full,
    /// `flush` ran out of time with events unacknowledged.
    Timeout { unacked: u64 },
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::Disconnected(e) => write!(f, "disconnected: {e}"),
            StreamError::Refused { code, reason } => write!(f, "refused by the lane (ERROR {code}): {reason}"),
            StreamError::Event(e) => write!(f, "event: {e}"),
            StreamError::Full => write!(f, "{PRODUCER_UNACKED_BYTES_MAX} bytes of events wait for ACK"),
            StreamError::Timeout { unacked } => write!(f, "{unacked} events still unacknowledged"),
        }
    }
}

impl std::error::Error for StreamError {}

/// What happened on the stream so far.
#[derive(Debug, Clone, Default)]
pub struct StreamStats {
    pub acked: u64,
    pub rejected: u64,
    /// The last REJECT: (seq, code, reason).
    pub last_reject: Option<(u64, u16, String)>,
    pub reconnects: u64,
    /// Events resent after a reconnect.
    pub resent: u64,
    /// The lane's last STATUS (code, reason).
    pub status: Option<(u16, String)>,
    /// Acknowledged events the appliance reported lost (STATUS 4, or a
    /// WELCOME below this stream's ACK).
    pub lost: Vec<String>,
}

/// A producer's stream of events to its lane.
pub struct Stream {
    config: StreamConfig,
    client: Option<ModuleClient>,
    /// Encoded records not yet acknowledged, in seq order from `first_seq`.
    records: BytesMut,
    /// Bytes of acknowledged records dropped from the front of `records`.
    dropped: usize,
    /// End of each unacknowledged event's record, counted from the first
    /// byte ever queued (minus `dropped`: its offset in `records`).
    ends: VecDeque<usize>,
    /// Highest seq ever sent (a send at or below it is a resend).
    highest_sent: u64,
    /// Seq of the first unacknowledged event.
    first_seq: u64,
    /// Highest seq sent on the current connection.
    sent_through: u64,
    stats: StreamStats,
    retry_ms: u64,
    retry_at: Option<Instant>,
    body: BytesMut,
}

impl Stream {
    /// Connect and resume: the next event gets the seq after the lane's
    /// acknowledged position for this producer and epoch.
    pub fn connect(config: StreamConfig) -> Result<Stream, StreamError> {
        let mut stream = Stream {
            config,
            client: None,
            records: BytesMut::new(),
            dropped: 0,
            ends: VecDeque::new(),
            highest_sent: 0,
            first_seq: 1,
            sent_through: 0,
            stats: StreamStats::default(),
            retry_ms: PRODUCER_RETRY_MIN_MS,
            retry_at: None,
            body: BytesMut::with_capacity(PRODUCER_FRAME_BYTES + RECORD_BYTES_MAX),
        };
        stream.reconnect()?;
        Ok(stream)
    }

    /// The seq the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.first_seq + self.ends.len() as u64
    }

    /// The epoch the stream sends in (one above the configured one after
    /// the appliance reported acknowledged events lost, PROTOCOL.md §4.2).
    pub fn epoch(&self) -> u64 {
        self.config.epoch
    }

    /// Every seq at or below this is durable in the appliance.
    pub fn acked_seq(&self) -> u64 {
        self.first_seq - 1
    }

    pub fn unacked(&self) -> u64 {
        self.ends.len() as u64
    }

    pub fn stats(&self) -> &StreamStats {
        &self.stats
    }

    /// The connection's descriptor, to wait for in an event loop: for
    /// reading, and for writing while [`Self::pending_output`] is not 0.
    pub fn fd(&self) -> Option<RawFd> {
        self.client.as_ref().map(|c| c.as_raw_fd())
    }

    /// Bytes of EVENTS frames framed but not yet taken by the socket (a
    /// pump sends what the socket takes and leaves the rest for the next;
    /// bounded by the credit the lane granted).
    pub fn pending_output(&self) -> usize {
        self.client.as_ref().map_or(0, ModuleClient::queued_bytes)
    }

    /// Queue one encoded EVENTS record (`frame::encode_record`); returns its seq.
    pub fn send_record(&mut self, record: &[u8]) -> Result<u64, StreamError> {
        if self.records.len() + record.len() > PRODUCER_UNACKED_BYTES_MAX {
            return Err(StreamError::Full);
        }
        self.records.extend_from_slice(record);
        Ok(self.queued())
    }

    /// Queue the event `builder` holds (validated as the lane would); returns its seq.
    pub fn send_event(
        &mut self,
        builder: &mut EventBuilder,
        source_id: &[u8; 16],
        event_time_us: i64,
    ) -> Result<u64, StreamError> {
        let before = self.records.len();
        if before + RECORD_BYTES_MAX > PRODUCER_UNACKED_BYTES_MAX {
            builder.clear();
            return Err(StreamError::Full);
        }
        builder.finish(source_id, event_time_us, &mut self.records).map_err(StreamError::Event)?;
        Ok(self.queued())
    }

    /// Queue an event of `builder`'s table whose fields are encoded already
    /// (COPY BINARY field encoding), checked as the lane would; returns its seq.
    pub fn send_encoded(
        &mut self,
        builder: &mut EventBuilder,
        fields: &[u8],
        source_id: &[u8; 16],
        event_time_us: i64,
    ) -> Result<u64, StreamError> {
        if self.records.len() + fields.len() + RECORD_BYTES_MAX > PRODUCER_UNACKED_BYTES_MAX {
            return Err(StreamError::Full);
        }
        builder.finish_encoded(fields, source_id, event_time_us, &mut self.records).map_err(StreamError::Event)?;
        Ok(self.queued())
    }

    /// The record just appended to `records` is queued: its seq.
    fn queued(&mut self) -> u64 {
        self.ends.push_back(self.dropped + self.records.len());
        self.next_seq() - 1
    }

    /// Send what the credit allows and take in the replies that arrive
    /// within `wait` (zero: only those already there). A broken connection
    /// is reopened (after a backoff) and everything unacknowledged resent.
    pub fn pump(&mut self, wait: Duration) -> Result<(), StreamError> {
        if self.client.is_none() {
            if self.retry_at.is_some_and(|at| Instant::now() < at) {
                return Ok(());
            }
            self.reconnect()?;
        }
        match self.exchange(wait) {
            Ok(()) => Ok(()),
            Err(ClientError::Refused { code, reason }) if is_final(code) => Err(StreamError::Refused { code, reason }),
            Err(e) => {
                self.client = None;
                Err(self.disconnected(e))
            }
        }
    }

    /// The connection is gone or could not be made: the next attempt waits
    /// the current backoff, which doubles up to `PRODUCER_RETRY_MAX_MS`.
    fn disconnected(&mut self, error: ClientError) -> StreamError {
        self.retry_at = Some(Instant::now() + Duration::from_millis(self.retry_ms));
        self.retry_ms = (self.retry_ms * 2).min(PRODUCER_RETRY_MAX_MS);
        StreamError::Disconnected(error)
    }

    /// Wait until every queued event is acknowledged, reconnecting as
    /// needed, for at most `timeout`.
    pub fn flush(&mut self, timeout: Duration) -> Result<(), StreamError> {
        let deadline = Instant::now() + timeout;
        while !self.ends.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                return Err(StreamError::Timeout { unacked: self.unacked() });
            }
            // Disconnected: sleep until the next attempt is due (pump would
            // return at once until then).
            if let Some(at) = self.retry_at.filter(|_| self.client.is_none()) {
                std::thread::sleep(at.saturating_duration_since(now).min(deadline - now));
            }
            match self.pump(deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(50))) {
                Ok(()) | Err(StreamError::Disconnected(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn reconnect(&mut self) -> Result<(), StreamError> {
        let c = &self.config;
        let attempt = ModuleClient::connect(&c.instance, c.module, c.server_uid, c.producer_id, c.epoch);
        let mut client = match attempt {
            Ok(client) => client,
            Err(ClientError::Refused { code, reason }) if is_final(code) => {
                return Err(StreamError::Refused { code, reason });
            }
            Err(e) => return Err(self.disconnected(e)),
        };
        if self.client.is_none() && self.stats.reconnects == 0 && self.ends.is_empty() && self.first_seq == 1 {
            // First connection: start after what the lane holds already.
            if client.watermark_epoch == self.config.epoch {
                self.first_seq = client.watermark_seq + 1;
            }
        } else {
            self.stats.reconnects += 1;
        }
        let welcome = (client.watermark_epoch, client.watermark_seq);
        if let Some((first, last)) = welcome_regression(welcome, (self.config.epoch, self.acked_seq())) {
            // PROTOCOL.md §4.2: acknowledged events were lost in the
            // appliance. The stream no longer holds them (dropped at their
            // ACK), so it cannot continue in this epoch: reported, and the
            // events not yet acknowledged continue in the next epoch from seq 1.
            self.stats.lost.push(format!(
                "the appliance acknowledged seqs up to {last} but its WELCOME reports {}: seqs {first}..{last} of epoch {} were lost there; continuing in epoch {}",
                first - 1,
                self.config.epoch,
                self.config.epoch + 1
            ));
            drop(client);
            self.config.epoch += 1;
            self.first_seq = 1;
            self.sent_through = 0;
            self.highest_sent = 0;
            return self.reconnect();
        }
        if client.watermark_epoch == self.config.epoch {
            self.acknowledge(client.watermark_seq);
        }
        self.sent_through = self.acked_seq();
        let replies = match client.poll_replies(Duration::from_millis(1)) {
            Ok(replies) => replies,
            Err(e) => return Err(self.disconnected(e)),
        };
        for reply in replies {
            self.note(reply);
        }
        self.client = Some(client);
        self.retry_ms = PRODUCER_RETRY_MIN_MS;
        self.retry_at = None;
        Ok(())
    }

    fn exchange(&mut self, wait: Duration) -> Result<(), ClientError> {
        self.send_within_credit()?;
        let Some(client) = self.client.as_mut() else { return Ok(()) };
        let replies = if client.queued_bytes() > 0 && !wait.is_zero() {
            // Frames wait for room in the socket: wake for room or for a reply.
            let events = libc::POLLIN | libc::POLLOUT;
            let mut fds = [libc::pollfd { fd: client.as_raw_fd(), events, revents: 0 }];
            let wait_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
            sys::poll(&mut fds, wait_ms).map_err(ClientError::Io)?;
            client.send_queued()?;
            client.poll_replies(Duration::ZERO)?
        } else {
            client.poll_replies(wait)?
        };
        for reply in replies {
            self.note(reply);
        }
        // Credit may have come back: use it now.
        self.send_within_credit()
    }

    /// Send EVENTS frames of the queued events after `sent_through`, each
    /// within the credit held, without waiting for room in the socket
    /// (what does not fit waits in the client, bounded by the credit, and
    /// goes with the next pump).
    fn send_within_credit(&mut self) -> Result<(), ClientError> {
        self.frame_within_credit()?;
        match self.client.as_mut() {
            Some(client) => client.send_queued().map(|_| ()),
            None => Ok(()),
        }
    }

    /// Frame the queued events after `sent_through` as EVENTS frames, each
    /// within the credit held.
    fn frame_within_credit(&mut self) -> Result<(), ClientError> {
        let Some(client) = self.client.as_mut() else { return Ok(()) };
        loop {
            let next = self.sent_through + 1;
            let index = (next - self.first_seq) as usize;
            if index >= self.ends.len() {
                return Ok(());
            }
            let limit = (client.credit_bytes as usize).min(PRODUCER_FRAME_BYTES);
            let start = index.checked_sub(1).map_or(self.dropped, |i| self.ends[i]);
            let mut end = start;
            let mut count = 0u32;
            while let Some(&record_end) = self.ends.get(index + count as usize) {
                if frame::EVENTS_HEADER_BYTES + record_end - start > limit || count == FRAME_EVENTS_MAX {
                    break;
                }
                end = record_end;
                count += 1;
            }
            if count == 0 {
                return Ok(()); // wait for credit
            }
            self.body.clear();
            frame::encode_events_header(&mut self.body, next, count);
            self.body.extend_from_slice(&self.records[start - self.dropped..end - self.dropped]);
            client.queue_events(&self.body);
            let last = next + u64::from(count) - 1;
            self.stats.resent += self.highest_sent.min(last).saturating_sub(next - 1);
            self.highest_sent = self.highest_sent.max(last);
            self.sent_through = last;
        }
    }

    fn note(&mut self, reply: Reply) {
        match reply {
            Reply::Ack { epoch, durable_seq } if epoch == self.config.epoch => self.acknowledge(durable_seq),
            Reply::Ack { .. } | Reply::Credit(_) => {}
            Reply::Reject { seq, code, reason } => {
                self.stats.rejected += 1;
                self.stats.last_reject = Some((seq, code, reason));
            }
            Reply::Status { code, reason } => {
                if code == StatusCode::AcknowledgedLost as u16 {
                    self.stats.lost.push(reason.clone());
                }
                self.stats.status = Some((code, reason));
            }
        }
    }

    /// Drop every event at or below `seq` (durable now).
    fn acknowledge(&mut self, seq: u64) {
        if seq < self.first_seq {
            return;
        }
        let count = ((seq - self.first_seq + 1) as usize).min(self.ends.len());
        let Some(end) = count.checked_sub(1).map(|i| self.ends[i]) else { return };
        let _ = self.records.split_to(end - self.dropped);
        self.dropped = end;
        self.ends.drain(..count);
        self.first_seq += count as u64;
        self.stats.acked += count as u64;
        self.sent_through = self.sent_through.max(self.first_seq - 1);
    }
}
