//! `applianced run`: the supervisor process.
//!
//! Starts the embedded cluster, binds every module's abstract socket
//! (refusing to start if any name is already bound: a second appliance or
//! a squatter), re-executes this binary once per module as a lane process
//! that inherits only its listening socket (as fd 3) and stdio, restarts a
//! lane that dies (with backoff) while the others keep serving, keeps
//! partitions created ahead as `ransomeye_maint`, and on SIGTERM/SIGINT
//! lets every lane drain, stops the cluster and exits 0.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::app::AppError;
use crate::cluster::{ClusterError, Embedded, StateDir};
use crate::ingress::PeerPolicy;
use crate::lane::process::{IoMode, LISTEN_FD};
use crate::limits::{
    DATABASE_NAME, LANE_DRAIN_TIMEOUT_S, LANE_READY_TIMEOUT_S, LANE_RESTART_BACKOFF_MAX_MS,
    LANE_RESTART_BACKOFF_MIN_MS, MAINTENANCE_INTERVAL_S,
};
use crate::matrix::{Module, Role};
use crate::sys;

/// Supervisor loop period.
const SUPERVISE_INTERVAL_MS: u64 = 500;
/// Consecutive failed restarts of the cluster before the supervisor gives up.
const CLUSTER_RESTARTS_MAX: u32 = 5;

pub struct RunOptions {
    pub state_dir: PathBuf,
    pub instance: String,
    pub peers: BTreeMap<Module, PeerPolicy>,
    pub io: IoMode,
    pub sandbox: crate::sandbox::SandboxMode,
    pub placement: crate::colocate::Placement,
    pub partition_days_ahead: u32,
    /// Disk quota of each lane's spool.
    pub spool_quota_bytes: u64,
    /// Days of day partitions kept per module (older ones are detached and dropped).
    pub retention_days: BTreeMap<Module, u32>,
}

struct Lane {
    module: Module,
    listener: UnixListener,
    child: Option<Child>,
    restarts: u32,
    restart_at: Option<Instant>,
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
        let mut pairs = crate::config::parse_pairs(&text).ok()?;
        Some(RunningAppliance {
            pid: pairs.get("pid")?.parse().ok()?,
            uid: pairs.get("uid")?.parse().ok()?,
            instance: pairs.remove("instance")?,
        })
    }

    fn save(&self, dir: &StateDir) -> Result<(), AppError> {
        let text = format!("pid = {}\nuid = {}\ninstance = \"{}\"\n", self.pid, self.uid, self.instance);
        std::fs::write(RunningAppliance::path(dir), text)
            .map_err(|source| AppError::Io { step: "write appliance.pid", source })
    }

    fn remove(dir: &StateDir) {
        let _ = std::fs::remove_file(RunningAppliance::path(dir));
    }
}

/// Bind a module's abstract socket, or explain who holds it.
pub fn bind_lane_socket(instance: &str, module: Module) -> Result<UnixListener, AppError> {
    let name = module.socket_name(instance);
    let address = SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|source| AppError::Io { step: "socket address", source })?;
    UnixListener::bind_addr(&address).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            AppError::Refused(format!(
                "socket @{name} is already bound (another appliance with instance {instance:?}, or a squatter): refusing to start"
            ))
        } else {
            AppError::Io { step: "bind lane socket", source }
        }
    })
}

fn spawn_lane(lane: &Lane, options: &RunOptions) -> Result<Child, AppError> {
    let policy = &options.peers[&lane.module];
    let mut command = Command::new("/proc/self/exe");
    command
        .arg("lane")
        .args(["--module", lane.module.name(), "--io", options.io.name(), "--sandbox", options.sandbox.name()])
        .args(["--cpus", &crate::colocate::render_cpu_list(&options.placement.lane_cpus)])
        .args(["--spool-quota", &options.spool_quota_bytes.to_string()])
        .arg("--state-dir")
        .arg(&options.state_dir)
        .env_clear()
        .stdin(Stdio::null());
    for uid in &policy.uids {
        command.args(["--allow-uid", &uid.to_string()]);
    }
    for gid in &policy.gids {
        command.args(["--allow-gid", &gid.to_string()]);
    }
    if let Ok(filter) = std::env::var("APPLIANCED_LOG") {
        command.env("APPLIANCED_LOG", filter);
    }
    // Failpoints (test builds only) are passed to a lane's first life, not
    // to its restarts: a failpoint stops a lane once.
    if cfg!(feature = "failpoints") && lane.restarts == 0 {
        for key in [crate::failpoint::ENV, crate::failpoint::ENV_LANE] {
            if let Ok(value) = std::env::var(key) {
                command.env(key, value);
            }
        }
    }
    // The simulated clock (test builds only) in every life of a lane.
    if cfg!(feature = "failpoints") {
        if let Ok(value) = std::env::var(crate::clock::TEST_CLOCK_ENV) {
            command.env(crate::clock::TEST_CLOCK_ENV, value);
        }
    }
    sys::pass_fd_to_child(&mut command, lane.listener.as_raw_fd(), LISTEN_FD);
    command.spawn().map_err(|source| AppError::Io { step: "spawn lane", source })
}

