//! Lane checks of selftest: when the appliance of this state directory is
//! running, every lane socket must be bound by it (SO_PEERCRED of the
//! socket names the supervisor that called listen()) and reachable, and one
//! event per lane must make the round trip into PostgreSQL and come back
//! acknowledged. When the appliance is not running, the check says so and
//! passes: `init` followed by `selftest` checks the database alone.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;

use super::Check;
use super::catalog::text;
use crate::base::sys;
use crate::codec::frame;
use crate::control::cluster::Embedded;
use crate::control::launch::read_status;
use crate::control::maintenance::MaintenanceStatus;
use crate::control::supervisor::RunningAppliance;
use crate::model::matrix::Module;
use crate::model::schema::tables_of;
use crate::pg::Connection;
use crate::producer::client::lane_address;
use crate::producer::stream::{Stream, StreamConfig};
use crate::producer::synth;

/// The producer id selftest's round-trip events carry (the largest valid id,
/// so it never collides with a real producer). Each run uses a new epoch
/// (the Unix time in seconds), so every run starts at seq 1.
pub const SELFTEST_PRODUCER_ID: u64 = crate::base::limits::PRODUCER_ID_MAX;
// Only the appliance's own uid may claim it (ingress::PeerGrant::appliance).
const _: () = assert!(SELFTEST_PRODUCER_ID >= crate::base::limits::RESERVED_PRODUCER_ID_FIRST);
/// How long the round trip of one event may take.
const ROUND_TRIP_TIMEOUT_MS: u64 = 15_000;

/// The appliance recorded in the state directory, if it is alive.
fn running(embedded: &Embedded) -> Option<RunningAppliance> {
    RunningAppliance::load(&embedded.dir).filter(|a| sys::process_exists(a.pid))
}

