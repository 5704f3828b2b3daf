//! `applianced run`: the supervisor process.
//!
//! Starts the embedded cluster, binds every module's abstract socket
//! (refusing to start if any name is already bound: a second appliance or
//! a squatter), starts one lane process per module through the launcher
//! (as the lane's own OS identity where it can, with only its listening
//! socket and its control socket), restarts a lane that dies (with backoff)
//! while the others keep serving, restarts the cluster when it stops (with
//! backoff, never giving up), keeps PostgreSQL's log within its bound,
//! runs partition maintenance on a thread of its own, and on SIGTERM/SIGINT
//! asks every lane to drain, stops the cluster and exits 0.
//!
//! Runs unsandboxed, as root or as the unit's user with CAP_SETUID and
//! CAP_SETGID in its permitted set only (lowered at start; a forked child
//! raises them for its identity switch, and exec leaves it none).

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::base::limits::{
    CLUSTER_RESTART_BACKOFF_MAX_MS, CLUSTER_RESTART_BACKOFF_MIN_MS, LANE_DRAIN_TIMEOUT_S, LANE_READY_TIMEOUT_S,
    LANE_RESTART_BACKOFF_MAX_MS, LANE_RESTART_BACKOFF_MIN_MS,
};
use crate::base::ratelimit;
use crate::base::sys;
use crate::base::sys::fdpass::{receive_message, send_message, send_message_nowait};
use crate::control::cluster::{Embedded, StateDir};
use crate::control::error::AppError;
use crate::control::launch::{LaneIdentities, LaneOptions, Launcher};
use crate::control::launch::{metrics_path, spool_dir, status_path};
use crate::control::maintenance::{MaintenanceOptions, MaintenanceThread};
use crate::lane::ingress::PeerGrant;
use crate::lane::links::{
    CONTROL_BACKLOG, CONTROL_DRAIN, CONTROL_MESSAGE_BYTES_MAX, CONTROL_METRICS, CONTROL_STATUS, CONTROL_STREAMS,
};
use crate::lane::process::IoMode;
use crate::model::matrix::Module;

/// Supervisor loop period (it wakes earlier for a signal or a lane's message).
const SUPERVISE_INTERVAL_MS: u64 = 500;

pub struct RunOptions {
    pub state_dir: PathBuf,
    pub instance: String,
    /// Per module, who may connect and which producer ids each may claim.
    pub peers: BTreeMap<Module, Vec<PeerGrant>>,
    pub io: IoMode,
    pub sandbox: crate::sandbox::SandboxMode,
    pub placement: crate::sandbox::colocate::Placement,
    /// PostgreSQL connections each lane commits over (1 to `COMMIT_STREAMS_MAX`).
    pub commit_streams: usize,
    pub partition_days_ahead: u32,
    /// Disk quota of each lane's spool.
    pub spool_quota_bytes: u64,
    /// Days of day partitions kept per module (older ones are detached and dropped).
    pub retention_days: BTreeMap<Module, u32>,
    /// Uids admitted on the metrics socket besides this process's and root.
    pub metrics_uids: Vec<u32>,
    /// Where to write the exposition every second (node_exporter's textfile collector).
    pub metrics_textfile: Option<PathBuf>,
}

struct Lane {
    module: Module,
    listener: UnixListener,
    child: Option<Child>,
    /// The supervisor's end of the running lane's control socket.
    control: Option<OwnedFd>,
    /// Whether the running lane process has reported its status.
    reported: bool,
    restarts: u32,
    restart_at: Option<Instant>,
    /// The free-space reserve the running lane was given.
    disk_reserve: u64,
    /// When the supervisor last logged this lane as stalled.
    stall_logged_at: Option<Instant>,
    /// The running lane's last report: its spooled records wait for a
    /// commit stream.
    backlogged: bool,
    /// The commit streams the running lane was told it may use.
    streams_told: usize,
}

/// The commit streams each lane may use while `backlogged` lanes have
/// records waiting for one: `max` (`run --commit-streams`) shared among
/// them, at least 1 each. A module bursting alone gets all of them; when
/// several burst at once, together they keep about `max` COPYs (or one
/// per lane) running instead of `max` per lane, which costs PostgreSQL more
/// CPU per event than it gains (docs/benchmarks.md).
pub fn commit_stream_share(max: usize, backlogged: usize) -> usize {
    (max / backlogged.max(1)).max(1)
}

