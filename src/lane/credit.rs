//! The lane's credit ledger (part of the sans-I/O core): the EVENTS body
//! bytes granted to connections and not yet used (`outstanding`), and the
//! bytes received and not yet released at the spool's fdatasync
//! (`buffered`). Their sum is what producers can make the lane hold; the
//! core grants only within `LANE_BUFFER_BYTES_MAX` (`budget_left`).
//!
//! Every change names its cause; none may take more than is counted (a
//! debug build asserts it; a release build saturates at zero rather than
//! wrapping around to a budget of 2^64 bytes).

use crate::base::limits::LANE_BUFFER_BYTES_MAX;

#[derive(Debug, Default)]
pub(super) struct CreditLedger {
    outstanding: usize,
    buffered: usize,
}

impl CreditLedger {
    /// Credit granted and not yet used.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Received bytes not yet released.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// `bytes` of credit granted to a connection.
    pub fn grant(&mut self, bytes: usize) {
        self.outstanding += bytes;
    }

    /// An EVENTS body of `bytes` arrived against credit: now buffered.
    pub fn receive(&mut self, bytes: usize) {
        debug_assert!(bytes <= self.outstanding, "received {bytes} with {} outstanding", self.outstanding);
        self.outstanding = self.outstanding.saturating_sub(bytes);
        self.buffered += bytes;
    }

    /// A connection closed holding `bytes` of unused credit.
    pub fn take_back(&mut self, bytes: usize) {
        debug_assert!(bytes <= self.outstanding, "took back {bytes} of {} outstanding", self.outstanding);
        self.outstanding = self.outstanding.saturating_sub(bytes);
    }

    /// `bytes` received are durable (or were only duplicates): released.
    pub fn release(&mut self, bytes: usize) {
        debug_assert!(bytes <= self.buffered, "released {bytes} of {} buffered", self.buffered);
        self.buffered = self.buffered.saturating_sub(bytes);
    }

    /// What may still be granted when `reserved` bytes are kept for others.
    pub fn budget_left(&self, reserved: usize) -> usize {
        LANE_BUFFER_BYTES_MAX.saturating_sub(self.outstanding + self.buffered + reserved)
    }
}