pub fn lane_sockets(embedded: &Embedded) -> Check {
    const NAME: &str = "lane sockets";
    let Some(appliance) = running(embedded) else {
        return Check::from_failures(
            NAME,
            "appliance not running (no live run/appliance.pid): lane checks skipped".into(),
            Vec::new(),
        );
    };
    let mut failures = Vec::new();
    let mut shown = Vec::new();
    for module in Module::ALL {
        let name = format!("@{}", module.socket_name(&appliance.instance));
        let stream = lane_address(&appliance.instance, module).and_then(|a| UnixStream::connect_addr(&a));
        match stream.and_then(|s| sys::peer_credentials(s.as_fd())) {
            Ok(peer) if peer.pid == appliance.pid && peer.uid == appliance.uid => {
                let io = read_status(&embedded.dir, module).remove("io_path").unwrap_or_else(|| "unknown".into());
                shown.push(format!("{name} ({io})"));
            }
            Ok(peer) => failures.push(format!(
                "{name} is bound by pid {} uid {}, not by this appliance (pid {} uid {})",
                peer.pid, peer.uid, appliance.pid, appliance.uid
            )),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    Check::from_failures(
        NAME,
        format!("bound by the appliance (pid {}): {}", appliance.pid, shown.join(", ")),
        failures,
    )
}

/// The running appliance's partition maintenance: its last run that both
/// created partitions ahead and applied retention finished less than
/// MAINTENANCE_STALE_S ago (real time). Before the first run has finished
/// (it follows READY), the same bound counts from the supervisor's start.
pub fn maintenance(embedded: &Embedded) -> Check {
    const NAME: &str = "partition maintenance";
    let Some(appliance) = running(embedded) else {
        return Check::from_failures(NAME, "appliance not running: maintenance check skipped".into(), Vec::new());
    };
    let now_us = crate::base::clock::real_us();
    let stale_s = crate::base::limits::MAINTENANCE_STALE_S;
    let age_s = |us: i64| now_us.saturating_sub(us).max(0) / 1_000_000;
    let Some(status) = MaintenanceStatus::load(&embedded.dir).filter(|s| s.pid == appliance.pid) else {
        let started_us = std::fs::metadata(RunningAppliance::path(&embedded.dir))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_micros() as i64);
        let age = age_s(started_us);
        let detail = format!("no run finished yet (supervisor started {age} s ago)");
        let failures =
            if age > stale_s as i64 { vec![format!("{detail}; the bound is {stale_s} s")] } else { Vec::new() };
        return Check::from_failures(NAME, detail, failures);
    };
    let mut detail = format!(
        "runs {}; the last finished {} s ago: partitions ensured from {}, retention applied as of {}",
        status.runs,
        age_s(status.finished_us),
        crate::base::clock::date_text(status.partitions_day - 1),
        crate::base::clock::date_text(status.retention_day)
    );
    if !status.last_error.is_empty() {
        detail.push_str(&format!("; it failed ({}), retried next run", status.last_error));
    }
    let mut failures = Vec::new();
    if status.last_ok_us == 0 {
        failures.push(format!("no run has succeeded yet: {}", status.last_error));
    } else if age_s(status.last_ok_us) > stale_s as i64 {
        failures.push(format!(
            "the last successful run finished {} s ago; the bound is {stale_s} s ({detail})",
            age_s(status.last_ok_us)
        ));
    }
    Check::from_failures(NAME, detail, failures)
}

/// One event through the producer library's stream: sent unless the lane
/// already holds it for this epoch, then its ACK awaited.
fn round_trip(appliance: &RunningAppliance, module: Module, epoch: u64) -> Result<u8, String> {
    let config = StreamConfig {
        instance: appliance.instance.clone(),
        module,
        producer_id: SELFTEST_PRODUCER_ID,
        epoch,
        server_uid: appliance.uid,
    };
    let mut stream = Stream::connect(config).map_err(|e| e.to_string())?;
    let mut record = BytesMut::new();
    let table = synth::record(module, SELFTEST_PRODUCER_ID, 1, &mut BytesMut::new(), &mut record);
    if stream.next_seq() == 1 {
        stream.send_record(&record).map_err(|e| e.to_string())?;
        let started = Instant::now();
        while stream.acked_seq() < 1 {
            stream.pump(Duration::from_millis(100)).map_err(|e| e.to_string())?;
            // A lane that pushes back says why; waiting out the timeout
            // would only hide it.
            if let Some((code, reason)) = &stream.stats().status {
                if *code != frame::StatusCode::Resumed as u16 {
                    return Err(format!("pushed back: {reason}"));
                }
            }
            if started.elapsed() > Duration::from_millis(ROUND_TRIP_TIMEOUT_MS) {
                return Err("no ACK within the timeout".into());
            }
        }
    }
    Ok(table)
}

pub fn lane_round_trip(embedded: &Embedded, conn: &mut Connection) -> Check {
    const NAME: &str = "lane round trip";
    let Some(appliance) = running(embedded) else {
        return Check::from_failures(NAME, "appliance not running: skipped".into(), Vec::new());
    };
    let epoch = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_secs());
    let mut failures = Vec::new();
    for module in Module::ALL {
        let table = match round_trip(&appliance, module, epoch) {
            Ok(index) => tables_of(module).nth(index as usize).map(|t| t.qualified_name()).unwrap_or_default(),
            Err(e) => {
                failures.push(format!("{}: {e}", module.name()));
                continue;
            }
        };
        let sql = format!(
            "SELECT count(*) FROM {table} WHERE producer_id = {SELFTEST_PRODUCER_ID} AND producer_epoch = {epoch} AND producer_seq = 1"
        );
        // The ACK means durable in the lane's spool; the commit into
        // PostgreSQL follows within the round-trip timeout.
        let started = std::time::Instant::now();
        loop {
            match conn.simple_query(&sql) {
                Ok(rows) if rows.first().map(|r| text(r, 0)) == Some("1") => break,
                Ok(rows) if started.elapsed() > Duration::from_millis(ROUND_TRIP_TIMEOUT_MS) => {
                    failures.push(format!(
                        "{}: acknowledged but {table} holds {:?} rows after {ROUND_TRIP_TIMEOUT_MS} ms",
                        module.name(),
                        rows
                    ));
                    break;
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => {
                    failures.push(format!("{}: {e}", module.name()));
                    break;
                }
            }
        }
    }
    Check::from_failures(
        NAME,
        format!(
            "one event per lane acknowledged (spooled) and then found exactly once in PostgreSQL (producer {SELFTEST_PRODUCER_ID}, epoch {epoch})"
        ),
        failures,
    )
}

/// The kernel's sandbox features, and per running lane what is enforced.
pub fn lane_sandbox(embedded: &Embedded) -> Check {
    const NAME: &str = "lane sandbox";
    let landlock = match sys::landlock_abi() {
        Ok(abi) => format!("Landlock ABI {abi}"),
        Err(errno) => format!("Landlock unavailable (errno {errno})"),
    };
    let uring = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|v| format!("kernel.io_uring_disabled = {}", v.trim()))
        .unwrap_or_else(|_| "kernel.io_uring_disabled unreadable".into());
    let Some(appliance) = running(embedded) else {
        return Check::from_failures(
            NAME,
            format!("{landlock}; {uring}; appliance not running: lanes not checked"),
            Vec::new(),
        );
    };
    let mut failures = Vec::new();
    let mut shown = Vec::new();
    for module in Module::ALL {
        let status = read_status(&embedded.dir, module);
        let value = |key: &str| status.get(key).cloned();
        let pid = value("pid").unwrap_or_default();
        let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let seccomp = proc_status.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Seccomp:", "2"]);
        let nnp = proc_status.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["NoNewPrivs:", "1"]);
        let full = value("sandbox_fully_enforced").as_deref() == Some("true");
        let configured = value("cpus").unwrap_or_default();
        let actual =
            proc_status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).map(str::trim).unwrap_or("");
        if configured != actual {
            failures
                .push(format!("{} lane (pid {pid}) runs on CPUs {actual:?}, configured {configured:?}", module.name()));
        }
        let ring = value("io_uring_restricted").unwrap_or_else(|| "?".into());
        let landlock_lane = value("landlock").unwrap_or_else(|| "?".into());
        shown.push(format!(
            "{} pid {pid}: seccomp {seccomp}, no_new_privs {nnp}, landlock {landlock_lane}, ring restricted {ring}",
            module.name()
        ));
        if !(full && seccomp && nnp) {
            failures.push(format!(
                "{} lane (pid {pid}) is not fully sandboxed: {}",
                module.name(),
                status.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
            ));
        }
    }
    Check::from_failures(
        NAME,
        format!("{landlock}; {uring}; appliance pid {}: {}", appliance.pid, shown.join(" | ")),
        failures,
    )
}

