//! Entry point of a lane process (`applianced lane`, started only by the
//! supervisor in `applianced run`).
//!
//! Order of start-up: block termination signals → take the inherited
//! listening socket (fd 3) → create the io_uring ring (restricted) or fall
//! back to poll(2) → CPU placement, I/O priority, RLIMIT_AS → open the
//! status file and /proc/self/status → enter the sandbox → write the
//! status → serve: the event loop's first step connects to PostgreSQL as
//! the module's writer role (inside the sandbox, as every reconnect does);
//! until SIGTERM/SIGINT, then drain: commit what is buffered, send the
//! last ACKs, exit 0.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Instant;

use bytes::BytesMut;

use super::core::{LaneCore, Now};
use std::collections::BTreeMap;

use crate::cluster::{Embedded, StateDir};
use crate::ingress::PeerPolicy;
use crate::limits::DATABASE_NAME;
use crate::matrix::{Module, Role};
use crate::pg::{ConnectParams, Connection};
use crate::sandbox::SandboxMode;
use crate::sys;

/// The listening socket's descriptor number in a lane process.
pub const LISTEN_FD: i32 = 3;

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

#[derive(Debug)]
pub enum LaneError {
    Io { step: &'static str, source: std::io::Error },
    Setup(String),
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
            LaneError::Setup(what) => write!(f, "lane setup: {what}"),
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
        Now { mono_ms: self.start.elapsed().as_millis() as u64, wall_us: crate::clock::wall_us() }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Opens the lane's PostgreSQL connection: as the module's writer role only.
pub struct PgConnector {
    pub params: ConnectParams,
}

/// Session settings of a lane connection, each with its reason.
const LANE_SESSION_SQL: &str = "SET synchronous_commit = on; \
     SET statement_timeout = '60s'; \
     SET lock_timeout = '30s'; \
     SET idle_in_transaction_session_timeout = '60s'";

impl PgConnector {
    /// Blocking connect and authentication; returns the socket for the event loop.
    pub fn connect(&self) -> Result<(UnixStream, BytesMut), String> {
        let mut conn = Connection::connect(&self.params).map_err(|e| e.to_string())?;
        // Explicit durability for every batch, and bounds on how long a
        // statement, a lock wait or an open transaction may hold the lane.
        conn.execute(LANE_SESSION_SQL).map_err(|e| e.to_string())?;
        let (stream, leftover) = conn.into_stream().map_err(|e| e.to_string())?;
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        Ok((stream, leftover))
    }
}

/// `<state>/run/lane-<module>.status`: what a serving lane reports about
/// itself (pid, I/O path, CPUs, sandbox), written once before it serves.
pub fn status_path(dir: &StateDir, module: Module) -> std::path::PathBuf {
    dir.run_dir().join(format!("lane-{}.status", module.name()))
}

/// The key/value pairs of a lane's status file; empty while it is absent
/// or not yet written.
pub fn read_status(dir: &StateDir, module: Module) -> BTreeMap<String, String> {
    std::fs::read_to_string(status_path(dir, module))
        .ok()
        .and_then(|text| crate::config::parse_pairs(&text).ok())
        .unwrap_or_default()
}

pub fn drain_signals(signals: &OwnedFd) {
    sys::drain_readable(signals.as_fd());
}

/// Arguments of one lane process.
pub struct LaneArgs {
    pub module: Module,
    pub state_dir: PathBuf,
    pub policy: PeerPolicy,
    pub io: IoMode,
    pub sandbox: SandboxMode,
    /// CPUs this lane is pinned to.
    pub cpus: Vec<usize>,
    /// Disk quota of the lane's spool.
    pub spool_quota_bytes: u64,
}

/// `<state>/spool/<module>`: the lane's spool directory.
pub fn spool_dir(dir: &StateDir, module: Module) -> PathBuf {
    dir.root.join("spool").join(module.name())
}

/// Run one lane until it is drained.
pub fn run_lane(args: &LaneArgs) -> Result<(), LaneError> {
    sys::block_supervisor_signals().map_err(LaneError::io("block signals"))?;
    let signals = sys::termination_signalfd().map_err(LaneError::io("signalfd"))?;
    let listener = sys::inherited_unix_listener(LISTEN_FD).map_err(LaneError::io("inherited listener"))?;
    let embedded = Embedded::load(&args.state_dir).map_err(|e| LaneError::Setup(e.to_string()))?;
    let mut params = embedded.connect_params(Role::Writer(args.module).name(), DATABASE_NAME);
    params.application_name = format!("applianced-lane-{}", args.module.name());
    let pg = PgConnector { params };
    crate::failpoint::arm(args.module.name());
    crate::clock::init();
    // A spool write past a file size limit must fail with EFBIG, not kill the lane.
    sys::ignore_sigxfsz().map_err(LaneError::io("ignore SIGXFSZ"))?;
    sys::keep_freed_heap(crate::limits::LANE_HEAP_REUSE_BYTES).map_err(LaneError::io("heap tunables"))?;
    let clock = Clock::new();
    // The spool is opened and recovered before the sandbox (it lists and
    // reads its directory); afterwards only that directory is reachable.
    let spool_dir = spool_dir(&embedded.dir, args.module);
    let (spool, recovery) = crate::spool::Spool::open(&spool_dir, args.spool_quota_bytes, super::batch::spool_ranges)
        .map_err(|e| LaneError::Setup(e.to_string()))?;
    let mut core = LaneCore::new(args.module, args.policy.clone(), clock.now(), spool, recovery);
    let ring = match args.io {
        IoMode::Poll => None,
        IoMode::Uring | IoMode::Auto => match super::uring::create_ring() {
            Ok(ring) => Some(ring),
            Err(e) if args.io == IoMode::Auto => {
                tracing::warn!(lane = args.module.name(), error = %e, "io_uring unavailable; FALLING BACK to the poll(2) path");
                None
            }
            Err(e) => return Err(LaneError::Io { step: "create io_uring (--io uring)", source: e }),
        },
    };
    let io_path = if ring.is_some() { "io_uring" } else { "poll" };
    crate::colocate::apply_to_lane(&args.cpus).map_err(LaneError::Setup)?;
    // Step 1 of the sandbox: every descriptor the lane will ever need is open.
    let status_path = status_path(&embedded.dir, args.module);
    let mut status_file = std::fs::File::create(&status_path).map_err(LaneError::io("create lane status file"))?;
    let proc_status = std::fs::File::open("/proc/self/status").map_err(LaneError::io("open /proc/self/status"))?;
    let report =
        crate::sandbox::enter(args.sandbox, ring.is_some(), proc_status, Some(&spool_dir)).map_err(LaneError::Setup)?;
    let status = format!(
        "pid = {}\nio_path = \"{io_path}\"\ncpus = \"{}\"\n{}",
        std::process::id(),
        crate::colocate::render_cpu_list(&args.cpus),
        report.status_lines()
    );
    std::io::Write::write_all(&mut status_file, status.as_bytes()).map_err(LaneError::io("write lane status"))?;
    drop(status_file);
    tracing::info!(lane = args.module.name(), io_path, pid = std::process::id(), sandbox = ?report, "lane serving");
    let result = match ring {
        Some(mut ring) => super::uring::run(&mut core, &mut ring, &listener, &pg, &signals, &clock),
        None => super::poll::run(&mut core, &listener, &pg, &signals, &clock),
    };
    tracing::info!(lane = args.module.name(), stats = ?core.stats, "lane stopped");
    result
}
