//! Peer authentication of lane connections by SO_PEERCRED.
//!
//! Consumes the kernel-reported credentials of an accepted connection;
//! produces admit or refuse. Runs in the lane process before a single byte
//! of the connection is read. Refusals are logged rate-limited, because a
//! peer can trigger them at will (STYLE S23).

use crate::limits::REJECT_LOG_PER_S;
use crate::sys::PeerCred;

/// Who may connect to one module's lane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerPolicy {
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
}

impl PeerPolicy {
    /// A peer is admitted if its uid or its primary gid is listed.
    pub fn admits(&self, peer: &PeerCred) -> bool {
        self.uids.contains(&peer.uid) || self.gids.contains(&peer.gid)
    }
}

/// At most [`REJECT_LOG_PER_S`] log lines per second; the rest are counted
/// and reported with the next line that is logged.
#[derive(Debug, Default)]
pub struct RateLimitedLog {
    window_start_ms: u64,
    logged_in_window: u32,
    suppressed: u64,
}

impl RateLimitedLog {
    /// Whether to log now; returns the number suppressed since the last line.
    pub fn allow(&mut self, now_ms: u64) -> Option<u64> {
        if now_ms.saturating_sub(self.window_start_ms) >= 1000 {
            self.window_start_ms = now_ms;
            self.logged_in_window = 0;
        }
        if self.logged_in_window >= REJECT_LOG_PER_S {
            self.suppressed += 1;
            return None;
        }
        self.logged_in_window += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_and_rate_limit() {
        let policy = PeerPolicy { uids: vec![1000], gids: vec![2000] };
        assert!(policy.admits(&PeerCred { pid: 1, uid: 1000, gid: 1 }));
        assert!(policy.admits(&PeerCred { pid: 1, uid: 5, gid: 2000 }));
        assert!(!policy.admits(&PeerCred { pid: 1, uid: 5, gid: 6 }));
        let mut log = RateLimitedLog::default();
        let allowed = (0..100).filter(|_| log.allow(5000).is_some()).count();
        assert_eq!(allowed as u32, REJECT_LOG_PER_S);
        assert_eq!(log.allow(6000), Some(100 - u64::from(REJECT_LOG_PER_S)));
    }
}