/// One producer range a damaged spool record held, from its `.meta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LostRange {
    producer_id: u64,
    epoch: u64,
    first_seq: u64,
    last_seq: u64,
}

/// `P:E:F-L,...` as the lane writes it beside a quarantined record.
fn parse_ranges(text: &str) -> Option<Vec<LostRange>> {
    text.split(',')
        .filter(|r| !r.is_empty())
        .map(|r| {
            let mut parts = r.splitn(3, ':');
            let (producer, epoch, seqs) = (parts.next()?, parts.next()?, parts.next()?);
            let (first, last) = seqs.split_once('-')?;
            Some(LostRange {
                producer_id: producer.parse().ok()?,
                epoch: epoch.parse().ok()?,
                first_seq: first.parse().ok()?,
                last_seq: last.parse().ok()?,
            })
        })
        .collect()
}

/// What became of one range of a damaged record, from PostgreSQL: committed
/// before the damage (harmless), recorded as lost (reason-10 rows), or
/// neither yet (acknowledged and not committed: lost unless it turns up).
fn judge(conn: &mut Connection, module: Module, range: &LostRange) -> Result<Verdict, String> {
    let lost_code = crate::codec::frame::RejectCode::SpoolRecordCorrupted as u16;
    let sql = format!(
        "SELECT (SELECT count(*) FROM {quarantine} WHERE reason_code = {lost_code} AND producer_id = {p} \
         AND producer_epoch = {e} AND producer_seq BETWEEN {f} AND {l}), \
         (SELECT count(*) FROM appliance.producer_watermarks WHERE module = '{m}' AND producer_id = {p} \
         AND (producer_epoch > {e} OR (producer_epoch = {e} AND last_seq >= {l})))",
        quarantine = module.quarantine_table(),
        m = module.name(),
        p = range.producer_id,
        e = range.epoch,
        f = range.first_seq,
        l = range.last_seq,
    );
    let rows = conn.simple_query(&sql).map_err(|e| e.to_string())?;
    let count = |i: usize| rows.first().map(|r| text(r, i)).unwrap_or("0") != "0";
    Ok(match (count(0), count(1)) {
        (true, _) => Verdict::LossRecorded,
        (false, true) => Verdict::CommittedBefore,
        (false, false) => Verdict::NotCommitted,
    })
}

