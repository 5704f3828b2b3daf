//! The lane's connections (part of the sans-I/O core): one slot per
//! connection, each with its protocol state, its buffers, its deadlines
//! and the credit it holds; and the lane's credit ledger over all of them.
//!
//! Owned here, with the rules that only touch connections and credit:
//! - a slot's generation tells a connection from the one that had the
//!   slot before (ACKs and releases name both);
//! - credit: a connection is granted within its window
//!   (`CONNECTION_CREDIT_BYTES`), from the lane's budget, never from what
//!   the other slots' guaranteed shares need (`CONNECTION_CREDIT_GUARANTEED_BYTES`),
//!   and none while its replies are not being read; the ledger's
//!   outstanding credit is exactly what the connections hold
//!   (`check_invariants`).

use bytes::BytesMut;

use super::batch::Release;
use super::credit::CreditLedger;
use crate::base::limits::{
    CONNECTION_CREDIT_BYTES, CONNECTION_CREDIT_GUARANTEED_BYTES, CONNECTION_IDLE_EVICTABLE_MS,
    CONNECTION_IDLE_TIMEOUT_MS, CONNECTION_LINGER_MS, CONNECTION_OUTPUT_PAUSE_BYTES, CREDIT_GRANT_MIN_BYTES,
    HANDSHAKE_TIMEOUT_MS, LANE_BUFFER_BYTES_MAX, LANE_CONNECTIONS_MAX,
};
use crate::base::sys::PeerCred;
use crate::codec::frame::{self, StatusCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
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
pub struct Conn {
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

/// Every slot of the lane, and the credit ledger over them.
#[derive(Debug)]
pub(super) struct Connections {
    slots: Vec<Option<Conn>>,
    next_generation: u64,
    credit: CreditLedger,
}

impl Connections {
    pub fn new() -> Connections {
        Connections {
            slots: (0..LANE_CONNECTIONS_MAX).map(|_| None).collect(),
            next_generation: 1,
            credit: CreditLedger::default(),
        }
    }

    pub fn get(&self, slot: usize) -> Option<&Conn> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    pub fn get_mut(&mut self, slot: usize) -> Option<&mut Conn> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    /// The open connections with their slots.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Conn)> {
        self.slots.iter().enumerate().filter_map(|(slot, c)| Some((slot, c.as_ref()?)))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Conn> {
        self.slots.iter_mut().flatten()
    }

    /// Slots whose connection is in a state `wanted` accepts.
    pub fn slots_where(&self, wanted: impl Fn(&Conn) -> bool) -> Vec<usize> {
        self.iter().filter(|(_, c)| wanted(c)).map(|(slot, _)| slot).collect()
    }

    pub fn free_slot(&self) -> Option<usize> {
        self.slots.iter().position(Option::is_none)
    }

    /// Open a connection in a free `slot`.
    pub fn open(&mut self, slot: usize, peer: PeerCred, now_ms: u64) {
        debug_assert!(self.get(slot).is_none(), "slot {slot} is free");
        let generation = self.next_generation;
        self.next_generation += 1;
        if let Some(entry) = self.slots.get_mut(slot) {
            *entry = Some(Conn::new(generation, peer, now_ms));
        }
    }

    /// Free a slot: the credit its connection held goes back to the budget.
    pub fn remove(&mut self, slot: usize) -> Option<Conn> {
        let conn = self.slots.get_mut(slot).and_then(Option::take)?;
        self.credit.take_back(conn.credit_left);
        Some(conn)
    }

    /// The connection to evict for a new one when every slot is taken: the
    /// oldest that has not sent HELLO, else the one idle longest if idle
    /// for at least `CONNECTION_IDLE_EVICTABLE_MS` with nothing in flight.
    pub fn eviction_candidate(&self, now_ms: u64) -> Option<usize> {
        let live = || self.iter().filter(|(_, c)| !c.closing);
        let silent = live().filter(|(_, c)| c.state == ConnState::AwaitHello).min_by_key(|(_, c)| c.opened_ms);
        silent
            .or_else(|| {
                live()
                    .filter(|(_, c)| {
                        c.unreleased == 0 && now_ms.saturating_sub(c.active_ms) >= CONNECTION_IDLE_EVICTABLE_MS
                    })
                    .min_by_key(|(_, c)| c.active_ms)
            })
            .map(|(slot, _)| slot)
    }

    /// The earliest connection deadline (HELLO, idle, linger), if any.
    pub fn deadline(&self) -> Option<u64> {
        self.iter()
            .map(|(_, c)| match c.state {
                _ if c.closing => c.closing_since_ms + CONNECTION_LINGER_MS,
                ConnState::AwaitHello => c.opened_ms + HANDSHAKE_TIMEOUT_MS,
                _ => c.active_ms + CONNECTION_IDLE_TIMEOUT_MS,
            })
            .min()
    }

    // ----- credit -----

    /// The budget kept for every slot that holds less than its guaranteed
    /// share (`CONNECTION_CREDIT_GUARANTEED_BYTES`): free slots and
    /// connections before HELLO count in full.
    pub fn reserved_shares(&self) -> usize {
        self.slots
            .iter()
            .map(|c| match c {
                Some(conn) if !conn.closing => CONNECTION_CREDIT_GUARANTEED_BYTES.saturating_sub(conn.held()),
                Some(_) => 0,
                None => CONNECTION_CREDIT_GUARANTEED_BYTES,
            })
            .sum()
    }

    /// Credit a connection may be granted now, given `reserved`
    /// (`reserved_shares`): within its window; from the budget, never what
    /// the other slots' guaranteed shares need; none while its replies are
    /// not being read.
    pub fn grantable(&self, conn: &Conn, reserved: usize) -> usize {
        if conn.out.len() > CONNECTION_OUTPUT_PAUSE_BYTES {
            return 0;
        }
        let window = CONNECTION_CREDIT_BYTES as usize;
        let window_left = window.saturating_sub(conn.held());
        let own_share = CONNECTION_CREDIT_GUARANTEED_BYTES.saturating_sub(conn.held());
        let reserved_for_others = reserved.saturating_sub(own_share);
        let budget_left = self.credit.budget_left(reserved_for_others);
        let amount = window_left.min(budget_left);
        if amount == 0 || (amount < CREDIT_GRANT_MIN_BYTES && amount < window_left) { 0 } else { amount }
    }

    /// Grant `slot` what it may have now (its first credit, in WELCOME):
    /// returns the amount, already counted.
    pub fn grant_initial(&mut self, slot: usize) -> usize {
        let reserved = self.reserved_shares();
        let Some(amount) = self.get(slot).map(|conn| self.grantable(conn, reserved)) else { return 0 };
        self.credit.grant(amount);
        if let Some(conn) = self.get_mut(slot) {
            conn.credit_left += amount;
        }
        amount
    }

    /// Grant every streaming connection what it may have now, each as a
    /// CREDIT frame.
    pub fn regrant_all(&mut self) {
        // Computed once; a grant then lowers only its own connection's
        // shortfall below the guaranteed share.
        let mut reserved = self.reserved_shares();
        for slot in 0..self.slots.len() {
            let amount = match self.get(slot) {
                Some(conn) if matches!(conn.state, ConnState::Streaming { .. }) && !conn.closing => {
                    self.grantable(conn, reserved)
                }
                _ => 0,
            };
            if amount > 0 {
                if let Some(conn) = self.get_mut(slot) {
                    let shortfall = CONNECTION_CREDIT_GUARANTEED_BYTES.saturating_sub(conn.held());
                    conn.credit_left += amount;
                    reserved -= shortfall - CONNECTION_CREDIT_GUARANTEED_BYTES.saturating_sub(conn.held());
                    frame::encode_credit(&mut conn.out, amount as u32);
                }
                self.credit.grant(amount);
            }
        }
        debug_assert_eq!(reserved, self.reserved_shares(), "reserved shares kept up to date");
    }

    /// An EVENTS body of `bytes` arrived on `slot` against its credit;
    /// returns whether it used the last of it (a credit stall).
    pub fn receive(&mut self, slot: usize, bytes: usize) -> bool {
        let mut exhausted = false;
        if let Some(conn) = self.get_mut(slot) {
            debug_assert!(bytes <= conn.credit_left, "checked against the credit before");
            conn.credit_left = conn.credit_left.saturating_sub(bytes);
            conn.unreleased += bytes;
            exhausted = conn.credit_left == 0;
        }
        self.credit.receive(bytes);
        exhausted
    }

    /// Received bytes are durable (or were only duplicates): released.
    pub fn release(&mut self, releases: &[Release]) {
        for release in releases {
            self.credit.release(release.bytes);
            if let Some(conn) = self.get_mut(release.slot).filter(|c| c.generation == release.generation) {
                debug_assert!(release.bytes <= conn.unreleased, "released what it sent");
                conn.unreleased = conn.unreleased.saturating_sub(release.bytes);
            }
        }
    }

    /// Tell every streaming connection a STATUS.
    pub fn broadcast_status(&mut self, code: StatusCode, reason: &str) {
        for conn in self.iter_mut() {
            if matches!(conn.state, ConnState::Streaming { .. }) && !conn.closing {
                frame::encode_status(&mut conn.out, code, reason);
            }
        }
    }

    /// What must hold between the connections and the ledger:
    /// - the outstanding credit is exactly what the connections hold;
    /// - the bytes granted or buffered never pass the lane's budget by more
    ///   than the guaranteed shares (which a slot freed by a closed
    ///   connection may briefly overlap with bytes it left buffered);
    /// - no connection holds more than its window.
    pub fn check_invariants(&self) {
        let outstanding: usize = self.iter().map(|(_, c)| c.credit_left).sum();
        debug_assert_eq!(outstanding, self.credit.outstanding(), "credit outstanding equals what connections hold");
        debug_assert!(
            self.credit.outstanding() + self.credit.buffered()
                <= LANE_BUFFER_BYTES_MAX + LANE_CONNECTIONS_MAX * CONNECTION_CREDIT_GUARANTEED_BYTES,
            "lane budget: {} + {}",
            self.credit.outstanding(),
            self.credit.buffered()
        );
        for (_, conn) in self.iter() {
            debug_assert!(conn.held() <= CONNECTION_CREDIT_BYTES as usize, "window: {}", conn.held());
        }
    }

    /// Test hook: take `bytes` of a connection's credit back, as if used.
    #[cfg(test)]
    pub fn shrink_credit(&mut self, slot: usize, bytes: usize) {
        if let Some(conn) = self.get_mut(slot) {
            conn.credit_left -= bytes;
        }
        self.credit.take_back(bytes);
    }
}
