//! One producer connection inside a lane: handshake, EVENTS handling,
//! sequence checks and deduplication (part of the sans-I/O core).
//!
//! Protocol rules enforced here (hardening/PROTOCOL.md): HELLO first and
//! once; the module in HELLO must be this lane's; a lower epoch than the
//! producer's durable one is fenced; on one connection EVENTS frames
//! continue each other exactly; the first frame after WELCOME may start at
//! or below the next expected seq (retransmission; duplicates are skipped
//! and acknowledged, never written twice) but never above it (gap); a frame
//! is validated completely before any of it is batched, so a protocol
//! violation writes nothing.

use bytes::BytesMut;

use super::batch::{Quarantined, Release};
use super::core::{LaneCore, Producer};
use crate::base::limits::PRODUCER_ID_MAX;
use crate::base::sys::PeerCred;
use crate::codec::copy::CommonValues;
use crate::codec::frame::{self, ErrorCode, Frame, FrameError, Kind, module_code};
use crate::codec::validate::{Invalid, validate_record};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConnState {
    AwaitHello,
    /// HELLO received; waiting for the producer's watermark from PostgreSQL.
    Waiting {
        producer_id: u64,
        epoch: u64,
    },
    Streaming {
        producer_id: u64,
        epoch: u64,
        next_seq: Option<u64>,
    },
}

#[derive(Debug)]
pub(super) struct Conn {
    pub generation: u64,
    pub peer: PeerCred,
    pub state: ConnState,
    pub inbuf: BytesMut,
    pub out: BytesMut,
    /// EVENTS body bytes the client may still send.
    pub credit_left: usize,
    /// Received bytes not yet released (at the spool's fdatasync).
    pub unreleased: usize,
    pub closing: bool,
    /// When the connection was accepted (the HELLO deadline counts from it).
    pub opened_ms: u64,
    /// When its last frame arrived (or it was accepted): idleness.
    pub active_ms: u64,
    /// When closing began (the linger deadline counts from it).
    pub closing_since_ms: u64,
    /// Cut now, without waiting for queued replies (evicted, or lingered
    /// past `CONNECTION_LINGER_MS`).
    pub abort: bool,
    /// Its replies passed `CONNECTION_OUTPUT_PAUSE_BYTES` unsent: credit
    /// is granted again once they are written (`client_sent`).
    pub paused: bool,
    /// The highest seq this connection was told is durable (its WELCOME,
    /// then its ACKs): an ACK is sent only above it, so none repeats.
    pub acked_seq: u64,
}

impl Conn {
    pub fn new(generation: u64, peer: PeerCred, now_ms: u64) -> Conn {
        Conn {
            generation,
            peer,
            state: ConnState::AwaitHello,
            inbuf: BytesMut::with_capacity(64 * 1024),
            out: BytesMut::new(),
            credit_left: 0,
            unreleased: 0,
            closing: false,
            opened_ms: now_ms,
            active_ms: now_ms,
            closing_since_ms: 0,
            abort: false,
            paused: false,
            acked_seq: 0,
        }
    }

    /// Credit granted or events received and not yet released: what this
    /// connection holds of the lane's budget.
    pub fn held(&self) -> usize {
        self.credit_left + self.unreleased
    }

    /// Begin closing: no more reads; the queued replies are still sent,
    /// for at most `CONNECTION_LINGER_MS`.
    pub fn close(&mut self, now_ms: u64) {
        if !self.closing {
            self.closing = true;
            self.closing_since_ms = now_ms;
            self.inbuf.clear();
        }
    }
}

fn protocol(code: ErrorCode, reason: impl Into<String>) -> FrameError {
    FrameError::new(code, reason)
}