fn pin_postgres(embedded: &Embedded, cpus: &[usize]) {
    let Some(pid) = embedded.postmaster_pid() else { return };
    match crate::colocate::apply_to_postgres(pid, cpus) {
        Ok(count) => {
            tracing::info!(cpus = %crate::colocate::render_cpu_list(cpus), processes = count, "PostgreSQL pinned")
        }
        Err(e) => tracing::warn!(error = %e, "cannot pin PostgreSQL"),
    }
}

/// Create partitions ahead as the maintenance role, from the day before
/// `today_days` (the appliance clock's UTC date, days since 1970-01-01)
/// through `days_ahead` days after it.
pub fn maintain_partitions(embedded: &Embedded, today_days: i64, days_ahead: u32) -> Result<String, AppError> {
    let mut conn = crate::pg::Connection::connect(&embedded.connect_params(Role::Maintenance.name(), DATABASE_NAME))
        .map_err(|source| AppError::Pg { step: "connect as ransomeye_maint", source })?;
    let yesterday = crate::clock::date_text(today_days - 1);
    conn.query_value(&format!("SELECT appliance.ensure_partitions('{yesterday}'::date, {})", days_ahead + 2))
        .map_err(|source| AppError::Pg { step: "create partitions ahead", source })
}

/// The attached (not detach-pending) day partitions of the event tables,
/// as a FROM list: `e` the registry row, `n` its schema, `p` the parent,
/// `c` one day partition, whose day is [`PARTITION_DAY`].
const DAY_PARTITIONS: &str = "appliance.event_tables e JOIN pg_namespace n ON n.nspname = e.schema_name \
     JOIN pg_class p ON p.relnamespace = n.oid AND p.relname = e.table_name \
     JOIN pg_inherits i ON i.inhparent = p.oid AND NOT i.inhdetachpending \
     JOIN pg_class c ON c.oid = i.inhrelid";
/// The day of partition `c` of [`DAY_PARTITIONS`], from its name (`<table>_pYYYYMMDD`).
const PARTITION_DAY: &str = "to_date(right(c.relname, 8), 'YYYYMMDD')";

/// What one retention run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RetentionReport {
    /// Detaches found pending (interrupted) and finished with FINALIZE.
    pub finalized: Vec<String>,
    /// Day partitions detached (CONCURRENTLY) and dropped.
    pub dropped: Vec<String>,
    /// `appliance.batch_ledger` rows older than their module's retention, deleted.
    pub ledger_rows_deleted: u64,
    /// BRIN page ranges of the closed days' leaves summarized now.
    pub ranges_summarized: u64,
    /// Leaf BRIN indexes that could not be summarized this run (a lock
    /// timeout behind autovacuum, which summarizes them itself); retried
    /// by the next run, and not a failure of this one.
    pub summarize_skipped: Vec<String>,
}

