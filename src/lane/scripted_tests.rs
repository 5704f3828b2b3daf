//! The lane core driven end to end without I/O: producers that follow the
//! protocol, a scripted PostgreSQL backend (`scripted::ScriptedDb`) and an
//! in-memory spool with faults (`MemorySpool`), moved by the same calls a
//! driver makes. Table tests script one path each and check the frames and
//! SQL that come out; the property test runs random interleavings of
//! producers, credit, replies, database failures, spool faults and lane
//! crashes, over one to three commit streams (PostgreSQL links) answered
//! in any order, and checks after every step that
//! - no ACK names an event that is not durable (in a synced spool record or
//!   committed), no ACK repeats or goes back, no WELCOME is below an ACK;
//! - the core's invariants and its bounds on queued output hold;
//! - the database never refuses a watermark advance (nothing sent twice,
//!   no gap);
//!
//! and at the end, with faults off, that every event sent is committed
//! exactly once.

#![cfg(test)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use bytes::BytesMut;

use super::batch::{ProducerRange, spool_ranges};
use super::core::{Admission, LaneCore, Now};
use super::ingress::{PeerGrant, PeerPolicy};
use super::scripted::ScriptedDb;
use crate::base::limits::{CONNECTION_MEMORY_BYTES_MAX, LANE_CONNECTIONS_MAX};
use crate::base::sys::PeerCred;
use crate::codec::frame::{self, Kind, StatusCode};
use crate::model::matrix::Module;
use crate::storage::spool::{Fault, MemorySpool, Recovery};

const UID: u32 = 4242;
const MODULE: Module = Module::Dpi;

/// One protocol-following producer.
#[derive(Debug, Default)]
struct Producer {
    epoch: u64,
    /// Next seq it will send (it resends from its WELCOME's position + 1).
    next_seq: u64,
    /// Highest seq ever created (events 1..=created exist).
    created: u64,
    /// Highest seq acknowledged to it.
    acked: u64,
    /// Events of its earlier epochs (all acknowledged before it moved on).
    events_before: u64,
    /// Its connection's slot and whether it was welcomed, and the credit it holds.
    slot: Option<usize>,
    welcomed: bool,
    credit: usize,
}

struct Harness {
    core: LaneCore,
    spool: MemorySpool,
    db: ScriptedDb,
    now: Now,
    producers: HashMap<u64, Producer>,
    /// Slot → producer id.
    slots: HashMap<usize, u64>,
    /// STATUS codes received, in order.
    statuses: Vec<u16>,
    /// The lane exited (fatal) and has not been restarted.
    dead: bool,
    crashes: u32,
    /// The lane's commit streams (PostgreSQL links).
    streams: usize,
}

fn spool_summary(payload: &[u8]) -> Vec<ProducerRange> {
    spool_ranges(payload).unwrap()
}

impl Harness {
    fn new() -> Harness {
        Harness::with_streams(1)
    }

    fn with_streams(streams: usize) -> Harness {
        let spool = MemorySpool::new(64 << 20, 1 << 40);
        let now = Now { mono_ms: 1, wall_us: 1_800_000_000_000_000 };
        let mut core = Harness::lane(&spool, now, Recovery::default());
        core.set_commit_streams(streams);
        Harness {
            streams,
            core,
            spool,
            db: ScriptedDb::new(),
            now,
            producers: HashMap::new(),
            slots: HashMap::new(),
            statuses: Vec::new(),
            dead: false,
            crashes: 0,
        }
    }

    fn lane(spool: &MemorySpool, now: Now, recovery: Recovery<Vec<ProducerRange>>) -> LaneCore {
        let policy = PeerPolicy { grants: vec![PeerGrant::parse(&format!("uid:{UID}:0-1000")).unwrap()] };
        LaneCore::new(MODULE, policy, now, Box::new(spool.clone()), recovery, 0)
    }

    fn advance(&mut self, ms: u64) {
        self.now.mono_ms += ms;
        self.now.wall_us += ms as i64 * 1000;
        self.after_step();
    }