impl LaneCore {
    pub(super) fn on_frame(&mut self, slot: usize, frame: Frame) -> Result<(), FrameError> {
        let state =
            self.conns[slot].as_ref().map(|c| c.state).ok_or_else(|| protocol(ErrorCode::Internal, "no connection"))?;
        match (state, frame.kind) {
            (ConnState::AwaitHello, Kind::Hello) => self.on_hello(slot, &frame.body),
            (ConnState::AwaitHello, _) => Err(protocol(ErrorCode::HandshakeRequired, "the first frame must be HELLO")),
            (ConnState::Waiting { .. }, _) => {
                Err(protocol(ErrorCode::HandshakeRequired, "wait for WELCOME before sending"))
            }
            (ConnState::Streaming { producer_id, epoch, next_seq }, Kind::Events) => {
                self.on_events(slot, producer_id, epoch, next_seq, &frame.body)
            }
            (ConnState::Streaming { .. }, Kind::Hello) => Err(protocol(ErrorCode::Malformed, "HELLO sent twice")),
            (_, kind) => Err(protocol(ErrorCode::UnknownKind, format!("{kind:?} is not sent by producers"))),
        }
    }

    fn on_hello(&mut self, slot: usize, body: &[u8]) -> Result<(), FrameError> {
        let hello = frame::decode_hello(body)?;
        if hello.module != module_code(self.module) {
            return Err(protocol(
                ErrorCode::WrongModule,
                format!("module code {} on the {} lane", hello.module, self.module.name()),
            ));
        }
        let (producer_id, epoch) = (hello.producer_id.get(), hello.producer_epoch.get());
        if producer_id > PRODUCER_ID_MAX || epoch > PRODUCER_ID_MAX {
            return Err(protocol(ErrorCode::Malformed, "producer id and epoch must be below 2^63"));
        }
        let peer =
            self.conns[slot].as_ref().map(|c| c.peer).ok_or_else(|| protocol(ErrorCode::Internal, "no connection"))?;
        if !self.policy.may_claim(&peer, producer_id) {
            return Err(protocol(
                ErrorCode::ProducerNotAllowed,
                format!("producer id {producer_id} is not granted to uid {} gid {} on this lane", peer.uid, peer.gid),
            ));
        }
        if let Some(conn) = self.conns[slot].as_mut() {
            conn.state = ConnState::Waiting { producer_id, epoch };
        }
        if self.producers.contains_key(&producer_id) {
            self.welcome_waiting(producer_id);
        } else {
            self.want_lookup(producer_id);
        }
        Ok(())
    }

    /// Answer a waiting HELLO now that the producer's state is known.
    pub(super) fn welcome(&mut self, slot: usize) {
        let Some(ConnState::Waiting { producer_id, epoch }) = self.conns[slot].as_ref().map(|c| c.state) else {
            return;
        };
        let Some(p) = self.producers.get_mut(&producer_id) else { return };
        if epoch < p.epoch {
            let why = format!("epoch {epoch} is fenced by epoch {}", p.epoch);
            return self.fail_connection(slot, protocol(ErrorCode::EpochFenced, why));
        }
        if epoch > p.epoch {
            *p = Producer { epoch, committed_seq: 0, received_seq: 0, active: p.active, seen_ms: 0 };
        }
        p.seen_ms = self.now.mono_ms;
        let previous = p.active.replace((slot, self.conns[slot].as_ref().map_or(0, |c| c.generation)));
        let (committed, p_epoch) = (p.committed_seq, p.epoch);
        if let Some((old_slot, old_generation)) = previous {
            if old_slot != slot && self.conns[old_slot].as_ref().is_some_and(|c| c.generation == old_generation) {
                self.fail_connection(
                    old_slot,
                    protocol(ErrorCode::EpochFenced, "superseded by a newer connection of the same producer"),
                );
            }
        }
        let reserved = self.reserved_shares();
        let Some(conn) = self.conns[slot].as_ref() else { return };
        let credit = self.grantable(conn, reserved);
        self.credit.grant(credit);
        if let Some(conn) = self.conns[slot].as_mut() {
            conn.state = ConnState::Streaming { producer_id, epoch, next_seq: None };
            conn.credit_left += credit;
            conn.acked_seq = committed;
            frame::encode_welcome(&mut conn.out, p_epoch, committed, credit as u32);
        }
        self.tell_push_back(slot);
        self.send_loss_notices(producer_id);
    }

