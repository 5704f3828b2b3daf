//! selftest against a live cluster: passes on a fresh init (also after a
//! second, idempotent init), and fails naming every hand-made drift.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestCluster, applianced, stdout};

#[test]
fn fresh_install_passes_and_init_is_idempotent() {
    let cluster = TestCluster::start();
    let output = cluster.selftest(&[]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    assert_eq!(text.lines().last(), Some("Data-plane hardened. Ready to proceed to Phase B."));
    assert!(text.contains("ok   lane sockets: appliance not running"), "{text}");

    let again = applianced(&["init", "--state-dir", cluster.path(), "--partition-days-ahead", "2"]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(stdout(&again).contains("(0 migration(s) applied now)"), "{}", stdout(&again));
    assert!(stdout(&again).contains("0 daily partition(s) created"), "{}", stdout(&again));

    let json = cluster.selftest(&["--json"]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("selftest --json is JSON");
    assert_eq!(value["ok"], true);
    assert!(value["checks"].as_array().unwrap().len() >= 13);
}

#[test]
fn every_drift_is_named() {
    let cluster = TestCluster::start();
    let drifts = [
        (
            "GRANT SELECT ON linux_agent.process_events TO ransomeye_dpi_writer",
            "unexpected privilege: ransomeye_dpi_writer linux_agent.process_events SELECT",
        ),
        (
            "DO $$ BEGIN EXECUTE format('GRANT INSERT ON linux_agent.%I TO ransomeye_linux_agent_writer', \
             'process_events_p' || to_char((now() AT TIME ZONE 'UTC')::date, 'YYYYMMDD') || '_h0'); END $$",
            "unexpected privilege: ransomeye_linux_agent_writer linux_agent.process_events_p",
        ),
        ("GRANT USAGE ON SCHEMA dpi TO PUBLIC", "unexpected privilege: PUBLIC dpi USAGE"),
        (
            "GRANT UPDATE (reason) ON core.incident_transitions TO ransomeye_core_writer",
            "column-level grant on core.incident_transitions.reason",
        ),
        ("ALTER ROLE ransomeye_windows_agent_writer CREATEDB", "ransomeye_windows_agent_writer has CREATEDB"),
        (
            "GRANT ransomeye_core_reader TO ransomeye_dpi_writer",
            "ransomeye_dpi_writer is a member of ransomeye_core_reader",
        ),
        (
            "GRANT EXECUTE ON FUNCTION appliance.ensure_partitions(date, integer) TO PUBLIC",
            "unexpected privilege: PUBLIC appliance.ensure_partitions(date,integer) EXECUTE",
        ),
        (
            "REVOKE INSERT ON dpi.flows FROM ransomeye_dpi_writer",
            "missing privilege: ransomeye_dpi_writer dpi.flows INSERT",
        ),
    ];
    let mut admin = cluster.admin();
    for (sql, _) in &drifts {
        admin.execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let output = cluster.selftest(&[]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    for (sql, expected) in &drifts {
        assert!(text.contains(expected), "drift `{sql}` not named ({expected}):\n{text}");
    }
    let last = text.lines().last().unwrap_or_default();
    assert!(last.starts_with("selftest failed: "), "{last}");
    for check in
        ["table privileges", "column privileges", "schema privileges", "function privileges", "role attributes"]
    {
        assert!(last.contains(check), "{check} not in {last}");
    }
    assert!(!text.contains("Ready to proceed"));
}

#[test]
fn durability_and_partition_drift_fail() {
    let cluster = TestCluster::start();
    let mut admin = cluster.admin();
    admin.execute("ALTER SYSTEM SET synchronous_commit = off").unwrap();
    admin.execute("SELECT pg_reload_conf()").unwrap();
    admin.execute("ALTER ROLE ransomeye_dpi_writer SET synchronous_commit = off").unwrap();
    // 20,000 aborted inserts leave 20,000 dead tuples (autovacuum kept away from the table).
    admin.execute("ALTER TABLE appliance.batch_ledger SET (autovacuum_enabled = false)").unwrap();
    admin
        .execute(
            "BEGIN; INSERT INTO appliance.batch_ledger SELECT 'probe', g, 1, 1, 1, 1, now() FROM generate_series(1, 20000) g; ROLLBACK",
        )
        .unwrap();
    admin.execute("SELECT pg_stat_force_next_flush()").unwrap();
    admin.execute("SELECT 1").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    admin
        .execute(
            "DO $$ BEGIN EXECUTE format('ALTER TABLE dpi.flows DETACH PARTITION dpi.%I', \
             'flows_p' || to_char((now() AT TIME ZONE 'UTC')::date + 1, 'YYYYMMDD')); END $$",
        )
        .unwrap();
    let output = cluster.selftest(&[]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("synchronous_commit is off"), "{text}");
    assert!(text.contains("override ransomeye_dpi_writer in *: synchronous_commit=off"), "{text}");
    assert!(text.contains("dpi.flows has no attached partition"), "{text}");
    assert!(text.contains("appliance.batch_ledger: 0 live, 20000 dead"), "{text}");
}
