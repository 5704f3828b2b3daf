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

use super::batch::{Quarantined, Release};
use super::conns::ConnState;
use super::core::LaneCore;
use crate::base::limits::PRODUCER_ID_MAX;
use crate::codec::copy::CommonValues;
use crate::codec::frame::{self, ErrorCode, Frame, FrameError, Kind, module_code};
use crate::codec::validate::{Invalid, validate_record};

fn protocol(code: ErrorCode, reason: impl Into<String>) -> FrameError {
    FrameError::new(code, reason)
}

impl LaneCore {
    pub(super) fn on_frame(&mut self, slot: usize, frame: Frame) -> Result<(), FrameError> {
        let state =
            self.conns.get(slot).map(|c| c.state).ok_or_else(|| protocol(ErrorCode::Internal, "no connection"))?;
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
            self.conns.get(slot).map(|c| c.peer).ok_or_else(|| protocol(ErrorCode::Internal, "no connection"))?;
        if !self.policy.may_claim(&peer, producer_id) {
            return Err(protocol(
                ErrorCode::ProducerNotAllowed,
                format!("producer id {producer_id} is not granted to uid {} gid {} on this lane", peer.uid, peer.gid),
            ));
        }
        if let Some(conn) = self.conns.get_mut(slot) {
            conn.state = ConnState::Waiting { producer_id, epoch };
        }
        if self.producers.contains(producer_id) {
            self.welcome_waiting(producer_id);
        } else {
            self.want_lookup(producer_id);
        }
        Ok(())
    }

    /// Answer a waiting HELLO now that the producer's state is known.
    pub(super) fn welcome(&mut self, slot: usize) {
        // A connection closing (it got an ERROR, or ended) is never welcomed.
        let Some(ConnState::Waiting { producer_id, epoch }) =
            self.conns.get(slot).filter(|c| !c.closing).map(|c| c.state)
        else {
            return;
        };
        let Some(known) = self.producers.get(producer_id).map(|p| p.epoch) else { return };
        if epoch < known {
            let why = format!("epoch {epoch} is fenced by epoch {known}");
            return self.fail_connection(slot, protocol(ErrorCode::EpochFenced, why));
        }
        self.producers.start_epoch(producer_id, epoch);
        let generation = self.conns.get(slot).map_or(0, |c| c.generation);
        let Some(p) = self.producers.get_mut(producer_id) else { return };
        p.seen_ms = self.now.mono_ms;
        let previous = p.active.replace((slot, generation));
        let (committed, p_epoch) = (p.committed_seq, p.epoch);
        if let Some((old_slot, old_generation)) = previous {
            if old_slot != slot && self.conns.get(old_slot).is_some_and(|c| c.generation == old_generation) {
                self.fail_connection(
                    old_slot,
                    protocol(ErrorCode::EpochFenced, "superseded by a newer connection of the same producer"),
                );
            }
        }
        let credit = self.conns.grant_initial(slot);
        if let Some(conn) = self.conns.get_mut(slot) {
            conn.state = ConnState::Streaming { producer_id, epoch, next_seq: None };
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
            let conn = self.conns.get_mut(slot).ok_or_else(|| protocol(ErrorCode::Internal, "no connection"))?;
            if body.len() > conn.credit_left {
                return Err(protocol(
                    ErrorCode::CreditExceeded,
                    format!("{} bytes sent with {} bytes of credit", body.len(), conn.credit_left),
                ));
            }
            conn.generation
        };
        if self.conns.receive(slot, body.len()) {
            self.stats.credit_stalls += 1;
        }
        self.pending.add_release(Release { slot, generation, bytes: body.len() });
        let events = frame::decode_events(body)?;
        let count = events.records.len() as u64;
        let first = events.first_seq;
        let received = self.producers.get(producer_id).map_or(0, |p| p.received_seq);
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
        if let Some(ConnState::Streaming { next_seq, .. }) = self.conns.get_mut(slot).map(|c| &mut c.state) {
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
                    let ingest_time_us = self.now.wall_us.max(self.ingest_floor_us);
                    self.ingest_floor_us = ingest_time_us;
                    let common = CommonValues {
                        producer_id: producer_id as i64,
                        producer_epoch: epoch as i64,
                        producer_seq: seq as i64,
                        source_id: *record.source_id,
                        event_time_us: record.event_time_us,
                        ingest_time_us,
                    };
                    self.pending.add_row(record.table as usize, table, &common, record.fields);
                }
                Err(Invalid::Reject { code, reason }) => {
                    self.stats.events_rejected += 1;
                    if let Some(conn) = self.conns.get_mut(slot) {
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
        if let Some(p) = self.producers.get_mut(producer_id) {
            p.received_seq = p.received_seq.max(last);
            if !written && p.committed_seq >= last {
                // Pure retransmission of durable events: acknowledge them,
                // unless this connection was already told.
                let (e, c) = (p.epoch, p.committed_seq);
                if let Some(conn) = self.conns.get_mut(slot).filter(|conn| c > conn.acked_seq) {
                    conn.acked_seq = c;
                    frame::encode_ack(&mut conn.out, e, c);
                }
            }
        }
        Ok(())
    }
}