/// Tell every running lane its share of the commit streams when it changed.
fn share_commit_streams(lanes: &mut [Lane], max: usize) {
    let share = commit_stream_share(max, lanes.iter().filter(|l| l.control.is_some() && l.backlogged).count());
    for lane in lanes.iter_mut().filter(|l| l.streams_told != share) {
        let Some(control) = lane.control.as_ref() else { continue };
        // Never blocks; a full socket is tried again on the next turn.
        if send_message_nowait(control.as_fd(), &[CONTROL_STREAMS, share as u8]).is_ok() {
            lane.streams_told = share;
        }
    }
}

/// What a running supervisor records in `<state>/run/appliance.pid`, so
/// that selftest can tell its sockets from a squatter's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningAppliance {
    pub pid: i32,
    pub uid: u32,
    pub instance: String,
}

impl RunningAppliance {
    pub(crate) fn path(dir: &StateDir) -> PathBuf {
        dir.run_dir().join("appliance.pid")
    }

    pub fn load(dir: &StateDir) -> Option<RunningAppliance> {
        let text = std::fs::read_to_string(RunningAppliance::path(dir)).ok()?;
        let mut pairs = crate::codec::pairs::parse_pairs(&text).ok()?;
        Some(RunningAppliance {
            pid: pairs.get("pid")?.parse().ok()?,
            uid: pairs.get("uid")?.parse().ok()?,
            instance: pairs.remove("instance")?,
        })
    }

    fn save(&self, dir: &StateDir) -> Result<(), AppError> {
        let text = format!("pid = {}\nuid = {}\ninstance = \"{}\"\n", self.pid, self.uid, self.instance);
        write_replacing(&RunningAppliance::path(dir), &text)
            .map_err(|source| AppError::Io { step: "write appliance.pid", source })
    }

    fn remove(dir: &StateDir) {
        let _ = std::fs::remove_file(RunningAppliance::path(dir));
    }
}

/// Write a file by rename, so that no reader ever sees half of it.
fn write_replacing(path: &Path, text: &str) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, path)
}

/// Bind a module's abstract socket, or explain who holds it.
pub fn bind_lane_socket(instance: &str, module: Module) -> Result<UnixListener, AppError> {
    bind_abstract(&module.socket_name(instance), instance)
}

/// Bind the abstract socket `name` of appliance `instance`, or refuse to
/// start if someone holds it.
fn bind_abstract(name: &str, instance: &str) -> Result<UnixListener, AppError> {
    let address = SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|source| AppError::Io { step: "socket address", source })?;
    UnixListener::bind_addr(&address).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            AppError::Refused(format!(
                "socket @{name} is already bound (another appliance with instance {instance:?}, or a squatter): refusing to start"
            ))
        } else {
            AppError::Io { step: "bind an appliance socket", source }
        }
    })
}

/// The environment of a lane: the log filter, and in test builds the
/// failpoints (first life only: a failpoint stops a lane once) and the
/// simulated clock (every life).
pub fn lane_env(restarts: u32) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let mut pass = |key: &str| {
        if let Ok(value) = std::env::var(key) {
            env.push((key.to_string(), value));
        }
    };
    pass("APPLIANCED_LOG");
    pass("APPLIANCED_LOG_FORMAT");
    if cfg!(feature = "failpoints") {
        if restarts == 0 {
            pass(crate::base::failpoint::ENV);
            pass(crate::base::failpoint::ENV_LANE);
        }
        pass(crate::base::clock::TEST_CLOCK_ENV);
        pass(crate::base::limits::TEST_LANE_PRODUCERS_MAX_ENV);
    }
    env
}

/// A lane's grants as its command line takes them: the configured ones,
/// and the reserved producer ids for the appliance's own uid.
pub fn lane_grants(peers: &BTreeMap<Module, Vec<PeerGrant>>, module: Module) -> Vec<String> {
    let mut grants: Vec<PeerGrant> = peers.get(&module).cloned().unwrap_or_default();
    grants.push(PeerGrant::appliance(sys::real_uid()));
    grants.iter().map(ToString::to_string).collect()
}

