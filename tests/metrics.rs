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
        let output = common::applianced(&["metrics", "--state-dir", cluster.path()]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let values = parse(python, &common::stdout(&output));
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
}
