//! Fault injection against real processes and a real cluster, with one
//! oracle (STYLE S22): after the faults stop and every producer finished,
//! each (producer, epoch, seq) that was sent is present exactly once, in
//! the table its deterministic content says, nothing is present that was
//! never sent, and every acknowledged event is there. There is no durable
//! spool yet (issue 4): while PostgreSQL is down the lanes stop granting
//! credit and acknowledging, and producers wait and resend.
//!
//! `FAULT_ITERATIONS` (default 2) raises the number of iterations per
//! scenario for long runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use applianced::load::{LoadOptions, LoadReport, run_load};
use applianced::matrix::Module;
use applianced::schema::tables_of;
use applianced::synth;
use bytes::BytesMut;
use common::{BIN, TestCluster, instance};

fn iterations() -> u32 {
    std::env::var("FAULT_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(2)
}

/// The oracle. `sent` is the highest seq sent per (module, producer, epoch);
/// `acked` the highest acknowledged.
fn check(cluster: &TestCluster, expected: &BTreeMap<(Module, u64, u64), (u64, u64)>) -> String {
    let mut admin = cluster.admin();
    let mut lines = Vec::new();
    for ((module, producer, epoch), (sent, acked)) in expected {
        let mut found = 0u64;
        for (index, table) in tables_of(*module).enumerate() {
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
                found += 1;
            }
        }
        assert!(
            found >= *acked,
            "{module:?} producer {producer} epoch {epoch}: {found} rows, {acked} acknowledged: lost"
        );
        lines.push(format!(
            "{module:?}/{producer}/{epoch}: sent {sent} acked {acked} found {found} duplicates 0 lost 0"
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
    let mut appliance = cluster.appliance(&name, &[]);
    let mut expected = BTreeMap::new();
    let events = 70_000; // three lanes: 210,000 events per iteration
    for iteration in 0..u64::from(iterations()) {
        // kill -9 of one lane process at a time during the load.
        let producer = 100 + iteration;
        let reports = loads_with_fault(&name, producer, events, || {
            for (delay, module) in [(150, Module::Dpi), (300, Module::LinuxAgent), (450, Module::WindowsAgent)] {
                std::thread::sleep(Duration::from_millis(delay));
                let pid = cluster.lane_pid(module);
                let _ = applianced::sys::send_signal(pid, libc::SIGKILL);
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
                let _ = applianced::sys::send_signal(pid, libc::SIGKILL);
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
    let mut appliance = cluster.appliance(&name, &[]);
    let mut expected = BTreeMap::new();
    let events = 50_000;
    for iteration in 0..u64::from(iterations()) {
        let producer = 300 + iteration;
        let reports = loads_with_fault(&name, producer, events, || {
            std::thread::sleep(Duration::from_millis(300));
            let pgdata = cluster.dir.join("pgdata");
            let mut stop = Command::new("/usr/lib/postgresql/15/bin/pg_ctl");
            stop.args(["stop", "-m", "immediate", "-D"]).arg(&pgdata);
            if common::is_root() {
                use std::os::unix::process::CommandExt;
                let server = applianced::sys::account_by_name(applianced::cluster::SERVER_USER).unwrap().unwrap();
                stop.uid(server.uid).gid(server.gid);
            }
            let status = stop.stdout(Stdio::null()).status().unwrap();
            assert!(status.success(), "pg_ctl stop -m immediate failed");
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
        let appliance = cluster.appliance(&name, &[]);
        let mut producer_process = spawn_load(&name, "core", events, producer, 1);
        std::thread::sleep(Duration::from_millis(400));
        let _ = producer_process.kill();
        let _ = producer_process.wait();
        let supervisor = appliance.pid() as i32;
        let lanes: Vec<i32> = Module::ALL.iter().map(|m| cluster.lane_pid(*m)).collect();
        for pid in std::iter::once(supervisor).chain(lanes) {
            let _ = applianced::sys::send_signal(pid, libc::SIGKILL);
        }
        drop(appliance);
        // Restart the appliance; rerunning the same producer command resends
        // everything not durable, and nothing lands twice.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut appliance = loop {
            match applianced::demo::Appliance::start_with(std::path::Path::new(BIN), &cluster.dir, &name, &[]) {
                Ok(a) => break a,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restart: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("appliance did not restart: {e}"),
            }
        };
        let rerun = spawn_load(&name, "core", events, producer, 1).wait_with_output().unwrap();
        assert!(rerun.status.success(), "rerun after the crash did not complete");
        expected.insert((Module::Core, producer, 1), (events, events));
        // A producer restarting with a new epoch: starts again at seq 1.
        let report = run_load(&LoadOptions::new(&name, Module::Core, producer, 2, 5_000));
        assert_eq!(report.acked, 5_000);
        expected.insert((Module::Core, producer, 2), (5_000, 5_000));
        appliance.stop().unwrap();
        // The supervisor stopped the cluster; start it again for the next round.
        let init = Command::new(BIN)
            .args(["init", "--state-dir", cluster.path(), "--partition-days-ahead", "2"])
            .output()
            .unwrap();
        assert!(init.status.success());
    }
    println!(
        "scenario appliance-kill + producer-kill + new-epoch: iterations {}\n{}",
        iterations(),
        check(&cluster, &expected)
    );
}