fn lane_options(options: &RunOptions, module: Module, dir: &StateDir) -> Result<LaneOptions, AppError> {
    let reserve = crate::control::launch::disk_reserve(dir, options.spool_quota_bytes)
        .map_err(|source| AppError::Io { step: "read the state filesystem's size", source })?;
    Ok(LaneOptions {
        io: options.io,
        sandbox: options.sandbox,
        cpus: options.placement.lane_cpus.clone(),
        spool_quota_bytes: options.spool_quota_bytes,
        disk_reserve_bytes: reserve.bytes(),
        grants: lane_grants(&options.peers, module),
        commit_streams: options.commit_streams,
    })
}

fn spawn_lane(lane: &mut Lane, launcher: &Launcher, options: &RunOptions, dir: &StateDir) -> Result<(), AppError> {
    let spool = spool_dir(dir, lane.module);
    let lane_options = lane_options(options, lane.module, dir)?;
    lane.disk_reserve = lane_options.disk_reserve_bytes;
    let (child, control) = launcher
        .launch(lane.module, lane.listener.as_fd(), &lane_options, &spool, lane_env(lane.restarts), None)
        .map_err(|e| AppError::Refused(format!("lane {}: {e}", lane.module.name())))?;
    lane.child = Some(child);
    lane.control = Some(control);
    lane.reported = false;
    // A lane starts with every commit stream (`--commit-streams`).
    lane.backlogged = false;
    lane.streams_told = options.commit_streams;
    Ok(())
}

/// Read what a lane sent on its control socket. Its status (sent once, as
/// it starts serving, before it has read any untrusted byte) is recorded
/// in `run/lane-<module>.status` under the pid this supervisor started and
/// the identity it gave; the lane's own lines may not name either. A later
/// status message from the same lane process is ignored (logged): a lane
/// compromised since its start cannot rewrite what selftest reads.
/// Returns whether the status arrived now.
fn on_control(lane: &mut Lane, dir: &StateDir, identities: &LaneIdentities) -> bool {
    let (Some(control), Some(child)) = (lane.control.as_ref(), lane.child.as_ref()) else { return false };
    let mut buffer = vec![0u8; CONTROL_MESSAGE_BYTES_MAX];
    let mut serving = false;
    loop {
        match receive_message(control.as_fd(), &mut buffer) {
            Ok(Some(message)) if message.len > 1 && buffer[0] == CONTROL_STATUS && !lane.reported => {
                let reported = String::from_utf8_lossy(&buffer[1..message.len]);
                let lines: String = reported
                    .lines()
                    .filter(|l| {
                        !matches!(l.split('=').next().map(str::trim), Some("pid" | "identity" | "disk_reserve_bytes"))
                    })
                    .map(|l| format!("{l}\n"))
                    .collect();
                let status = format!(
                    "{lines}pid = {}\nidentity = \"{}\"\ndisk_reserve_bytes = {}\n",
                    child.id(),
                    identities.label(lane.module),
                    lane.disk_reserve
                );
                if let Err(e) = write_replacing(&status_path(dir, lane.module), &status) {
                    tracing::warn!(lane = lane.module.name(), error = %e, "cannot write the lane status file");
                }
                lane.reported = true;
                serving = true;
            }
            Ok(Some(message)) if message.len > 1 && buffer[0] == CONTROL_METRICS && lane.reported => {
                // Only known metric lines with integer values are kept.
                let report = crate::lane::metrics::accepted_lines(&String::from_utf8_lossy(&buffer[1..message.len]));
                let text = format!("pid = {}\n{report}", child.id());
                if let Err(e) = write_replacing(&metrics_path(dir, lane.module), &text) {
                    if let Some(suppressed) = ratelimit::allow("lane metrics file") {
                        tracing::warn!(lane = lane.module.name(), error = %e, suppressed, "cannot write the lane metrics file");
                    }
                }
                log_if_stalled(lane.module, &mut lane.stall_logged_at, &report);
            }
            Ok(Some(message)) if message.len == 2 && buffer[0] == CONTROL_BACKLOG && lane.reported => {
                lane.backlogged = buffer[1] != 0;
            }
            Ok(Some(message)) if message.len == 0 => {
                // The lane closed its end (it is exiting); the reap restarts it.
                lane.control = None;
                return serving;
            }
            Ok(Some(message)) => {
                if let Some(suppressed) = ratelimit::allow("unexpected control message") {
                    tracing::warn!(
                        lane = lane.module.name(),
                        bytes = message.len,
                        suppressed,
                        "unexpected control message ignored"
                    )
                }
            }
            Ok(None) => return serving,
            Err(e) => {
                tracing::warn!(lane = lane.module.name(), error = %e, "control socket failed");
                lane.control = None;
                return serving;
            }
        }
    }
}

