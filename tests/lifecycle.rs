//! Partition lifecycle against a real cluster and the real appliance:
//! ten simulated days of ingest (the test build's simulated clock), an
//! interrupted DETACH ... CONCURRENTLY finished by the next retention run,
//! and a transaction-id wraparound rehearsal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use applianced::model::matrix::Module;
use applianced::producer::load::{LoadOptions, run_load};
use common::{TestCluster, instance};

fn unix_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Needs the simulated clock of the test build (`--features failpoints`).
#[cfg(feature = "failpoints")]
mod simulated_days {
    use super::*;
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use common::BIN;

    /// Days (since 1970) of the attached day partitions of one module, lowest and highest.
    fn partition_days(cluster: &TestCluster, module: Module) -> (i64, i64) {
        let value = cluster
            .admin()
            .query_value(&format!(
                "SELECT min(d) || ' ' || max(d) FROM (SELECT (to_date(right(c.relname, 8), 'YYYYMMDD') - date '1970-01-01') AS d \
                 FROM appliance.event_tables e JOIN pg_namespace n ON n.nspname = e.schema_name \
                 JOIN pg_class p ON p.relnamespace = n.oid AND p.relname = e.table_name \
                 JOIN pg_inherits i ON i.inhparent = p.oid JOIN pg_class c ON c.oid = i.inhrelid \
                 WHERE e.schema_name = '{}') x",
                module.schema()
            ))
            .unwrap();
        let (lo, hi) = value.split_once(' ').unwrap();
        (lo.parse().unwrap(), hi.parse().unwrap())
    }

