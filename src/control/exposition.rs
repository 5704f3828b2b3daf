//! The appliance's whole metrics exposition (OpenMetrics text format),
//! from what a running appliance leaves in its state directory: each
//! lane's metrics report (`lane::metrics`) and status file (its sandbox),
//! the maintenance status, and, from /proc, the CPU time and resident
//! memory of the supervisor, each lane and PostgreSQL. The supervisor
//! serves it on its metrics socket and writes it to the textfile path;
//! `applianced metrics --state-dir` prints it.

use std::fmt::Write as _;

use crate::control::cluster::StateDir;
use crate::control::launch::{read_all_metrics, read_status};
use crate::control::maintenance::MaintenanceStatus;
use crate::model::matrix::Module;

/// The largest exposition served: four lanes' families, their SQLSTATEs
/// and the processes fit in well under this; a larger one is cut (and
/// then lacks `# EOF`, which a parser reports).
pub const EXPOSITION_BYTES_MAX: usize = 128 * 1024;

/// The sandbox layers a lane's status file records, as exposed.
const SANDBOX_LAYERS: [(&str, &str); 6] = [
    ("seccomp", "seccomp"),
    ("landlock_full", "landlock"),
    ("io_uring_restricted", "io_uring"),
    ("no_new_privs", "no_new_privs"),
    ("connect_denied", "connect_denied"),
    ("sandbox_fully_enforced", "all"),
];

/// CPU seconds (user + system) and resident bytes of one process, from
/// /proc/<pid>/stat and /proc/<pid>/status; None if it is gone or hidden.
pub fn process_usage(pid: i32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the name: state (0), ppid (1), ..., utime (11), stime (12), in clock ticks.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let cpu = ticks as f64 / crate::base::sys::clock_ticks_per_second()? as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0); // a zombie has no VmRSS line
    Some((cpu, rss_kib * 1024))
}

/// The processes of a running appliance: (name, pids summed under it).
fn processes(dir: &StateDir, supervisor_pid: Option<i32>) -> Vec<(String, Vec<i32>)> {
    let mut out = Vec::new();
    if let Some(pid) = supervisor_pid {
        out.push(("supervisor".to_string(), vec![pid]));
    }
    for module in Module::ALL {
        if let Some(pid) = read_status(dir, module).get("pid").and_then(|p| p.parse::<i32>().ok()) {
            out.push((format!("lane-{}", module.name()), vec![pid]));
        }
    }
    if let Some(pid) = dir.postmaster_pid() {
        let mut pids = vec![pid];
        pids.extend(crate::base::sys::children_of(pid).unwrap_or_default());
        out.push(("postgres".to_string(), pids));
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = write!(out, "# TYPE {name} {kind}\n# HELP {name} {help}\n");
}

/// The abstract socket name the supervisor serves the exposition on
/// (`@ransomeye/<instance>/metrics`, beside the lanes' sockets).
pub fn socket_name(instance: &str) -> String {
    format!("ransomeye/{instance}/metrics")
}

/// The exposition of the appliance of `dir` (whose supervisor is
/// `supervisor_pid`), with the caller's own families `extra`, ending in `# EOF`.
pub fn exposition(dir: &StateDir, supervisor_pid: Option<i32>, extra: &str) -> String {
    let mut out = crate::lane::metrics::render_families(&read_all_metrics(dir));

    family(
        &mut out,
        "applianced_lane_sandbox_enforced",
        "gauge",
        "Whether a sandbox layer is in force in the lane (1) or not (0); layer \"all\": every layer.",
    );
    for module in Module::ALL {
        let status = read_status(dir, module);
        for (key, layer) in SANDBOX_LAYERS {
            if let Some(value) = status.get(key) {
                let on = u8::from(value == "true");
                let _ = writeln!(
                    out,
                    "applianced_lane_sandbox_enforced{{lane=\"{}\",layer=\"{layer}\"}} {on}",
                    module.name()
                );
            }
        }
    }

    let usage: Vec<(String, f64, u64)> = processes(dir, supervisor_pid)
        .into_iter()
        .filter_map(|(name, pids)| {
            let used: Vec<(f64, u64)> = pids.iter().filter_map(|pid| process_usage(*pid)).collect();
            (!used.is_empty()).then(|| (name, used.iter().map(|u| u.0).sum(), used.iter().map(|u| u.1).sum()))
        })
        .collect();
    family(
        &mut out,
        "applianced_process_cpu_seconds",
        "counter",
        "CPU time (user and system) of an appliance process; postgres: the postmaster and its children now running.",
    );
    for (name, cpu, _) in &usage {
        let _ = writeln!(out, "applianced_process_cpu_seconds_total{{process=\"{name}\"}} {cpu:.2}");
    }
    family(
        &mut out,
        "applianced_process_resident_memory_bytes",
        "gauge",
        "Resident memory of an appliance process (postgres: summed over its processes, shared pages counted in each).",
    );
    for (name, _, rss) in &usage {
        let _ = writeln!(out, "applianced_process_resident_memory_bytes{{process=\"{name}\"}} {rss}");
    }

    if let Some(m) = MaintenanceStatus::load(dir) {
        family(
            &mut out,
            "applianced_partition_maintenance_last_success_timestamp_seconds",
            "gauge",
            "When partition maintenance (creation ahead, retention) last succeeded, Unix time (0: never).",
        );
        let _ = writeln!(
            out,
            "applianced_partition_maintenance_last_success_timestamp_seconds {:.3}",
            m.last_ok_us as f64 / 1e6
        );
        family(
            &mut out,
            "applianced_partition_maintenance_runs",
            "counter",
            "Partition maintenance runs since the supervisor started.",
        );
        let _ = writeln!(out, "applianced_partition_maintenance_runs_total {}", m.runs);
        family(
            &mut out,
            "applianced_partition_maintenance_failing",
            "gauge",
            "Whether the last partition maintenance run failed (1) or not (0).",
        );
        let _ = writeln!(out, "applianced_partition_maintenance_failing {}", u8::from(!m.last_error.is_empty()));
    }
    out.push_str(extra);
    out.push_str("# EOF\n");
    if out.len() > EXPOSITION_BYTES_MAX {
        out.truncate(EXPOSITION_BYTES_MAX);
    }
    out
}
