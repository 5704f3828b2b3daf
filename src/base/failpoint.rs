//! Failpoints at each stage of a batch, compiled only with the
//! `failpoints` cargo feature (the test build: `cargo test --features
//! failpoints`); without it every check is a constant `false` and the
//! names below are documentation only.
//!
//! `APPLIANCED_FAILPOINT=<name>[@<n>]` in a lane's environment arms one
//! failpoint (in every lane, or only in the lane named by
//! `APPLIANCED_FAILPOINT_LANE`, and only in a lane's first life: the
//! supervisor does not pass it to restarted lanes): its n-th hit (default
//! 1st) stops the lane process with
//! SIGSTOP at exactly that point, after printing `failpoint <name>
//! reached` to stderr. The test then kills the lane or the whole appliance
//! with SIGKILL: a real kill -9 at a known point, not an exit path the code
//! chose. Stages whose effect is "bytes sent so far" (ack sent, and the
//! PostgreSQL stages) stop after the driver reports that write complete.

/// The stages, in batch order (tests iterate over this list).
pub const STAGES: &[&str] = &[
    FRAME_READ,
    SPOOL_WRITE,
    SPOOL_FSYNC,
    ACK_SENT,
    BEGIN,
    MID_COPY,
    AFTER_COPY_DONE,
    AFTER_WATERMARK,
    COMMIT_SENT,
    AFTER_COMMIT,
];

/// An EVENTS frame was decoded, before any of it is processed.
pub const FRAME_READ: &str = "frame-read";
/// A batch was written to the spool, before its fdatasync.
pub const SPOOL_WRITE: &str = "spool-write";
/// The spool fdatasync returned, before any ACK is queued.
pub const SPOOL_FSYNC: &str = "spool-fsync";
/// ACKs for a spooled batch were written to the producer's socket.
pub const ACK_SENT: &str = "ack-sent";
/// Only `BEGIN` of a batch transaction was sent to PostgreSQL.
pub const BEGIN: &str = "begin";
/// The batch was sent up to the middle of its first COPY's data.
pub const MID_COPY: &str = "mid-copy";
/// Every COPY and its CopyDone was sent, not the watermark query.
pub const AFTER_COPY_DONE: &str = "after-copy-done";
/// The watermark advance was sent, not COMMIT.
pub const AFTER_WATERMARK: &str = "after-watermark";
/// COMMIT was sent; its reply is never read.
pub const COMMIT_SENT: &str = "commit-sent";
/// PostgreSQL answered COMMIT, before the spool releases the batch.
pub const AFTER_COMMIT: &str = "after-commit";

/// The environment variable that arms a failpoint.
pub const ENV: &str = "APPLIANCED_FAILPOINT";
/// Optional: the only module whose lane is armed.
pub const ENV_LANE: &str = "APPLIANCED_FAILPOINT_LANE";

#[cfg(feature = "failpoints")]
mod armed {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);

    /// Read the environment once (before the sandbox: `arm` is called at lane start).
    pub fn arm(lane: &str) {
        ARMED.get_or_init(|| {
            let text = std::env::var(super::ENV).ok()?;
            if std::env::var(super::ENV_LANE).is_ok_and(|only| only != lane) {
                return None;
            }
            let (name, nth) = match text.split_once('@') {
                Some((name, n)) => (name.to_string(), n.parse().ok()?),
                None => (text, 1),
            };
            Some((name, nth))
        });
    }

    pub fn fires(name: &str) -> bool {
        let Some(Some((armed, nth))) = ARMED.get() else { return false };
        armed == name && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *nth
    }

    pub fn stop(name: &str) {
        let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("failpoint {name} reached\n").as_bytes());
        let _ = crate::base::sys::send_signal(std::process::id() as i32, libc::SIGSTOP);
    }
}

/// Arm from the environment (a no-op without the feature).
pub fn arm(lane: &str) {
    #[cfg(feature = "failpoints")]
    armed::arm(lane);
    #[cfg(not(feature = "failpoints"))]
    let _ = lane;
}

/// Whether this hit of `name` is the armed one.
pub fn fires(name: &str) -> bool {
    #[cfg(feature = "failpoints")]
    return armed::fires(name);
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
        false
    }
}

/// Stop this process here (SIGSTOP) for the test to kill it.
pub fn stop(name: &str) {
    #[cfg(feature = "failpoints")]
    armed::stop(name);
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Stop here now if `name` fires.
pub fn check(name: &str) {
    if fires(name) {
        stop(name);
    }
}
