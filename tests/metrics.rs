//! `applianced metrics` against a running appliance: after a load on every
//! lane, the exposition parses with a real OpenMetrics parser (Python's
//! `prometheus_client`, Debian's python3-prometheus-client) and its
//! counters equal what the load was acknowledged and what PostgreSQL
//! holds. Waits for the lanes' next reports, never for a fixed time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use applianced::model::matrix::Module;
use applianced::producer::load::{LoadOptions, run_load};
use common::{TestCluster, instance};

const EVENTS: u64 = 5_000;

/// The system python3 with prometheus_client, installed from Debian's
/// archive when missing and the tests run as root.
fn parser_python() -> &'static str {
    let python = "/usr/bin/python3";
    let has = || {
        Command::new(python)
            .args(["-c", "import prometheus_client.openmetrics.parser"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has() {
        assert!(common::is_root(), "install python3-prometheus-client to run the metrics test");
        let install = "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3 python3-prometheus-client";
        assert!(Command::new("sh").args(["-c", install]).status().unwrap().success(), "{install}");
    }
    python
}

/// Parse an exposition with the OpenMetrics parser (it raises on any
/// deviation from the format); returns `(sample name, lane) → value`.
fn parse(python: &str, text: &str) -> BTreeMap<(String, String), f64> {
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        print(s.name, s.labels.get("lane", ""), s.value)
"#;
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "not valid OpenMetrics: {}\n{text}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let mut parts = line.split(' ');
            let (name, lane, value) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
            ((name.to_string(), lane.to_string()), value.parse().unwrap())
        })
        .collect()
}

