//! Partition maintenance: partitions created ahead and retention applied,
//! on a thread of the supervisor with a session of its own, so that lane
//! restarts and SIGTERM never wait for partition SQL.
//!
//! The thread logs in once as `ransomeye_maint` (never as a superuser) and
//! keeps that session: its connection slot is held, so nothing that can
//! reach the socket can crowd maintenance out. It runs a pass at start and
//! then every `MAINTENANCE_INTERVAL_S` by the appliance clock; each pass
//! creates partitions ahead (`appliance.ensure_partitions`, SECURITY
//! DEFINER) and applies retention after `SET ROLE` to the owner. A lost
//! session, or a cluster that is starting or recovering (SQLSTATE 57P03),
//! is retried with a bounded, logged backoff. Every pass is recorded in
//! `<state>/run/maintenance.status`, which selftest reads.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::base::limits::{
    DATABASE_NAME, MAINTENANCE_INTERVAL_S, MAINTENANCE_RETRY_MAX_MS, MAINTENANCE_RETRY_MIN_MS,
    MAINTENANCE_STATEMENT_TIMEOUT_S,
};
use crate::control::cluster::{Embedded, StateDir};
use crate::model::matrix::{Module, Role};
use crate::pg::{Connection, PgError};

/// A failed maintenance step.
#[derive(Debug)]
pub enum MaintenanceError {
    Pg { step: &'static str, source: PgError },
}

impl MaintenanceError {
    fn pg(step: &'static str) -> impl FnOnce(PgError) -> MaintenanceError {
        move |source| MaintenanceError::Pg { step, source }
    }
}

impl std::fmt::Display for MaintenanceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaintenanceError::Pg { step, source } => write!(f, "{step}: {source}"),
        }
    }
}

impl std::error::Error for MaintenanceError {}

/// A maintenance session: `ransomeye_maint`, with a statement timeout so a
/// pass is bounded even when a lock wait is not.
pub fn connect(embedded: &Embedded) -> Result<Connection, MaintenanceError> {
    let mut params = embedded.connect_params(Role::Maintenance.name(), DATABASE_NAME);
    params.application_name = "applianced-maintenance".into();
    let mut conn = Connection::connect(&params).map_err(MaintenanceError::pg("connect as ransomeye_maint"))?;
    conn.execute(&format!("SET statement_timeout = '{MAINTENANCE_STATEMENT_TIMEOUT_S}s'"))
        .map_err(MaintenanceError::pg("maintenance session"))?;
    Ok(conn)
}

/// Create partitions ahead on the maintenance session, from the day before
/// `today_days` (the appliance clock's UTC date, days since 1970-01-01)
/// through `days_ahead` days after it.
pub fn ensure_partitions(conn: &mut Connection, today_days: i64, days_ahead: u32) -> Result<String, MaintenanceError> {
    let yesterday = crate::base::clock::date_text(today_days - 1);
    conn.query_value(&format!("SELECT appliance.ensure_partitions('{yesterday}'::date, {})", days_ahead + 2))
        .map_err(MaintenanceError::pg("create partitions ahead"))
}

