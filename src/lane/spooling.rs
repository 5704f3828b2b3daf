//! The core's use of its commit queue (`commit_queue.rs`): appending
//! sealed batches and acknowledging them once durable, the PostgreSQL
//! requests the queue asks for, and what producers are told (ACK, STATUS,
//! loss notices). The acknowledgement point is the spool's fdatasync;
//! PostgreSQL is fed from the spool in record order.

use super::commit_queue::Next;
use super::conns::ConnState;
use super::core::{LaneCore, PgState, Request, SendTarget};
use crate::base::failpoint;
use crate::codec::frame::{self, StatusCode};
use crate::pg::pipeline;

impl LaneCore {
    /// Spool the sealed batches (in order), make them durable, then
    /// acknowledge them and return their credit.
    pub(super) fn spool_sealed(&mut self) {
        let appended = self.spool.append(&mut self.sealed, self.now.mono_ms);
        if let Some(fatal) = appended.fatal {
            self.fatal = Some(fatal);
            return;
        }
        for durable in &appended.durable {
            self.stats.events_acknowledged += durable.ranges.iter().map(|r| r.last_seq - r.first_seq + 1).sum::<u64>();
            self.ack_ranges(&durable.ranges);
            self.conns.release(&durable.releases);
            if failpoint::fires(failpoint::ACK_SENT) {
                self.stop_after_send = Some((SendTarget::Client, failpoint::ACK_SENT));
            }
        }
        if let Some((code, reason)) = &appended.status {
            self.conns.broadcast_status(*code, reason);
        }
        if appended.attempted {
            self.regrant_all();
        }
    }

    /// A producer welcomed while its lane pushes back is told why at once
    /// (the others were told when it began).
    pub(super) fn tell_push_back(&mut self, slot: usize) {
        let Some((code, reason)) = self.spool.blocked() else { return };
        if let Some(conn) = self.conns.get_mut(slot) {
            frame::encode_status(&mut conn.out, code, reason);
        }
    }

    /// The next database request on `link` after the lookups for waiting
    /// HELLOs.
    pub(super) fn spool_start_request(&mut self, link: usize) {
        let may_send = self.commits.len() < self.active_streams;
        let (next, decided) = self.spool.next(self.now.mono_ms, may_send);
        self.stats.batches_read_back = self.spool.batches_read_back();
        for producer_id in decided {
            self.welcome_waiting(producer_id);
        }
        debug_assert!(matches!(self.pg[link].state, PgState::Idle), "a request is started only on an idle link");
        match next {
            Next::Idle => {}
            Next::Mark(producer_id) => self.query_watermark(link, producer_id, Request::Mark(producer_id)),
            Next::Window => {
                let sql = "SELECT lo_us, hi_us FROM appliance.partition_window()";
                match pipeline::encode_query(self.pg[link].out.buffer(), sql) {
                    Ok(p) => self.pg[link].state = PgState::Busy(Box::new(p), Request::Window),
                    Err(e) => self.reset(&e.to_string()),
                }
            }
            Next::Send(batch, records) => self.send_spooled(link, batch, records),
            Next::Fatal(fatal) => self.fatal = Some(fatal),
        }
    }

    /// Send a transaction's body (BEGIN, the COPYs) on `link`; its tail
    /// follows at once if no transaction is ahead of it, else once the one
    /// ahead committed (`spooled_committed`).
    fn send_spooled(&mut self, link: usize, mut batch: Box<super::batch::Batch>, records: usize) {
        let out = &mut self.pg[link].out;
        let start = out.len();
        let pipeline = match batch.encode_body(out) {
            Ok(p) => p,
            Err(e) => return self.reset(&e.to_string()),
        };
        let stages = [
            (failpoint::BEGIN, pipeline.stages.begin),
            (failpoint::MID_COPY, pipeline.stages.mid_copy),
            (failpoint::AFTER_COPY_DONE, pipeline.stages.after_copy_done),
        ];
        if let Some((name, cut)) = stages.into_iter().find(|(name, _)| failpoint::fires(name)) {
            out.truncate(start + cut);
            self.stop_after_send = Some((SendTarget::Pg(link), name));
        }
        self.pg[link].state = PgState::Busy(Box::new(pipeline), Request::Spooled(batch, records));
        self.commits.push_back(link);
        if self.commits.len() == 1 {
            self.send_tail(link);
        } else {
            self.stats.transactions_overlapped += 1;
        }
    }

