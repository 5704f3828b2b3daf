//! The producers a lane knows (part of the sans-I/O core): per producer
//! its epoch, the highest seq received and the highest acknowledged
//! (durable in the spool or committed), and its active connection; plus
//! the HELLOs whose watermark is still to be read from PostgreSQL.
//!
//! Rules kept here:
//! - `committed_seq <= received_seq`, and both only go up within an epoch;
//!   a newer epoch starts both again at 0;
//! - the table is bounded (`lane_producers_max()`): beyond it, idle
//!   producers whose acknowledged position PostgreSQL already holds are
//!   forgotten, the least recently seen first (`forget_idle`);
//! - a producer id is queued for a lookup at most once.

use std::collections::{HashMap, HashSet, VecDeque};

use super::batch::ProducerRange;

/// What the lane knows about one producer.
#[derive(Debug, Clone)]
pub(super) struct Producer {
    pub epoch: u64,
    pub committed_seq: u64,
    pub received_seq: u64,
    /// Its connection: (slot, generation).
    pub active: Option<(usize, u64)>,
    /// When a connection of it was last welcomed (which producers to
    /// forget first beyond the bound).
    pub seen_ms: u64,
}

impl Producer {
    fn new(epoch: u64, seq: u64, seen_ms: u64) -> Producer {
        Producer { epoch, committed_seq: seq, received_seq: seq, active: None, seen_ms }
    }
}

/// An acknowledgement to send: the producer's new durable position on its
/// active connection, if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Acknowledged {
    pub epoch: u64,
    pub seq: u64,
    pub active: Option<(usize, u64)>,
}

#[derive(Debug, Default)]
pub(super) struct Producers {
    table: HashMap<u64, Producer>,
    /// Producers whose HELLO waits for their watermark, in HELLO order.
    lookups: VecDeque<u64>,
    /// The table's size after the last forgetting pass.
    after_forget: usize,
}

impl Producers {
    pub fn get(&self, id: u64) -> Option<&Producer> {
        self.table.get(&id)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Producer> {
        self.table.get_mut(&id)
    }

    pub fn contains(&self, id: u64) -> bool {
        self.table.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &Producer)> {
        self.table.iter().map(|(id, p)| (*id, p))
    }

    /// A spooled record (found at recovery) holds `range`: the producer's
    /// acknowledged position is at least its end.
    pub fn learn_from_spool(&mut self, range: &ProducerRange, now_ms: u64) {
        let p = self.table.entry(range.producer_id).or_insert_with(|| Producer::new(range.epoch, 0, now_ms));
        if range.epoch > p.epoch {
            *p = Producer::new(range.epoch, 0, now_ms);
        }
        if range.epoch == p.epoch && range.last_seq > p.committed_seq {
            p.committed_seq = range.last_seq;
            p.received_seq = range.last_seq;
        }
    }

    /// PostgreSQL's watermark of a producer looked up for its HELLO. A
    /// second answer for a producer already known (two HELLOs raced) does
    /// not roll back what the lane learnt since the first.
    pub fn learn_from_lookup(&mut self, id: u64, (epoch, seq): (u64, u64), now_ms: u64) {
        self.table.entry(id).or_insert_with(|| Producer::new(epoch, seq, now_ms));
    }

    /// A HELLO of a newer epoch: the producer starts again at seq 0.
    pub fn start_epoch(&mut self, id: u64, epoch: u64) {
        if let Some(p) = self.table.get_mut(&id).filter(|p| epoch > p.epoch) {
            *p = Producer { active: p.active, ..Producer::new(epoch, 0, 0) };
        }
    }

    /// Queue a producer's watermark lookup (once).
    pub fn want_lookup(&mut self, id: u64) {
        if !self.lookups.contains(&id) {
            self.lookups.push_back(id);
        }
    }

    pub fn next_lookup(&mut self) -> Option<u64> {
        self.lookups.pop_front()
    }

    pub fn lookups_waiting(&self) -> bool {
        !self.lookups.is_empty()
    }

    /// A connection closed: the producer it streamed for has none now.
    pub fn disconnected(&mut self, id: u64, slot: usize, generation: u64) {
        if let Some(p) = self.table.get_mut(&id).filter(|p| p.active == Some((slot, generation))) {
            p.active = None;
        }
    }

    /// Everything in `ranges` is durable: advance each producer's
    /// acknowledged position; returns the acknowledgements to send, one
    /// per producer that advanced.
    pub fn acknowledge(&mut self, ranges: &[ProducerRange]) -> Vec<Acknowledged> {
        let mut touched = Vec::new();
        for range in ranges {
            if let Some(p) = self.table.get_mut(&range.producer_id) {
                if p.epoch == range.epoch && range.last_seq > p.committed_seq {
                    debug_assert!(range.last_seq <= p.received_seq, "acknowledged only what was received");
                    p.committed_seq = range.last_seq;
                    touched.push(range.producer_id);
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        touched
            .into_iter()
            .filter_map(|id| self.table.get(&id))
            .map(|p| Acknowledged { epoch: p.epoch, seq: p.committed_seq, active: p.active })
            .collect()
    }

    /// Beyond `max` producers, forget the least recently seen of those
    /// PostgreSQL knows as well as the lane does: no connection, everything
    /// received acknowledged, and nothing in `unsent` (spooled records not
    /// yet committed, or undecided damaged ones), so its watermark in
    /// PostgreSQL is its acknowledged position and a later HELLO reads the
    /// same. Down to 7/8 of the bound, so the scan runs once per `max / 8`
    /// new producers (also when the last pass could not get under the
    /// bound). Returns the ids forgotten, or None when no pass was due.
    pub fn forget_idle(&mut self, max: usize, unsent: impl FnOnce() -> HashSet<u64>) -> Option<Vec<u64>> {
        if self.table.len() <= max.max(self.after_forget + max / 8) {
            return None;
        }
        let unsent = unsent();
        let mut idle: Vec<(u64, u64)> = self
            .table
            .iter()
            .filter(|(id, p)| p.active.is_none() && p.received_seq == p.committed_seq && !unsent.contains(*id))
            .map(|(id, p)| (p.seen_ms, *id))
            .collect();
        idle.sort_unstable();
        let excess = self.table.len() - max * 7 / 8;
        let forgotten: Vec<u64> = idle.into_iter().take(excess).map(|(_, id)| id).collect();
        for id in &forgotten {
            self.table.remove(id);
        }
        self.after_forget = self.table.len();
        Some(forgotten)
    }

    /// Each producer's positions in order (`committed_seq <= received_seq`).
    pub fn check_invariants(&self) {
        for (id, p) in &self.table {
            debug_assert!(p.committed_seq <= p.received_seq, "producer {id}: acknowledged {p:?} beyond received");
        }
    }

    /// Test hook: drop a queued lookup (the test answers it directly).
    #[cfg(test)]
    pub fn cancel_lookup(&mut self, id: u64) {
        self.lookups.retain(|p| *p != id);
    }
}
