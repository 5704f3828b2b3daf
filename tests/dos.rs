//! Denial of service from admitted peers, against a running appliance:
//! idle producers holding credit, silent connections holding every slot,
//! a producer that provokes REJECTs and never reads them, connection churn
//! against the log, a flood of protocol errors and failed database logins
//! against both logs, and HELLO churn with fresh producer ids against the
//! producer table. Each attack is run from where an admitted but hostile
//! producer stands (the lane's socket, the appliance's own uid) while a
//! legitimate producer on the same lane must still be served.
//!
//! Verdicts wait for events, never for a time: each legitimate producer
//! must be welcomed with credit and acknowledged while the attack is in
//! place (checked by the attack's sockets still being open), and the
//! latency seen is printed, not asserted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use applianced::base::limits::{CONNECTION_CREDIT_GUARANTEED_BYTES, LANE_CONNECTIONS_MAX, LANE_MEMORY_BOUND_BYTES};
use applianced::codec::frame;
use applianced::model::matrix::Module;
use applianced::producer::client::{ModuleClient, Reply, lane_address};
use applianced::producer::synth;
use bytes::BytesMut;
use common::{TestCluster, instance};

fn uid() -> u32 {
    applianced::base::sys::effective_uid()
}

/// A legitimate producer: connect, check the credit of its WELCOME, send
/// 100 events and wait for their ACK (bounded by `deadline`, which only
/// ends a hung test). Returns the WELCOME's credit and how long the whole
/// exchange took.
fn legitimate(name: &str, producer: u64, deadline: Duration) -> (u64, Duration) {
    let started = Instant::now();
    let mut client = loop {
        match ModuleClient::connect(name, Module::Dpi, uid(), producer, 1) {
            Ok(client) => break client,
            Err(e) => {
                assert!(started.elapsed() < deadline, "the legitimate producer was never welcomed: {e}");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    };
    let credit = client.credit_bytes;
    assert!(credit > 0, "the legitimate producer was welcomed with no credit");
    client.send_events(&synth::events_body(Module::Dpi, producer, 1, 100)).unwrap();
    loop {
        let replies = client.poll_replies(Duration::from_millis(20)).unwrap();
        if replies.iter().any(|r| matches!(r, Reply::Ack { durable_seq: 100, .. })) {
            return (credit, started.elapsed());
        }
        assert!(started.elapsed() < deadline, "the legitimate producer was never acknowledged");
    }
}

/// Whether the lane still holds this connection open (a non-blocking read
/// would block: no EOF, no error).
fn still_open(stream: &mut UnixStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 4096];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => return false,
            Ok(_) => continue, // a WELCOME or CREDIT: still open
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

fn rss_bytes(pid: i32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

/// 16 producers that say HELLO, take their WELCOME's credit and then sit
/// idle used to hold the lane's whole 64 MiB budget (16 x 4 MiB): the next
/// producer got credit 0. Every slot now keeps a guaranteed share
/// unallocated, so the next producer is welcomed with at least that share
/// and acknowledged while the 16 still hold their credit.
#[test]
fn idle_producers_cannot_starve_a_new_one_of_credit() {
    let cluster = TestCluster::start();
    let name = instance();
    let mut appliance = cluster.appliance(&name, &[]);
    let mut hoarders = Vec::new();
    let mut held = 0;
    for producer in 600..616 {
        let client = ModuleClient::connect(&name, Module::Dpi, uid(), producer, 1).unwrap();
        held += client.credit_bytes;
        hoarders.push(client);
    }
    let (credit, took) = legitimate(&name, 700, Duration::from_secs(60));
    assert!(credit >= CONNECTION_CREDIT_GUARANTEED_BYTES as u64, "credit {credit}");
    println!(
        "idle hoarders: 16 connections hold {held} bytes of credit; the new producer got {credit} bytes and its ACK after {took:?}"
    );
    drop(hoarders);
    appliance.stop().unwrap();
}

/// 70 connections that never send a byte used to hold all 64 slots until
/// they left. A new connection now takes the slot of the oldest one that
/// has not said HELLO: the legitimate producer is served while the silent
/// connections are still open (well inside their HELLO deadline).
#[test]
fn silent_connections_cannot_hold_every_slot() {
    let cluster = TestCluster::start();
    let name = instance();
    let mut appliance = cluster.appliance(&name, &[]);
    let address = lane_address(&name, Module::Dpi).unwrap();
    let mut silent: Vec<UnixStream> = (0..70).map(|_| UnixStream::connect_addr(&address).unwrap()).collect();
    let (credit, took) = legitimate(&name, 701, Duration::from_secs(60));
    let open = silent.iter_mut().map(still_open).filter(|open| *open).count();
    // 70 silent ones for 63 slots (one is the legitimate producer's): at
    // most 7 were evicted; the rest still hold their slots.
    assert!(open >= LANE_CONNECTIONS_MAX - 1 - 7, "only {open} silent connections were still open");
    println!(
        "silent connections: 70 opened, {open} still open; the producer got {credit} bytes and its ACK after {took:?}"
    );
    appliance.stop().unwrap();
}

/// A producer that sends events which each earn a REJECT and never reads
/// its replies used to grow the lane's unsent output without bound (800 MB
/// in 45 s, then the lane died). Its queued replies are now bounded: it is
/// paused (no credit), closed with ERROR `NotReading` or `CreditExceeded`,
/// and cut after the linger. The lane keeps its pid, stays under its
/// memory bound, and serves a legitimate producer meanwhile.
#[test]
fn a_producer_that_does_not_read_is_cut_and_the_lane_survives() {
    let cluster = TestCluster::start();
    let name = instance();
    let mut appliance = cluster.appliance(&name, &[]);
    let pid = cluster.lane_pid(Module::Dpi);
    // Events that claim a time before 1970: each is rejected and quarantined.
    // Sent blindly (this producer never reads, so never learns its credit).
    let mut body = BytesMut::new();
    let mut wire = BytesMut::new();
    let per_frame = 1_000u32;
    let mut attacker = ModuleClient::connect(&name, Module::Dpi, uid(), 800, 1).unwrap();
    let started = Instant::now();
    let mut first = 1u64;
    let mut peak = 0;
    let mut sent_frames = 0;
    let cut = loop {
        body.clear();
        frame::encode_events_header(&mut body, first, per_frame);
        for seq in first..first + u64::from(per_frame) {
            let mut fields = BytesMut::new();
            let event = synth::synthesize(Module::Dpi, 800, seq, &mut fields);
            frame::encode_record(&mut body, event.table, &event.source_id, -5, event.field_count, &fields);
        }
        wire.clear();
        frame::encode_frame(&mut wire, frame::Kind::Events, &body);
        if attacker.send_raw(&wire).is_err() {
            break true;
        }
        sent_frames += 1;
        first += u64::from(per_frame);
        peak = peak.max(rss_bytes(pid));
        if started.elapsed() > Duration::from_secs(20) {
            break false;
        }
    };
    assert!(cut, "the lane still reads a producer that has not read a reply for 20 s ({sent_frames} frames)");
    assert_eq!(cluster.lane_pid(Module::Dpi), pid, "the lane was restarted");
    assert!(peak <= LANE_MEMORY_BOUND_BYTES, "lane resident {peak} bytes, bound {LANE_MEMORY_BOUND_BYTES}");
    let (_, took) = legitimate(&name, 801, Duration::from_secs(60));
    println!(
        "non-reading producer: cut after {sent_frames} frames of {per_frame} rejected events ({:?}); lane resident peak {} MiB (bound {} MiB); a producer then acknowledged after {took:?}",
        started.elapsed(),
        peak >> 20,
        LANE_MEMORY_BOUND_BYTES >> 20
    );
    appliance.stop().unwrap();
}

/// Connect-and-close churn from an admitted peer used to write one INFO
/// line per connection. Admissions are logged at most `REJECT_LOG_PER_S`
/// a second (the rest counted), so the log grows by a bounded amount per
/// second whatever the churn.
#[test]
fn connection_churn_does_not_flood_the_log() {
    let cluster = TestCluster::start();
    let name = instance();
    let (run, log_path) = run_logged(&cluster, &name, &[]);
    let before = std::fs::metadata(&log_path).unwrap().len();
    let address = lane_address(&name, Module::Dpi).unwrap();
    let started = Instant::now();
    let connections = 20_000;
    for _ in 0..connections {
        let mut stream = UnixStream::connect_addr(&address).unwrap();
        let _ = stream.write_all(&common::hello_frame(900, 2));
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Let the lane take in the last of them, then measure.
    legitimate(&name, 901, Duration::from_secs(60));
    let grown = std::fs::metadata(&log_path).unwrap().len() - before;
    // Each kind a peer can provoke (admitted, evicted, refused, closed with
    // an ERROR) logs at most REJECT_LOG_PER_S lines a second of 512 bytes.
    let seconds = started.elapsed().as_secs_f64().ceil() + 1.0;
    let bound = (4.0 * f64::from(applianced::base::limits::REJECT_LOG_PER_S) * seconds * 512.0) as u64;
    assert!(
        grown <= bound,
        "{connections} connections in {elapsed:.1} s grew the log by {grown} bytes (bound {bound})"
    );
    println!("churn: {connections} connections in {elapsed:.1} s grew the log by {grown} bytes (bound {bound})");
    run.stop();
}

/// Both logs under a flood at once: an admitted peer opens connection
/// after connection and sends a frame of garbage (each closed with ERROR,
/// a protocol error), while a local user of the database socket fails to
/// log in again and again. The appliance's log grows by at most its rate
/// limit's bound (`REJECT_LOG_PER_S` lines of at most 512 bytes per second
/// and kind); PostgreSQL's log files stay within their size bound (small
/// files here, test builds only, so that the flood passes the bound many
/// times), its oldest lines dropped and what is logged after kept; selftest
/// agrees. Waits for events (the supervisor's pruning), not for a time.
#[test]
fn a_flood_of_protocol_errors_and_failed_logins_leaves_both_logs_within_their_bounds() {
    let files_max: u64 = 3;
    let file_kb: u64 = 64;
    let (files_text, kb_text) = (files_max.to_string(), file_kb.to_string());
    let env =
        [("APPLIANCED_TEST_PG_LOG_FILE_KB", kb_text.as_str()), ("APPLIANCED_TEST_PG_LOG_FILES", files_text.as_str())];
    let cluster = TestCluster::start_with_env(&env);
    let name = instance();
    let (run, log_path) = run_logged(&cluster, &name, &env);
    let dir = applianced::control::cluster::StateDir::new(&cluster.dir).unwrap();
    // limits::pg_log_bytes_max() with these values.
    let pg_bound = (2 * files_max + 1) * file_kb * 1024;
    let before = std::fs::metadata(&log_path).unwrap().len();
    let started = Instant::now();

    // Failed logins, on another thread, all the while.
    let logins = {
        let params: Vec<_> = (0..4 * pg_bound / 150)
            .map(|attempt| {
                let mut params = cluster.params(&format!("flood_{attempt:06}"));
                params.application_name = "flood".into();
                params
            })
            .collect();
        std::thread::spawn(move || {
            for p in &params {
                assert!(applianced::pg::Connection::connect(p).is_err());
            }
            params.len()
        })
    };
    // Protocol errors: a frame that is not one.
    let address = lane_address(&name, Module::Dpi).unwrap();
    let connections = 10_000;
    let mut answered = 0;
    for _ in 0..connections {
        let mut stream = UnixStream::connect_addr(&address).unwrap();
        let _ = stream.write_all(&[0xff; 64]);
        if answered < 3 {
            // A few are read to the end: each gets an ERROR frame, then EOF.
            let mut reply = Vec::new();
            let _ = stream.read_to_end(&mut reply);
            assert!(!reply.is_empty(), "garbage got no ERROR frame");
            answered += 1;
        }
    }
    let failed_logins = logins.join().unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    // Let the lane take in the last of them, then measure.
    legitimate(&name, 902, Duration::from_secs(60));
    let grown = std::fs::metadata(&log_path).unwrap().len() - before;
    let seconds = started.elapsed().as_secs_f64().ceil() + 1.0;
    let bound = (4.0 * f64::from(applianced::base::limits::REJECT_LOG_PER_S) * seconds * 512.0) as u64;
    assert!(grown <= bound, "{connections} protocol errors grew the appliance log by {grown} bytes (bound {bound})");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("suppressed="), "the flood's lines were not rate-limited: {grown} bytes");
    // The lane counted the flood (its metrics report, at most a second old).
    let counted = (0..200).find_map(|_| {
        let sample = applianced::control::launch::read_metrics(&dir, Module::Dpi)?;
        let n = sample.values.get("protocol_errors").copied().unwrap_or(0)
            + sample.values.get("connections_refused").copied().unwrap_or(0);
        if n >= connections {
            return Some(n);
        }
        std::thread::sleep(Duration::from_millis(50));
        None
    });
    assert!(counted.is_some(), "the lane never counted {connections} protocol errors or refusals");

    // The supervisor prunes within one loop period; wait for it.
    let mut sizes = Vec::new();
    for _ in 0..200 {
        let files = applianced::control::cluster::pg_log_files(&dir).unwrap();
        sizes = files.iter().map(|f| std::fs::metadata(f).map_or(0, |m| m.len())).collect();
        if files.len() <= files_max as usize && sizes.iter().all(|s| *s <= 2 * file_kb * 1024) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let total: u64 = sizes.iter().sum();
    assert!(total <= pg_bound, "{total} bytes of PostgreSQL log in files of {sizes:?}, bound {pg_bound}");
    let kept = applianced::control::cluster::read_pg_log(&dir).unwrap();
    assert!(!kept.contains("flood_000000"), "the oldest lines were not dropped: the flood did not pass the bound");
    // What is logged after the flood is kept: one more failed login, waited
    // for (a file the flood pushed past twice its size may have been
    // emptied whole, so the flood's own last lines are not always there).
    let mut params = cluster.params("flood_last");
    params.application_name = "flood".into();
    assert!(applianced::pg::Connection::connect(&params).is_err());
    let kept_last = (0..200).any(|_| {
        let found = applianced::control::cluster::read_pg_log(&dir).unwrap().contains("flood_last");
        if !found {
            std::thread::sleep(Duration::from_millis(50));
        }
        found
    });
    assert!(kept_last, "the log keeps what is logged after the flood");
    let output = std::process::Command::new(common::BIN)
        .args(["selftest", "--state-dir", cluster.path()])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = common::stdout(&output);
    assert!(text.contains("ok   postgresql log:"), "{text}");
    println!(
        "flood: {connections} protocol errors and {failed_logins} failed logins in {elapsed:.1} s; appliance log +{grown} bytes \
         (bound {bound}), PostgreSQL log {total} bytes in {} files (bound {pg_bound})",
        sizes.len()
    );
    run.stop();
}

/// `applianced run` with its log (stderr) in a file of the state directory.
struct LoggedRun(std::process::Child);

impl LoggedRun {
    fn stop(mut self) {
        applianced::base::sys::send_signal(self.0.id() as i32, libc::SIGTERM).unwrap();
        assert!(self.0.wait().unwrap().success());
    }
}

impl Drop for LoggedRun {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = applianced::base::sys::send_signal(self.0.id() as i32, libc::SIGTERM);
            let _ = self.0.wait();
        }
    }
}

fn run_logged(cluster: &TestCluster, name: &str, env: &[(&str, &str)]) -> (LoggedRun, std::path::PathBuf) {
    let log_path = cluster.dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = std::process::Command::new(common::BIN)
        .args(["run", "--state-dir", cluster.path(), "--instance", name])
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut ready = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    while !ready.contains("applianced: ready") {
        ready.clear();
        assert!(std::io::BufRead::read_line(&mut stdout, &mut ready).unwrap() > 0, "run exited before ready");
    }
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    (LoggedRun(child), log_path)
}

/// HELLO churn with fresh producer ids used to grow the lane's producer
/// table without bound (125 MB after 561,000 ids). Producers with no
/// connection whose events are all committed are forgotten beyond the
/// bound (lowered here to 2,000 through the test build's variable, so
/// 10,000 fresh ids pass it five times); the lane logs each time it
/// forgets and the table size, which never passes the bound by more than
/// the producers connected at that moment; a producer is then served.
#[test]
fn fresh_producer_ids_do_not_grow_the_lane_without_bound() {
    let cluster = TestCluster::start();
    let name = instance();
    let bound = 2_000;
    let (run, log_path) =
        run_logged(&cluster, &name, &[(applianced::base::limits::TEST_LANE_PRODUCERS_MAX_ENV, &bound.to_string())]);
    let ids: u64 = std::env::var("APPLIANCED_DOS_PRODUCER_IDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let pid = cluster.lane_pid(Module::Dpi);
    let before = rss_bytes(pid);
    let threads = 4;
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let name = name.clone();
            std::thread::spawn(move || {
                for i in 0..ids / threads {
                    let producer = 10_000 + t * (ids / threads) + i;
                    drop(ModuleClient::connect(&name, Module::Dpi, uid(), producer, 1).unwrap());
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    let (_, took) = legitimate(&name, 998, Duration::from_secs(60));
    let log = std::fs::read_to_string(&log_path).unwrap();
    let sizes: Vec<usize> = log
        .lines()
        .filter(|l| l.contains("idle producers forgotten"))
        .filter_map(|l| l.split("producers=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(!sizes.is_empty(), "{ids} fresh producer ids and the lane never forgot one");
    let largest = sizes.iter().max().copied().unwrap_or(0);
    assert!(largest <= bound, "the producer table held {largest} after forgetting (bound {bound})");
    let after = rss_bytes(pid);
    assert!(after <= LANE_MEMORY_BOUND_BYTES, "lane resident {after} bytes, bound {LANE_MEMORY_BOUND_BYTES}");
    assert_eq!(cluster.lane_pid(Module::Dpi), pid, "the lane was restarted");
    println!(
        "fresh producer ids: {ids} HELLOs in {:?}; {} forgetting passes logged, table at most {largest} after each (bound {bound}); lane resident {} -> {} KiB; a producer then acknowledged after {took:?}",
        started.elapsed(),
        sizes.len(),
        before >> 10,
        after >> 10
    );
    run.stop();
}
