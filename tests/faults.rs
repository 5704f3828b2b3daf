//! Fault injection against real processes and a real cluster, with one
//! oracle (STYLE S22): after the faults stop and every producer finished,
//! each (producer, epoch, seq) that was sent is present exactly once, in
//! the table its deterministic content says, nothing is present that was
//! never sent, and every acknowledged event is there; and once the faults
//! stop, every event sent is committed (the oracle waits for the
//! watermarks). An ACK means durable in the lane's spool (fdatasync'd), so
//! acknowledged events survive a kill of any process; unacknowledged ones
//! are resent by their producer and land exactly once.
//!
//! Needs the test build (`cargo test --features failpoints`) for the
//! failpoint scenario. `FAULT_ITERATIONS` (default 2) raises the number of
//! iterations of the random-time scenarios for long runs. Every appliance
//! here commits over three PostgreSQL connections per lane (`STREAMS`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use applianced::lane::batch::ProducerRange;
use std::path::PathBuf;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use applianced::model::matrix::Module;
use applianced::model::schema::tables_of;
use applianced::producer::load::{LoadOptions, LoadReport, run_load};
use applianced::producer::synth;
use bytes::BytesMut;
use common::{BIN, TestCluster, instance};

/// Every appliance of the fault suite commits each lane's spool over
/// three PostgreSQL connections: transactions in flight on several
/// connections at every crash point.
const STREAMS: &[&str] = &["--commit-streams", "3"];
/// The connections each lane holds with `STREAMS`.
const STREAM_COUNT: usize = 3;

