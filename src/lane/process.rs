//! Entry point of a lane process (`applianced lane`, started only by the
//! supervisor in `applianced run`, already as the lane's OS identity), and
//! of its connector (`applianced lane-connector`, started by the lane).
//!
//! Order of start-up: block termination signals → take the inherited
//! listening socket (fd 3) and control socket (fd 4) → start the connector
//! (the only process that will open PostgreSQL connections for this lane)
//! → open and recover the spool → create the io_uring ring (restricted) or
//! fall back to poll(2) → CPU placement, I/O priority, RLIMIT_AS → open
//! /proc/self/status → enter the sandbox → send the status to the
//! supervisor → serve: the event loop's first step asks the connector for
//! a connection as the module's writer role, and every reconnect does the
//! same; until a drain request (control socket, SIGTERM or SIGINT): commit
//! what is buffered, send the last ACKs, exit 0.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Instant;

use super::connector::ConnectorArgs;
use super::core::{LaneCore, Now};
use super::links::Links;
use crate::cluster::StateDir;
use crate::ingress::PeerPolicy;
use crate::limits::DATABASE_NAME;
use crate::matrix::{Module, Role};
use crate::sandbox::{Profile, SandboxMode};
use crate::spool::SpoolError;
use crate::sys;

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
    Sandbox(String),
    Colocate(String),
    /// The core must stop (a failed spool fsync, an unreadable spool).
    Fatal(String),
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
        Now { mono_ms: self.start.elapsed().as_millis() as u64, wall_us: crate::clock::wall_us() }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// `<state>/run/lane-<module>.status`: what the supervisor records about a
/// serving lane (its pid and identity, and the lane's own report: I/O
/// path, CPUs, sandbox), replaced whenever the lane (re)starts.
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
    /// A sandbox probe to run instead of serving (`applianced sandbox-probe`).
    pub probe: Option<String>,
}

/// `<state>/spool/<module>`: the lane's spool directory.
pub fn spool_dir(dir: &StateDir, module: Module) -> PathBuf {
    dir.root.join("spool").join(module.name())
}

/// Take an inherited descriptor after checking it is a `SOCK_SEQPACKET` socket.
fn inherited_message_socket(fd: i32) -> Result<OwnedFd, LaneError> {
    sys::inherited_seqpacket(fd).map_err(LaneError::io("inherited message socket"))
}

/// The connector's arguments for this lane.
fn connector_args(args: &LaneArgs) -> ConnectorArgs {
    ConnectorArgs {
        sandbox: args.sandbox,
        socket_path: args.pg_socket.clone(),
        role: Role::Writer(args.module).name().to_string(),
        database: DATABASE_NAME.to_string(),
        application_name: format!("applianced-lane-{}", args.module.name()),
    }
}

/// Start the connector as a child of this lane (same identity), before the
/// sandbox: afterwards the lane can neither fork nor exec.
fn spawn_connector(args: &LaneArgs) -> Result<OwnedFd, LaneError> {
    let exe = sys::spawn::open_self_exe().map_err(LaneError::io("open own executable"))?;
    let (lane_end, connector_end) = sys::fdpass::seqpacket_pair().map_err(LaneError::io("connector socket"))?;
    let mut env = Vec::new();
    if let Ok(filter) = std::env::var("APPLIANCED_LOG") {
        env.push(("APPLIANCED_LOG".to_string(), filter));
    }
    let spec = sys::spawn::ChildSpec {
        name: format!("applianced-connector-{}", args.module.name()),
        args: connector_args(args).to_args(),
        env,
        fds: vec![(connector_end.as_raw_fd(), CONNECTOR_FD)],
        identity: None,
    };
    // Dropped, not waited for: the lane's sandbox has no wait4. The
    // connector exits when the lane's end closes.
    let _child = sys::spawn::spawn_self(&exe, &spec).map_err(LaneError::io("start the connector"))?;
    Ok(lane_end)
}