    fn on_events(
        &mut self,
        slot: usize,
        producer_id: u64,
        epoch: u64,
        next_seq: Option<u64>,
        body: &[u8],
    ) -> Result<(), FrameError> {
        let generation = {
            let conn = self.conns[slot].as_mut().ok_or_else(|| protocol(ErrorCode::Internal, "no connection"))?;
            if body.len() > conn.credit_left {
                return Err(protocol(
                    ErrorCode::CreditExceeded,
                    format!("{} bytes sent with {} bytes of credit", body.len(), conn.credit_left),
                ));
            }
            conn.credit_left -= body.len();
            conn.unreleased += body.len();
            conn.generation
        };
        self.credit.receive(body.len());
        self.pending.add_release(Release { slot, generation, bytes: body.len() });
        let events = frame::decode_events(body)?;
        let count = events.records.len() as u64;
        let first = events.first_seq;
        let received = self.producers.get(&producer_id).map_or(0, |p| p.received_seq);
        match next_seq {
            Some(expected) if first < expected => {
                return Err(protocol(
                    ErrorCode::SequenceRegression,
                    format!("frame starts at {first}, expected {expected}"),
                ));
            }
            Some(expected) if first > expected => {
                return Err(protocol(ErrorCode::SequenceGap, format!("frame starts at {first}, expected {expected}")));
            }
            _ if first > received + 1 => {
                return Err(protocol(
                    ErrorCode::SequenceGap,
                    format!("frame starts at {first}, next expected is {}", received + 1),
                ));
            }
            _ => {}
        }
        // Validate everything first: a protocol violation anywhere writes nothing.
        let mut verdicts = Vec::with_capacity(events.records.len());
        for record in &events.records {
            match validate_record(self.module, record) {
                Err(Invalid::Protocol(error)) => return Err(error),
                verdict => verdicts.push(verdict),
            }
        }
        if let Some(ConnState::Streaming { next_seq, .. }) = self.conns[slot].as_mut().map(|c| &mut c.state) {
            *next_seq = Some(first + count);
        }
        let mut written = false;
        for (index, (record, verdict)) in events.records.iter().zip(verdicts).enumerate() {
            let seq = first + index as u64;
            if seq <= received {
                self.stats.duplicates_skipped += 1;
                continue;
            }
            written = true;
            match verdict {
                Ok(table) => {
                    let common = CommonValues {
                        producer_id: producer_id as i64,
                        producer_epoch: epoch as i64,
                        producer_seq: seq as i64,
                        source_id: *record.source_id,
                        event_time_us: record.event_time_us,
                        ingest_time_us: self.now.wall_us,
                    };
                    self.pending.add_row(record.table as usize, table, &common, record.fields);
                }
                Err(Invalid::Reject { code, reason }) => {
                    self.stats.events_rejected += 1;
                    if let Some(conn) = self.conns[slot].as_mut() {
                        frame::encode_reject(&mut conn.out, epoch, seq, code, &reason);
                    }
                    let table_name = crate::model::schema::tables_of(self.module)
                        .nth(record.table as usize)
                        .map_or_else(|| format!("#{}", record.table), |t| t.qualified_name());
                    self.pending.add_quarantined(Quarantined {
                        producer_id,
                        epoch,
                        seq,
                        table_name,
                        code,
                        reason,
                        raw: record.raw.to_vec(),
                    });
                }
                Err(Invalid::Protocol(error)) => return Err(error),
            }
        }
        let last = first + count - 1;
        if let Some(p) = self.producers.get_mut(&producer_id) {
            p.received_seq = p.received_seq.max(last);
            if !written && p.committed_seq >= last {
                // Pure retransmission of durable events: acknowledge them,
                // unless this connection was already told.
                let (e, c) = (p.epoch, p.committed_seq);
                if let Some(conn) = self.conns[slot].as_mut().filter(|conn| c > conn.acked_seq) {
                    conn.acked_seq = c;
                    frame::encode_ack(&mut conn.out, e, c);
                }
            }
        }
        Ok(())
    }
}
