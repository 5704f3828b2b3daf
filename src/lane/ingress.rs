//! Peer authentication of lane connections by SO_PEERCRED, and which
//! producer ids each admitted peer may claim.
//!
//! Consumes the kernel-reported credentials of an accepted connection;
//! produces admit or refuse, and for a HELLO, whether its producer id is
//! granted to that peer. Runs in the lane process before a single byte of
//! the connection is read. Refusals are logged rate-limited, because a
//! peer can trigger them at will (STYLE S23).

use std::fmt;

use crate::base::limits::{PRODUCER_ID_MAX, RESERVED_PRODUCER_ID_FIRST};
use crate::base::sys::PeerCred;

/// Whom a grant names: a uid, or a primary gid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerId {
    Uid(u32),
    Gid(u32),
}

impl PeerId {
    fn matches(self, peer: &PeerCred) -> bool {
        match self {
            PeerId::Uid(uid) => peer.uid == uid,
            PeerId::Gid(gid) => peer.gid == gid,
        }
    }
}

/// One admitted identity and the producer ids it may claim (inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerGrant {
    pub who: PeerId,
    pub first_producer: u64,
    pub last_producer: u64,
}

/// The producer ids a grant covers when its configuration names none:
/// every id but the reserved ones.
pub const GRANT_DEFAULT_LAST: u64 = RESERVED_PRODUCER_ID_FIRST - 1;

impl PeerGrant {
    /// A grant of the reserved producer ids to the appliance's own uid:
    /// selftest's round trip runs as that uid and claims one of them, and
    /// no other peer can.
    pub fn appliance(uid: u32) -> PeerGrant {
        PeerGrant { who: PeerId::Uid(uid), first_producer: RESERVED_PRODUCER_ID_FIRST, last_producer: PRODUCER_ID_MAX }
    }

    /// `uid:UID:FIRST-LAST` or `gid:GID:FIRST-LAST` (the lane's arguments).
    pub fn parse(text: &str) -> Result<PeerGrant, String> {
        let bad = || format!("{text:?}: expected uid:ID:FIRST-LAST or gid:ID:FIRST-LAST");
        let mut parts = text.splitn(3, ':');
        let (kind, id, range) = (parts.next(), parts.next(), parts.next());
        let id: u32 = id.and_then(|i| i.parse().ok()).ok_or_else(bad)?;
        let who = match kind {
            Some("uid") => PeerId::Uid(id),
            Some("gid") => PeerId::Gid(id),
            _ => return Err(bad()),
        };
        let (first, last) = range.and_then(|r| r.split_once('-')).ok_or_else(bad)?;
        let (first, last) = (first.parse::<u64>().map_err(|_| bad())?, last.parse::<u64>().map_err(|_| bad())?);
        if first > last || last > PRODUCER_ID_MAX {
            return Err(format!("{text:?}: the range must be FIRST <= LAST <= {PRODUCER_ID_MAX}"));
        }
        Ok(PeerGrant { who, first_producer: first, last_producer: last })
    }

    fn covers(&self, peer: &PeerCred, producer_id: u64) -> bool {
        self.who.matches(peer) && (self.first_producer..=self.last_producer).contains(&producer_id)
    }
}

impl fmt::Display for PeerGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, id) = match self.who {
            PeerId::Uid(uid) => ("uid", uid),
            PeerId::Gid(gid) => ("gid", gid),
        };
        write!(f, "{kind}:{id}:{}-{}", self.first_producer, self.last_producer)
    }
}

/// Who may connect to one module's lane, and which producer ids each may claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerPolicy {
    pub grants: Vec<PeerGrant>,
}

impl PeerPolicy {
    /// A peer is admitted if any grant names its uid or primary gid.
    pub fn admits(&self, peer: &PeerCred) -> bool {
        self.grants.iter().any(|g| g.who.matches(peer))
    }

    /// Whether an admitted peer may claim `producer_id` in its HELLO.
    pub fn may_claim(&self, peer: &PeerCred, producer_id: u64) -> bool {
        self.grants.iter().any(|g| g.covers(peer, producer_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32) -> PeerCred {
        PeerCred { pid: 1, uid, gid }
    }

    #[test]
    fn grants_admit_by_uid_or_gid_and_bound_the_producer_ids() {
        let policy = PeerPolicy {
            grants: vec![
                PeerGrant::parse("uid:1000:1-100").unwrap(),
                PeerGrant::parse("gid:2000:500-600").unwrap(),
                PeerGrant::appliance(0),
            ],
        };
        assert!(policy.admits(&peer(1000, 1)));
        assert!(policy.admits(&peer(5, 2000)));
        assert!(!policy.admits(&peer(5, 6)));
        // Table: (peer, producer id, may claim).
        let cases = [
            (peer(1000, 1), 1, true),
            (peer(1000, 1), 100, true),
            (peer(1000, 1), 101, false),
            (peer(1000, 1), 0, false),
            (peer(5, 2000), 550, true),
            (peer(5, 2000), 50, false),
            (peer(1000, 2000), 550, true),
            (peer(1000, 1), PRODUCER_ID_MAX, false),
            (peer(0, 0), PRODUCER_ID_MAX, true),
            (peer(0, 0), RESERVED_PRODUCER_ID_FIRST, true),
            (peer(0, 0), 1, false),
        ];
        for (who, id, expected) in cases {
            assert_eq!(policy.may_claim(&who, id), expected, "{who:?} claiming {id}");
        }
        assert_eq!(PeerGrant::parse("uid:7:3-9").unwrap().to_string(), "uid:7:3-9");
        for bad in ["uid:7", "uid:x:1-2", "pid:7:1-2", "uid:7:9-3", "uid:7:1-9223372036854775808"] {
            assert!(PeerGrant::parse(bad).is_err(), "{bad}");
        }
    }
}
