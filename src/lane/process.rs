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

use std::os::fd::{AsRawFd, OwnedFd};

use super::connector::ConnectorArgs;
use super::core::LaneCore;
use super::links::Links;
pub use super::runtime::{CONNECTOR_FD, CONTROL_FD, Clock, IoMode, LISTEN_FD, LaneArgs, LaneError, drain_signals};
use crate::base::limits::{DATABASE_NAME, LANE_HEAP_KEPT_BYTES, LANE_HEAP_REUSE_BYTES};
use crate::base::sys;
use crate::model::matrix::Role;
use crate::sandbox::Profile;

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
    crate::base::failpoint::arm(args.module.name());
    crate::base::clock::init();
    // A spool write past a file size limit must fail with EFBIG, not kill the lane.
    sys::ignore_sigxfsz().map_err(LaneError::io("ignore SIGXFSZ"))?;
    sys::keep_freed_heap(LANE_HEAP_REUSE_BYTES, LANE_HEAP_KEPT_BYTES).map_err(LaneError::io("heap tunables"))?;
    let links = Links::new(control, spawn_connector(args)?);
    let clock = Clock::new();
    // The spool is opened and recovered before the sandbox (it lists and
    // reads its directory); afterwards only that directory is reachable.
    let spool_dir = &args.spool_dir;
    let readers =
        crate::storage::spool::Readers { summarize: super::batch::spool_ranges, salvage: super::batch::salvage_ranges };
    let (spool, recovery) =
        crate::storage::spool::Spool::open(spool_dir, args.spool_quota_bytes, readers).map_err(LaneError::Spool)?;
    let mut core = LaneCore::new(
        args.module,
        args.policy.clone(),
        clock.now(),
        Box::new(spool),
        recovery,
        args.disk_reserve_bytes,
    );
    core.set_commit_streams(args.commit_streams);
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
    crate::sandbox::colocate::apply_to_lane(&args.cpus).map_err(LaneError::Colocate)?;
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
        crate::sandbox::colocate::render_cpu_list(&args.cpus),
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
