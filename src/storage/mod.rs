//! The storage layer: the durable per-lane spool and the free-space reserve.

/// The durable per-lane spool: checksummed segment files, recovery, quota.
pub mod spool;
/// The free-space reserve of the state filesystem (sans-I/O).
pub mod disk;