/// Retention: every day partition of a module's event tables older than
/// its retention (`day < today − days`) is detached with `DETACH PARTITION
/// ... CONCURRENTLY` (SHARE UPDATE EXCLUSIVE on the parent: ingest's COPY
/// keeps running) and then dropped; a detach left pending by an earlier
/// interrupted run is finished first with `FINALIZE`. Runs as the owner
/// role (`SET ROLE ransomeye_owner` from the admin session): DETACH needs
/// ownership, and `CONCURRENTLY` cannot run inside a function or
/// transaction, so it cannot be a SECURITY DEFINER function of the
/// maintenance role. Each statement runs under `lock_timeout` =
/// PARTITION_LOCK_TIMEOUT_MS; a timeout fails this run, the next retries.
pub fn apply_retention(
    embedded: &Embedded,
    retention_days: &BTreeMap<Module, u32>,
    today_days: i64,
) -> Result<RetentionReport, AppError> {
    let pg = |step: &'static str| move |source| AppError::Pg { step, source };
    let mut conn = embedded.connect_admin(DATABASE_NAME).map_err(pg("connect for retention"))?;
    conn.execute(&format!(
        "SET ROLE ransomeye_owner; SET lock_timeout = '{}ms'",
        crate::limits::PARTITION_LOCK_TIMEOUT_MS
    ))
    .map_err(pg("retention session"))?;
    let mut report = RetentionReport::default();
    let pending = conn
        .simple_query(
            "SELECT format('%I.%I', pn.nspname, p.relname), format('%I.%I', cn.nspname, c.relname) \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace \
             JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace \
             WHERE i.inhdetachpending ORDER BY 2",
        )
        .map_err(pg("list pending detaches"))?;
    for row in pending {
        let (Some(Some(parent)), Some(Some(child))) = (row.first(), row.get(1)) else { continue };
        conn.execute(&format!("ALTER TABLE {parent} DETACH PARTITION {child} FINALIZE"))
            .map_err(pg("finish an interrupted detach"))?;
        conn.execute(&format!("DROP TABLE {child}")).map_err(pg("drop a detached partition"))?;
        tracing::warn!(parent, partition = child, "interrupted detach finished and partition dropped");
        report.finalized.push(child.clone());
    }
    for module in Module::ALL {
        let Some(days) = retention_days.get(&module) else { continue };
        let cutoff = crate::clock::date_text(today_days - i64::from(*days));
        let old = conn
            .simple_query(&format!(
                "SELECT format('%I.%I', e.schema_name, e.table_name), format('%I.%I', e.schema_name, c.relname) \
                 FROM {DAY_PARTITIONS} WHERE e.schema_name = '{}' AND {PARTITION_DAY} < '{cutoff}'::date ORDER BY 2",
                module.schema()
            ))
            .map_err(pg("list partitions past retention"))?;
        for row in old {
            let (Some(Some(parent)), Some(Some(child))) = (row.first(), row.get(1)) else { continue };
            conn.execute(&format!("ALTER TABLE {parent} DETACH PARTITION {child} CONCURRENTLY"))
                .map_err(pg("detach a partition past retention"))?;
            conn.execute(&format!("DROP TABLE {child}")).map_err(pg("drop a partition past retention"))?;
            report.dropped.push(child.clone());
        }
        // The ledger follows the same retention, so it stays bounded too.
        let deleted = conn
            .query_value(&format!(
                "WITH d AS (DELETE FROM appliance.batch_ledger WHERE module = '{}' \
                 AND committed_at < ('{cutoff}'::date)::timestamp AT TIME ZONE 'UTC' RETURNING 1) SELECT count(*) FROM d",
                module.name()
            ))
            .map_err(pg("prune the batch ledger"))?;
        report.ledger_rows_deleted += deleted.parse::<u64>().unwrap_or(0);
    }
    summarize_closed_days(&mut conn, today_days, &mut report)?;
    Ok(report)
}