    /// Send the tail of `link`'s transaction (its watermark advances and
    /// COMMIT): the transaction is now the front of the commit order.
    fn send_tail(&mut self, link: usize) {
        debug_assert_eq!(self.commits.front(), Some(&link), "only the oldest transaction's tail is sent");
        if matches!(self.stop_after_send, Some((SendTarget::Pg(_), _))) {
            // A failpoint cut a request short: the lane stops once it is sent.
            return;
        }
        let l = &mut self.pg[link];
        let PgState::Busy(pipeline, Request::Spooled(batch, _)) = &mut l.state else {
            debug_assert!(false, "link {link} has no transaction to finish");
            return;
        };
        let start = l.out.len();
        if let Err(e) = batch.encode_tail(l.out.buffer(), pipeline) {
            return self.reset(&e.to_string());
        }
        if failpoint::fires(failpoint::AFTER_WATERMARK) {
            l.out.truncate(start + pipeline.stages.after_tail);
            self.stop_after_send = Some((SendTarget::Pg(link), failpoint::AFTER_WATERMARK));
        } else if failpoint::fires(failpoint::COMMIT_SENT) {
            self.stop_after_send = Some((SendTarget::Pg(link), failpoint::COMMIT_SENT));
        }
    }

    pub(super) fn window_done(&mut self, rows: &[crate::pg::Row]) {
        self.spool.window_read(rows, self.now.mono_ms);
    }

    pub(super) fn mark_done(&mut self, producer_id: u64, rows: &[crate::pg::Row]) {
        match super::core::parse_watermark(rows) {
            Ok(mark) => self.spool.mark_read(producer_id, mark),
            Err(why) => self.reset(why),
        }
    }

    /// The transaction on `link` of the first `records` unsent records
    /// committed; the next one's tail goes now.
    pub(super) fn spooled_committed(&mut self, link: usize, batch: &super::batch::Batch, records: usize) {
        failpoint::check(failpoint::AFTER_COMMIT);
        debug_assert_eq!(self.commits.front(), Some(&link), "transactions commit in spool order");
        self.commits.pop_front();
        self.stats.batches_committed += 1;
        self.stats.events_committed += batch.rows as u64;
        let settled = self.spool.committed(batch, records);
        if let Some(&next) = self.commits.front() {
            self.send_tail(next);
        }
        // The loss is now recorded in PostgreSQL: tell the producers, and
        // answer the HELLOs that waited for it.
        for range in &settled.lost {
            self.stats.events_lost += range.last_seq - range.first_seq + 1;
            self.send_loss_notices(range.producer_id);
        }
        for range in &settled.lost {
            self.welcome_waiting(range.producer_id);
        }
        // Space may have been freed for batches waiting for the quota.
        if settled.was_full {
            self.spool_sealed();
        }
    }

    /// A database failure: nothing acknowledged is dropped; every link is
    /// closed and retried with backoff, and the records in flight are
    /// decided again from the watermarks after reconnect.
    pub(super) fn spool_db_reset(&mut self, why: &str) {
        self.stats.resets += 1;
        self.stats.last_error = Some(crate::lane::metrics::printable(why));
        let backoff_ms = self.spool.failed(why);
        // Every link is closed: a transaction in flight on any of them may
        // only commit in spool order, which the watermarks decide anew.
        for link in &mut self.pg {
            if !matches!(link.state, PgState::Connecting { .. }) {
                link.state = PgState::Down {
                    retry_at_ms: self.now.mono_ms + backoff_ms,
                    backoff_ms: crate::base::limits::PG_RECONNECT_BACKOFF_MIN_MS,
                };
            }
            link.out.clear();
            link.input.clear();
        }
        self.commits.clear();
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

    /// Send a producer its pending loss notices (STATUS
    /// `AcknowledgedLost`), if it has a connection; else they wait for its
    /// next WELCOME.
    pub(super) fn send_loss_notices(&mut self, producer_id: u64) {
        let Some((slot, generation)) = self.producers.get(producer_id).and_then(|p| p.active) else { return };
        if !self.conns.get(slot).is_some_and(|c| c.generation == generation && !c.closing) {
            return;
        }
        let table = self.module.quarantine_table();
        for range in self.spool.take_loss_notices(producer_id) {
            let reason = format!(
                "seqs {}..{} of epoch {} were acknowledged and then lost: their spool record was damaged on disk; \
                 recorded in {table} with reason code 10",
                range.first_seq, range.last_seq, range.epoch,
            );
            tracing::error!(lane = self.module.name(), producer_id, reason, "producer told of lost events");
            if let Some(conn) = self.conns.get_mut(slot) {
                frame::encode_status(&mut conn.out, StatusCode::AcknowledgedLost, &reason);
            }
        }
    }

    pub(super) fn spool_drained(&self) -> bool {
        let stuck = self.spool.blocked().is_some() || !self.pg_is_connected();
        self.pending.is_empty()
            && (self.sealed.is_empty() || self.spool.blocked().is_some())
            && (self.spool.is_empty() || stuck)
    }
}
