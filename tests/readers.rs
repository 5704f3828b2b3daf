//! What a Core reader sees while a lane commits over several PostgreSQL
//! connections: a keyset tailer in ingest order, (ingest_time,
//! producer_id, producer_seq), reading the `core_api` views as the
//! `ransomeye_core_reader` role during a burst of four producers, one
//! after another, on one lane with three commit streams, sees every row
//! exactly once. A row that
//! became visible behind the tailer's position (a transaction committing
//! after a later one, or a later batch with an earlier ingest_time) would
//! never be read, and the count would fall short. The burst's commits wait
//! behind a lock until transactions are in flight on several connections,
//! so the property is tested against parallel commits, whatever the
//! machine's speed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use applianced::model::matrix::Module;
use applianced::model::schema::EVENT_TABLES;
use applianced::pg::Connection;
use applianced::producer::load::{LoadOptions, run_load};
use common::{TestCluster, instance};

/// Events per producer; four producers on the DPI lane.
const EVENTS: u64 = 60_000;
const PRODUCERS: [u64; 4] = [2101, 2102, 2103, 2104];
// The first producer's burst needs more than one transaction.
const _: () = assert!(EVENTS as usize > applianced::base::limits::TRANSACTION_ROWS_MAX);
/// Rows per keyset page: small, so the tailer reads while the burst commits.
const PAGE_ROWS: u32 = 2_000;

/// One DPI view's keyset cursor: the key of the last row read.
struct Cursor {
    view: String,
    last: (String, String, String),
}

/// Read one page past the cursor; record each (producer, seq) read.
fn read_page(conn: &mut Connection, cursor: &mut Cursor, seen: &mut HashMap<(u64, u64), u32>) -> usize {
    let (time, producer, seq) = &cursor.last;
    let sql = format!(
        "SELECT ingest_time, producer_id, producer_seq FROM {} \
         WHERE ingest_time >= '{time}' AND (ingest_time, producer_id, producer_seq) > ('{time}', {producer}, {seq}) \
         ORDER BY ingest_time, producer_id, producer_seq LIMIT {PAGE_ROWS}",
        cursor.view
    );
    let rows = conn.simple_query(&sql).unwrap();
    for row in &rows {
        let key = (row[1].as_deref().unwrap().parse().unwrap(), row[2].as_deref().unwrap().parse().unwrap());
        *seen.entry(key).or_default() += 1;
    }
    if let Some(row) = rows.last() {
        cursor.last = (row[0].clone().unwrap(), row[1].clone().unwrap(), row[2].clone().unwrap());
    }
    rows.len()
}

#[test]
fn a_keyset_tailer_sees_every_row_of_a_parallel_burst_exactly_once() {
    let cluster = TestCluster::start();
    let name = instance();
    let mut appliance = cluster.appliance(&name, &["--commit-streams", "3"]);
    let mut conn = cluster.connect("ransomeye_core_reader");
    let since = conn.query_value("SELECT clock_timestamp()::text").unwrap();
    let mut cursors: Vec<Cursor> = EVENT_TABLES
        .iter()
        .filter(|t| t.module == Module::Dpi)
        .map(|t| Cursor { view: t.view_name(), last: (since.clone(), "0".into(), "0".into()) })
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&done);
    let tailer = std::thread::spawn(move || {
        let mut seen = HashMap::new();
        let mut pages = 0u64;
        loop {
            // Read once more after the burst is known committed: the
            // final pass must find nothing new for the tail to end.
            let finished = flag.load(Ordering::Acquire);
            let mut read = 0;
            for cursor in &mut cursors {
                read += read_page(&mut conn, cursor, &mut seen);
                pages += 1;
            }
            if finished && read == 0 {
                return (seen, pages);
            }
            if read == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    // One producer after another, each as soon as the one before was
    // acknowledged (spool-durable, long before it is committed): the
    // lane's backlog then holds transactions of different producers, which
    // nothing but the commit order keeps from committing out of order.
    // During the first producer's burst (more than one transaction's rows)
    // commits wait behind a lock on the watermark table, which
    // watermark_advance updates: the backlog grows and the lane's other
    // connections take transactions while the first waits, so parallel
    // transactions are certain, not a matter of timing. ACKs do not wait.
    let mut blocker = cluster.admin();
    blocker.simple_query("BEGIN; LOCK TABLE appliance.producer_watermarks IN SHARE MODE").unwrap();
    for (n, producer) in PRODUCERS.into_iter().enumerate() {
        let report = run_load(&LoadOptions::new(&name, Module::Dpi, producer, 1, EVENTS));
        assert_eq!(report.acked, EVENTS);
        if n == 0 {
            // Wait for the lane's report (every LANE_METRICS_INTERVAL_MS)
            // of a transaction sent while another was in flight (bounded
            // for a failing run only), then let the commits go.
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while lane_metric(&name, "dpi", "transactions_overlapped") == 0 {
                assert!(std::time::Instant::now() < deadline, "no transaction went out while another was in flight");
                std::thread::sleep(Duration::from_millis(100));
            }
            blocker.simple_query("COMMIT").unwrap();
        }
    }
    for producer in PRODUCERS {
        assert_eq!(cluster.committed_rows(Module::Dpi, producer, 1, EVENTS), (EVENTS, EVENTS), "producer {producer}");
    }
    done.store(true, Ordering::Release);
    let (seen, pages) = tailer.join().unwrap();
    let overlapped = lane_metric(&name, "dpi", "transactions_overlapped");
    appliance.stop().unwrap();
    let duplicates: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(duplicates.is_empty(), "rows read twice: {duplicates:?}");
    for producer in PRODUCERS {
        let missed: Vec<u64> = (1..=EVENTS).filter(|seq| !seen.contains_key(&(producer, *seq))).take(5).collect();
        assert!(missed.is_empty(), "producer {producer}: rows never read by the tailer, e.g. seqs {missed:?}");
    }
    assert_eq!(seen.len() as u64, EVENTS * PRODUCERS.len() as u64);
    println!(
        "tailer: {} rows read once each in {pages} keyset pages; dpi transactions overlapped: {overlapped}",
        seen.len()
    );
}

/// A counter of one lane from `applianced metrics --instance`.
fn lane_metric(instance: &str, lane: &str, key: &str) -> u64 {
    let output = common::applianced(&["metrics", "--instance", instance]);
    let text = common::stdout(&output);
    let prefix = format!("applianced_lane_{key}_total{{lane=\"{lane}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {prefix} in:\n{text}")) as u64
}