/// The leaves' BRIN indexes have `autosummarize = off` (migration 0006):
/// autovacuum's insert-triggered vacuum (every 100,000 rows of a leaf)
/// summarizes today's ranges, and this step summarizes what a leaf of the
/// two days before today gathered after its last vacuum, so a closed day is
/// fully summarized within one maintenance interval of its end.
/// `brin_summarize_new_values` needs the table's owner (this session's
/// role) and reads only the ranges not yet summarized. Each call
/// (`appliance.summarize_brin_nowait`, migration 0007) waits at most
/// `SUMMARIZE_LOCK_TIMEOUT_MS` for its leaf (held only by a vacuum or
/// analyze of it) and then returns NULL without raising, so the step never
/// cancels an autovacuum, never aborts a transaction, and a pass stays short.
fn summarize_closed_days(
    conn: &mut crate::pg::Connection,
    today_days: i64,
    report: &mut RetentionReport,
) -> Result<(), AppError> {
    let (first, last) = (crate::clock::date_text(today_days - 2), crate::clock::date_text(today_days - 1));
    let indexes = conn
        .simple_query(&format!(
            "SELECT format('%I.%I', n.nspname, ic.relname) FROM {DAY_PARTITIONS} \
             JOIN pg_inherits l ON l.inhparent = c.oid JOIN pg_index x ON x.indrelid = l.inhrelid \
             JOIN pg_class ic ON ic.oid = x.indexrelid JOIN pg_am am ON am.oid = ic.relam AND am.amname = 'brin' \
             WHERE {PARTITION_DAY} BETWEEN '{first}'::date AND '{last}'::date ORDER BY 1"
        ))
        .map_err(|source| AppError::Pg { step: "list the closed days' BRIN indexes", source })?;
    for row in indexes {
        let Some(Some(index)) = row.first() else { continue };
        let sql = format!(
            "SELECT appliance.summarize_brin_nowait('{index}'::regclass, {})",
            crate::limits::SUMMARIZE_LOCK_TIMEOUT_MS
        );
        // The ranges summarized, or NULL when the leaf stayed locked.
        match conn.query_nullable_value(&sql) {
            Ok(Some(ranges)) => report.ranges_summarized += ranges.parse::<u64>().unwrap_or(0),
            Ok(None) => {
                tracing::info!(index, "BRIN index's leaf is being vacuumed or analyzed: summarized by the next run");
                report.summarize_skipped.push(index.clone());
            }
            Err(e) => {
                tracing::warn!(index, error = %e, "cannot summarize a BRIN index now; the next run retries");
                report.summarize_skipped.push(index.clone());
            }
        }
    }
    Ok(())
}

/// What the supervisor's partition maintenance last did, kept in
/// `<state>/run/maintenance.status` (replaced by rename after every run, so a
/// reader never sees half a file). selftest checks that a running appliance
/// maintains its partitions; the lifecycle test checks the partition window
/// against the day the last run used.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MaintenanceStatus {
    /// The supervisor that wrote it (a file left by an earlier run is ignored).
    pub pid: i32,
    /// Runs finished since the supervisor started.
    pub runs: u64,
    /// The appliance-clock day (days since 1970-01-01) the last run created
    /// partitions from (it creates yesterday through day + days ahead).
    pub partitions_day: i64,
    /// The appliance-clock day the last run's retention used: day partitions
    /// older than day − retention were dropped.
    pub retention_day: i64,
    /// Real time (Unix µs) the last run finished.
    pub finished_us: i64,
    /// Real time (Unix µs) the last run that succeeded in both steps finished (0: none yet).
    pub last_ok_us: i64,
    /// Closed-day BRIN indexes the last run could not summarize (their leaf
    /// was being vacuumed or analyzed); the next run retries them.
    pub summarize_skipped: u64,
    /// The last run's error, empty when it succeeded.
    pub last_error: String,
}

impl MaintenanceStatus {
    pub fn path(dir: &StateDir) -> PathBuf {
        dir.run_dir().join("maintenance.status")
    }

    pub fn load(dir: &StateDir) -> Option<MaintenanceStatus> {
        let text = std::fs::read_to_string(MaintenanceStatus::path(dir)).ok()?;
        let mut pairs = crate::config::parse_pairs(&text).ok()?;
        let number = |key: &str| pairs.get(key)?.parse::<i64>().ok();
        Some(MaintenanceStatus {
            pid: i32::try_from(number("pid")?).ok()?,
            runs: u64::try_from(number("runs")?).ok()?,
            partitions_day: number("partitions_day")?,
            retention_day: number("retention_day")?,
            finished_us: number("finished_us")?,
            last_ok_us: number("last_ok_us")?,
            summarize_skipped: u64::try_from(number("summarize_skipped")?).ok()?,
            last_error: pairs.remove("last_error")?,
        })
    }

    /// The file's text.
    pub fn render(&self) -> String {
        // The pair format has no escapes: quotes, comment marks and line breaks
        // in an error message become spaces.
        let error: String =
            self.last_error.chars().map(|c| if matches!(c, '"' | '#' | '\n' | '\r') { ' ' } else { c }).collect();
        format!(
            "pid = {}\nruns = {}\npartitions_day = {}\nretention_day = {}\nfinished_us = {}\nlast_ok_us = {}\n\
             summarize_skipped = {}\nlast_error = \"{error}\"\n",
            self.pid,
            self.runs,
            self.partitions_day,
            self.retention_day,
            self.finished_us,
            self.last_ok_us,
            self.summarize_skipped
        )
    }