    /// Producer `id` connects (if it has no connection) and says HELLO.
    fn connect(&mut self, id: u64) {
        if self.dead || self.producers.get(&id).is_some_and(|p| p.slot.is_some()) {
            return;
        }
        let Admission::Slot(slot) = self.core.admit(PeerCred { pid: 10, uid: UID, gid: UID }, false, self.now) else {
            return;
        };
        let p = self.producers.entry(id).or_insert_with(|| Producer { epoch: 1, next_seq: 1, ..Producer::default() });
        p.slot = Some(slot);
        p.welcomed = false;
        p.credit = 0;
        self.slots.insert(slot, id);
        let mut hello = BytesMut::new();
        frame::encode_hello(&mut hello, frame::module_code(MODULE), id, p.epoch);
        self.core.on_client_bytes(slot, &hello, self.now);
        self.after_step();
    }

    /// PostgreSQL connected, producer `id` connected, its watermark read and
    /// its WELCOME read.
    fn welcomed(&mut self, id: u64) {
        self.database(Lose::No);
        self.connect(id);
        self.database(Lose::No);
        self.read_all();
        assert!(self.producers[&id].welcomed, "producer {id} was not welcomed");
    }

    /// Both links connected, producer `id` welcomed, then two batches of
    /// 10 events sealed and spooled around the partition window's read: the
    /// first goes to link 0 as soon as the window is known, the second
    /// finds it busy (neither is answered yet).
    fn two_batches_on_two_links(&mut self, id: u64) {
        let flush = crate::base::limits::BATCH_FLUSH_INTERVAL_MS;
        self.database_on(1, Lose::No); // link 1 connects
        self.welcomed(id); // link 0 connects; the HELLO's lookup
        self.send(id, 10);
        self.advance(flush);
        self.database_on(0, Lose::No); // the partition window
        self.read_all();
        self.send(id, 10);
        self.advance(flush);
    }

    /// Producer `id` welcomed, then more events spooled than one
    /// transaction holds (`TRANSACTION_ROWS_MAX`), none committed; then the
    /// lane crashes, so every record is on disk only (recovered records are
    /// not cached).
    fn two_transactions_on_disk(&mut self, id: u64) {
        self.welcomed(id);
        let total = crate::base::limits::TRANSACTION_ROWS_MAX as u64 + 10_000;
        while self.producers[&id].created < total {
            self.send(id, 5_000);
            self.advance(crate::base::limits::BATCH_FLUSH_INTERVAL_MS);
            self.read_all();
        }
        assert_eq!(self.db.commits, 0);
        self.crash();
    }

    /// Serve `request` on link `link` and hand the core its replies, with
    /// no tick after them (a driver ticks only after sending what they queued).
    fn serve_by_hand(&mut self, link: usize, request: &[u8]) {
        let replies = self.db.serve_on(link, request);
        self.core.pg_sent(link);
        self.core.on_pg_bytes(link, &replies, self.now);
    }

    /// Producer `id` sends up to `count` events in one frame, within its credit.
    fn send(&mut self, id: u64, count: u32) {
        let Some(p) = self.producers.get_mut(&id) else { return };
        let (Some(slot), true) = (p.slot, p.welcomed) else { return };
        if self.dead {
            return;
        }
        let mut body = BytesMut::new();
        frame::encode_events_header(&mut body, p.next_seq, 0);
        let mut sent = 0;
        for seq in p.next_seq..p.next_seq + u64::from(count) {
            let mut record = BytesMut::new();
            crate::producer::synth::record(MODULE, id, seq, &mut BytesMut::new(), &mut record);
            if body.len() + record.len() > p.credit {
                break;
            }
            body.extend_from_slice(&record);
            sent += 1;
        }
        if sent == 0 {
            return;
        }
        let mut header = BytesMut::new();
        frame::encode_events_header(&mut header, p.next_seq, sent);
        body[..header.len()].copy_from_slice(&header);
        p.credit -= body.len();
        p.next_seq += u64::from(sent);
        p.created = p.created.max(p.next_seq - 1);
        let mut wire = BytesMut::new();
        frame::encode_frame(&mut wire, Kind::Events, &body);
        self.core.on_client_bytes(slot, &wire, self.now);
        self.after_step();
    }

    /// Producer `id`, everything it sent acknowledged, restarts with a new
    /// epoch (from seq 1): a new connection with a HELLO of that epoch.
    fn new_epoch(&mut self, id: u64) {
        let Some(p) = self.producers.get(&id).filter(|p| p.acked == p.created) else { return };
        let (epoch, before) = (p.epoch + 1, p.events_before + p.created);
        self.disconnect(id);
        let p = self.producers.get_mut(&id).unwrap();
        *p = Producer { epoch, next_seq: 1, events_before: before, ..Producer::default() };
        self.connect(id);
    }

