//! The base layer: named limits, time, failpoints, and the libc wrappers.

/// Named limits and fixed names.
pub mod limits;
/// Wall-clock time (simulated in test builds for the partition lifecycle).
pub mod clock;
/// Rate-limited log lines.
pub mod ratelimit;
/// Bytes queued for a socket in parts, large ones shared, not copied.
pub mod sendq;
/// Failpoints at each batch stage (the `failpoints` feature only).
pub mod failpoint;
/// The only module with `unsafe`: small libc wrappers.
#[allow(unsafe_code)]
pub mod sys;
