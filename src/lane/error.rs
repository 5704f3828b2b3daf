//! The lane core's errors: why the lane must exit, and why its PostgreSQL
//! connection is given up.

use crate::storage::spool::SpoolError;

/// Why the lane must exit: the restarted lane recovers from its spool on
/// disk, so nothing acknowledged is lost.
#[derive(Debug)]
pub enum LaneFatal {
    /// An fdatasync of the spool failed: the page cache can no longer be
    /// trusted for it, so nothing in it may be acknowledged.
    SpoolSync(SpoolError),
    /// A spooled record could not be read back (an I/O error, not a
    /// checksum mismatch).
    SpoolRead(SpoolError),
}

impl std::fmt::Display for LaneFatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaneFatal::SpoolSync(e) => write!(f, "spool fdatasync failed: {e}"),
            LaneFatal::SpoolRead(e) => write!(f, "spool read back failed: {e}"),
        }
    }
}

/// Why the lane's PostgreSQL connection is given up (it reconnects, and
/// the request in flight is decided by the watermarks).
#[derive(Debug)]
pub enum PgLinkError {
    /// The bytes do not decode, or a reply does not fit its request.
    Wire(crate::pg::PgError),
    /// A message arrived while no request was in flight.
    Unsolicited,
    /// A request ended with an outcome of the wrong kind (rows for a
    /// transaction, a commit for a query).
    Mismatched,
}

impl std::fmt::Display for PgLinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PgLinkError::Wire(e) => write!(f, "{e}"),
            PgLinkError::Unsolicited => write!(f, "PostgreSQL sent a message while no request was in flight"),
            PgLinkError::Mismatched => write!(f, "PostgreSQL's reply does not fit the request in flight"),
        }
    }
}