    /// Producer `id` closes its connection.
    fn disconnect(&mut self, id: u64) {
        let Some(slot) = self.producers.get_mut(&id).and_then(|p| p.slot.take()) else { return };
        self.slots.remove(&slot);
        if !self.dead {
            self.core.client_gone(slot);
            self.after_step();
        }
    }

    /// Every producer reads what was queued for it (the driver sends it).
    fn read_all(&mut self) {
        if self.dead {
            return;
        }
        for slot in 0..LANE_CONNECTIONS_MAX {
            if let Some(out) = self.core.take_client_output(slot) {
                assert!(out.len() <= CONNECTION_MEMORY_BYTES_MAX, "slot {slot}: {} bytes queued", out.len());
                self.deliver(slot, out);
                self.core.client_sent(slot);
            }
            if self.core.client_must_abort(slot) || self.core.client_should_close(slot) {
                self.core.client_gone(slot);
                if let Some(id) = self.slots.remove(&slot) {
                    self.producers.get_mut(&id).unwrap().slot = None;
                }
            }
        }
        self.after_step();
    }

    /// A producer's view of the frames it received, with the checks.
    fn deliver(&mut self, slot: usize, mut out: BytesMut) {
        let Some(&id) = self.slots.get(&slot) else { return };
        while let Some(f) = frame::decode_frame(&mut out).unwrap() {
            let p = self.producers.get_mut(&id).unwrap();
            match f.kind {
                Kind::Welcome => {
                    let w = frame::decode_welcome(&f.body).unwrap();
                    let (epoch, seq) = (w.watermark_epoch.get(), w.watermark_seq.get());
                    assert!(epoch == p.epoch || (epoch, seq) == (0, 0), "producer {id}: WELCOME epoch {epoch}");
                    assert!(seq >= p.acked, "producer {id}: WELCOME at {seq}, below its ACK {}", p.acked);
                    assert!(seq <= p.created, "producer {id}: WELCOME at {seq}, never sent past {}", p.created);
                    let durable = durable_through(&self.spool, &self.db, id, p.epoch);
                    assert!(seq <= durable, "producer {id}: WELCOME at {seq} but only {durable} durable");
                    // The acknowledged position: what it resends from.
                    p.acked = seq;
                    p.welcomed = true;
                    p.next_seq = seq + 1;
                    p.credit = w.credit_bytes.get() as usize;
                }
                Kind::Credit => p.credit += frame::decode_credit(&f.body).unwrap().credit_bytes.get() as usize,
                Kind::Ack => {
                    let a = frame::decode_ack(&f.body).unwrap();
                    let (epoch, seq) = (a.epoch.get(), a.durable_seq.get());
                    assert_eq!(epoch, p.epoch, "producer {id}: ACK of another epoch");
                    assert!(seq > p.acked, "producer {id}: ACK {seq} repeats or goes back from {}", p.acked);
                    let durable = durable_through(&self.spool, &self.db, id, epoch);
                    assert!(seq <= durable, "producer {id}: ACK {seq} but only {durable} durable");
                    p.acked = seq;
                }
                Kind::Status => self.statuses.push(frame::decode_error(&f.body).map(|(c, _)| c).unwrap_or(0)),
                Kind::Error => {
                    let (code, why) = frame::decode_error(&f.body).unwrap();
                    panic!("producer {id} got ERROR {code}: {why}");
                }
                Kind::Reject => panic!("producer {id}: valid event rejected"),
                Kind::Hello | Kind::Events => panic!("lane sent a producer frame"),
            }
        }
    }

    /// Exchange with PostgreSQL: connect if due, send what is queued, and
    /// deliver the replies (`lose`: the connection breaks before the
    /// request arrives, or after it was executed with the replies lost).
    fn database(&mut self, lose: Lose) {
        self.database_on(0, lose);
    }