/// Free space of the state filesystem against the lanes' free-space
/// reserve (`disk::DiskReserve`, hardening/DATA-PLANE.md §4.8): below it
/// every lane pushes its producers back, so the check fails and says what
/// to do. The reserve is the one the supervisor gave the running lanes
/// (their status files); with no appliance running, the reserve for the
/// default spool quota.
pub fn disk_space(embedded: &Embedded) -> Check {
    const NAME: &str = "disk space";
    let given = running(embedded).and_then(|_| {
        Module::ALL
            .into_iter()
            .filter_map(|m| read_status(&embedded.dir, m).get("disk_reserve_bytes").and_then(|v| v.parse::<u64>().ok()))
            .max()
    });
    let (reserve, source) = match given {
        Some(bytes) => (bytes, "given to the running lanes".to_string()),
        None => {
            match crate::control::launch::disk_reserve(&embedded.dir, crate::base::limits::SPOOL_QUOTA_BYTES_DEFAULT) {
                Ok(reserve) => (reserve.bytes(), format!("for the default spool quota: {reserve}")),
                Err(e) => return Check::failed(NAME, format!("cannot read the state filesystem: {e}")),
            }
        }
    };
    let space = match embedded.dir.fs_space() {
        Ok(space) => space,
        Err(e) => return Check::failed(NAME, format!("cannot read the state filesystem: {e}")),
    };
    let detail = format!(
        "{} MiB free of {} MiB on the state filesystem; reserve {} MiB ({source}); lanes pushed back at the \
         reserve resume once {} MiB are free",
        space.available >> 20,
        space.total >> 20,
        reserve >> 20,
        (reserve + crate::base::limits::DISK_RESERVE_RESUME_BYTES) >> 20
    );
    let mut failures = Vec::new();
    if space.available < reserve {
        failures.push(format!(
            "{detail}: below the reserve, every lane pushes its producers back (STATUS DiskReserve) until space is \
             freed: grow or clean the filesystem, or lower --retention-days; nothing acknowledged is lost"
        ));
    }
    Check::from_failures(NAME, detail, failures)
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    LossRecorded,
    CommittedBefore,
    NotCommitted,
}