/// [`ensure_partitions`] on a new maintenance session.
pub fn maintain_partitions(embedded: &Embedded, today_days: i64, days_ahead: u32) -> Result<String, MaintenanceError> {
    ensure_partitions(&mut connect(embedded)?, today_days, days_ahead)
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
/// role, by `SET ROLE` from the maintenance session (a NOINHERIT member of
/// the owner, `Role::member_of`): DETACH needs ownership, and
/// `CONCURRENTLY` cannot run inside a function or transaction, so it cannot
/// be a SECURITY DEFINER function of the maintenance role. Each statement
/// runs under `lock_timeout` = PARTITION_LOCK_TIMEOUT_MS; a timeout fails
/// this run, the next retries. The session is back to the maintenance role
/// afterwards, whatever happened.
pub fn retention(
    conn: &mut Connection,
    retention_days: &BTreeMap<Module, u32>,
    today_days: i64,
) -> Result<RetentionReport, MaintenanceError> {
    conn.execute(&format!(
        "SET ROLE {}; SET lock_timeout = '{}ms'",
        Role::Owner.name(),
        crate::base::limits::PARTITION_LOCK_TIMEOUT_MS
    ))
    .map_err(MaintenanceError::pg("retention session"))?;
    let result = retention_as_owner(conn, retention_days, today_days);
    let reset = conn.execute("RESET ROLE; RESET lock_timeout").map_err(MaintenanceError::pg("end retention"));
    let report = result?;
    reset?;
    Ok(report)
}

/// [`retention`] on a new maintenance session.
pub fn apply_retention(
    embedded: &Embedded,
    retention_days: &BTreeMap<Module, u32>,
    today_days: i64,
) -> Result<RetentionReport, MaintenanceError> {
    retention(&mut connect(embedded)?, retention_days, today_days)
}

fn retention_as_owner(
    conn: &mut Connection,
    retention_days: &BTreeMap<Module, u32>,
    today_days: i64,
) -> Result<RetentionReport, MaintenanceError> {
    let pg = MaintenanceError::pg;
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
        let cutoff = crate::base::clock::date_text(today_days - i64::from(*days));
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
    summarize_closed_days(conn, today_days, &mut report)?;
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
    conn: &mut Connection,
    today_days: i64,
    report: &mut RetentionReport,
) -> Result<(), MaintenanceError> {
    let (first, last) = (crate::base::clock::date_text(today_days - 2), crate::base::clock::date_text(today_days - 1));
    let indexes = conn
        .simple_query(&format!(
            "SELECT format('%I.%I', n.nspname, ic.relname) FROM {DAY_PARTITIONS} \
             JOIN pg_inherits l ON l.inhparent = c.oid JOIN pg_index x ON x.indrelid = l.inhrelid \
             JOIN pg_class ic ON ic.oid = x.indexrelid JOIN pg_am am ON am.oid = ic.relam AND am.amname = 'brin' \
             WHERE {PARTITION_DAY} BETWEEN '{first}'::date AND '{last}'::date ORDER BY 1"
        ))
        .map_err(MaintenanceError::pg("list the closed days' BRIN indexes"))?;
    for row in indexes {
        let Some(Some(index)) = row.first() else { continue };
        let sql = format!(
            "SELECT appliance.summarize_brin_nowait('{index}'::regclass, {})",
            crate::base::limits::SUMMARIZE_LOCK_TIMEOUT_MS
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
        let mut pairs = crate::codec::pairs::parse_pairs(&text).ok()?;
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

/// What the maintenance thread is configured with.
#[derive(Clone, Debug)]
pub struct MaintenanceOptions {
    pub partition_days_ahead: u32,
    pub retention_days: BTreeMap<Module, u32>,
    /// The supervisor's pid, recorded in the status file.
    pub supervisor_pid: i32,
}

/// What a pass leaves for the loop to act on.
struct PassOutcome {
    /// The session broke: connect again before the next pass.
    session_lost: bool,
    /// The partitions ahead exist (this pass created or found them).
    partitions_ensured: bool,
}

/// One pass: partitions ahead, then retention, on `conn`; records the
/// outcome in `status`.
fn pass(conn: &mut Connection, options: &MaintenanceOptions, status: &mut MaintenanceStatus) -> PassOutcome {
    let mut errors = Vec::new();
    let mut broken = false;
    let mut partitions_ensured = false;
    status.partitions_day = crate::base::clock::today_days();
    match ensure_partitions(conn, status.partitions_day, options.partition_days_ahead) {
        Ok(created) => {
            partitions_ensured = true;
            if created != "0" {
                tracing::info!(created, "partitions ahead created");
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "partition maintenance failed; will retry");
            broken |= e.is_connection_lost();
            errors.push(e.to_string());
        }
    }
    status.retention_day = crate::base::clock::today_days();
    let report = if broken { None } else { Some(retention(conn, &options.retention_days, status.retention_day)) };
    status.summarize_skipped = match &report {
        Some(Ok(r)) => r.summarize_skipped.len() as u64,
        _ => 0,
    };
    match report {
        Some(Ok(report)) if report != RetentionReport::default() => tracing::info!(
            dropped = report.dropped.len(),
            finalized = report.finalized.len(),
            ledger_rows_deleted = report.ledger_rows_deleted,
            ranges_summarized = report.ranges_summarized,
            summarize_skipped = report.summarize_skipped.len(),
            "retention applied"
        ),
        Some(Ok(_)) | None => {}
        Some(Err(e)) => {
            tracing::error!(error = %e, "retention failed; will retry");
            broken |= e.is_connection_lost();
            errors.push(e.to_string());
        }
    }
    status.runs += 1;
    status.finished_us = crate::base::clock::real_us();
    if errors.is_empty() {
        status.last_ok_us = status.finished_us;
    }
    status.last_error = errors.join("; ");
    PassOutcome { session_lost: broken, partitions_ensured }
}

impl MaintenanceError {
    /// Whether the session is gone (socket error, server ended it), as
    /// opposed to a statement that failed on a live session.
    fn is_connection_lost(&self) -> bool {
        match self {
            // No SQLSTATE: the socket failed. Class 57 (operator
            // intervention: shutdown, crash recovery) and 08 (connection
            // exception) end the session too.
            MaintenanceError::Pg { source, .. } => {
                source.sqlstate().is_none_or(|state| state.starts_with("57") || state.starts_with("08"))
            }
        }
    }
}

/// The maintenance thread of a running supervisor.
pub struct MaintenanceThread {
    handle: JoinHandle<()>,
    stop: Arc<AtomicBool>,
    /// Set once a pass has created the partitions ahead.
    partitions_ensured: Arc<AtomicBool>,
}

impl MaintenanceThread {
    /// Start the thread: a pass at once, then one per interval.
    pub fn start(embedded: Embedded, options: MaintenanceOptions) -> std::io::Result<MaintenanceThread> {
        let stop = Arc::new(AtomicBool::new(false));
        let partitions_ensured = Arc::new(AtomicBool::new(false));
        let flags = (Arc::clone(&stop), Arc::clone(&partitions_ensured));
        let handle = std::thread::Builder::new()
            .name("maintenance".into())
            .spawn(move || maintenance_loop(&embedded, &options, &flags.0, &flags.1))?;
        Ok(MaintenanceThread { handle, stop, partitions_ensured })
    }

    /// Wait until a pass has created the partitions ahead, at most `limit`:
    /// the supervisor reports ready only then, so that the first events
    /// find their day partition. Returns whether they were created.
    pub fn wait_for_partitions(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !self.partitions_ensured.load(Ordering::SeqCst) && Instant::now() < deadline && self.is_alive() {
            std::thread::sleep(Duration::from_millis(MAINTENANCE_POLL_MS / 5));
        }
        self.partitions_ensured.load(Ordering::SeqCst)
    }

    /// Whether the thread still runs (it ends only when asked to, or by a panic).
    pub fn is_alive(&self) -> bool {
        !self.handle.is_finished()
    }

    /// Ask the thread to stop. It is not waited for: a statement in flight
    /// ends when the cluster stops, and the process exits anyway.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Sleep up to `duration` in short steps, returning early when asked to stop.
fn sleep_unless_stopped(duration: Duration, stop: &AtomicBool) {
    let deadline = Instant::now() + duration;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(MAINTENANCE_POLL_MS).min(deadline - Instant::now()));
    }
}

/// How often the thread looks at its stop flag and the clock.
const MAINTENANCE_POLL_MS: u64 = 100;

fn maintenance_loop(embedded: &Embedded, options: &MaintenanceOptions, stop: &AtomicBool, ensured: &AtomicBool) {
    let mut status = MaintenanceStatus { pid: options.supervisor_pid, ..MaintenanceStatus::default() };
    let mut session: Option<Connection> = None;
    let mut retry_ms = MAINTENANCE_RETRY_MIN_MS;
    let mut due_us = crate::base::clock::wall_us();
    while !stop.load(Ordering::SeqCst) {
        if crate::base::clock::wall_us() < due_us {
            sleep_unless_stopped(Duration::from_millis(MAINTENANCE_POLL_MS), stop);
            continue;
        }
        let conn = match session.as_mut() {
            Some(conn) => conn,
            None => match connect(embedded) {
                Ok(conn) => {
                    retry_ms = MAINTENANCE_RETRY_MIN_MS;
                    session.insert(conn)
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = retry_ms, "maintenance cannot connect; retrying");
                    status.last_error = e.to_string();
                    save_status(embedded, &status);
                    sleep_unless_stopped(Duration::from_millis(retry_ms), stop);
                    retry_ms = (retry_ms * 2).min(MAINTENANCE_RETRY_MAX_MS);
                    continue;
                }
            },
        };
        let mut attempt = status.clone();
        let outcome = pass(conn, options, &mut attempt);
        if outcome.session_lost && stop.load(Ordering::SeqCst) {
            // The pass was cut short by the stop (the cluster shut down
            // under it): not a maintenance failure, so the status file stays
            // as the last whole pass left it.
            break;
        }
        status = attempt;
        if outcome.session_lost {
            session = None;
        }
        // The status file first: whoever waits for the flag reads it next.
        save_status(embedded, &status);
        if outcome.partitions_ensured {
            ensured.store(true, Ordering::SeqCst);
        }
        // Due again by the appliance clock (simulated in the lifecycle test).
        due_us = crate::base::clock::wall_us() + MAINTENANCE_INTERVAL_S as i64 * 1_000_000;
    }
}

fn save_status(embedded: &Embedded, status: &MaintenanceStatus) {
    if let Err(e) = status.save(&embedded.dir) {
        tracing::warn!(error = %e, "cannot write the maintenance status file");
    }
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
        let settings = crate::control::cluster::server_settings(&StateDir::new(&root).unwrap(), 5432, None);
        std::fs::remove_dir_all(&root).unwrap();
        let value = &settings.iter().find(|s| s.name == "deadlock_timeout").unwrap().value;
        let deadlock_timeout_ms: u32 = value.strip_suffix('s').unwrap().parse::<u32>().unwrap() * 1000;
        assert!(crate::base::limits::SUMMARIZE_LOCK_TIMEOUT_MS < deadlock_timeout_ms, "{value}");
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
