//! CPU and peak-RSS sampling from `/proc` (proc(5)).
//!
//! Consumes pids (this process, the appliance's supervisor, the
//! postmaster); produces CPU clock ticks of a process, of a process tree
//! and of the whole machine, minor faults of a process tree, VmHWM peaks, and the children of a process.
//! Plain file reads, no unsafe call; runs in the `applianced bench` main
//! thread.
//!
//! Invariant: a child that exits between listing and reading is skipped or
//! counted through its parent's cutime and cstime, never an error, so tree
//! readings stay right while backends and lanes come and go.

use std::fs;
use std::path::Path;

use crate::control::error::AppError;

use super::io_error;

/// Clock ticks per second of `/proc/<pid>/stat` and `/proc/stat`: USER_HZ,
/// which the kernel fixes at 100 for user space on every Linux ABI
/// (proc(5), "in clock ticks"; `sysconf(_SC_CLK_TCK)` returns it), hard-coded
/// so this module needs no unsafe call.
pub(super) const CLOCK_TICKS_PER_S: f64 = 100.0;

/// The fields of `/proc/<pid>/stat` after the command name, which may hold
/// spaces and parentheses; index 0 is field 3 (state) of proc(5).
fn stat_fields(pid: &str) -> Result<Vec<String>, AppError> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).map_err(io_error("read /proc/<pid>/stat"))?;
    let (_, rest) = text.rsplit_once(')').ok_or_else(|| AppError::Refused(format!("/proc/{pid}/stat: no ')'")))?;
    Ok(rest.split_whitespace().map(str::to_string).collect())
}

/// The sum of proc(5) stat fields (clock ticks, fault counts), counted
/// from field 3 (index 0).
fn stat_sum(fields: &[String], indexes: &[usize]) -> Option<u64> {
    indexes.iter().map(|i| fields.get(*i).and_then(|f| f.parse::<i64>().ok()).map(|t| t.max(0) as u64)).sum()
}

/// utime + stime of one process (fields 14 and 15), in clock ticks.
pub(super) fn process_ticks(pid: &str) -> Result<u64, AppError> {
    stat_sum(&stat_fields(pid)?, &[11, 12]).ok_or_else(|| AppError::Refused(format!("/proc/{pid}/stat: no utime")))
}

/// Every process whose parent is `parent`.
fn children_of(parent: u32) -> Result<Vec<u32>, AppError> {
    let children = crate::base::sys::children_of(parent as i32).map_err(io_error("list /proc"))?;
    Ok(children.into_iter().map(|pid| pid as u32).collect())
}

/// CPU ticks of `root` and its children: its own utime and stime, the
/// cutime and cstime of the children it has reaped (fields 16 and 17), and
/// the utime and stime of the children still alive. A child that exits between
/// two readings moves from the last term to the second, so differences
/// stay right for short-lived backends and restarted lanes.
pub(super) fn tree_ticks(root: u32) -> Result<u64, AppError> {
    tree_sum(root, &[11, 12, 13, 14], &[11, 12])
}

/// Minor page faults of `root` and its children, counted as [`tree_ticks`]
/// counts CPU: its own minflt and its reaped children's cminflt (fields 10
/// and 11), and the minflt of the children still alive. Each is a page the
/// kernel had to map (and, for fresh memory, zero-fill).
pub(super) fn tree_minor_faults(root: u32) -> Result<u64, AppError> {
    tree_sum(root, &[7, 8], &[7])
}

/// Stat fields `own` of `root` plus fields `child` of each living child.
fn tree_sum(root: u32, own: &[usize], child: &[usize]) -> Result<u64, AppError> {
    let fields = stat_fields(&root.to_string())?;
    let mut sum = stat_sum(&fields, own).ok_or_else(|| AppError::Refused(format!("/proc/{root}/stat: short")))?;
    for pid in children_of(root)? {
        // A child that exited since the listing is already in the c- fields.
        sum += stat_fields(&pid.to_string()).ok().and_then(|f| stat_sum(&f, child)).unwrap_or(0);
    }
    Ok(sum)
}

/// The postmaster's pid, the first line of `postmaster.pid`.
pub(super) fn postmaster_pid(pgdata: &Path) -> Result<u32, AppError> {
    let text = fs::read_to_string(pgdata.join("postmaster.pid")).map_err(io_error("read postmaster.pid"))?;
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| AppError::Refused("postmaster.pid: no pid".into()))
}

/// The supervisor first, then its children (the lanes).
pub(super) fn appliance_processes(supervisor: u32) -> Result<Vec<u32>, AppError> {
    let mut processes = vec![supervisor];
    processes.extend(children_of(supervisor)?);
    Ok(processes)
}

/// VmHWM of a process in KiB.
pub(super) fn peak_rss_kib(pid: u32) -> Result<u64, AppError> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).map_err(io_error("read /proc/<pid>/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| AppError::Refused(format!("/proc/{pid}/status: no VmHWM")))
}

/// Reset VmHWM to the current RSS (proc(5), clear_refs value 5), so the
/// peak read after a variant is that variant's. False if not permitted.
pub(super) fn reset_peak_rss(pid: u32) -> bool {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Busy CPU ticks of the whole machine: the `cpu` line of `/proc/stat`
/// without idle and iowait (and without guest time, already in user).
pub(super) fn machine_busy_ticks() -> Result<u64, AppError> {
    let text = fs::read_to_string("/proc/stat").map_err(io_error("read /proc/stat"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| AppError::Refused("/proc/stat: no cpu line".into()))?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    Ok([0, 1, 2, 5, 6, 7].iter().filter_map(|i| ticks.get(*i)).sum())
}