    /// `database` on PostgreSQL link `link` (the scripted server's
    /// connection of the same index). A link the core closed is closed on
    /// the server too (its open transaction rolled back), as a closed
    /// socket is.
    fn database_on(&mut self, link: usize, lose: Lose) {
        if self.dead {
            return;
        }
        for l in 0..self.streams {
            if !self.core.pg_link_connected(l) {
                self.db.connection_lost_on(l);
            }
        }
        if !self.core.pg_link_connected(link) {
            if self.core.pg_wants_connect(link, self.now) {
                self.core.pg_connect_requested(link);
                assert_eq!(self.core.pg_connected(BytesMut::new()), Some(link));
            }
            return self.after_step();
        }
        let Some(request) = self.core.take_pg_output(link) else { return };
        if lose == Lose::Before {
            self.db.connection_lost_on(link);
            self.core.pg_lost(link, "scripted: lost before the request", self.now);
            return self.after_step();
        }
        let replies = self.db.serve_on(link, &request.into_vec());
        self.core.pg_sent(link);
        if lose == Lose::After {
            self.db.connection_lost_on(link);
            self.core.pg_lost(link, "scripted: lost after the request ran", self.now);
            return self.after_step();
        }
        // Delivered in two reads, split anywhere.
        let cut = replies.len() / 3;
        self.core.on_pg_bytes(link, &replies[..cut], self.now);
        self.core.on_pg_bytes(link, &replies[cut..], self.now);
        self.after_step();
    }

    /// The lane process dies (killed, or exits on a fatal error) and is
    /// restarted over what the spool holds durably.
    fn crash(&mut self) {
        self.crashes += 1;
        for link in 0..self.streams {
            self.db.connection_lost_on(link);
        }
        let recovery = self.spool.crash(spool_summary);
        self.core = Harness::lane(&self.spool, self.now, recovery);
        self.core.set_commit_streams(self.streams);
        self.dead = false;
        for p in self.producers.values_mut() {
            p.slot = None;
            p.welcomed = false;
        }
        self.slots.clear();
    }

    /// What a driver does after every event: tick the core, then (its
    /// output sent) read the next transaction's records ahead.
    fn after_step(&mut self) {
        if !self.dead {
            self.core.tick(self.now);
            self.core.read_ahead(self.now);
        }
        self.core.check_invariants();
        if self.core.fatal().is_some() {
            self.dead = true;
        }
    }

    /// With no fault left, run until every event sent is committed and
    /// acknowledged; then check it was committed exactly once.
    fn settle(&mut self) {
        if self.dead {
            self.crash();
        }
        for _ in 0..5_000 {
            let ids: Vec<u64> = self.producers.keys().copied().collect();
            for id in ids {
                self.connect(id);
                let p = &self.producers[&id];
                if p.next_seq <= p.created {
                    // Resend what is not acknowledged; nothing new.
                    self.send(id, (p.created + 1 - p.next_seq).min(64) as u32);
                }
            }
            self.read_all();
            for link in 0..self.streams {
                self.database_on(link, Lose::No);
            }
            self.advance(50);
            let acked = self.producers.values().all(|p| p.acked == p.created);
            let committed = self.producers.iter().all(|(id, p)| mark_covers(self.db.marks.get(id), p));
            let events: u64 = self.producers.values().map(|p| p.events_before + p.created).sum();
            if acked && committed && self.db.rows >= events && !self.db.in_transaction() {
                break;
            }
        }
        for (id, p) in &self.producers {
            assert_eq!(p.acked, p.created, "producer {id}: acknowledged");
            assert!(mark_covers(self.db.marks.get(id), p), "producer {id}: committed {:?}", self.db.marks.get(id));
        }
        let events: u64 = self.producers.values().map(|p| p.events_before + p.created).sum();
        assert_eq!(self.db.rows, events, "every event committed exactly once");
        assert!(self.db.refusals.is_empty(), "watermark advances refused: {:?}", self.db.refusals);
        assert!(self.db.unknown.is_empty(), "unexpected SQL: {:?}", self.db.unknown);
    }
}

