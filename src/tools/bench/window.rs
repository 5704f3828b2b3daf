//! Measurement windows: the state every variant starts from and what it
//! cost the machine.
//!
//! Consumes the admin connection and the cluster's data directory; produces,
//! per variant, the WAL bytes written, the event tables' growth on disk, the machine's busy cores, and the CPU
//! seconds of this process and of the cluster's process tree. Runs in the
//! `applianced bench` main thread, around each variant's timed load.
//!
//! Invariant: every window opens after VACUUM (ANALYZE) and CHECKPOINT, so
//! no variant inherits the previous one's vacuum debt or full-page images.

use std::time::Instant;

use crate::control::error::AppError;
use crate::model::schema::{EVENT_TABLES, EventTable};
use crate::pg::Connection;

use super::procfs::{CLOCK_TICKS_PER_S, machine_busy_ticks, postmaster_pid, process_ticks, tree_ticks};
use super::{Plan, pg_error};

/// State at the start of a variant, after VACUUM and CHECKPOINT.
pub(super) struct Window {
    lsn: String,
    table_bytes: u64,
    machine_ticks: u64,
    own_ticks: u64,
    postmaster: u32,
    cluster_ticks: u64,
    opened: Instant,
}

/// What a window measured.
pub(super) struct WindowFigures {
    pub(super) wal_bytes: u64,
    /// Growth of the event tables on disk (every leaf: heap, indexes,
    /// TOAST, free-space and visibility maps).
    pub(super) table_bytes: u64,
    /// Busy CPU of the whole machine per second of the window (cores in use).
    pub(super) machine_cores: f64,
    /// CPU seconds of this process (load clients and reader in c and d).
    pub(super) own_cpu_s: f64,
    /// CPU seconds of the cluster: postmaster, backends, background workers.
    pub(super) cluster_cpu_s: f64,
}

/// VACUUM (ANALYZE) every event table, so autovacuum work left by the
/// previous variant does not land in this one and the planner has the
/// statistics autovacuum would give it (without them the Core reader's
/// keyset query seq-scans whole leaves instead of using the BRIN index,
/// measured with EXPLAIN ANALYZE on a 200,000-event run), and CHECKPOINT,
/// so every variant pays the same full-page images; then read the WAL
/// position and the CPU clocks.
pub(super) fn open_window(admin: &mut Connection, plan: &Plan) -> Result<Window, AppError> {
    let tables: Vec<String> = EVENT_TABLES.iter().map(EventTable::qualified_name).collect();
    admin.execute(&format!("VACUUM (ANALYZE) {}", tables.join(", "))).map_err(pg_error("vacuum before a variant"))?;
    admin.execute("CHECKPOINT").map_err(pg_error("checkpoint before a variant"))?;
    let lsn = admin.query_value("SELECT pg_current_wal_lsn()::text").map_err(pg_error("read the WAL position"))?;
    let table_bytes = event_table_bytes(admin)?;
    let postmaster = postmaster_pid(&plan.pgdata)?;
    Ok(Window {
        lsn,
        table_bytes,
        machine_ticks: machine_busy_ticks()?,
        own_ticks: process_ticks("self")?,
        postmaster,
        cluster_ticks: tree_ticks(postmaster)?,
        opened: Instant::now(),
    })
}

/// WAL bytes, machine CPU and this process's CPU since `window` opened. The
/// window is a little longer than the timed load (it also waits for the
/// reader's last query), so machine CPU is divided by the window's own length.
pub(super) fn close_window(admin: &mut Connection, window: &Window) -> Result<WindowFigures, AppError> {
    let wal = admin
        .query_value(&format!("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{}')::bigint", window.lsn))
        .map_err(pg_error("read the WAL position"))?;
    let wal_bytes = wal.parse().map_err(|_| AppError::Refused(format!("WAL difference {wal:?}")))?;
    let table_bytes = event_table_bytes(admin)?.saturating_sub(window.table_bytes);
    let machine_s = machine_busy_ticks()?.saturating_sub(window.machine_ticks) as f64 / CLOCK_TICKS_PER_S;
    let own_cpu_s = process_ticks("self")?.saturating_sub(window.own_ticks) as f64 / CLOCK_TICKS_PER_S;
    let cluster_cpu_s = tree_ticks(window.postmaster)?.saturating_sub(window.cluster_ticks) as f64 / CLOCK_TICKS_PER_S;
    let machine_cores = machine_s / window.opened.elapsed().as_secs_f64().max(1e-9);
    Ok(WindowFigures { wal_bytes, table_bytes, machine_cores, own_cpu_s, cluster_cpu_s })
}

/// Bytes on disk of every leaf of every event table, indexes included.
fn event_table_bytes(admin: &mut Connection) -> Result<u64, AppError> {
    let leaves: Vec<String> = EVENT_TABLES
        .iter()
        .map(|t| format!("SELECT relid FROM pg_partition_tree('{}') WHERE isleaf", t.qualified_name()))
        .collect();
    let sql = format!(
        "SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint FROM ({}) l",
        leaves.join(" UNION ALL ")
    );
    let value = admin.query_value(&sql).map_err(pg_error("read the event tables' size"))?;
    value.parse().map_err(|_| AppError::Refused(format!("event tables' size {value:?}")))
}
