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
/// the lane; once the privilege is back, everything recovers.
#[cfg(feature = "failpoints")]
#[test]
fn a_stalled_lane_shows_in_its_metrics_and_fails_selftest_until_it_recovers() {
    let python = parser_python();
    let cluster = TestCluster::start();
    let name = instance();
    let _appliance = cluster.appliance(&name, &[]);
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
    println!("stalled: {line}");
    let dpi = &status_lines(&cluster)["dpi"];
    let (lag, unsent): (f64, u64) = (dpi[3].parse().unwrap(), dpi[5].parse().unwrap());
    assert!(lag > 1.0 && unsent > 0, "status shows the stall: {dpi:?}");
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