    fn save(&self, dir: &StateDir) -> std::io::Result<()> {
        let text = self.render();
        let path = MaintenanceStatus::path(dir);
        let partial = path.with_extension("status.partial");
        std::fs::write(&partial, text)?;
        std::fs::rename(&partial, &path)
    }
}

/// One maintenance run: partitions ahead, then retention; records the
/// outcome in `status` and its file.
fn maintain(embedded: &Embedded, options: &RunOptions, status: &mut MaintenanceStatus) {
    let mut errors = Vec::new();
    status.partitions_day = crate::clock::today_days();
    match maintain_partitions(embedded, status.partitions_day, options.partition_days_ahead) {
        Ok(created) if created != "0" => tracing::info!(created, "partitions ahead created"),
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "partition maintenance failed; will retry");
            errors.push(e.to_string());
        }
    }
    status.retention_day = crate::clock::today_days();
    let retention = apply_retention(embedded, &options.retention_days, status.retention_day);
    status.summarize_skipped = retention.as_ref().map_or(0, |r| r.summarize_skipped.len() as u64);
    match retention {
        Ok(report) if report != RetentionReport::default() => {
            tracing::info!(
                dropped = report.dropped.len(),
                finalized = report.finalized.len(),
                ledger_rows_deleted = report.ledger_rows_deleted,
                ranges_summarized = report.ranges_summarized,
                summarize_skipped = report.summarize_skipped.len(),
                "retention applied"
            )
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "retention failed; will retry");
            errors.push(e.to_string());
        }
    }
    status.runs += 1;
    status.finished_us = crate::clock::real_us();
    if errors.is_empty() {
        status.last_ok_us = status.finished_us;
    }
    status.last_error = errors.join("; ");
    if let Err(e) = status.save(&embedded.dir) {
        tracing::warn!(error = %e, "cannot write the maintenance status file");
    }
}

pub fn run(options: &RunOptions) -> Result<(), AppError> {
    sys::block_supervisor_signals().map_err(|source| AppError::Io { step: "block signals", source })?;
    let embedded = Embedded::load(&options.state_dir)?;
    embedded.start()?;
    pin_postgres(&embedded, &options.placement.pg_cpus);
    let created = maintain_partitions(&embedded, crate::clock::today_days(), options.partition_days_ahead)?;
    tracing::info!(created, "partitions ahead ensured");
    let mut lanes = Vec::new();
    for module in Module::ALL {
        let listener = bind_lane_socket(&options.instance, module)?;
        lanes.push(Lane { module, listener, child: None, restarts: 0, restart_at: None });
    }
    for lane in &mut lanes {
        lane.child = Some(spawn_lane(lane, options)?);
    }
    for lane in &mut lanes {
        wait_until_serving(lane, &embedded)?;
    }
    let me = RunningAppliance {
        pid: std::process::id() as i32,
        uid: sys::effective_uid(),
        instance: options.instance.clone(),
    };
    me.save(&embedded.dir)?;
    println!("applianced: ready: {} lanes listening on @ransomeye/{}/<module>", lanes.len(), options.instance);
    notify_systemd("READY=1\nSTATUS=every lane is serving");
    let mut maintenance = MaintenanceStatus { pid: me.pid, ..MaintenanceStatus::default() };
    maintain(&embedded, options, &mut maintenance);
    let mut last_maintenance_us = crate::clock::wall_us();
    let mut cluster_restarts = 0u32;
    loop {
        let signal = sys::wait_signal(Duration::from_millis(SUPERVISE_INTERVAL_MS))
            .map_err(|source| AppError::Io { step: "wait for signals", source })?;
        if matches!(signal, Some(sys::Signal::Terminate | sys::Signal::Interrupt)) {
            return shutdown(&mut lanes, &embedded);
        }
        for lane in &mut lanes {
            reap_and_restart(lane, options);
        }
        if !embedded.is_running() {
            cluster_restarts += 1;
            tracing::warn!(cluster_restarts, "cluster is not running; restarting it");
            if cluster_restarts > CLUSTER_RESTARTS_MAX {
                return Err(AppError::Cluster(ClusterError::Command {
                    what: "supervise cluster".into(),
                    detail: "gave up after repeated restarts".into(),
                }));
            }
            match embedded.start() {
                Ok(()) => pin_postgres(&embedded, &options.placement.pg_cpus),
                Err(e) => tracing::error!(error = %e, "cluster restart failed"),
            }
        } else {
            cluster_restarts = 0;
        }
        // Due by the appliance clock (simulated in the lifecycle test).
        if crate::clock::wall_us() - last_maintenance_us >= MAINTENANCE_INTERVAL_S as i64 * 1_000_000 {
            last_maintenance_us = crate::clock::wall_us();
            maintain(&embedded, options, &mut maintenance);
        }
    }
}