/// Every lane's spool: segment files and bytes, and every damaged record
/// quarantined in `quarantine/`. A damaged record whose events (named in
/// its `.meta`) had committed before the damage is harmless and reported
/// as such; one whose events were lost fails the check, naming the lane,
/// the producer and the seq range (recorded with reason code 10, or not
/// yet committed); one whose events are unknown fails naming the file.
/// hardening/DATA-PLANE.md §4.7.
pub fn spool_integrity(embedded: &Embedded, conn: &mut Connection) -> Check {
    const NAME: &str = "spool integrity";
    let mut failures = Vec::new();
    let mut parts = Vec::new();
    let mut harmless = Vec::new();
    for module in Module::ALL {
        let dir = crate::control::launch::spool_dir(&embedded.dir, module);
        let segments = match crate::storage::spool::segment_files(&dir) {
            Ok(segments) => segments,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                parts.push(format!("{}: no spool yet", module.name()));
                continue;
            }
            Err(e) => {
                failures.push(format!("{}: cannot read {}: {e}", module.name(), dir.display()));
                continue;
            }
        };
        let bytes: u64 = segments.iter().map(|(_, path)| std::fs::metadata(path).map_or(0, |m| m.len())).sum();
        parts.push(format!("{}: {} segment(s), {bytes} bytes", module.name(), segments.len()));
        let quarantine = dir.join("quarantine");
        let damaged: Vec<std::path::PathBuf> = match std::fs::read_dir(&quarantine) {
            Ok(entries) => {
                let mut files: Vec<_> =
                    entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "bad")).collect();
                files.sort();
                files
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                failures.push(format!("{}: cannot list {}: {e}", module.name(), quarantine.display()));
                Vec::new()
            }
        };
        for file in damaged {
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let meta = std::fs::read_to_string(file.with_extension("meta"))
                .ok()
                .and_then(|t| crate::codec::pairs::parse_pairs(&t).ok());
            let ranges = meta.as_ref().and_then(|m| parse_ranges(m.get("ranges")?)).filter(|r| !r.is_empty());
            let Some(ranges) = ranges else {
                failures.push(format!(
                    "{}: damaged spool record {} ({}): its events are unknown; acknowledged events may be lost \
                     (gaps found later are recorded in {} with reason code 10)",
                    module.name(),
                    file.display(),
                    meta.as_ref().and_then(|m| m.get("why").cloned()).unwrap_or_else(|| "no description".into()),
                    module.quarantine_table()
                ));
                continue;
            };
            for range in ranges {
                let what = format!(
                    "{}: producer {} epoch {} seqs {}..{}",
                    module.name(),
                    range.producer_id,
                    range.epoch,
                    range.first_seq,
                    range.last_seq
                );
                match judge(conn, module, &range) {
                    Ok(Verdict::CommittedBefore) => harmless.push(format!("{what} ({name})")),
                    Ok(Verdict::LossRecorded) => failures.push(format!(
                        "{what}: acknowledged and lost (spool record {name} damaged); recorded in {} with reason code 10",
                        module.quarantine_table()
                    )),
                    Ok(Verdict::NotCommitted) => failures.push(format!(
                        "{what}: acknowledged, not committed, and its spool record {name} is damaged"
                    )),
                    Err(e) => failures.push(format!("{what}: {e}")),
                }
            }
        }
    }
    let detail = if harmless.is_empty() {
        format!("{}; no damaged record", parts.join(", "))
    } else {
        format!(
            "{}; WARNING: damaged spool records whose events had committed before the damage (no loss): {}",
            parts.join(", "),
            harmless.join(", ")
        )
    };
    Check::from_failures(NAME, detail, failures)
}

/// Every running lane commits: its oldest acknowledged record not yet
/// committed is younger than `LANE_COMMIT_LAG_MAX_MS`, and its last
/// metrics report is recent (`LANE_REPORT_AGE_MAX_MS`). A lane stalled by a
/// refusal PostgreSQL repeats (DATA-PLANE §7 item 3) fails here, named with
/// its lag and its count of database resets.
pub fn commit_lag(embedded: &Embedded) -> Check {
    const NAME: &str = "commit lag";
    use crate::base::limits::LANE_REPORT_AGE_MAX_MS;
    let lag_max_ms = crate::base::limits::lane_commit_lag_max_ms();
    if running(embedded).is_none() {
        return Check::from_failures(NAME, "appliance not running: skipped".into(), Vec::new());
    }
    let mut detail = Vec::new();
    let mut failures = Vec::new();
    for module in Module::ALL {
        let Some(sample) = crate::control::launch::read_metrics(&embedded.dir, module) else {
            failures.push(format!("{}: no metrics report", module.name()));
            continue;
        };
        let value = |key: &str| sample.values.get(key).copied().unwrap_or(0);
        let (lag_ms, unsent, resets) = (value("commit_lag_ms"), value("unsent_records"), value("database_resets"));
        detail.push(format!("{} {:.1} s ({unsent} records)", module.name(), lag_ms as f64 / 1000.0));
        if lag_ms > lag_max_ms {
            failures.push(format!(
                "{}: the oldest acknowledged record has waited {:.1} s to commit (bound {:.1} s); {unsent} records unsent, \
                 {resets} database resets; last database error: {}",
                module.name(),
                lag_ms as f64 / 1000.0,
                lag_max_ms as f64 / 1000.0,
                sample.last_error.as_deref().unwrap_or("none reported")
            ));
        }
        if let Some(age) = sample.age_s.filter(|age| *age * 1000.0 > LANE_REPORT_AGE_MAX_MS as f64) {
            failures.push(format!("{}: last metrics report {age:.1} s ago (the lane is not serving)", module.name()));
        }
    }
    Check::from_failures(NAME, detail.join(", "), failures)
}