/// Run one lane until it is drained (or, with a probe, run the probe).
pub fn run_lane(args: &LaneArgs) -> Result<(), LaneError> {
    sys::block_supervisor_signals().map_err(LaneError::io("block signals"))?;
    let signals = sys::termination_signalfd().map_err(LaneError::io("signalfd"))?;
    let listener = sys::inherited_unix_listener(LISTEN_FD).map_err(LaneError::io("inherited listener"))?;
    let control = inherited_message_socket(CONTROL_FD)?;
    sys::set_process_name(&format!("lane-{}", args.module.name())).map_err(LaneError::io("process name"))?;
    crate::failpoint::arm(args.module.name());
    crate::clock::init();
    // A spool write past a file size limit must fail with EFBIG, not kill the lane.
    sys::ignore_sigxfsz().map_err(LaneError::io("ignore SIGXFSZ"))?;
    sys::keep_freed_heap(crate::limits::LANE_HEAP_REUSE_BYTES).map_err(LaneError::io("heap tunables"))?;
    let links = Links { control, connector: spawn_connector(args)? };
    let clock = Clock::new();
    // The spool is opened and recovered before the sandbox (it lists and
    // reads its directory); afterwards only that directory is reachable.
    let spool_dir = &args.spool_dir;
    let readers =
        crate::spool::Readers { summarize: super::batch::spool_ranges, salvage: super::batch::salvage_ranges };
    let (spool, recovery) =
        crate::spool::Spool::open(spool_dir, args.spool_quota_bytes, readers).map_err(LaneError::Spool)?;
    let mut core =
        LaneCore::new(args.module, args.policy.clone(), clock.now(), spool, recovery, args.disk_reserve_bytes);
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
    let uid = sys::real_uid(); // getuid is not on the sandbox's allow-list
    crate::colocate::apply_to_lane(&args.cpus).map_err(LaneError::Colocate)?;
    if let Some(probe) = args.probe.as_deref().filter(|p| super::probe::BEFORE_SANDBOX.contains(p)) {
        println!("probe {probe}: {}", super::probe::before_sandbox(probe, args));
        return Ok(());
    }
    // Step 1 of the sandbox: every descriptor the lane will ever need is open.
    let proc_status = std::fs::File::open("/proc/self/status").map_err(LaneError::io("open /proc/self/status"))?;
    let report = crate::sandbox::enter(args.sandbox, Profile::Lane, ring.is_some(), proc_status, Some(spool_dir))
        .map_err(LaneError::Sandbox)?;
    if let Some(probe) = &args.probe {
        let mut ring = ring;
        let outcome = super::probe::in_sandbox(probe, &report, ring.as_mut(), &links, args);
        println!("probe {probe}: {outcome}");
        return Ok(());
    }
    let status = format!(
        "io_path = \"{io_path}\"\ncpus = \"{}\"\n{}",
        crate::colocate::render_cpu_list(&args.cpus),
        report.status_lines()
    );
    links.send_status(&status)?;
    tracing::info!(
        lane = args.module.name(),
        io_path,
        pid = std::process::id(),
        uid,
        sandbox_fully_enforced = report.fully_enforced(),
        "lane serving"
    );
    let result = match ring {
        Some(mut ring) => super::uring::run(&mut core, &mut ring, &listener, &links, &signals, &clock),
        None => super::poll::run(&mut core, &listener, &links, &signals, &clock),
    };
    let stats = &core.stats;
    tracing::info!(
        lane = args.module.name(),
        events_committed = stats.events_committed,
        events_rejected = stats.events_rejected,
        duplicates_skipped = stats.duplicates_skipped,
        batches_committed = stats.batches_committed,
        connections_refused = stats.connections_refused,
        protocol_errors = stats.protocol_errors,
        resets = stats.resets,
        batches_read_back = stats.batches_read_back,
        "lane stopped"
    );
    result
}

/// Run a lane's connector until the lane closes its end (`applianced
/// lane-connector`, started only by a lane).
pub fn run_connector(args: &ConnectorArgs) -> Result<(), LaneError> {
    let lane = inherited_message_socket(CONNECTOR_FD)?;
    sys::set_process_name("lane-connector").map_err(LaneError::io("process name"))?;
    let proc_status = std::fs::File::open("/proc/self/status").map_err(LaneError::io("open /proc/self/status"))?;
    crate::sandbox::enter(args.sandbox, Profile::Connector, false, proc_status, None).map_err(LaneError::Sandbox)?;
    super::connector::serve(lane, args).map_err(LaneError::io("serve the lane"))
}