/// Whether PostgreSQL's watermark `mark` covers everything `p` sent in
/// its epoch (a new epoch with nothing sent yet: its row count decides).
fn mark_covers(mark: Option<&(u64, u64)>, p: &Producer) -> bool {
    p.created == 0 || mark == Some(&(p.epoch, p.created))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lose {
    No,
    Before,
    After,
}

/// The highest seq of `producer` in `epoch` below which every event is
/// durable: committed (the database's watermark), then continued by the
/// spool's synced records in order.
fn durable_through(spool: &MemorySpool, db: &ScriptedDb, producer: u64, epoch: u64) -> u64 {
    let mut through = db.marks.get(&producer).filter(|m| m.0 == epoch).map_or(0, |m| m.1);
    for record in spool.records().iter().filter(|r| r.durable) {
        for range in spool_summary(&record.payload) {
            if range.producer_id == producer && range.epoch == epoch && range.first_seq <= through + 1 {
                through = through.max(range.last_seq);
            }
        }
    }
    through
}

// ----- table tests -----

/// One producer's events go HELLO → lookup → WELCOME → EVENTS → spool
/// append + fdatasync → ACK → one transaction: BEGIN, COPY, the watermark
/// advance, COMMIT.
#[test]
fn one_batch_is_acknowledged_after_its_sync_and_committed_as_one_transaction() {
    let mut h = Harness::new();
    h.database(Lose::No); // connect
    h.connect(7);
    h.database(Lose::No); // watermark lookup
    assert_eq!(h.db.statements.back().unwrap(), "SELECT producer_epoch, last_seq FROM appliance.watermark_get(7)");
    h.read_all();
    assert!(h.producers[&7].welcomed);
    h.send(7, 10);
    assert_eq!(h.spool.syncs(), 0, "sealed only at the flush interval");
    h.advance(crate::base::limits::BATCH_FLUSH_INTERVAL_MS);
    assert_eq!(h.spool.syncs(), 1);
    h.read_all();
    assert_eq!(h.producers[&7].acked, 10, "ACK once synced, before any COMMIT");
    assert_eq!(h.db.commits, 0);
    h.database(Lose::No); // the partition window
    h.database(Lose::No); // the transaction
    let sql: Vec<&str> = h.db.statements.iter().map(String::as_str).collect();
    let begin = sql.iter().position(|s| *s == "BEGIN").unwrap();
    let (last, copies) = (sql.len() - 1, &sql[begin + 1..sql.len() - 2]);
    assert!(!copies.is_empty() && copies.iter().all(|s| s.starts_with("COPY dpi.")), "one COPY per table: {copies:?}");
    assert_eq!(sql[last - 1], "SELECT appliance.watermark_advance(7, 1, 1, 10, 10);\n");
    assert_eq!(sql[last], "COMMIT");
    assert_eq!((h.db.rows, h.db.commits), (10, 1));
    assert!(h.spool.records().is_empty(), "released once committed");
    h.settle();
}

/// A failed fdatasync ends the lane with nothing of the record
/// acknowledged; the restarted lane replays only what was durable and the
/// producer resends the rest.
#[test]
fn a_failed_sync_is_fatal_and_acknowledges_nothing_of_its_record() {
    let mut h = Harness::new();
    h.welcomed(1);
    h.send(1, 5);
    h.spool.inject(Fault::Sync);
    h.advance(crate::base::limits::BATCH_FLUSH_INTERVAL_MS);
    assert!(matches!(h.core.fatal(), Some(super::core::LaneFatal::SpoolSync(_))), "{:?}", h.core.fatal());
    h.read_all();
    assert_eq!(h.producers[&1].acked, 0);
    h.crash();
    assert!(h.spool.records().is_empty(), "the unsynced record is gone after the crash");
    h.settle();
    assert_eq!(h.db.rows, 5);
}

/// A failed write pushes producers back (STATUS `SpoolUnwritable`, no
/// credit), is retried on the timer, and resumes (STATUS `Resumed`).
#[test]
fn a_failed_append_pushes_back_then_resumes_without_loss() {
    let mut h = Harness::new();
    h.welcomed(2);
    h.send(2, 8);
    h.spool.inject(Fault::Append);
    h.advance(crate::base::limits::BATCH_FLUSH_INTERVAL_MS);
    h.read_all();
    assert_eq!(h.statuses, [StatusCode::SpoolUnwritable as u16]);
    assert_eq!(h.producers[&2].acked, 0);
    h.advance(crate::base::limits::SPOOL_RETRY_INTERVAL_MS);
    h.read_all();
    assert_eq!(h.statuses, [StatusCode::SpoolUnwritable as u16, StatusCode::Resumed as u16]);
    assert_eq!(h.producers[&2].acked, 8);
    h.settle();
}

/// A transaction that committed but whose replies were lost is decided by
/// the watermark after the reconnect: skipped, never sent twice.
#[test]
fn a_commit_whose_reply_is_lost_is_resolved_by_the_watermark_not_resent() {
    let mut h = Harness::new();
    h.welcomed(3);
    h.send(3, 6);
    h.advance(crate::base::limits::BATCH_FLUSH_INTERVAL_MS);
    h.database(Lose::No); // window
    h.database(Lose::After); // the transaction runs; its replies are lost
    assert_eq!((h.db.rows, h.db.commits), (6, 1));
    h.advance(crate::base::limits::PG_RECONNECT_BACKOFF_MAX_MS);
    h.database(Lose::No); // reconnect
    h.database(Lose::No); // the watermark of the record's producer
    assert_eq!(h.db.statements.back().unwrap(), "SELECT producer_epoch, last_seq FROM appliance.watermark_get(3)");
    assert!(h.spool.records().is_empty(), "the record is known committed and released");
    h.settle();
    assert_eq!(h.db.commits, 1, "never sent twice");
}

/// A transaction the database refuses (serialization failure) or that is
/// lost before it arrives is retried; nothing acknowledged is dropped.
#[test]
fn refused_and_lost_transactions_are_retried_until_committed() {
    for (fault, lose) in [(Some("40001"), Lose::No), (Some("53100"), Lose::No), (None, Lose::Before)] {
        let mut h = Harness::new();
        h.welcomed(4);
        h.send(4, 12);
        h.advance(crate::base::limits::BATCH_FLUSH_INTERVAL_MS);
        h.database(Lose::No); // window
        if let Some(sqlstate) = fault {
            h.db.fail_next_statement(sqlstate);
        }
        h.database(lose);
        assert_eq!(h.db.commits, 0, "{fault:?} {lose:?}");
        h.read_all();
        assert_eq!(h.producers[&4].acked, 12, "acknowledged from the spool regardless");
        h.settle();
        assert_eq!(h.db.commits, 1, "{fault:?} {lose:?}");
    }
}

/// The quota reached: STATUS `SpoolFull`, no credit; a commit frees space
/// and the lane resumes.
#[test]
fn a_full_spool_pushes_back_until_a_commit_frees_space() {
    let mut h = Harness::new();
    let spool = MemorySpool::new(8 * 1024, 1 << 40);
    h.core = Harness::lane(&spool, h.now, Recovery::default());
    h.spool = spool;
    h.welcomed(5);
    for _ in 0..40 {
        h.send(5, 16);
        h.advance(crate::base::limits::BATCH_FLUSH_INTERVAL_MS);
        h.read_all();
        if h.statuses.contains(&(StatusCode::SpoolFull as u16)) {
            break;
        }
    }
    assert!(h.statuses.contains(&(StatusCode::SpoolFull as u16)), "{:?}", h.statuses);
    h.settle();
    assert!(h.statuses.contains(&(StatusCode::Resumed as u16)), "{:?}", h.statuses);
}

/// Two commit streams: a second transaction's body goes out while the
/// first is in flight, but its tail (watermark advance, COMMIT) waits until
/// the first committed, so transactions commit in spool order and the
/// server never refuses an advance; a failure of the first abandons both,
/// and the watermarks decide after the reconnect.
#[test]
fn two_streams_send_bodies_at_once_and_commit_in_spool_order() {
    for fail_first in [false, true] {
        let mut h = Harness::with_streams(2);
        h.two_batches_on_two_links(9);
        // Transaction A (seqs 1-10) is queued on link 0, whole; B (11-20)
        // on link 1 (its body only): the server runs B's COPY now.
        h.database_on(1, Lose::No);
        assert!(h.db.in_transaction(), "B's COPY runs while A is in flight");
        assert_eq!(h.db.commits, 0);
        assert!(h.db.statements.iter().all(|s| !s.contains("watermark_advance")), "no tail before A's");
        if fail_first {
            h.db.fail_next_statement("40001");
        }
        h.database_on(0, Lose::No); // A commits (or fails)
        if fail_first {
            assert_eq!(h.db.commits, 0);
            h.database_on(1, Lose::No);
            assert!(!h.db.in_transaction(), "B was abandoned with its link");
        } else {
            assert_eq!((h.db.commits, h.db.rows), (1, 10));
            h.database_on(1, Lose::No); // B's tail went out once A committed
            assert_eq!((h.db.commits, h.db.rows), (2, 20));
            assert_eq!(h.db.marks.get(&9), Some(&(1, 20)));
        }
        h.settle();
        assert_eq!(h.db.rows, 20);
    }
}

/// A COMMIT's reply queues the tail of the transaction behind it at once,
/// while new transactions (which may read records back from the spool)
/// wait for the driver's next tick: the driver hands the tail to the kernel
/// first, so a backend never waits on the lane's disk for its COMMIT.
#[test]
fn a_commit_reply_queues_the_next_tail_and_leaves_new_transactions_to_the_tick() {
    let mut h = Harness::with_streams(2);
    h.two_batches_on_two_links(7);
    h.read_all();
    h.send(7, 10); // a third batch: both links are busy, it waits
    h.advance(crate::base::limits::BATCH_FLUSH_INTERVAL_MS);
    h.database_on(1, Lose::No); // B's body runs
    // A's transaction served by hand, so that nothing ticks after its reply.
    let request = h.core.take_pg_output(0).expect("A's transaction").into_vec();
    h.serve_by_hand(0, &request);
    assert_eq!((h.db.commits, h.db.rows), (1, 10));
    let tail = h.core.take_pg_output(1).expect("B's tail is queued with A's COMMIT reply").into_vec();
    assert!(String::from_utf8_lossy(&tail).contains("COMMIT"), "B's tail holds its COMMIT");
    assert!(h.core.take_pg_output(0).is_none(), "no new transaction before the tick");
    h.core.tick(h.now);
    let third = h.core.take_pg_output(0).expect("the third batch's transaction starts at the tick").into_vec();
    assert!(String::from_utf8_lossy(&third).contains("BEGIN"));
    h.serve_by_hand(1, &tail);
    assert_eq!((h.db.commits, h.db.rows), (2, 20));
    h.serve_by_hand(0, &third);
    h.after_step();
    h.settle();
    assert_eq!(h.db.rows, 30);
}

/// While every commit stream is busy, the lane reads the next
/// transaction's records back ahead of their turn (recovered records are
/// not cached), and starts that transaction from them without reading them
/// again; every event is committed once.
#[test]
fn the_next_transactions_records_are_read_back_while_every_stream_is_busy() {
    let mut h = Harness::new();
    h.two_transactions_on_disk(5);
    h.database(Lose::No); // connect
    h.database(Lose::No); // the producer's watermark
    assert_eq!(h.core.stats.batches_read_back, 0, "nothing is read ahead with no stream busy");
    h.database(Lose::No); // the partition window; the first transaction starts
    let records = h.spool.records().len() as u64;
    assert_eq!(
        h.core.stats.batches_read_back, records,
        "every record is read back: the first transaction's, and the second's ahead of its turn"
    );
    h.database(Lose::No); // the first commits; the second starts from what was read ahead
    assert_eq!(h.db.commits, 1);
    assert!(h.db.rows < h.producers[&5].created, "a second transaction follows: {} rows in the first", h.db.rows);
    assert_eq!(h.core.stats.batches_read_back, records, "nothing is read twice");
    h.database(Lose::No); // the second commits
    assert_eq!((h.db.commits, h.db.rows), (2, h.producers[&5].created));
    h.settle();
    assert_eq!(h.db.rows, h.producers[&5].created);
}

/// A record the read-ahead finds damaged is not read again ahead of its
/// turn (each try would block the lane); at its turn it is read once more
/// and reported as always: dropped, its events a recorded gap, the rest
/// committed.
#[test]
fn a_damaged_record_is_not_read_ahead_again_and_is_reported_at_its_turn() {
    let mut h = Harness::new();
    h.two_transactions_on_disk(5);
    let last = h.spool.records().last().map(|r| r.location.id).expect("records");
    h.spool.inject(crate::storage::spool::memory::Fault::Damage(last));
    h.database(Lose::No); // connect
    h.database(Lose::No); // the producer's watermark
    h.database(Lose::No); // the partition window; the first transaction starts, the second is read ahead
    let reads = h.spool.reads();
    assert_eq!(reads, h.spool.records().len() as u64, "every record read once, the damaged one included");
    for _ in 0..3 {
        h.core.read_ahead(h.now);
    }
    assert_eq!(h.spool.reads(), reads, "the damaged record is not read again ahead of its turn");
    h.database(Lose::No); // the first commits; the second starts: the damaged record is read at its turn
    assert_eq!(h.spool.reads(), reads + 1);
    h.database(Lose::No); // the second commits without it
    assert_eq!(h.db.commits, 2);
    assert!(h.db.rows < h.producers[&5].created, "the damaged record's events are not committed");
}

/// A lane told to use fewer commit streams than it has links starts no
/// more transactions at once than that, reports a backlog while records
/// wait, and uses the links again once allowed.
#[test]
fn a_lane_starts_no_more_transactions_than_its_share_of_streams() {
    let mut h = Harness::with_streams(2);
    h.core.set_active_streams(1);
    h.two_batches_on_two_links(8);
    assert!(h.core.take_pg_output(1).is_none(), "link 1 idle: one stream allowed");
    assert!(h.core.backlogged(), "a record waits for a stream");
    h.core.set_active_streams(2);
    assert!(h.core.take_pg_output(1).is_some(), "the second transaction's body goes out once allowed");
    assert!(!h.core.backlogged());
    h.db.connection_lost_on(1);
    h.core.pg_lost(1, "test: its body was taken, not served", h.now);
    h.settle();
    assert_eq!(h.db.rows, 20);
}

/// ingest_time never goes back through the spool, even when the wall
/// clock does, and each sealed batch's rows are later than the batch
/// before: with commits in spool order, a keyset tailer on (ingest_time,
/// producer_id, producer_seq) never sees a row appear behind its position.
#[test]
fn ingest_time_never_decreases_through_the_spool_and_each_batch_is_later() {
    let flush = crate::base::limits::BATCH_FLUSH_INTERVAL_MS;
    let mut h = Harness::new();
    h.welcomed(6);
    h.send(6, 5);
    h.advance(flush);
    h.send(6, 5);
    h.advance(flush);
    h.now.wall_us -= 10_000_000; // the wall clock steps back 10 s
    h.send(6, 5);
    h.advance(flush);
    let bounds: Vec<(i64, i64)> = h
        .spool
        .records()
        .iter()
        .map(|r| {
            let batch = super::batch::Batch::from_spool_payload(MODULE, 0, &r.payload).unwrap();
            (batch.ingest_min_us, batch.ingest_max_us)
        })
        .collect();
    assert_eq!(bounds.len(), 3, "three sealed batches spooled, none committed yet");
    for pair in bounds.windows(2) {
        assert!(pair[1].0 > pair[0].1, "a batch not later than the one before: {bounds:?}");
    }
    h.settle();
}

// ----- property test -----

#[derive(Clone, Debug)]
enum Step {
    Connect(u64),
    Send(u64, u32),
    Disconnect(u64),
    NewEpoch(u64),
    Read,
    /// An exchange on this PostgreSQL link (taken modulo the streams).
    Database(usize, Lose),
    /// The supervisor's share of commit streams changes.
    Share(usize),
    FailNext(&'static str),
    SpoolFault(Fault),
    Time(u64),
    Crash,
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    let producer = 0u64..4;
    prop_oneof![
        3 => producer.clone().prop_map(Step::Connect),
        8 => (producer.clone(), 1u32..40).prop_map(|(p, n)| Step::Send(p, n)),
        1 => producer.clone().prop_map(Step::Disconnect),
        1 => producer.prop_map(Step::NewEpoch),
        6 => Just(Step::Read),
        6 => (0usize..3).prop_map(|l| Step::Database(l, Lose::No)),
        1 => (0usize..3).prop_map(|l| Step::Database(l, Lose::Before)),
        1 => (0usize..3).prop_map(|l| Step::Database(l, Lose::After)),
        1 => prop_oneof![Just("40001"), Just("57014"), Just("53100")].prop_map(Step::FailNext),
        1 => prop_oneof![Just(Fault::Append), Just(Fault::Sync)].prop_map(Step::SpoolFault),
        4 => (1u64..300).prop_map(Step::Time),
        1 => (1usize..4).prop_map(Step::Share),
        1 => Just(Step::Crash),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96),
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Random interleavings never acknowledge an event that is not durable,
    /// never acknowledge twice, never pass a bound, and end with every event
    /// committed exactly once.
    #[test]
    fn random_interleavings_keep_every_acknowledged_event_exactly_once(
        streams in 1usize..=3,
        steps in proptest::collection::vec(step(), 1..160)
    ) {
        let mut h = Harness::with_streams(streams);
        for step in steps {
            match step {
                Step::Connect(p) => h.connect(p),
                Step::Send(p, n) => h.send(p, n),
                Step::Disconnect(p) => h.disconnect(p),
                Step::NewEpoch(p) => h.new_epoch(p),
                Step::Read => h.read_all(),
                Step::Database(link, lose) => h.database_on(link % streams, lose),
                Step::Share(n) => {
                    if !h.dead {
                        h.core.set_active_streams(n);
                        h.after_step();
                    }
                }
                Step::FailNext(sqlstate) => h.db.fail_next_statement(sqlstate),
                Step::SpoolFault(fault) => h.spool.inject(fault),
                Step::Time(ms) => h.advance(ms),
                Step::Crash => h.crash(),
            }
        }
        h.spool.clear_faults();
        h.settle();
    }
}