/// Wait until a lane has entered its sandbox and written its status file
/// (it does so just before serving); fail if it exits first.
fn wait_until_serving(lane: &mut Lane, embedded: &Embedded) -> Result<(), AppError> {
    let deadline = Instant::now() + Duration::from_secs(LANE_READY_TIMEOUT_S);
    let Some(child) = lane.child.as_mut() else { return Ok(()) };
    let expected = child.id().to_string();
    loop {
        let status = crate::lane::process::read_status(&embedded.dir, lane.module);
        if status.get("pid") == Some(&expected) && status.contains_key("sandbox_fully_enforced") {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(AppError::Refused(format!("lane {} exited during start-up: {status}", lane.module.name())));
        }
        if Instant::now() > deadline {
            return Err(AppError::Refused(format!(
                "lane {} did not start within {LANE_READY_TIMEOUT_S} s",
                lane.module.name()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn reap_and_restart(lane: &mut Lane, options: &RunOptions) {
    if let Some(child) = lane.child.as_mut() {
        match child.try_wait() {
            Ok(None) => return,
            Ok(Some(status)) => {
                let backoff = (LANE_RESTART_BACKOFF_MIN_MS << lane.restarts.min(7)).min(LANE_RESTART_BACKOFF_MAX_MS);
                tracing::error!(lane = lane.module.name(), %status, restart_in_ms = backoff, "lane exited; restarting");
                lane.child = None;
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
        match spawn_lane(lane, options) {
            Ok(child) => {
                lane.child = Some(child);
                lane.restart_at = None;
            }
            Err(e) => tracing::error!(lane = lane.module.name(), error = %e, "lane restart failed"),
        }
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
        tracing::warn!(error = %e, "cannot notify systemd");
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
        let _ = sys::send_signal(child.id() as i32, libc::SIGTERM);
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
                    let _ = child.kill();
                    let _ = child.wait();
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

/// The default peer policy: the uid that started the appliance, for every module.
pub fn default_peers() -> BTreeMap<Module, PeerPolicy> {
    Module::ALL.into_iter().map(|m| (m, PeerPolicy { uids: vec![sys::real_uid()], gids: Vec::new() })).collect()
}

pub fn state_dir_arg(path: &Path) -> PathBuf {
    path.to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The summarization's lock wait must end before PostgreSQL would cancel
    /// the autovacuum it waits for (limits.rs, SUMMARIZE_LOCK_TIMEOUT_MS).
    #[test]
    fn summarization_lock_wait_stays_below_deadlock_timeout() {
        let root = std::env::temp_dir().join(format!("ad-deadlock-timeout-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let settings = crate::cluster::server_settings(&StateDir::new(&root).unwrap(), 5432);
        std::fs::remove_dir_all(&root).unwrap();
        let value = &settings.iter().find(|s| s.name == "deadlock_timeout").unwrap().value;
        let deadlock_timeout_ms: u32 = value.strip_suffix('s').unwrap().parse::<u32>().unwrap() * 1000;
        assert!(crate::limits::SUMMARIZE_LOCK_TIMEOUT_MS < deadlock_timeout_ms, "{value}");
    }

    #[test]
    fn maintenance_status_survives_its_file_format() {
        let root = std::env::temp_dir().join(format!("ad-maint-status-{}", std::process::id()));
        std::fs::create_dir_all(root.join("run")).unwrap();
        let dir = StateDir::new(&root).unwrap();
        let status = MaintenanceStatus {
            pid: 4242,
            runs: 7,
            partitions_day: 20_800,
            retention_day: 20_801,
            finished_us: 1_796_000_000_000_000,
            last_ok_us: 0,
            summarize_skipped: 3,
            last_error: "create partitions ahead: \"x\" # y\nz".into(),
        };
        status.save(&dir).unwrap();
        let loaded = MaintenanceStatus::load(&dir).unwrap();
        assert_eq!(loaded.last_error, "create partitions ahead:  x    y z");
        assert_eq!(loaded, MaintenanceStatus { last_error: loaded.last_error.clone(), ..status });
        assert!(!root.join("run/maintenance.status.partial").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