/// `applianced metrics` of the cluster's appliance, parsed.
fn scrape(python: &str, cluster: &TestCluster) -> BTreeMap<(String, String), f64> {
    let output = common::applianced(&["metrics", "--state-dir", cluster.path()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    parse(python, &common::stdout(&output))
}

#[test]
fn metrics_parse_as_openmetrics_and_count_what_every_lane_acknowledged_and_committed() {
    let python = parser_python();
    let cluster = TestCluster::start();
    let name = instance();
    let _appliance = cluster.appliance(&name, &[]);
    for (i, module) in Module::ALL.into_iter().enumerate() {
        let report = run_load(&LoadOptions::new(&name, module, 900 + i as u64, 1, EVENTS));
        assert_eq!(report.acked, EVENTS, "{module:?}");
        assert_eq!(cluster.committed_rows(module, 900 + i as u64, 1, EVENTS), (EVENTS, EVENTS));
    }
    // The lanes report every second: wait for reports that show every commit.
    let started = Instant::now();
    let values = loop {
        let values = scrape(python, &cluster);
        let committed = |m: Module| values.get(&("applianced_lane_events_committed_total".into(), m.name().into()));
        if Module::ALL.into_iter().all(|m| committed(m) == Some(&(EVENTS as f64))) {
            break values;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the lanes never reported every commit: {values:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for module in Module::ALL {
        let value = |sample: &str| values[&(sample.to_string(), module.name().to_string())];
        assert_eq!(value("applianced_lane_events_acknowledged_total"), EVENTS as f64, "{module:?}");
        assert_eq!(value("applianced_lane_events_rejected_total"), 0.0, "{module:?}");
        assert_eq!(value("applianced_lane_postgresql_connected"), 1.0, "{module:?}");
        assert_eq!(value("applianced_lane_unsent_records"), 0.0, "{module:?}");
        assert_eq!(value("applianced_lane_commit_lag_seconds"), 0.0, "{module:?}");
        assert!(value("applianced_lane_spool_quota_bytes") > 0.0, "{module:?}");
        assert!(value("applianced_lane_report_age_seconds") < 60.0, "{module:?}");
    }
    // `status --once`: one line per lane, PostgreSQL up, nothing waiting.
    let table = status_lines(&cluster);
    for module in Module::ALL {
        let fields = table.get(module.name()).unwrap_or_else(|| panic!("no {module:?} line: {table:?}"));
        assert_eq!((fields[5].as_str(), fields[10].as_str()), ("0", "up"), "{module:?}: {fields:?}");
    }
}

/// `applianced status --once`: each lane's line split into fields
/// (lane, acked/s, committed/s, lag, "s", unsent, spool used, "/", quota,
/// conns, pg, pushed back, report age, "s").
fn status_lines(cluster: &TestCluster) -> BTreeMap<String, Vec<String>> {
    let output = common::applianced(&["status", "--state-dir", cluster.path(), "--once", "--interval-ms", "1000"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = common::stdout(&output);
    println!("{text}");
    text.lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            (fields[0].clone(), fields)
        })
        .collect()
}

/// The metrics of one lane from `applianced metrics`, parsed.
#[cfg(feature = "failpoints")]
fn lane_values(python: &str, cluster: &TestCluster, module: Module) -> BTreeMap<String, f64> {
    scrape(python, cluster)
        .into_iter()
        .filter(|((_, lane), _)| lane == module.name())
        .map(|((name, _), value)| (name, value))
        .collect()
}

/// Wait (bounded, for a hung test only) until `ready` holds for the lane's metrics.
#[cfg(feature = "failpoints")]
fn wait_for(
    python: &str,
    cluster: &TestCluster,
    module: Module,
    what: &str,
    ready: impl Fn(&BTreeMap<String, f64>) -> bool,
) {
    let started = Instant::now();
    loop {
        let values = lane_values(python, cluster, module);
        if ready(&values) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "never {what}: {values:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// selftest's `commit lag` check as printed, with the lag bound lowered to 1 s
/// (`APPLIANCED_TEST_COMMIT_LAG_MAX_MS`, test builds only).
#[cfg(feature = "failpoints")]
fn commit_lag_line(cluster: &TestCluster) -> String {
    let output = Command::new(common::BIN)
        .args(["selftest", "--state-dir", cluster.path()])
        .env(applianced::base::limits::TEST_COMMIT_LAG_MAX_ENV, "1000")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    // The check's line and the problems listed under it.
    let mut lines = text.lines().skip_while(|l| !l.contains(" commit lag:"));
    let first = lines.next().unwrap_or_else(|| panic!("no commit lag check: {text}"));
    let problems: Vec<&str> = lines.take_while(|l| l.starts_with("       ")).collect();
    format!("{first}\n{}", problems.join("\n"))
}

/// A lane stalled by a refusal PostgreSQL repeats (its writer role lost
/// INSERT: 42501 on every retry): the commit-lag metric rises, the unsent
/// records and database resets grow, selftest's `commit lag` fails naming
/// the lane and the error, the supervisor logs the stall once per interval
/// (its bound lowered to 1 s too); once the privilege is back, everything
/// recovers.
#[cfg(feature = "failpoints")]
#[test]
fn a_stalled_lane_shows_in_its_metrics_and_fails_selftest_until_it_recovers() {
    let python = parser_python();
    let cluster = TestCluster::start();
    let name = instance();
    let log_path = cluster.dir.join(format!("{name}.log"));
    let lag_env = [(applianced::base::limits::TEST_COMMIT_LAG_MAX_ENV, "1000")];
    let _appliance = applianced::tools::demo::Appliance::start_logging_to(
        std::path::Path::new(common::BIN),
        &cluster.dir,
        &name,
        &lag_env,
        std::fs::File::create(&log_path).unwrap(),
    )
    .unwrap();
    let producer = 960;
    assert_eq!(run_load(&LoadOptions::new(&name, Module::Dpi, producer, 1, 500)).acked, 500);
    assert_eq!(cluster.committed_rows(Module::Dpi, producer, 1, 500), (500, 500));
    let tables: Vec<String> = applianced::model::schema::tables_of(Module::Dpi).map(|t| t.qualified_name()).collect();
    let writer = "ransomeye_dpi_writer";
    cluster.admin().simple_query(&format!("REVOKE INSERT ON {} FROM {writer}", tables.join(", "))).unwrap();
    // Acknowledged from the spool; every commit is refused.
    assert_eq!(run_load(&LoadOptions::new(&name, Module::Dpi, producer, 1, 1000)).acked, 1000);
    wait_for(python, &cluster, Module::Dpi, "stalled", |v| {
        v.get("applianced_lane_unsent_records").is_some_and(|n| *n > 0.0)
            && v.get("applianced_lane_database_resets_total").is_some_and(|n| *n >= 2.0)
            && v.get("applianced_lane_commit_lag_seconds").is_some_and(|s| *s > 1.5)
    });
    let line = commit_lag_line(&cluster);
    assert!(line.starts_with("FAIL") && line.contains("dpi:"), "{line}");
    assert!(line.contains("last database error: database refused a request: 42501"), "{line}");
    println!("stalled: {line}");
    wait_for(python, &cluster, Module::Dpi, "counting 42501", |v| {
        v.get("applianced_lane_database_errors_total").is_some_and(|n| *n >= 2.0)
    });
    let dpi = &status_lines(&cluster)["dpi"];
    let (lag, unsent): (f64, u64) = (dpi[3].parse().unwrap(), dpi[5].parse().unwrap());
    assert!(lag > 1.0 && unsent > 0, "status shows the stall: {dpi:?}");
    let error_line = &status_lines(&cluster)["dpi:"];
    assert!(
        error_line.join(" ").contains("last database error") && error_line.join(" ").contains("42501"),
        "{error_line:?}"
    );
    // The supervisor logged the stall (it reads the reports every second),
    // with the lane and its last error, and not again within the interval.
    let stalled_lines = || -> Vec<String> {
        let log = std::fs::read_to_string(&log_path).unwrap();
        log.lines().filter(|l| l.contains("lane stalled")).map(str::to_string).collect()
    };
    let started = Instant::now();
    while stalled_lines().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(60), "the supervisor never logged the stall");
        std::thread::sleep(Duration::from_millis(200));
    }
    let lines = stalled_lines();
    assert!(lines[0].contains("lane=\"dpi\"") && lines[0].contains("42501"), "{lines:?}");
    let interval_s = applianced::base::limits::LANE_STALL_LOG_INTERVAL_MS / 1000;
    let allowed = 1 + (started.elapsed().as_secs() + 5) / interval_s;
    assert!(lines.len() as u64 <= allowed, "logged {} times in {:?}: {lines:?}", lines.len(), started.elapsed());
    // The cause removed: the lane commits its backlog, and all recovers.
    cluster.admin().simple_query(&format!("GRANT INSERT ON {} TO {writer}", tables.join(", "))).unwrap();
    assert_eq!(cluster.committed_rows(Module::Dpi, producer, 1, 1000), (1000, 1000));
    wait_for(python, &cluster, Module::Dpi, "recovered", |v| {
        v.get("applianced_lane_unsent_records") == Some(&0.0)
            && v.get("applianced_lane_commit_lag_seconds") == Some(&0.0)
    });
    let line = commit_lag_line(&cluster);
    assert!(line.starts_with("ok"), "{line}");
}

/// The supervisor's metrics socket, scraped with `applianced metrics
/// --instance` while four loads run and after: every scrape parses as
/// OpenMetrics; the counters end equal to what the loads were acknowledged
/// and PostgreSQL committed; the processes' CPU and memory, the lanes'
/// sandbox layers and partition maintenance are there; the textfile is
/// the same exposition. Logs are JSON (APPLIANCED_LOG_FORMAT) in this run,
/// lanes included. As root, another uid connecting gets no byte.
#[test]
fn the_metrics_socket_serves_during_a_load_and_counts_what_was_acknowledged() {
    const LOAD_EVENTS: u64 = 40_000;
    let python = parser_python();
    let cluster = TestCluster::start();
    let name = instance();
    let textfile = std::path::Path::new(cluster.path()).join("appliance.prom");
    let _appliance = cluster.appliance_with_env(
        &name,
        &["--metrics-textfile", textfile.to_str().unwrap()],
        &[("APPLIANCED_LOG_FORMAT", "json")],
    );
    let scrape_socket = || {
        let output = common::applianced(&["metrics", "--instance", &name]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        common::stdout(&output)
    };
    let loads: Vec<_> = Module::ALL
        .into_iter()
        .enumerate()
        .map(|(i, module)| {
            let name = name.clone();
            std::thread::spawn(move || run_load(&LoadOptions::new(&name, module, 970 + i as u64, 1, LOAD_EVENTS)))
        })
        .collect();
    // Scrape while the loads run (at least once, however fast they are).
    let mut during = 0;
    while during == 0 || loads.iter().any(|l| !l.is_finished()) {
        parse(python, &scrape_socket());
        during += 1;
    }
    for (load, module) in loads.into_iter().zip(Module::ALL) {
        assert_eq!(load.join().unwrap().acked, LOAD_EVENTS, "{module:?}");
    }
    for (i, module) in Module::ALL.into_iter().enumerate() {
        assert_eq!(cluster.committed_rows(module, 970 + i as u64, 1, LOAD_EVENTS), (LOAD_EVENTS, LOAD_EVENTS));
    }
    let started = Instant::now();
    let (text, values) = loop {
        let text = scrape_socket();
        let values = parse(python, &text);
        let equal =
            |sample: &str, m: Module| values.get(&(sample.into(), m.name().into())) == Some(&(LOAD_EVENTS as f64));
        let maintained = values
            .get(&("applianced_partition_maintenance_last_success_timestamp_seconds".to_string(), String::new()))
            .is_some_and(|t| *t > 0.0);
        if maintained
            && Module::ALL.into_iter().all(|m| {
                equal("applianced_lane_events_acknowledged_total", m)
                    && equal("applianced_lane_events_committed_total", m)
            })
        {
            break (text, values);
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the socket never showed every commit: {values:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("{during} scrapes during the load parsed; after it:\n{text}");
    for process in ["supervisor", "lane-core", "lane-dpi", "lane-linux_agent", "lane-windows_agent", "postgres"] {
        let cpu = format!("applianced_process_cpu_seconds_total{{process=\"{process}\"}} ");
        let rss = format!("applianced_process_resident_memory_bytes{{process=\"{process}\"}} ");
        assert!(text.contains(&cpu) && text.contains(&rss), "{process}");
    }
    for module in Module::ALL {
        let all = format!("applianced_lane_sandbox_enforced{{lane=\"{}\",layer=\"all\"}} ", module.name());
        assert!(text.contains(&all), "{module:?}");
        let value = |sample: &str| values[&(sample.to_string(), module.name().to_string())];
        assert_eq!(value("applianced_lane_restarts_total"), 0.0);
        assert!(value("applianced_lane_connections_admitted_total") >= 1.0, "{module:?}");
        assert!(value("applianced_lane_credit_stalls_total") >= 0.0, "{module:?}");
    }
    assert!(
        values[&("applianced_partition_maintenance_last_success_timestamp_seconds".to_string(), String::new())] > 0.0
    );
    // The textfile: the same families, rewritten every second.
    let file = std::fs::read_to_string(&textfile).unwrap();
    let from_file = parse(python, &file);
    assert!(from_file.contains_key(&("applianced_lane_events_committed_total".to_string(), "dpi".to_string())));
    // Another uid gets no byte (as root: nobody, with a copy of the binary it may run).
    if common::is_root() {
        let dir = std::env::temp_dir().join(format!("metrics-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("applianced");
        std::fs::copy(common::BIN, &bin).unwrap();
        let mode = |path: &std::path::Path, mode| {
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap()
        };
        mode(&dir, 0o755);
        mode(&bin, 0o755);
        let output = Command::new("runuser")
            .args(["-u", "nobody", "--"])
            .arg(&bin)
            .args(["metrics", "--instance", &name, "--server-uid", "0"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && output.stdout.is_empty(), "nobody was served: {stderr}");
        assert!(stderr.contains("closed without a byte"), "{stderr}");
        let text = scrape_socket();
        assert!(!text.contains("applianced_metrics_scrapes_total{outcome=\"refused\"} 0\n"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The systemd protocol, as the packaged unit (Type=notify, WatchdogSec=)
/// sees it: the supervisor sends READY=1 once every lane serves, then
/// WATCHDOG=1 from its loop, again and again; received on a datagram
/// socket standing in for systemd's `$NOTIFY_SOCKET`. Waits for the
/// datagrams (bounded only for a hung test), never for a time.
#[test]
fn the_supervisor_tells_systemd_it_is_ready_then_keeps_the_watchdog_fed() {
    let cluster = TestCluster::start();
    let name = instance();
    let path = cluster.dir.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let _appliance = cluster.appliance_with_env(&name, &[], &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let next = || {
        let mut buffer = [0u8; 512];
        let n = socket.recv(&mut buffer).expect("no notification from the supervisor within 60 s");
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    };
    let first = next();
    assert!(first.starts_with("READY=1"), "{first}");
    for _ in 0..3 {
        assert_eq!(next(), "WATCHDOG=1");
    }
}
