//! What a lane process is given and what it shares with its drivers: its
//! arguments, its descriptors, its clock, its error.

use super::error::LaneFatal;
use crate::sandbox::SandboxError;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::Instant;

use super::core::Now;
use crate::base::sys;
use crate::lane::ingress::PeerPolicy;
use crate::model::matrix::Module;
use crate::sandbox::SandboxMode;
use crate::storage::spool::SpoolError;

/// The listening socket's descriptor number in a lane process.
pub const LISTEN_FD: i32 = 3;
/// The control socket to the supervisor, in a lane process.
pub const CONTROL_FD: i32 = 4;
/// The socket to the lane, in a connector process.
pub const CONNECTOR_FD: i32 = 3;

/// Which I/O path a lane uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoMode {
    /// io_uring if the kernel and sandbox allow it, else poll.
    Auto,
    Uring,
    Poll,
}

impl IoMode {
    pub fn parse(text: &str) -> Option<IoMode> {
        match text {
            "auto" => Some(IoMode::Auto),
            "uring" => Some(IoMode::Uring),
            "poll" => Some(IoMode::Poll),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            IoMode::Auto => "auto",
            IoMode::Uring => "uring",
            IoMode::Poll => "poll",
        }
    }
}

/// Why a lane process stopped with an error (exit 3, logged by the supervisor).
#[derive(Debug)]
pub enum LaneError {
    Io {
        step: &'static str,
        source: std::io::Error,
    },
    Spool(SpoolError),
    Sandbox(SandboxError),
    /// The lane's CPU placement, I/O priority or address-space bound failed.
    Colocate(SandboxError),
    /// The core must stop (a failed spool fsync, an unreadable spool).
    Fatal(LaneFatal),
    /// The connector exited: the lane could never reconnect to PostgreSQL.
    ConnectorGone,
}

impl LaneError {
    pub fn io(step: &'static str) -> impl FnOnce(std::io::Error) -> LaneError {
        move |source| LaneError::Io { step, source }
    }
}

impl std::fmt::Display for LaneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaneError::Io { step, source } => write!(f, "lane {step}: {source}"),
            LaneError::Spool(e) => write!(f, "lane spool: {e}"),
            LaneError::Sandbox(e) => write!(f, "lane sandbox: {e}"),
            LaneError::Colocate(e) => write!(f, "lane placement: {e}"),
            LaneError::Fatal(e) => write!(f, "lane stopped: {e}"),
            LaneError::ConnectorGone => write!(f, "lane connector exited: no reconnect possible"),
        }
    }
}

impl std::error::Error for LaneError {}

/// Monotonic and wall time for the core; the one place a lane reads clocks.
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock { start: Instant::now() }
    }
    pub fn now(&self) -> Now {
        Now { mono_ms: self.start.elapsed().as_millis() as u64, wall_us: crate::base::clock::wall_us() }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

pub fn drain_signals(signals: &OwnedFd) {
    sys::drain_readable(signals.as_fd());
}

/// Arguments of one lane process.
pub struct LaneArgs {
    pub module: Module,
    /// The lane's spool directory (`<state>/spool/<module>`; a probe uses its own).
    pub spool_dir: PathBuf,
    /// PostgreSQL's socket file (the connector's target).
    pub pg_socket: PathBuf,
    pub policy: PeerPolicy,
    pub io: IoMode,
    pub sandbox: SandboxMode,
    /// CPUs this lane is pinned to.
    pub cpus: Vec<usize>,
    /// Disk quota of the lane's spool.
    pub spool_quota_bytes: u64,
    /// Bytes to keep free on the spool's filesystem (`disk::DiskReserve`;
    /// 0: none).
    pub disk_reserve_bytes: u64,
    /// PostgreSQL connections the lane commits over (1 to `COMMIT_STREAMS_MAX`).
    pub commit_streams: usize,
    /// A sandbox probe to run instead of serving (`applianced sandbox-probe`).
    pub probe: Option<String>,
}