/// Log a lane whose commit lag is beyond `lane_commit_lag_max_ms` (what
/// selftest's `commit lag` fails on), at most once per
/// `LANE_STALL_LOG_INTERVAL_MS`, with its last database error.
fn log_if_stalled(module: Module, logged_at: &mut Option<Instant>, report: &str) {
    let pairs = crate::codec::pairs::parse_pairs(report).unwrap_or_default();
    let number = |key: &str| pairs.get(key).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let lag_ms = number("commit_lag_ms");
    if lag_ms <= crate::base::limits::lane_commit_lag_max_ms() {
        return;
    }
    let interval = Duration::from_millis(crate::base::limits::LANE_STALL_LOG_INTERVAL_MS);
    if logged_at.is_some_and(|at| at.elapsed() < interval) {
        return;
    }
    *logged_at = Some(Instant::now());
    tracing::error!(
        lane = module.name(),
        commit_lag_s = lag_ms / 1000,
        unsent_records = number("unsent_records"),
        database_resets = number("database_resets"),
        last_error = pairs.get("last_error").map_or("none", String::as_str),
        "lane stalled: acknowledged events are not committing"
    );
}

/// The metrics socket (`@ransomeye/<instance>/metrics`) and textfile: a
/// connection from an admitted uid gets the whole exposition and is
/// closed; any other is closed at once.
struct MetricsServer {
    listener: UnixListener,
    /// Admitted uids: this process's, root's, and `--metrics-uid`s.
    admitted: Vec<u32>,
    textfile: Option<PathBuf>,
    written_at: Option<Instant>,
    served: u64,
    refused: u64,
}

impl MetricsServer {
    fn bind(options: &RunOptions) -> Result<MetricsServer, AppError> {
        let name = crate::control::exposition::socket_name(&options.instance);
        let listener = bind_abstract(&name, &options.instance)?;
        listener.set_nonblocking(true).map_err(|source| AppError::Io { step: "metrics socket", source })?;
        let mut admitted = vec![sys::effective_uid(), 0];
        admitted.extend(&options.metrics_uids);
        Ok(MetricsServer {
            listener,
            admitted,
            textfile: options.metrics_textfile.clone(),
            written_at: None,
            served: 0,
            refused: 0,
        })
    }

    fn exposition(&self, dir: &StateDir, lanes: &[Lane]) -> String {
        let mut extra = String::from(
            "# TYPE applianced_lane_restarts counter\n# HELP applianced_lane_restarts Lane processes restarted by the supervisor.\n",
        );
        for lane in lanes {
            extra.push_str(&format!(
                "applianced_lane_restarts_total{{lane=\"{}\"}} {}\n",
                lane.module.name(),
                lane.restarts
            ));
        }
        extra.push_str(&format!(
            "# TYPE applianced_metrics_scrapes counter\n# HELP applianced_metrics_scrapes Connections to the metrics socket, by outcome.\n\
             applianced_metrics_scrapes_total{{outcome=\"served\"}} {}\napplianced_metrics_scrapes_total{{outcome=\"refused\"}} {}\n",
            self.served, self.refused
        ));
        crate::control::exposition::exposition(dir, Some(std::process::id() as i32), &extra)
    }