    /// The longest time any lane backend is seen waiting for a lock, sampled
    /// every 10 ms until `stop` is set.
    fn sample_lock_waits(cluster: &TestCluster, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(f64, u64)> {
        let params = cluster.params(applianced::base::limits::ADMIN_ROLE);
        std::thread::spawn(move || {
            let mut conn = applianced::pg::Connection::connect(&params).unwrap();
            let (mut longest, mut samples) = (0.0f64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let value = conn
                    .query_value(
                        "SELECT coalesce(max(extract(epoch FROM clock_timestamp() - query_start)), 0)::text \
                         FROM pg_stat_activity WHERE application_name LIKE 'applianced-lane-%' AND wait_event_type = 'Lock'",
                    )
                    .unwrap();
                longest = longest.max(value.parse().unwrap());
                samples += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            (longest, samples)
        })
    }

    /// The documented bound on a lane's lock wait during partition maintenance
    /// (hardening/DATA-PLANE.md §3.2): creating, attaching, detaching and
    /// dropping partitions never makes ingest queue for this long.
    const LANE_LOCK_WAIT_BOUND_S: f64 = 1.0;

    #[test]
    fn ten_simulated_days_of_ingest_roll_partitions_without_errors_or_lock_waits() {
        let cluster = TestCluster::start();
        let name = instance();
        let start_s = unix_s();
        let speed = 28_800; // 8 simulated hours per second: 10 days in 30 s
        let clock = format!("{start_s}:{start_s}:{speed}");
        // A simulated day is 3 s of real time, so the slack of the partition
        // window is short: a row is quarantined as outside it if its commit
        // lags its ingest_time by the retention (5 days: 15 s; the spool
        // acknowledges before the commit), or if a maintenance pass is
        // late by the horizon (the default, 7 days: 21 s; a pass takes
        // 0.5-4 s here). With retention 5, ten days still drop five or more.
        let retention_days = 5;
        let horizon = applianced::base::limits::PARTITION_DAYS_AHEAD_DEFAULT as i64;
        let retention: Vec<String> = Module::ALL.iter().map(|m| format!("{}={retention_days}", m.name())).collect();
        let mut args = Vec::new();
        for r in &retention {
            args.extend(["--retention", r.as_str()]);
        }
        let mut appliance = applianced::tools::demo::Appliance::start_with_env(
            Path::new(BIN),
            &cluster.dir,
            &name,
            &args,
            &[(applianced::base::clock::TEST_CLOCK_ENV, clock.as_str())],
        )
        .unwrap();
        // Any failed batch transaction (or failed maintenance call) is a rollback.
        let rollbacks = "SELECT xact_rollback::text FROM pg_stat_database WHERE datname = current_database()";
        let rollbacks_before: u64 = cluster.admin().query_value(rollbacks).unwrap().parse().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = sample_lock_waits(&cluster, stop.clone());
        let modules = [Module::Dpi, Module::LinuxAgent, Module::WindowsAgent];
        let per_round = 5_000u64;
        let mut rounds = 0u64;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(31) {
            let handles: Vec<_> = modules
                .iter()
                .map(|module| {
                    let mut options = LoadOptions::new(&name, *module, 3000, 1, per_round);
                    options.start_seq = rounds * per_round + 1;
                    let module = *module;
                    (module, std::thread::spawn(move || run_load(&options)))
                })
                .collect();
            for (module, handle) in handles {
                let report = handle.join().unwrap();
                assert_eq!(report.acked, per_round, "round {rounds} {module:?}: {report:?}");
                assert_eq!(report.rejected, 0, "round {rounds} {module:?}");
            }
            rounds += 1;
        }
        let mut admin = cluster.admin();
        let wait = Duration::from_secs(applianced::base::limits::COMMIT_WAIT_S);
        for module in modules {
            assert!(
                applianced::tools::demo::wait_committed(&mut admin, module, 3000, 1, rounds * per_round, wait).unwrap()
            );
        }
        stop.store(true, Ordering::Relaxed);
        let (longest_wait, samples) = sampler.join().unwrap();
        // Statistics reach pg_stat_database within about a second of a backend's transaction.
        std::thread::sleep(Duration::from_secs(2));
        let rollbacks_after: u64 = admin.query_value(rollbacks).unwrap().parse().unwrap();
        assert_eq!(rollbacks_after, rollbacks_before, "transactions rolled back during the roll (failed batches?)");
        // Wait for a maintenance run that started after the load ended: the
        // run in progress then finishes first (+1), the next began after (+2).
        let embedded = applianced::control::cluster::Embedded::load(&cluster.dir).unwrap();
        let state = &embedded.dir;
        // That run must also have summarized every closed-day index (a leaf
        // being vacuumed or analyzed then is skipped, and the next run retries).
        let status = || applianced::control::maintenance::MaintenanceStatus::load(state).unwrap_or_default();
        let runs_after_load = status().runs;
        let deadline = Instant::now() + wait;
        loop {
            let last = status();
            if last.runs >= runs_after_load + 2 && last.summarize_skipped == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "no complete maintenance run within {wait:?} after the load: {last:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let simulated_days = (unix_s() - start_s) * speed / 86_400;
        assert!(simulated_days >= 10, "only {simulated_days} simulated days passed");
        // Rows quarantined as outside the window, per module: how many, and
        // how far (simulated days) their ingest_time was inside the lower and
        // the upper bound the lane had read (negative: beyond that bound),
        // and their commit lag (received_at, a real time, minus the real time
        // of their simulated ingest_time, seconds).
        let code = applianced::codec::frame::RejectCode::PartitionWindow as u16;
        let window_quarantined = admin
            .query_value(&format!(
                "SELECT coalesce(string_agg(format('%s: %s rows, ingest - lo %s..%s d, hi - ingest %s..%s d, commit lag %s..%s s', \
                 m, n, round(lo_min, 2), round(lo_max, 2), round(hi_min, 2), round(hi_max, 2), round(lag_min, 1), round(lag_max, 1)), '; '), '') \
                 FROM (SELECT m, count(*) AS n, min(i - l) / 86400e6 AS lo_min, max(i - l) / 86400e6 AS lo_max, \
                 min(h - i) / 86400e6 AS hi_min, max(h - i) / 86400e6 AS hi_max, \
                 min(r - t) AS lag_min, max(r - t) AS lag_max FROM ( \
                 SELECT m, x[1]::numeric AS i, x[2]::numeric AS l, x[3]::numeric AS h, \
                 extract(epoch FROM received_at) AS r, {start_s} + (x[1]::numeric / 1e6 - {start_s}) / {speed} AS t FROM ( \
                 SELECT 'dpi' AS m, received_at, reason FROM dpi.quarantine WHERE reason_code = {code} UNION ALL \
                 SELECT 'linux_agent', received_at, reason FROM linux_agent.quarantine WHERE reason_code = {code} UNION ALL \
                 SELECT 'windows_agent', received_at, reason FROM windows_agent.quarantine WHERE reason_code = {code}) q, \
                 regexp_match(reason, 'ingest_time (-?[0-9]+) us is outside every partition window \\[(-?[0-9]+), (-?[0-9]+)\\)') x \
                 ) r GROUP BY m ORDER BY m) s"
            ))
            .unwrap();
        assert_eq!(window_quarantined, "", "events fell outside every partition window");
        // Every partition, old and new, has exactly the matrix's privileges
        // (selftest reads the simulated clock for "today" from the same variable).
        let selftest = std::process::Command::new(BIN)
            .args(["selftest", "--state-dir", cluster.path()])
            .env(applianced::base::clock::TEST_CLOCK_ENV, &clock)
            .output()
            .unwrap();
        let text = common::stdout(&selftest);
        assert!(selftest.status.success(), "{text}");
        assert!(text.contains("ok   table privileges"), "{text}");
        assert!(text.contains("ok   no pending detach"), "{text}");
        assert!(text.contains("ok   partition maintenance"), "{text}");
        assert!(
            longest_wait < LANE_LOCK_WAIT_BOUND_S,
            "a lane backend waited {longest_wait:.3} s for a lock (bound {LANE_LOCK_WAIT_BOUND_S} s)"
        );
        // Statistics are flushed when backends exit: stop the appliance, then read them.
        appliance.stop().unwrap();
        // With the appliance stopped (and its cluster started alone again) the
        // partitions stay as its last maintenance run left them: exactly the
        // retention window of the day that run used, and the horizon ahead of
        // it. That run began after the load ended, so after ten simulated days.
        embedded.start().unwrap();
        let last = applianced::control::maintenance::MaintenanceStatus::load(state).expect("maintenance status");
        assert!(last.last_error.is_empty(), "the last maintenance run failed: {last:?}");
        let start_day = start_s.div_euclid(86_400);
        assert!(
            last.retention_day >= start_day + 10,
            "last maintenance run on day {} ({last:?})",
            last.retention_day - start_day
        );
        for module in modules {
            let (lo, hi) = partition_days(&cluster, module);
            assert_eq!(
                lo,
                last.retention_day - retention_days,
                "{module:?}: oldest partition day (retention), {last:?}"
            );
            assert_eq!(hi, last.partitions_day + horizon, "{module:?}: newest partition day (horizon), {last:?}");
        }
        // The two closed days' leaves were summarized by that run (autosummarize
        // is off on the leaves): summarizing them again finds no new range.
        let mut admin = cluster.admin();
        let closed = |d: i64| applianced::base::clock::date_text(d);
        let unsummarized = admin
            .query_value(&format!(
                "SET ROLE ransomeye_owner; SELECT coalesce(sum(brin_summarize_new_values(x.indexrelid)), 0)::text \
                 FROM appliance.event_tables e JOIN pg_namespace n ON n.nspname = e.schema_name \
                 JOIN pg_class p ON p.relnamespace = n.oid AND p.relname = e.table_name \
                 JOIN pg_inherits d ON d.inhparent = p.oid JOIN pg_class dc ON dc.oid = d.inhrelid \
                 JOIN pg_inherits l ON l.inhparent = dc.oid JOIN pg_index x ON x.indrelid = l.inhrelid \
                 JOIN pg_class ic ON ic.oid = x.indexrelid JOIN pg_am am ON am.oid = ic.relam AND am.amname = 'brin' \
                 WHERE to_date(right(dc.relname, 8), 'YYYYMMDD') BETWEEN '{}'::date AND '{}'::date",
                closed(last.retention_day - 2),
                closed(last.retention_day - 1)
            ))
            .unwrap();
        assert_eq!(unsummarized, "0", "BRIN ranges of the closed days left unsummarized");
        admin.execute("RESET ROLE").unwrap();
        // No autosummarize work item was refused (PostgreSQL logs each one).
        let log = applianced::control::cluster::read_pg_log(
            &applianced::control::cluster::StateDir::new(&cluster.dir).unwrap(),
        )
        .unwrap();
        let refused = log.matches("request for BRIN range summarization").count();
        assert_eq!(refused, 0, "autosummarize requests were logged as not recorded");
        let init = common::applianced(&["init", "--state-dir", cluster.path(), "--partition-days-ahead", "2"]);
        assert!(init.status.success());
        let mut admin = cluster.admin();
        let dead = admin
            .query_value(
                "SELECT coalesce(sum(s.n_dead_tup), 0)::text FROM pg_stat_user_tables s \
                 JOIN pg_inherits i ON i.inhrelid = s.relid JOIN pg_inherits d ON d.inhrelid = i.inhparent \
                 JOIN pg_class p ON p.oid = d.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace \
                 JOIN appliance.event_tables e ON e.schema_name = n.nspname AND e.table_name = p.relname",
            )
            .unwrap();
        let hot = admin
            .query_value(
                "SELECT n_tup_upd || ' ' || n_tup_hot_upd FROM pg_stat_user_tables \
                 WHERE schemaname = 'appliance' AND relname = 'producer_watermarks'",
            )
            .unwrap();
        let (updates, hot_updates) = hot.split_once(' ').unwrap();
        let (updates, hot_updates): (f64, f64) = (updates.parse().unwrap(), hot_updates.parse().unwrap());
        let ratio = hot_updates / updates.max(1.0);
        assert_eq!(dead, "0", "dead tuples in event tables after the load");
        assert!(updates > 0.0 && ratio > 0.9, "watermark HOT ratio {ratio:.3} ({hot_updates} of {updates})");
        println!(
            "lifecycle: {simulated_days} simulated days in {:.0} s, {rounds} rounds x 3 lanes x {per_round} events, \
             partitions rolled (retention {retention_days} days, horizon {horizon}), rolled-back transactions 0, longest lane lock wait {longest_wait:.3} s over {samples} samples, \
             dead tuples in event tables {dead}, watermark HOT ratio {ratio:.3} ({hot_updates} of {updates} updates)",
            started.elapsed().as_secs_f64()
        );
    }
}

/// A DETACH ... CONCURRENTLY cancelled half-way leaves the partition
/// "detach pending" (selftest fails on it); the next retention run
/// finishes it with FINALIZE and drops it.
#[test]
fn an_interrupted_detach_is_finished_by_the_next_retention_run() {
    let cluster = TestCluster::start();
    let mut admin = cluster.admin();
    let today = unix_s().div_euclid(86_400);
    let day = applianced::base::clock::date_text(today + 2).replace('-', "");
    let child = format!("dpi.flows_p{day}");
    // A reader's open transaction holds a snapshot that can see the
    // partition: the detach's second phase waits for it, and is cancelled.
    let mut reader = cluster.admin();
    reader.execute(&format!("BEGIN; SELECT count(*) FROM {child}")).unwrap();
    admin.execute("SET statement_timeout = '1s'").unwrap();
    let detach = admin.execute(&format!("ALTER TABLE dpi.flows DETACH PARTITION {child} CONCURRENTLY"));
    assert!(detach.is_err(), "the detach was expected to be cancelled while the reader holds its snapshot");
    admin.execute("RESET statement_timeout").unwrap();
    reader.execute("COMMIT").unwrap();
    let pending = admin.query_value("SELECT count(*) FROM pg_inherits WHERE inhdetachpending").unwrap();
    assert_eq!(pending, "1");
    let output = cluster.selftest(&[]);
    let text = common::stdout(&output);
    assert!(!output.status.success() && text.contains("FAIL no pending detach"), "{text}");
    let embedded = applianced::control::cluster::Embedded::load(&cluster.dir).unwrap();
    let retention: BTreeMap<Module, u32> = Module::ALL.iter().map(|m| (*m, 30)).collect();
    let report = applianced::control::maintenance::apply_retention(&embedded, &retention, today).unwrap();
    assert_eq!(report.finalized, vec![child.clone()]);
    let gone = admin.query_value(&format!("SELECT to_regclass('{child}') IS NULL")).unwrap();
    assert_eq!(gone, "t");
    // The horizon is restored by the next maintenance run, with the matrix's privileges.
    applianced::control::maintenance::maintain_partitions(&embedded, applianced::base::clock::today_days(), 2).unwrap();
    let output = cluster.selftest(&[]);
    assert!(output.status.success(), "{}", common::stdout(&output));
    println!("interrupted detach: pending 1 -> finalized {:?}; selftest passes after maintenance", report.finalized);
}

/// The maintenance pass's BRIN summarization of a closed day skips a leaf
/// that a vacuum or analyze holds (simulated by a session holding its
/// SHARE UPDATE EXCLUSIVE lock) without raising an error, so the pass and
/// its transaction succeed, and the next pass summarizes it.
#[test]
fn summarization_skips_a_locked_leaf_without_an_error() {
    let cluster = TestCluster::start();
    let today = unix_s().div_euclid(86_400);
    let leaf = format!("dpi.flows_p{}_h0", applianced::base::clock::date_text(today - 1).replace('-', ""));
    let mut admin = cluster.admin();
    let indexes = admin
        .query_value(&format!(
            "SELECT string_agg(format('%I.%I', n.nspname, c.relname), ',' ORDER BY c.relname) FROM pg_index x \
             JOIN pg_class c ON c.oid = x.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_am am ON am.oid = c.relam AND am.amname = 'brin' WHERE x.indrelid = '{leaf}'::regclass"
        ))
        .unwrap();
    let locked: Vec<String> = indexes.split(',').map(str::to_string).collect();
    assert!(!locked.is_empty() && !locked[0].is_empty(), "no BRIN index on {leaf}");
    let mut holder = cluster.admin();
    holder.execute(&format!("BEGIN; LOCK TABLE {leaf} IN SHARE UPDATE EXCLUSIVE MODE")).unwrap();
    // The function returns NULL (the statement, so its transaction, succeeds).
    admin.execute("SET ROLE ransomeye_owner").unwrap();
    let value = admin
        .query_nullable_value(&format!(
            "SELECT appliance.summarize_brin_nowait('{}'::regclass, {})",
            locked[0],
            applianced::base::limits::SUMMARIZE_LOCK_TIMEOUT_MS
        ))
        .unwrap();
    assert_eq!(value, None, "a locked leaf: NULL, not an error");
    admin.execute("RESET ROLE").unwrap();
    let embedded = applianced::control::cluster::Embedded::load(&cluster.dir).unwrap();
    let retention: BTreeMap<Module, u32> = Module::ALL.iter().map(|m| (*m, 30)).collect();
    let report = applianced::control::maintenance::apply_retention(&embedded, &retention, today).unwrap();
    assert_eq!(report.summarize_skipped, locked, "exactly the locked leaf's indexes are skipped");
    holder.execute("COMMIT").unwrap();
    let report = applianced::control::maintenance::apply_retention(&embedded, &retention, today).unwrap();
    assert!(report.summarize_skipped.is_empty(), "{report:?}");
    println!("summarization: skipped {locked:?} while {leaf} was locked; none skipped after");
}

/// Wraparound rehearsal: autovacuum_freeze_max_age at its minimum
/// (100,000), 300,000 transaction ids consumed while a transaction holds
/// the freeze horizon, ingest before and after:
/// autovacuum's anti-wraparound and insert-triggered vacuums keep
/// age(relfrozenxid) of every event partition below the limit.
#[test]
fn wraparound_rehearsal_keeps_relfrozenxid_age_bounded() {
    let cluster = TestCluster::start();
    let freeze_max_age = 100_000u64;
    let mut setup = cluster.admin();
    setup.execute(&format!("ALTER SYSTEM SET autovacuum_freeze_max_age = {freeze_max_age}")).unwrap();
    setup.execute("ALTER SYSTEM SET autovacuum_naptime = '1s'").unwrap();
    drop(setup);
    let stop = common::applianced(&["stop", "--state-dir", cluster.path()]);
    assert!(stop.status.success());
    let init = common::applianced(&["init", "--state-dir", cluster.path(), "--partition-days-ahead", "2"]);
    assert!(init.status.success());
    let name = instance();
    let mut appliance = cluster.appliance(&name, &[]);
    let mut admin = cluster.admin();
    assert_eq!(admin.query_value("SHOW autovacuum_freeze_max_age").unwrap(), freeze_max_age.to_string());
    let load = |producer: u64| {
        let report = run_load(&LoadOptions::new(&name, Module::Dpi, producer, 1, 20_000));
        assert_eq!(report.acked, 20_000);
    };
    load(4000);
    // A transaction holding an xid across the burn (a long-running
    // transaction, the usual cause of wraparound trouble) keeps every vacuum
    // from freezing past it, so the age is certain to cross the limit
    // however early autovacuum reacts; once it ends, autovacuum must bring
    // the age back down while ingest goes on.
    let mut holder = cluster.admin();
    holder.execute("BEGIN; SELECT txid_current()").unwrap();
    // Each EXCEPTION block is a subtransaction; its write takes one xid.
    admin.execute("CREATE TEMP TABLE burn (i int)").unwrap();
    for _ in 0..6 {
        admin
            .execute(
                "DO $$ BEGIN FOR i IN 1..50000 LOOP BEGIN INSERT INTO burn VALUES (i); \
                 EXCEPTION WHEN OTHERS THEN NULL; END; END LOOP; END $$",
            )
            .unwrap();
    }
    let oldest = "SELECT max(age(c.relfrozenxid))::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                  WHERE c.relkind = 'r' AND n.nspname IN ('core', 'dpi', 'linux_agent', 'windows_agent')";
    let peak: u64 = admin.query_value(oldest).unwrap().parse().unwrap();
    assert!(peak > freeze_max_age, "only {peak} xids of age reached: the rehearsal did not cross the limit");
    holder.execute("COMMIT").unwrap();
    drop(holder);
    load(4001);
    let deadline = Instant::now() + Duration::from_secs(120);
    let settled = loop {
        let age: u64 = admin.query_value(oldest).unwrap().parse().unwrap();
        if age < freeze_max_age {
            break age;
        }
        assert!(Instant::now() < deadline, "age(relfrozenxid) still {age} after 120 s (limit {freeze_max_age})");
        std::thread::sleep(Duration::from_millis(500));
    };
    let database: u64 = admin
        .query_value("SELECT age(datfrozenxid)::text FROM pg_database WHERE datname = current_database()")
        .unwrap()
        .parse()
        .unwrap();
    // What holds datfrozenxid back, for the record (not asserted).
    let holding = admin
        .query_value(
            "SELECT c.oid::regclass || ' (' || c.relpersistence::text || ', age ' || age(c.relfrozenxid) || ')' FROM pg_class c \
             WHERE c.relkind IN ('r', 'm', 't') ORDER BY age(c.relfrozenxid) DESC LIMIT 1",
        )
        .unwrap();
    assert!(
        applianced::tools::demo::wait_committed(&mut admin, Module::Dpi, 4001, 1, 20_000, Duration::from_secs(60))
            .unwrap()
    );
    println!(
        "wraparound rehearsal: autovacuum_freeze_max_age {freeze_max_age}; oldest event-table age(relfrozenxid) peaked at {peak}, \
         settled at {settled}; database age(datfrozenxid) {database}, oldest relation {holding}; \
         ingest acknowledged and committed before and after"
    );
    appliance.stop().unwrap();
}
