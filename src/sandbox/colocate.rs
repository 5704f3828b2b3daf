//! Co-location on one host: CPU placement of the lanes and the embedded
//! PostgreSQL, I/O priority and the address-space limit of a lane.
//!
//! Defaults (documented in hardening/DATA-PLANE.md Step 4): the lanes run
//! on the highest-numbered quarter of the CPUs (at least one), PostgreSQL
//! on the highest-numbered half (at least two, or all on a 2-CPU host), so
//! the low-numbered CPUs stay for the Core Engine, the DPI probe and the
//! agents: 2 CPUs: lanes {1}, PostgreSQL {0,1}; 4 CPUs: lanes {3},
//! PostgreSQL {2,3}; 8 CPUs: lanes {6,7}, PostgreSQL {4..7}.

use super::error::SandboxError;
use crate::base::limits::{LANE_ADDRESS_SPACE_BYTES_MAX, LANE_IO_PRIORITY_LEVEL};
use crate::base::sys;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub lane_cpus: Vec<usize>,
    pub pg_cpus: Vec<usize>,
}

/// Commit streams per lane by default (`run --commit-streams`): one per
/// CPU of PostgreSQL, as each stream is one backend's COPY, bounded by
/// `COMMIT_STREAMS_MAX`.
pub fn default_commit_streams(placement: &Placement) -> usize {
    placement.pg_cpus.len().clamp(1, crate::base::limits::COMMIT_STREAMS_MAX)
}

/// The default placement for a host with `cpus` CPUs.
pub fn default_placement(cpus: usize) -> Placement {
    let cpus = cpus.max(1);
    let lanes = (cpus / 4).max(1);
    let pg = if cpus <= 2 { cpus } else { (cpus / 2).max(2) };
    Placement { lane_cpus: (cpus - lanes..cpus).collect(), pg_cpus: (cpus - pg..cpus).collect() }
}

/// Parse a CPU list like `0,2-3`.
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>, SandboxError> {
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || SandboxError::CpuList { text: text.to_string(), why: "an element is not N or N-M with N <= M" };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    if cpus.is_empty() {
        return Err(SandboxError::CpuList { text: text.to_string(), why: "empty" });
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Render a CPU list as the kernel does in `Cpus_allowed_list`.
pub fn render_cpu_list(cpus: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut index = 0;
    while index < cpus.len() {
        let start = cpus[index];
        let mut end = start;
        while index + 1 < cpus.len() && cpus[index + 1] == end + 1 {
            index += 1;
            end = cpus[index];
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        index += 1;
    }
    parts.join(",")
}

/// Apply a lane's placement to the calling process (before the sandbox:
/// these syscalls are not in its allow-list).
pub fn apply_to_lane(cpus: &[usize]) -> Result<(), SandboxError> {
    sys::set_affinity(0, cpus).map_err(SandboxError::os("sched_setaffinity"))?;
    sys::set_io_priority_best_effort(LANE_IO_PRIORITY_LEVEL).map_err(SandboxError::os("ioprio_set"))?;
    sys::limit_address_space(LANE_ADDRESS_SPACE_BYTES_MAX).map_err(SandboxError::os("setrlimit(RLIMIT_AS)"))
}

/// Pin the postmaster and every process it has forked so far; later
/// backends inherit the postmaster's affinity.
pub fn apply_to_postgres(postmaster_pid: i32, cpus: &[usize]) -> Result<usize, SandboxError> {
    // The postmaster first: a child forked after the list below is read
    // inherits the new affinity.
    sys::set_affinity(postmaster_pid, cpus).map_err(SandboxError::os("sched_setaffinity(postmaster)"))?;
    let mut pinned = 1;
    // /proc unreadable: the postmaster alone is pinned (as before this listing existed).
    let pids = sys::children_of(postmaster_pid).unwrap_or_default();
    for pid in pids {
        match sys::set_affinity(pid, cpus) {
            Ok(()) => pinned += 1,
            // A backend that exited since the listing (a closed session).
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(source) => return Err(SandboxError::Os { step: "sched_setaffinity(postgres backend)", source }),
        }
    }
    Ok(pinned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_for_documented_hosts() {
        assert_eq!(default_placement(2), Placement { lane_cpus: vec![1], pg_cpus: vec![0, 1] });
        assert_eq!(default_placement(4), Placement { lane_cpus: vec![3], pg_cpus: vec![2, 3] });
        assert_eq!(default_placement(8), Placement { lane_cpus: vec![6, 7], pg_cpus: vec![4, 5, 6, 7] });
        assert_eq!(default_placement(1), Placement { lane_cpus: vec![0], pg_cpus: vec![0] });
    }

    #[test]
    fn cpu_lists_round_trip() {
        assert_eq!(parse_cpu_list("0,2-3").unwrap(), vec![0, 2, 3]);
        assert_eq!(render_cpu_list(&[0, 2, 3, 5]), "0,2-3,5");
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("").is_err());
    }
}