    /// Answer up to `METRICS_ACCEPTS_PER_TICK_MAX` waiting connections, and
    /// write the textfile if a second has passed.
    fn serve(&mut self, dir: &StateDir, lanes: &[Lane]) {
        for _ in 0..crate::base::limits::METRICS_ACCEPTS_PER_TICK_MAX {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    if let Some(suppressed) = ratelimit::allow("metrics accept") {
                        tracing::warn!(error = %e, suppressed, "metrics socket accept failed");
                    }
                    break;
                }
            };
            let admitted = sys::peer_credentials(stream.as_fd()).is_ok_and(|peer| self.admitted.contains(&peer.uid));
            if !admitted {
                self.refused += 1;
                continue; // dropped: closed without a byte
            }
            self.served += 1;
            let text = self.exposition(dir, lanes);
            // One send without waiting: the exposition (at most
            // EXPOSITION_BYTES_MAX) fits an empty socket buffer; a peer
            // that left gets nothing and costs nothing.
            let _ = stream.set_nonblocking(true);
            let _ = std::io::Write::write(&mut &stream, text.as_bytes());
        }
        let Some(path) = &self.textfile else { return };
        if self
            .written_at
            .is_some_and(|at| at.elapsed() < Duration::from_millis(crate::base::limits::LANE_METRICS_INTERVAL_MS))
        {
            return;
        }
        self.written_at = Some(Instant::now());
        let text = self.exposition(dir, lanes);
        if let Err(e) = write_replacing(path, &text) {
            if let Some(suppressed) = ratelimit::allow("metrics textfile") {
                tracing::warn!(path = %path.display(), error = %e, suppressed, "cannot write the metrics textfile");
            }
        }
    }
}

/// Wait until a lane has entered its sandbox and reported its status (it
/// does so just before serving); fail if it exits first or takes longer
/// than `LANE_READY_TIMEOUT_S`.
fn wait_until_serving(lane: &mut Lane, dir: &StateDir, identities: &LaneIdentities) -> Result<(), AppError> {
    let deadline = Instant::now() + Duration::from_secs(LANE_READY_TIMEOUT_S);
    loop {
        if on_control(lane, dir, identities) {
            return Ok(());
        }
        let Some(child) = lane.child.as_mut() else { return Ok(()) };
        if let Ok(Some(status)) = child.try_wait() {
            return Err(AppError::Refused(format!("lane {} exited during start-up: {status}", lane.module.name())));
        }
        if Instant::now() > deadline {
            return Err(AppError::Refused(format!(
                "lane {} did not start within {LANE_READY_TIMEOUT_S} s",
                lane.module.name()
            )));
        }
        let fd = lane.control.as_ref().map_or(-1, |c| c.as_raw_fd());
        let mut fds = [libc::pollfd { fd, events: libc::POLLIN, revents: 0 }];
        let _ = sys::poll(&mut fds, 20);
    }
}

fn reap_and_restart(lane: &mut Lane, launcher: &Launcher, options: &RunOptions, dir: &StateDir) {
    if let Some(child) = lane.child.as_mut() {
        match child.try_wait() {
            Ok(None) => return,
            Ok(Some(status)) => {
                let backoff = (LANE_RESTART_BACKOFF_MIN_MS << lane.restarts.min(7)).min(LANE_RESTART_BACKOFF_MAX_MS);
                tracing::error!(lane = lane.module.name(), %status, restart_in_ms = backoff, "lane exited; restarting");
                lane.child = None;
                lane.control = None;
                lane.restarts += 1;
                lane.restart_at = Some(Instant::now() + Duration::from_millis(backoff));
            }
            Err(e) => {
                tracing::error!(lane = lane.module.name(), error = %e, "cannot wait for lane");
                return;
            }
        }
    }
    if lane.restart_at.is_some_and(|at| Instant::now() >= at) {
        match spawn_lane(lane, launcher, options, dir) {
            Ok(()) => lane.restart_at = None,
            Err(e) => tracing::error!(lane = lane.module.name(), error = %e, "lane restart failed"),
        }
    }
}

fn pin_postgres(embedded: &Embedded, cpus: &[usize]) {
    let Some(pid) = embedded.postmaster_pid() else { return };
    match crate::sandbox::colocate::apply_to_postgres(pid, cpus) {
        Ok(count) => {
            tracing::info!(cpus = %crate::sandbox::colocate::render_cpu_list(cpus), processes = count, "PostgreSQL pinned")
        }
        Err(e) => tracing::warn!(error = %e, "cannot pin PostgreSQL"),
    }
}

/// sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET (a path,
/// or an abstract name written with a leading '@'). Does nothing when the
/// appliance is not started by systemd with Type=notify.
fn notify_systemd(state: &str) {
    let Ok(target) = std::env::var("NOTIFY_SOCKET") else { return };
    let address = match target.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(&target),
    };
    let sent = address
        .and_then(|a| std::os::unix::net::UnixDatagram::unbound().and_then(|s| s.send_to_addr(state.as_bytes(), &a)));
    if let Err(e) = sent {
        if let Some(suppressed) = ratelimit::allow("notify systemd") {
            tracing::warn!(error = %e, suppressed, "cannot notify systemd");
        }
    }
}

/// Log the free-space reserve and warn if the state filesystem is already
/// below it (every lane then pushes producers back until space is freed).
fn log_disk_reserve(dir: &StateDir, spool_quota: u64) -> Result<(), AppError> {
    let io = |source| AppError::Io { step: "read the state filesystem's size", source };
    let reserve = crate::control::launch::disk_reserve(dir, spool_quota).map_err(io)?;
    let space = dir.fs_space().map_err(io)?;
    let free_mib = space.available >> 20;
    if space.available < reserve.bytes() {
        tracing::warn!(
            %reserve,
            free_mib,
            "the state filesystem is below its free-space reserve: lanes push producers back (STATUS disk-reserve) until space is freed"
        );
    } else {
        tracing::info!(%reserve, free_mib, total_mib = space.total >> 20, "free-space reserve of the state filesystem");
    }
    Ok(())
}

/// Restarts of a stopped cluster: backoff doubling from
/// `CLUSTER_RESTART_BACKOFF_MIN_MS` to `CLUSTER_RESTART_BACKOFF_MAX_MS`,
/// never giving up (lanes keep spooling meanwhile).
struct ClusterWatch {
    retry_at: Instant,
    backoff_ms: u64,
    failures: u64,
}

impl ClusterWatch {
    fn new() -> ClusterWatch {
        ClusterWatch { retry_at: Instant::now(), backoff_ms: CLUSTER_RESTART_BACKOFF_MIN_MS, failures: 0 }
    }

    fn check(&mut self, embedded: &Embedded, pg_cpus: &[usize]) {
        if embedded.is_running() {
            self.backoff_ms = CLUSTER_RESTART_BACKOFF_MIN_MS;
            self.failures = 0;
            return;
        }
        if Instant::now() < self.retry_at {
            return;
        }
        let cause = crate::control::cluster::last_failure(&embedded.dir).unwrap_or_else(|| "none logged".into());
        tracing::warn!(failures = self.failures, cause, "cluster is not running; starting it");
        match embedded.start() {
            Ok(()) => {
                tracing::info!("cluster started again");
                pin_postgres(embedded, pg_cpus);
                self.backoff_ms = CLUSTER_RESTART_BACKOFF_MIN_MS;
                self.failures = 0;
            }
            Err(e) => {
                self.failures += 1;
                let cause =
                    crate::control::cluster::last_failure(&embedded.dir).unwrap_or_else(|| "none logged".into());
                tracing::error!(
                    error = %e,
                    cause,
                    retry_in_ms = self.backoff_ms,
                    failures = self.failures,
                    "cluster restart failed; retrying (lanes keep spooling)"
                );
                self.retry_at = Instant::now() + Duration::from_millis(self.backoff_ms);
                self.backoff_ms = (self.backoff_ms * 2).min(CLUSTER_RESTART_BACKOFF_MAX_MS);
            }
        }
    }
}