fn iterations() -> u32 {
    std::env::var("FAULT_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(2)
}

/// The SQL expression of a stored row's payload: source_id and event_time
/// in their binary send format, then every module column as COPY BINARY
/// encodes it (i32 length, -1 for NULL, the send format): byte for byte
/// what the producer sent (`synth::synthesize`).
fn payload_sql(table: &applianced::model::schema::EventTable) -> String {
    use applianced::model::schema::ColumnType::*;
    let mut parts = vec!["uuid_send(source_id)".to_string(), "timestamptz_send(event_time)".to_string()];
    for column in table.columns {
        let send = match column.column_type {
            Int2 => "int2send",
            Int4 => "int4send",
            Int8 => "int8send",
            Float4 => "float4send",
            Text => "textsend",
            Bytea => "byteasend",
            Uuid => "uuid_send",
            Inet => "inet_send",
            Timestamptz => "timestamptz_send",
        };
        let name = column.name;
        parts.push(format!(
            "CASE WHEN {name} IS NULL THEN '\\xffffffff'::bytea ELSE int4send(octet_length({send}({name}))) || {send}({name}) END"
        ));
    }
    parts.join(" || ")
}

/// What `payload_sql` must give for (module, producer, seq).
fn expected_payload(module: Module, producer: u64, seq: u64) -> Vec<u8> {
    let mut fields = BytesMut::new();
    let event = synth::synthesize(module, producer, seq, &mut fields);
    let mut bytes = event.source_id.to_vec();
    bytes.extend_from_slice(&(event.event_time_us - applianced::codec::copy::PG_EPOCH_OFFSET_US).to_be_bytes());
    bytes.extend_from_slice(&fields);
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The oracle. `sent` is the highest seq sent per (module, producer, epoch);
/// `acked` the highest acknowledged.
fn check(cluster: &TestCluster, expected: &BTreeMap<(Module, u64, u64), (u64, u64)>) -> String {
    let mut admin = cluster.admin();
    let mut lines = Vec::new();
    let wait = Duration::from_secs(applianced::base::limits::COMMIT_WAIT_S);
    for ((module, producer, epoch), (sent, _)) in expected {
        let committed =
            applianced::tools::demo::wait_committed(&mut admin, *module, *producer, *epoch, *sent, wait).unwrap();
        assert!(committed, "{module:?} producer {producer} epoch {epoch}: not all {sent} sent events committed");
    }
    for ((module, producer, epoch), (sent, acked)) in expected {
        let mut found = 0u64;
        let mut checked = 0u64;
        for (index, table) in tables_of(*module).enumerate() {
            // Payload checksum: SHA-256 over the per-row SHA-256s in seq order,
            // computed by PostgreSQL from the stored rows and here from what was sent.
            let stored = admin
                .query_value(&format!(
                    "SELECT coalesce(encode(sha256(string_agg(sha256({}), ''::bytea ORDER BY producer_seq)), 'hex'), '') \
                     FROM {} WHERE producer_id = {producer} AND producer_epoch = {epoch}",
                    payload_sql(table),
                    table.qualified_name()
                ))
                .unwrap();
            let mut seqs_in_table = Vec::new();
            let rows = admin
                .simple_query(&format!(
                    "SELECT producer_seq, count(*) FROM {} WHERE producer_id = {producer} AND producer_epoch = {epoch} GROUP BY 1 ORDER BY 1",
                    table.qualified_name()
                ))
                .unwrap();
            for row in rows {
                let seq: u64 = row[0].as_deref().unwrap().parse().unwrap();
                let copies: u64 = row[1].as_deref().unwrap().parse().unwrap();
                assert_eq!(
                    copies, 1,
                    "{module:?} producer {producer} epoch {epoch} seq {seq} is present {copies} times"
                );
                assert!(seq >= 1 && seq <= *sent, "seq {seq} present but never sent (sent up to {sent})");
                let mut fields = BytesMut::new();
                let event = synth::synthesize(*module, *producer, seq, &mut fields);
                assert_eq!(
                    event.table as usize,
                    index,
                    "seq {seq} landed in {} but its content belongs elsewhere",
                    table.qualified_name()
                );
                seqs_in_table.push(seq);
                found += 1;
            }
            let expected = if seqs_in_table.is_empty() {
                String::new()
            } else {
                use sha2::{Digest, Sha256};
                let mut outer = Sha256::new();
                for seq in &seqs_in_table {
                    outer.update(Sha256::digest(expected_payload(*module, *producer, *seq)));
                }
                hex(&outer.finalize())
            };
            assert_eq!(
                stored,
                expected,
                "{module:?} producer {producer} epoch {epoch}: payloads in {} differ from what was sent",
                table.qualified_name()
            );
            checked += seqs_in_table.len() as u64;
        }
        assert!(
            found >= *acked,
            "{module:?} producer {producer} epoch {epoch}: {found} rows, {acked} acknowledged: lost"
        );
        lines.push(format!(
            "{module:?}/{producer}/{epoch}: sent {sent} acked {acked} found {found} duplicates 0 lost 0 payloads checked {checked}"
        ));
    }
    lines.join("\n")
}

/// Run loads for three lanes in threads while `fault` runs on this thread.
fn loads_with_fault(name: &str, producer: u64, events: u64, fault: impl FnOnce()) -> Vec<(Module, LoadReport)> {
    let handles: Vec<_> = [Module::Dpi, Module::LinuxAgent, Module::WindowsAgent]
        .into_iter()
        .map(|module| {
            let o = LoadOptions::new(name, module, producer, 1, events);
            (module, std::thread::spawn(move || run_load(&o)))
        })
        .collect();
    fault();
    handles.into_iter().map(|(m, h)| (m, h.join().unwrap())).collect()
}

fn record(
    expected: &mut BTreeMap<(Module, u64, u64), (u64, u64)>,
    producer: u64,
    events: u64,
    reports: &[(Module, LoadReport)],
) {
    for (module, report) in reports {
        assert_eq!(report.acked, events, "{module:?}: {report:?}");
        expected.insert((*module, producer, 1), (events, report.acked));
    }
}

#[test]
fn kill_a_lane_and_the_database_backends_during_load() {
    let cluster = TestCluster::start();
    let name = instance();
    let mut appliance = cluster.appliance(&name, STREAMS);
    let mut expected = BTreeMap::new();
    let events = 70_000; // three lanes: 210,000 events per iteration
    for iteration in 0..u64::from(iterations()) {
        // kill -9 of one lane process at a time during the load.
        let producer = 100 + iteration;
        let reports = loads_with_fault(&name, producer, events, || {
            for (delay, module) in [(150, Module::Dpi), (300, Module::LinuxAgent), (450, Module::WindowsAgent)] {
                std::thread::sleep(Duration::from_millis(delay));
                kill_lane_and_await_restart(&cluster, module, cluster.lane_pid(module));
            }
        });
        record(&mut expected, producer, events, &reports);
        // kill -9 of the PostgreSQL backends serving the lanes (the postmaster
        // then resets every connection at once, like a crash).
        let producer = 200 + iteration;
        let reports = loads_with_fault(&name, producer, events, || {
            std::thread::sleep(Duration::from_millis(250));
            let pids = cluster
                .admin()
                .simple_query(
                    "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'applianced-lane-%' LIMIT 1",
                )
                .unwrap();
            for row in pids {
                let pid: i32 = row[0].as_deref().unwrap().parse().unwrap();
                let _ = applianced::base::sys::send_signal(pid, libc::SIGKILL);
            }
        });
        record(&mut expected, producer, events, &reports);
    }
    println!("scenario lane-kill + backend-kill: iterations {}\n{}", iterations(), check(&cluster, &expected));
    appliance.stop().unwrap();
}

#[test]
fn postgres_immediate_stop_during_load() {
    let cluster = TestCluster::start();
    let name = instance();
    let mut appliance = cluster.appliance(&name, STREAMS);
    let mut expected = BTreeMap::new();
    let events = 50_000;
    for iteration in 0..u64::from(iterations()) {
        let producer = 300 + iteration;
        // The previous iteration's stop may still be recovering: wait until it serves.
        drop(cluster.admin());
        let reports = loads_with_fault(&name, producer, events, || {
            std::thread::sleep(Duration::from_millis(300));
            let pgdata = cluster.dir.join("pgdata");
            let postmaster: i32 = std::fs::read_to_string(pgdata.join("postmaster.pid"))
                .unwrap()
                .lines()
                .next()
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            // `-W`: signal and return. pg_ctl's own wait watches postmaster.pid
            // vanish, which never happens when the supervisor has already
            // started the next postmaster: wait for this one to exit instead.
            let mut stop = Command::new("/usr/lib/postgresql/15/bin/pg_ctl");
            stop.args(["stop", "-m", "immediate", "-W", "-D"]).arg(&pgdata);
            if common::is_root() {
                use std::os::unix::process::CommandExt;
                let server =
                    applianced::base::sys::account_by_name(applianced::control::cluster::SERVER_USER).unwrap().unwrap();
                stop.uid(server.uid).gid(server.gid);
            }
            let status = stop.stdout(Stdio::null()).status().unwrap();
            assert!(status.success(), "pg_ctl stop -m immediate failed");
            let started = std::time::Instant::now();
            while applianced::base::sys::process_exists(postmaster) {
                assert!(started.elapsed() < Duration::from_secs(120), "postmaster {postmaster} never exited");
                std::thread::sleep(Duration::from_millis(20));
            }
            // The supervisor notices and restarts the cluster (crash recovery).
        });
        record(&mut expected, producer, events, &reports);
    }
    println!("scenario postgres-immediate-stop: iterations {}\n{}", iterations(), check(&cluster, &expected));
    appliance.stop().unwrap();
}

fn spawn_load(name: &str, module: &str, events: u64, producer: u64, epoch: u64) -> Child {
    Command::new(BIN)
        .args(["load", "--module", module, "--events", &events.to_string(), "--producer-id", &producer.to_string()])
        .args(["--epoch", &epoch.to_string(), "--instance", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn appliance_and_producers_killed_then_restarted() {
    let cluster = TestCluster::start();
    let name = instance();
    let mut expected = BTreeMap::new();
    let events = 60_000;
    for iteration in 0..u64::from(iterations()) {
        let producer = 400 + iteration;
        // kill -9 of the whole appliance (supervisor and lanes) mid-load;
        // the producer, a separate process, is killed too before its acks.
        let appliance = cluster.appliance(&name, STREAMS);
        let mut producer_process = spawn_load(&name, "core", events, producer, 1);
        std::thread::sleep(Duration::from_millis(400));
        let _ = producer_process.kill();
        let _ = producer_process.wait();
        kill_appliance(&cluster, &appliance);
        drop(appliance);
        // Restart the appliance; rerunning the same producer command resends
        // everything not durable, and nothing lands twice.
        let mut appliance = restart(&cluster, &name, &[], &[]);
        let rerun = spawn_load(&name, "core", events, producer, 1).wait_with_output().unwrap();
        assert!(rerun.status.success(), "rerun after the crash did not complete");
        expected.insert((Module::Core, producer, 1), (events, events));
        // A producer restarting with a new epoch: starts again at seq 1.
        let report = run_load(&LoadOptions::new(&name, Module::Core, producer, 2, 5_000));
        assert_eq!(report.acked, 5_000);
        expected.insert((Module::Core, producer, 2), (5_000, 5_000));
        // The supervisor stops the cluster; start it again for the next round.
        stop_and_reinit(&cluster, &mut appliance);
    }
    println!(
        "scenario appliance-kill + producer-kill + new-epoch: iterations {}\n{}",
        iterations(),
        check(&cluster, &expected)
    );
}

/// A PostgreSQL backend killed during a load (the postmaster then
/// terminates and reinitializes every backend: crash recovery), the whole
/// appliance killed as well and started again at once, into the recovery:
/// `run` waits for the cluster (its sessions retry SQLSTATE 57P03 with
/// backoff) instead of exiting, the producers carry on through both
/// crashes, and every acknowledged event is stored exactly once.
#[test]
fn restart_during_postgresql_crash_recovery() {
    let cluster = TestCluster::start();
    let name = instance();
    let mut expected = BTreeMap::new();
    let events = 60_000;
    let appliance = cluster.appliance(&name, STREAMS);
    let producer = 500;
    let mut restarted = None;
    let reports = loads_with_fault(&name, producer, events, || {
        std::thread::sleep(Duration::from_millis(300));
        let backend = cluster
            .admin()
            .query_value("SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'applianced-lane-%' LIMIT 1")
            .unwrap();
        applianced::base::sys::send_signal(backend.parse().unwrap(), libc::SIGKILL).unwrap();
        kill_appliance(&cluster, &appliance);
        restarted = Some(restart(&cluster, &name, &[], &[]));
    });
    let mut appliance = restarted.expect("the appliance restarted");
    record(&mut expected, producer, events, &reports);
    println!("scenario restart during crash recovery: iterations 1\n{}", check(&cluster, &expected));
    appliance.stop().unwrap();
}

/// Start the appliance, retrying while a killed one's socket names or
/// cluster are still going away.
fn restart(
    cluster: &TestCluster,
    name: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> applianced::tools::demo::Appliance {
    let deadline = Instant::now() + Duration::from_secs(30);
    let args: Vec<&str> = STREAMS.iter().chain(extra).copied().collect();
    loop {
        match applianced::tools::demo::Appliance::start_with_env(
            std::path::Path::new(BIN),
            &cluster.dir,
            name,
            &args,
            env,
        ) {
            Ok(a) => return a,
            Err(e) if Instant::now() < deadline => {
                eprintln!("restart: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("appliance did not restart: {e}"),
        }
    }
}

/// Stop the appliance and start its cluster again (as `init` does) for the next round.
fn stop_and_reinit(cluster: &TestCluster, appliance: &mut applianced::tools::demo::Appliance) {
    appliance.stop().unwrap();
    let init = Command::new(BIN)
        .args(["init", "--state-dir", cluster.path(), "--partition-days-ahead", "2"])
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
}

fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next())
}

/// kill -9 of one lane, then wait until the supervisor has restarted it
/// (a new pid in the lane's status file, written once it serves), so the
/// scenario's next step (often: stop the appliance) meets a serving lane,
/// not one the supervisor has yet to reap.
fn kill_lane_and_await_restart(cluster: &TestCluster, module: Module, pid: i32) {
    assert!(pid > 0, "no {module:?} lane pid in its status file");
    applianced::base::sys::send_signal(pid, libc::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = cluster.lane_pid(module);
        if now > 0 && now != pid {
            return;
        }
        assert!(Instant::now() < deadline, "the supervisor did not restart the {module:?} lane within 30 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A lane that dies just before the stop request (killed, not yet reaped
/// by the supervisor) has nothing to drain: like a lane waiting out its
/// restart backoff it is not a drain failure, and `run` exits 0. The
/// supervisor is held stopped so the SIGTERM is read before the SIGCHLD
/// (the kernel hands out the lower-numbered pending signal first).
#[test]
fn a_lane_dead_before_the_stop_is_not_a_drain_failure() {
    let cluster = TestCluster::start();
    let name = instance();
    let mut appliance = cluster.appliance(&name, STREAMS);
    let supervisor = appliance.pid() as i32;
    let lane = cluster.lane_pid(Module::Dpi);
    applianced::base::sys::send_signal(supervisor, libc::SIGSTOP).unwrap();
    applianced::base::sys::send_signal(lane, libc::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_state(lane) != Some('Z') {
        assert!(Instant::now() < deadline, "the killed lane {lane} never became a zombie");
        std::thread::sleep(Duration::from_millis(5));
    }
    applianced::base::sys::send_signal(supervisor, libc::SIGTERM).unwrap();
    applianced::base::sys::send_signal(supervisor, libc::SIGCONT).unwrap();
    appliance.stop().unwrap();
    println!("scenario lane dead before the stop: run exited 0");
}

fn kill_appliance(cluster: &TestCluster, appliance: &applianced::tools::demo::Appliance) {
    let lanes: Vec<i32> = Module::ALL.iter().map(|m| cluster.lane_pid(*m)).collect();
    for pid in std::iter::once(appliance.pid() as i32).chain(lanes) {
        let _ = applianced::base::sys::send_signal(pid, libc::SIGKILL);
    }
}

#[cfg(feature = "failpoints")]
#[test]
fn kill_minus_nine_at_each_failpoint() {
    use applianced::base::failpoint;
    let cluster = TestCluster::start();
    let name = instance();
    let mut expected = BTreeMap::new();
    let events = 20_000; // three lanes: 60,000 events per run
    let mut producer = 1000;
    let mut runs = 0;
    for stage in failpoint::STAGES {
        for whole_appliance in [false, true] {
            producer += 1;
            let armed = format!("{stage}@3");
            let env = [(failpoint::ENV, armed.as_str()), (failpoint::ENV_LANE, "dpi")];
            let mut appliance = restart(&cluster, &name, &[], &env);
            let reports = loads_with_fault(&name, producer, events, || {
                let deadline = Instant::now() + Duration::from_secs(60);
                let pid = loop {
                    let pid = cluster.lane_pid(Module::Dpi);
                    if pid > 0 && process_state(pid) == Some('T') {
                        break pid;
                    }
                    assert!(Instant::now() < deadline, "the dpi lane never reached failpoint {stage}");
                    std::thread::sleep(Duration::from_millis(5));
                };
                if whole_appliance {
                    kill_appliance(&cluster, &appliance);
                    appliance = restart(&cluster, &name, &[], &[]);
                } else {
                    kill_lane_and_await_restart(&cluster, Module::Dpi, pid);
                }
            });
            record(&mut expected, producer, events, &reports);
            stop_and_reinit(&cluster, &mut appliance);
            runs += 1;
            println!(
                "failpoint {stage}: kill -9 of the {}: done",
                if whole_appliance { "appliance" } else { "dpi lane" }
            );
        }
    }
    println!(
        "scenario kill -9 at each failpoint (lane and appliance): iterations {runs}\n{}",
        check(&cluster, &expected)
    );
}

/// Set a lane's soft RLIMIT_FSIZE (None: back to its hard limit) with
/// prlimit(1) run as the lane's own uid and gid: prlimit(2) on another
/// uid's process needs CAP_SYS_RESOURCE, which root may lack in a container.
fn set_lane_file_size_limit(pid: i32, soft: Option<u64>) {
    use std::os::unix::process::CommandExt;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let id = |key: &str| -> u32 {
        status.lines().find_map(|l| l.strip_prefix(key)).unwrap().split_whitespace().next().unwrap().parse().unwrap()
    };
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let hard = limits.lines().find(|l| l.starts_with("Max file size")).unwrap().split_whitespace().nth(4).unwrap();
    let value = soft.map_or_else(|| format!("{hard}:"), |bytes| format!("{bytes}:"));
    let result = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--fsize={value}")])
        .uid(id("Uid:"))
        .gid(id("Gid:"))
        .status()
        .unwrap();
    assert!(result.success(), "prlimit --fsize={value} of lane {pid}");
}

/// The spool's "disk" is full: the dpi lane's file size limit drops to one
/// byte mid-load (every append fails with EFBIG), for two seconds.
#[test]
fn spool_disk_full_pushes_back_then_recovers() {
    let cluster = TestCluster::start();
    let name = instance();
    let mut appliance = cluster.appliance(&name, STREAMS);
    let mut expected = BTreeMap::new();
    let events = 70_000;
    let producer = 1100;
    let reports = loads_with_fault(&name, producer, events, || {
        std::thread::sleep(Duration::from_millis(200));
        let pid = cluster.lane_pid(Module::Dpi);
        set_lane_file_size_limit(pid, Some(1));
        std::thread::sleep(Duration::from_secs(2));
        set_lane_file_size_limit(pid, None);
    });
    let dpi = reports.iter().find(|(m, _)| *m == Module::Dpi).map(|(_, r)| r.clone()).unwrap();
    assert!(dpi.pushed_back > 0, "the dpi producer was never told the spool is unwritable: {dpi:?}");
    record(&mut expected, producer, events, &reports);
    println!(
        "scenario spool disk full (RLIMIT_FSIZE 1 byte for 2 s): iterations 1, STATUS push-backs {}\n{}",
        dpi.pushed_back,
        check(&cluster, &expected)
    );
    appliance.stop().unwrap();
}

/// Connect to a lane as a fresh producer and report the STATUS
/// `DiskReserve` reason the lane sends after WELCOME, if it pushes back.
fn disk_reserve_status(name: &str, module: Module) -> Option<String> {
    let uid = applianced::base::sys::effective_uid();
    let mut probe = applianced::producer::client::ModuleClient::connect(name, module, uid, 1399, 1).ok()?;
    let replies = probe.poll_replies(Duration::from_millis(200)).ok()?;
    replies.into_iter().find_map(|reply| match reply {
        applianced::producer::client::Reply::Status { code, reason }
            if code == applianced::codec::frame::StatusCode::DiskReserve as u16 =>
        {
            Some(reason)
        }
        _ => None,
    })
}

/// A tmpfs of a given size mounted for one test (root only), unmounted on drop.
struct SmallFs {
    path: PathBuf,
}

impl SmallFs {
    /// None (with the reason printed) where this machine does not let the
    /// test mount a filesystem: not root, or mount(2) refused.
    fn mount(mib: u64) -> Option<SmallFs> {
        if !common::is_root() {
            eprintln!("SKIPPED: mounting a small filesystem needs root");
            return None;
        }
        let path = std::env::temp_dir().join(format!("ad-smallfs-{}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}M,mode=0755"), "tmpfs"])
            .arg(&path)
            .output()
            .unwrap();
        if !output.status.success() {
            let _ = std::fs::remove_dir(&path);
            eprintln!("SKIPPED: cannot mount a tmpfs here: {}", String::from_utf8_lossy(&output.stderr).trim());
            return None;
        }
        Some(SmallFs { path })
    }

    fn grow(&self, mib: u64) {
        let status =
            Command::new("mount").args(["-o", &format!("remount,size={mib}M")]).arg(&self.path).status().unwrap();
        assert!(status.success(), "remount {} with size {mib}M", self.path.display());
    }

    fn available(&self) -> u64 {
        let dir = std::fs::File::open(&self.path).unwrap();
        applianced::base::sys::fs_space(std::os::fd::AsFd::as_fd(&dir)).unwrap().available
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The spools and PostgreSQL share a filesystem too small for the load (a
/// tmpfs the test mounts: 450 MiB, two producers of 600,000 events each,
/// spool quota 32 MiB; `APPLIANCED_DISKFULL_MB`, `_EVENTS`, `_QUOTA_MB`
/// scale it, e.g. 700 / 1500000 / 64). The lanes stop accepting at the
/// free-space reserve (STATUS DiskReserve), so PostgreSQL never meets a
/// full filesystem; selftest names the cause; once the filesystem grows,
/// the lanes resume by themselves (no restart of anything) and every
/// event lands exactly once.
#[test]
fn a_filesystem_shared_with_postgresql_fills_without_taking_it_down() {
    let Some(fs) = SmallFs::mount(env_or("APPLIANCED_DISKFULL_MB", 450)) else { return };
    // A small PostgreSQL log bound, so the reserve fits a small filesystem.
    let env = [("APPLIANCED_TEST_PG_LOG_FILE_KB", "1024"), ("APPLIANCED_TEST_PG_LOG_FILES", "4")];
    let cluster = TestCluster::start_in(&fs.path, &env);
    let name = instance();
    let quota = env_or("APPLIANCED_DISKFULL_QUOTA_MB", 32).to_string();
    let mut appliance = cluster.appliance_with_env(&name, &["--spool-quota-mb", &quota], &env);
    let supervisor = appliance.pid() as i32;
    let postmaster = postmaster_pid(&cluster);
    let state = applianced::control::cluster::StateDir::new(&cluster.dir).unwrap();
    let reserve: u64 =
        applianced::control::launch::read_status(&state, Module::Dpi)["disk_reserve_bytes"].parse().unwrap();
    let events = env_or("APPLIANCED_DISKFULL_EVENTS", 600_000);
    let producer = 1300;
    let loads: Vec<_> = [Module::Dpi, Module::LinuxAgent]
        .into_iter()
        .map(|module| {
            let options = LoadOptions::new(&name, module, producer, 1, events);
            (module, std::thread::spawn(move || run_load(&options)))
        })
        .collect();
    // The event: a lane pushes back at the reserve. A producer that
    // connects meanwhile is told at once, right after its WELCOME.
    let deadline = Instant::now() + Duration::from_secs(600);
    let pushed_back = loop {
        assert!(
            loads.iter().any(|(_, h)| !h.is_finished()),
            "every event was stored before the filesystem reached its reserve ({reserve} bytes): make it smaller"
        );
        assert!(Instant::now() < deadline, "the lane never pushed back at the reserve");
        if let Some(reason) = [Module::Dpi, Module::LinuxAgent].into_iter().find_map(|m| disk_reserve_status(&name, m))
        {
            break reason;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let below = fs.available();
    // Something else on the host takes more of it (a filler file, 16 MiB
    // past the reserve): the lanes hold their producers whatever
    // PostgreSQL's checkpoints free meanwhile, and PostgreSQL keeps what
    // is left of the reserve for what the spools still hold.
    let filler = fs.path.join("filler");
    let fill = fs.available().saturating_sub(reserve - (16 << 20));
    std::fs::write(&filler, vec![0u8; fill as usize]).unwrap();
    let selftest = cluster.selftest(&[]);
    let report = String::from_utf8_lossy(&selftest.stdout).into_owned();
    assert!(!selftest.status.success(), "selftest passed below the reserve:\n{report}");
    assert!(report.contains("FAIL disk space") && report.contains("below the reserve"), "{report}");
    assert!(report.contains("pushed back: the spool's filesystem would have"), "{report}");
    assert!(loads.iter().any(|(_, h)| !h.is_finished()), "the loads finished while the lanes pushed back");
    std::fs::remove_file(&filler).unwrap();
    fs.grow(2048);
    let reports: Vec<(Module, LoadReport)> = loads.into_iter().map(|(m, h)| (m, h.join().unwrap())).collect();
    let mut expected = BTreeMap::new();
    record(&mut expected, producer, events, &reports);
    let oracle = check(&cluster, &expected);
    for (module, report) in &reports {
        assert!(
            report
                .push_back_reasons
                .iter()
                .any(|(code, _)| *code == applianced::codec::frame::StatusCode::DiskReserve as u16),
            "{module:?} was never told of the reserve: {report:?}"
        );
    }
    let log = applianced::control::cluster::read_pg_log(&state).unwrap();
    for bad in ["No space left on device", "PANIC:"] {
        assert!(!log.lines().any(|l| l.contains(bad)), "PostgreSQL logged {bad:?}:\n{log}");
    }
    assert!(applianced::base::sys::process_exists(supervisor), "the supervisor exited");
    assert_eq!(postmaster_pid(&cluster), postmaster, "PostgreSQL restarted");
    let after = cluster.selftest(&[]);
    assert!(after.status.success(), "selftest after the filesystem grew:\n{}", common::stdout(&after));
    println!(
        "scenario shared filesystem full: reserve {} MiB, {} MiB free when producers were held ({pushed_back}), \
         push-back reasons {:?}\n{oracle}",
        reserve >> 20,
        below >> 20,
        reports.iter().map(|(_, r)| r.push_back_reasons.clone()).collect::<Vec<_>>()
    );
    appliance.stop().unwrap();
}

/// The postmaster of the cluster.
fn postmaster_pid(cluster: &TestCluster) -> i32 {
    let text = std::fs::read_to_string(cluster.dir.join("pgdata/postmaster.pid")).unwrap();
    text.lines().next().unwrap().trim().parse().unwrap()
}

/// SIGCONT for every frozen PostgreSQL process, also when the test fails.
struct Frozen(Vec<i32>);

impl Frozen {
    /// SIGSTOP every process of the cluster: the postmaster first, then
    /// its children as listed after it stopped (so none is forked after
    /// the list is read). A child that exits between the listing and its
    /// signal (a test connection just closed) is skipped. Each stopped
    /// process is recorded at once, so a failure part-way still resumes
    /// those already stopped.
    fn freeze(cluster: &TestCluster) -> Frozen {
        let postmaster = postmaster_pid(cluster);
        let mut frozen = Frozen(Vec::new());
        applianced::base::sys::send_signal(postmaster, libc::SIGSTOP)
            .unwrap_or_else(|e| panic!("SIGSTOP of the postmaster {postmaster}: {e}"));
        frozen.0.push(postmaster);
        for pid in applianced::base::sys::children_of(postmaster).unwrap() {
            match applianced::base::sys::send_signal(pid, libc::SIGSTOP) {
                Ok(()) => frozen.0.push(pid),
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => panic!("SIGSTOP of PostgreSQL process {pid}: {e}"),
            }
        }
        frozen
    }

    /// Kill (SIGKILL) the frozen backends of one role: a transaction they
    /// received but never ran can then not commit after the thaw. The
    /// postmaster reinitializes every backend (crash recovery) once it runs again.
    fn kill_backends_of(&mut self, role: &str) -> usize {
        let mut killed = 0;
        for pid in &self.0 {
            let title = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&title).starts_with(&format!("postgres: {role} ")) {
                applianced::base::sys::send_signal(*pid, libc::SIGKILL).unwrap();
                killed += 1;
            }
        }
        killed
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for pid in self.0.iter().rev() {
            let _ = applianced::base::sys::send_signal(*pid, libc::SIGCONT);
        }
    }
}

fn spool_bytes(cluster: &TestCluster, module: Module) -> u64 {
    std::fs::read_dir(cluster.dir.join("spool").join(module.name()))
        .map(|dir| dir.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

/// PostgreSQL stops answering (every cluster process SIGSTOPped) for longer
/// than the dpi lane's 32 MiB spool lasts: the lane acknowledges from the
/// spool until the quota, then pushes back; once PostgreSQL answers again
/// the spool drains and every event is committed exactly once.
#[test]
fn postgres_down_longer_than_the_spool_quota() {
    let cluster = TestCluster::start();
    let name = instance();
    let mut appliance = cluster.appliance(&name, &["--commit-streams", "3", "--spool-quota-mb", "32"]);
    let mut expected = BTreeMap::new();
    let producer = 1200;
    let events = 200_000;
    // The lane learns the producer first: a producer it has never seen
    // cannot be welcomed while PostgreSQL does not answer (its watermark is unknown).
    let warm_up = run_load(&LoadOptions::new(&name, Module::Dpi, producer, 1, 1_000));
    assert_eq!(warm_up.acked, 1_000);
    let frozen = Frozen::freeze(&cluster);
    let options = LoadOptions::new(&name, Module::Dpi, producer, 1, events);
    let load = std::thread::spawn(move || run_load(&options));
    let deadline = Instant::now() + Duration::from_secs(60);
    let quota = 32 * 1024 * 1024;
    while spool_bytes(&cluster, Module::Dpi) < quota * 3 / 4 {
        assert!(Instant::now() < deadline, "the spool never filled: {} bytes", spool_bytes(&cluster, Module::Dpi));
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(2));
    let spooled = spool_bytes(&cluster, Module::Dpi);
    assert!(spooled <= quota, "spool {spooled} bytes exceeds its quota {quota}");
    drop(frozen);
    let report = load.join().unwrap();
    assert_eq!(report.acked, events, "{report:?}");
    assert!(report.pushed_back > 0, "the producer was never told the spool is full: {report:?}");
    expected.insert((Module::Dpi, producer, 1), (events, report.acked));
    println!(
        "scenario postgres down longer than the spool quota: iterations 1, spool peak {spooled} of {quota} bytes, STATUS push-backs {}\n{}",
        report.pushed_back,
        check(&cluster, &expected)
    );
    appliance.stop().unwrap();
}

/// Warm `producer` up on the DPI lane (1,000 events, committed: the lane
/// then knows it), freeze PostgreSQL, send `events` (acknowledged from the
/// spool alone), kill -9 the whole appliance, let PostgreSQL run again.
/// Afterwards the DPI spool holds acknowledged events PostgreSQL lacks.
fn spool_while_frozen_then_kill(
    cluster: &TestCluster,
    name: &str,
    appliance: applianced::tools::demo::Appliance,
    producer: u64,
    events: u64,
) {
    let warm_up = run_load(&LoadOptions::new(name, Module::Dpi, producer, 1, 1_000));
    assert_eq!(warm_up.acked, 1_000);
    let wait = Duration::from_secs(applianced::base::limits::COMMIT_WAIT_S);
    assert!(
        applianced::tools::demo::wait_committed(&mut cluster.admin(), Module::Dpi, producer, 1, 1_000, wait).unwrap()
    );
    // A session that sees the crash reset below end.
    let mut sentinel = cluster.admin();
    let mut frozen = Frozen::freeze(cluster);
    let report = run_load(&LoadOptions::new(name, Module::Dpi, producer, 1, events));
    assert_eq!(report.acked, events, "acknowledged from the spool while PostgreSQL is frozen: {report:?}");
    kill_appliance(cluster, &appliance);
    drop(appliance);
    // A transaction the frozen backend holds in its socket buffer would
    // commit after the thaw: killed, none does, so every record written
    // while frozen is still to be committed from the spool.
    let killed = frozen.kill_backends_of("ransomeye_dpi_writer");
    drop(frozen);
    if killed == 0 {
        return;
    }
    // The postmaster answers a killed backend by ending every session and
    // running crash recovery: wait for that to reach the sentinel, so the
    // caller's next connection (`TestCluster::admin` waits out 57P03) comes
    // after the reset, not before it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while sentinel.query_value("SELECT 1").is_ok() {
        assert!(Instant::now() < deadline, "the postmaster never reset after a backend was killed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One intact spool record: its payload's range in the file, the producer
/// ranges it holds.
type RecordAt = (std::ops::Range<usize>, Vec<ProducerRange>);

/// The intact records of the newest DPI spool segment, oldest first, the
/// segment's path and bytes.
fn dpi_records(cluster: &TestCluster) -> (PathBuf, Vec<u8>, Vec<RecordAt>) {
    let segments = applianced::storage::spool::segment_files(&cluster.dir.join("spool/dpi")).unwrap();
    let (first, path) = segments.last().unwrap().clone();
    let bytes = std::fs::read(&path).unwrap();
    let scan = applianced::storage::spool::record::scan(&bytes, true, first).unwrap();
    let records = scan
        .extents
        .into_iter()
        .map(|extent| match extent {
            applianced::storage::spool::record::Extent::Intact(r) => {
                let ranges = applianced::lane::batch::spool_ranges(&bytes[r.payload.clone()]).unwrap();
                (r.payload, ranges)
            }
            other => panic!("a damaged record before the test damaged any: {other:?}"),
        })
        .collect();
    (path, bytes, records)
}

/// Flip one bit of a record's payload past its summary (so its events stay known).
fn damage(bytes: &mut [u8], payload: &std::ops::Range<usize>, ranges: &[ProducerRange]) {
    let summary = 8 + 40 * ranges.len() + 4;
    bytes[payload.start + summary + (payload.len() - summary) / 2] ^= 0x10;
}

/// The reason-10 quarantine rows of a DPI producer: (first seq, reason) each.
fn lost_rows(cluster: &TestCluster, producer: u64) -> Vec<(u64, String)> {
    cluster
        .admin()
        .simple_query(&format!(
            "SELECT producer_seq, reason FROM dpi.quarantine WHERE producer_id = {producer} AND reason_code = {} ORDER BY 1",
            applianced::codec::frame::RejectCode::SpoolRecordCorrupted as u16
        ))
        .unwrap()
        .into_iter()
        .map(|row| (row[0].as_deref().unwrap().parse().unwrap(), row[1].clone().unwrap()))
        .collect()
}

/// The case: 100 events committed, PostgreSQL frozen, 300 more
/// acknowledged from the spool, the appliance killed, one bit of the
/// newest record's payload flipped. Recovery must not take that complete
/// record for a torn append: its events are recorded as lost (reason 10),
/// its bytes quarantined, selftest fails naming lane, producer and seqs,
/// and the producer is told when it reconnects.
#[test]
fn an_acknowledged_record_damaged_on_disk_is_a_recorded_reported_loss() {
    let cluster = TestCluster::start();
    let name = instance();
    let appliance = cluster.appliance(&name, STREAMS);
    let producer = 1300;
    let warm_up = run_load(&LoadOptions::new(&name, Module::Dpi, producer, 1, 100));
    assert_eq!(warm_up.acked, 100);
    let wait = Duration::from_secs(applianced::base::limits::COMMIT_WAIT_S);
    assert!(
        applianced::tools::demo::wait_committed(&mut cluster.admin(), Module::Dpi, producer, 1, 100, wait).unwrap()
    );
    let mut frozen = Frozen::freeze(&cluster);
    let acked = run_load(&LoadOptions::new(&name, Module::Dpi, producer, 1, 400));
    assert_eq!(acked.acked, 400, "acknowledged from the spool while PostgreSQL is frozen: {acked:?}");
    kill_appliance(&cluster, &appliance);
    drop(appliance);
    // The lane's frozen backends may hold transactions of seqs 101..400 in
    // their socket buffers; killed, they never commit them (the appliance
    // then restarts into PostgreSQL's crash recovery).
    let killed = frozen.kill_backends_of("ransomeye_dpi_writer");
    assert!((1..=STREAM_COUNT).contains(&killed), "{killed} dpi backends");
    drop(frozen);
    let (path, mut bytes, records) = dpi_records(&cluster);
    let (payload, ranges) = records.last().unwrap().clone();
    let lost = ranges.iter().find(|r| r.producer_id == producer).copied().unwrap();
    assert_eq!(lost.last_seq, 400);
    damage(&mut bytes, &payload, &ranges);
    std::fs::write(&path, &bytes).unwrap();
    let mut appliance = restart(&cluster, &name, &[], &[]);
    // The producer comes back: WELCOME, then the loss notice.
    let again = run_load(&LoadOptions::new(&name, Module::Dpi, producer, 1, 400));
    assert_eq!(again.acked, 400);
    let told = format!("seqs {}..{} of epoch 1 were acknowledged and then lost", lost.first_seq, lost.last_seq);
    assert!(again.lost.iter().any(|l| l.contains(&told)), "the producer was not told: {again:?}");
    // Recorded: one reason-10 row for exactly that range; the rest stored once.
    assert!(
        applianced::tools::demo::wait_committed(&mut cluster.admin(), Module::Dpi, producer, 1, 400, wait).unwrap()
    );
    let rows = lost_rows(&cluster, producer);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, lost.first_seq);
    assert!(rows[0].1.contains(&format!("seqs {}..{} acknowledged and lost", lost.first_seq, lost.last_seq)));
    let (stored, distinct) = cluster.producer_rows(Module::Dpi, producer);
    assert_eq!((stored, distinct), (400 - (lost.last_seq - lost.first_seq + 1), stored));
    // Quarantined and described; selftest fails naming lane, producer and range.
    let quarantine = cluster.dir.join("spool/dpi/quarantine");
    let names: Vec<String> = std::fs::read_dir(&quarantine)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.ends_with(".bad")) && names.iter().any(|n| n.ends_with(".meta")), "{names:?}");
    let selftest = cluster.selftest(&[]);
    let report = common::stdout(&selftest);
    assert!(!selftest.status.success() && report.contains("FAIL spool integrity"), "{report}");
    let named =
        format!("dpi: producer {producer} epoch 1 seqs {}..{}: acknowledged and lost", lost.first_seq, lost.last_seq);
    assert!(report.contains(&named), "{report}");
    println!(
        "scenario damaged newest record: acked 400, committed before the kill 100, lost and recorded seqs {}..{}, \
         stored {stored}, duplicates 0, producer told, selftest FAIL naming the range",
        lost.first_seq, lost.last_seq
    );
    appliance.stop().unwrap();
}

/// A record that had committed before a bit of it flipped is no loss:
/// nothing is recorded as lost, the producer is told nothing, and selftest
/// passes with a warning.
#[test]
fn a_committed_record_damaged_on_disk_is_harmless() {
    let cluster = TestCluster::start();
    let name = instance();
    let mut appliance = cluster.appliance(&name, STREAMS);
    let producer = 1310;
    let events = 2_000;
    assert_eq!(run_load(&LoadOptions::new(&name, Module::Dpi, producer, 1, events)).acked, events);
    let wait = Duration::from_secs(applianced::base::limits::COMMIT_WAIT_S);
    assert!(
        applianced::tools::demo::wait_committed(&mut cluster.admin(), Module::Dpi, producer, 1, events, wait).unwrap()
    );
    appliance.stop().unwrap();
    // The newest segment stays (appends continue in it), committed records and all.
    let (path, mut bytes, records) = dpi_records(&cluster);
    let (payload, ranges) = records.last().unwrap().clone();
    damage(&mut bytes, &payload, &ranges);
    std::fs::write(&path, &bytes).unwrap();
    let mut appliance = restart(&cluster, &name, &[], &[]);
    let again = run_load(&LoadOptions::new(&name, Module::Dpi, producer, 1, events));
    assert!(again.complete(&LoadOptions::new(&name, Module::Dpi, producer, 1, events)), "{again:?}");
    assert!(lost_rows(&cluster, producer).is_empty());
    assert_eq!(cluster.producer_rows(Module::Dpi, producer), (events, events));
    let selftest = cluster.selftest(&[]);
    let report = common::stdout(&selftest);
    assert!(selftest.status.success(), "{report}");
    assert!(report.contains("WARNING: damaged spool records whose events had committed before the damage"), "{report}");
    appliance.stop().unwrap();
}

/// A damaged record in the middle of acknowledged, uncommitted records:
/// its events are recorded as lost, and every record after it still
/// commits exactly once (the watermark moves past the loss).
#[test]
fn a_damaged_record_in_the_middle_is_recorded_and_the_rest_commits() {
    let cluster = TestCluster::start();
    let name = instance();
    let appliance = cluster.appliance(&name, STREAMS);
    let producer = 1320;
    let events = 40_000;
    spool_while_frozen_then_kill(&cluster, &name, appliance, producer, events);
    let wait = Duration::from_secs(applianced::base::limits::COMMIT_WAIT_S);
    // The second record written while frozen (seqs above the warm-up's 1,000).
    let (path, mut bytes, records) = dpi_records(&cluster);
    let frozen: Vec<_> = records.into_iter().filter(|(_, ranges)| ranges[0].first_seq > 1_000).collect();
    assert!(frozen.len() >= 3, "only {} records written while frozen", frozen.len());
    let (payload, ranges) = frozen[1].clone();
    damage(&mut bytes, &payload, &ranges);
    std::fs::write(&path, &bytes).unwrap();
    let mut appliance = restart(&cluster, &name, &[], &[]);
    assert!(
        applianced::tools::demo::wait_committed(&mut cluster.admin(), Module::Dpi, producer, 1, events, wait).unwrap(),
        "the records after the damaged one were not committed"
    );
    let lost = ranges[0];
    let rows = lost_rows(&cluster, producer);
    assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), vec![lost.first_seq], "{rows:?}");
    let (stored, distinct) = cluster.producer_rows(Module::Dpi, producer);
    assert_eq!(stored, distinct, "duplicates");
    assert_eq!(stored, events - (lost.last_seq - lost.first_seq + 1));
    let selftest = cluster.selftest(&[]);
    let report = common::stdout(&selftest);
    let named =
        format!("dpi: producer {producer} epoch 1 seqs {}..{}: acknowledged and lost", lost.first_seq, lost.last_seq);
    assert!(!selftest.status.success() && report.contains(&named), "{report}");
    println!(
        "scenario damaged middle record: acked {events}, found {stored}, duplicates 0, \
         lost and recorded seqs {}..{}",
        lost.first_seq, lost.last_seq
    );
    appliance.stop().unwrap();
}

/// Spooled events whose day partition is gone by the time they are
/// replayed (PostgreSQL down across retention) go to quarantine with a
/// reason; their batch commits and the watermark covers them. The
/// appliance first runs on a simulated clock ten days in the past.
#[cfg(feature = "failpoints")]
#[test]
fn events_outside_every_partition_window_are_quarantined_not_failed() {
    let cluster = TestCluster::start();
    let name = instance();
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let past = format!("{}:{now_s}:1", now_s - 10 * 86_400);
    let appliance = restart(&cluster, &name, &[], &[(applianced::base::clock::TEST_CLOCK_ENV, past.as_str())]);
    let producer = 1400;
    let events = 10_000;
    spool_while_frozen_then_kill(&cluster, &name, appliance, producer, events);
    let mut admin = cluster.admin();
    let wait = Duration::from_secs(applianced::base::limits::COMMIT_WAIT_S);
    // Retention removes the past days while the appliance is down.
    let embedded = applianced::control::cluster::Embedded::load(&cluster.dir).unwrap();
    let retention: BTreeMap<Module, u32> = Module::ALL.iter().map(|m| (*m, 3)).collect();
    let today = now_s.div_euclid(86_400);
    let removed = applianced::control::maintenance::apply_retention(&embedded, &retention, today).unwrap();
    assert!(!removed.dropped.is_empty());
    let mut appliance = restart(&cluster, &name, &[], &[]);
    assert!(applianced::tools::demo::wait_committed(&mut admin, Module::Dpi, producer, 1, events, wait).unwrap());
    let quarantined = admin
        .query_value(&format!(
            "SELECT count(*) || ' ' || count(DISTINCT producer_seq) || ' ' || min(producer_seq) || ' ' || max(producer_seq) \
             FROM dpi.quarantine WHERE producer_id = {producer} AND reason_code = {}",
            applianced::codec::frame::RejectCode::PartitionWindow as u16
        ))
        .unwrap();
    assert_eq!(quarantined, format!("{} {} 1001 {events}", events - 1_000, events - 1_000));
    let (rows, _) = cluster.producer_rows(Module::Dpi, producer);
    assert_eq!(rows, 0, "the warm-up rows went with their dropped partitions; nothing else was written to a table");
    println!(
        "scenario replay across retention: iterations 1, acked {events}, {} partitions dropped while down, \
         quarantined (reason_code {}) seqs 1001..{events}, duplicates 0, lost 0",
        removed.dropped.len(),
        applianced::codec::frame::RejectCode::PartitionWindow as u16
    );
    appliance.stop().unwrap();
}