pub fn run(options: &RunOptions) -> Result<(), AppError> {
    sys::block_supervisor_signals().map_err(|source| AppError::Io { step: "block signals", source })?;
    let signals = sys::supervisor_signalfd().map_err(|source| AppError::Io { step: "signalfd", source })?;
    // Capabilities the unit grants (CAP_SETUID, CAP_SETGID) are in the
    // permitted set only (lowered in main): nothing this process runs
    // (pg_ctl, lanes) inherits them, and only a forked child switching
    // identity raises them.
    let embedded = Embedded::load(&options.state_dir)?;
    let accounts = crate::control::accounts::resolve(embedded.server.clone())
        .map_err(|e| AppError::Refused(format!("OS accounts: {e}")))?;
    let identities =
        crate::control::launch::lane_identities(&accounts).map_err(|e| AppError::Refused(e.to_string()))?;
    if sys::effective_uid() == 0 {
        // The lane identities may have just been created: map them.
        crate::control::cluster::configure(&embedded, &accounts)?;
    } else {
        crate::control::cluster::write_settings(&embedded, &accounts)?;
        if embedded.is_running() {
            crate::control::cluster::reload(&embedded)?;
        }
    }
    if let LaneIdentities::Shared { uid } = &identities {
        tracing::warn!(
            uid,
            "lanes share this process's identity (no right to switch uids): only their sandbox keeps them from other database roles"
        );
    }
    embedded.start().map_err(|e| match crate::control::cluster::last_failure(&embedded.dir) {
        Some(cause) => AppError::Refused(format!("{e}; PostgreSQL logged: {cause}")),
        None => AppError::from(e),
    })?;
    pin_postgres(&embedded, &options.placement.pg_cpus);
    log_disk_reserve(&embedded.dir, options.spool_quota_bytes)?;
    let launcher = Launcher::new(&embedded, identities).map_err(|e| AppError::Refused(e.to_string()))?;
    let me = RunningAppliance {
        pid: std::process::id() as i32,
        uid: sys::effective_uid(),
        instance: options.instance.clone(),
    };
    let maintenance_options = MaintenanceOptions {
        partition_days_ahead: options.partition_days_ahead,
        retention_days: options.retention_days.clone(),
        supervisor_pid: me.pid,
    };
    let mut maintenance = MaintenanceThread::start(embedded.clone(), maintenance_options.clone())
        .map_err(|source| AppError::Io { step: "start the maintenance thread", source })?;
    let mut lanes = Vec::new();
    for module in Module::ALL {
        let listener = bind_lane_socket(&options.instance, module)?;
        lanes.push(Lane {
            module,
            listener,
            child: None,
            control: None,
            reported: false,
            restarts: 0,
            restart_at: None,
            disk_reserve: 0,
            stall_logged_at: None,
            backlogged: false,
            streams_told: options.commit_streams,
        });
    }
    let mut metrics = MetricsServer::bind(options)?;
    for lane in &mut lanes {
        spawn_lane(lane, &launcher, options, &embedded.dir)?;
    }
    for lane in &mut lanes {
        wait_until_serving(lane, &embedded.dir, &launcher.identities)?;
    }
    let wait = Duration::from_secs(crate::base::limits::MAINTENANCE_FIRST_PASS_WAIT_S);
    if !maintenance.wait_for_partitions(wait) {
        tracing::warn!(
            wait_s = wait.as_secs(),
            "partitions ahead not yet created; serving anyway (maintenance retries)"
        );
    }
    me.save(&embedded.dir)?;
    println!("applianced: ready: {} lanes listening on @ransomeye/{}/<module>", lanes.len(), options.instance);
    notify_systemd("READY=1\nSTATUS=every lane is serving");
    let mut cluster = ClusterWatch::new();
    let mut watchdog_at: Option<Instant> = None;
    loop {
        let mut fds = vec![
            libc::pollfd { fd: signals.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: metrics.listener.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        for lane in &lanes {
            let fd = lane.control.as_ref().map_or(-1, |c| c.as_raw_fd());
            fds.push(libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
        }
        sys::poll(&mut fds, SUPERVISE_INTERVAL_MS as i32)
            .map_err(|source| AppError::Io { step: "wait for signals", source })?;
        let received = sys::read_signals(signals.as_fd());
        if received.iter().any(|s| matches!(s, sys::Signal::Terminate | sys::Signal::Interrupt)) {
            maintenance.request_stop();
            return shutdown(&mut lanes, &embedded);
        }
        metrics.serve(&embedded.dir, &lanes);
        for (lane, fd) in lanes.iter_mut().zip(&fds[2..]) {
            if fd.revents != 0 {
                on_control(lane, &embedded.dir, &launcher.identities);
            }
            reap_and_restart(lane, &launcher, options, &embedded.dir);
        }
        share_commit_streams(&mut lanes, options.commit_streams);
        cluster.check(&embedded, &options.placement.pg_cpus);
        if let Err(e) = crate::control::cluster::prune_logs(&embedded.dir) {
            if let Some(suppressed) = ratelimit::allow("prune the PostgreSQL log") {
                tracing::warn!(error = %e, suppressed, "cannot prune the PostgreSQL log");
            }
        }
        if !maintenance.is_alive() {
            tracing::error!("the maintenance thread ended; starting it again");
            maintenance = MaintenanceThread::start(embedded.clone(), maintenance_options.clone())
                .map_err(|source| AppError::Io { step: "start the maintenance thread", source })?;
        }
        // The loop went round: tell systemd's watchdog (WatchdogSec= in the
        // unit), at most once a second. A wedged loop stops these and
        // systemd restarts the service.
        if watchdog_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            watchdog_at = Some(Instant::now());
            notify_systemd("WATCHDOG=1");
        }
    }
}

fn shutdown(lanes: &mut [Lane], embedded: &Embedded) -> Result<(), AppError> {
    tracing::info!("stopping: draining lanes");
    notify_systemd("STOPPING=1");
    for lane in lanes.iter_mut() {
        let Some(child) = lane.child.as_mut() else { continue };
        // A lane that died before the stop (not yet reaped) is a crash the
        // supervise loop would have logged and restarted, the same as a lane
        // waiting out its restart backoff: nothing to drain, its spool
        // replays at the next start. Only lanes alive now must drain.
        if let Ok(Some(status)) = child.try_wait() {
            tracing::warn!(lane = lane.module.name(), %status, "lane had exited before the stop; its spool replays at the next start");
            lane.child = None;
            continue;
        }
        // A drain request on the control socket: no signal permission is
        // needed towards a lane that runs as another uid.
        let sent = lane.control.as_ref().map(|c| send_message(c.as_fd(), &[CONTROL_DRAIN], None));
        if !matches!(sent, Some(Ok(()))) {
            let _ = sys::send_signal(child.id() as i32, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(LANE_DRAIN_TIMEOUT_S);
    let mut clean = true;
    for lane in lanes.iter_mut() {
        let Some(child) = lane.child.as_mut() else { continue };
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    clean &= status.success();
                    break;
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    tracing::error!(lane = lane.module.name(), "lane did not drain in time; killing it");
                    if let Err(e) = child.kill() {
                        tracing::error!(lane = lane.module.name(), error = %e, "cannot kill the lane");
                    } else {
                        let _ = child.wait();
                    }
                    clean = false;
                    break;
                }
            }
        }
    }
    RunningAppliance::remove(&embedded.dir);
    embedded.stop()?;
    if clean { Ok(()) } else { Err(AppError::Refused("a lane did not stop cleanly".into())) }
}

/// The default grants: the uid that started the appliance, every producer id.
pub fn default_peers() -> BTreeMap<Module, Vec<PeerGrant>> {
    let everything = PeerGrant {
        who: crate::lane::ingress::PeerId::Uid(sys::real_uid()),
        first_producer: 0,
        last_producer: crate::base::limits::PRODUCER_ID_MAX,
    };
    Module::ALL.into_iter().map(|m| (m, vec![everything])).collect()
}

#[cfg(test)]
mod tests {
    use super::commit_stream_share;

    /// A module bursting alone gets every commit stream; several at once
    /// share them, one each at least.
    #[test]
    fn commit_streams_are_shared_among_the_lanes_with_a_backlog() {
        for (max, backlogged, share) in [
            (2, 0, 2),
            (2, 1, 2),
            (2, 2, 1),
            (2, 4, 1),
            (4, 1, 4),
            (4, 2, 2),
            (4, 3, 1),
            (3, 2, 1),
            (1, 1, 1),
            (1, 4, 1),
        ] {
            assert_eq!(commit_stream_share(max, backlogged), share, "max {max}, {backlogged} backlogged");
        }
    }
}
