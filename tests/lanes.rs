//! The ingest lanes end to end: real lane processes, a real cluster, the
//! real load client and raw sockets for malformed input and other uids.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use applianced::codec::frame::{self, ErrorCode, Kind};
use applianced::model::matrix::Module;
use applianced::producer::client::{ModuleClient, Reply, lane_address};
use applianced::producer::synth;
use applianced::tools::demo::drive_all;
use bytes::BytesMut;
use common::{BIN, TestCluster, hello_frame, instance, is_root};

fn load(instance: &str, module: &str, events: &str, producer: &str, uid: Option<u32>) -> std::process::Output {
    // As another uid, run a copy that uid can execute wherever the checkout is.
    let mut command = if uid.is_some() { Command::new(common::bin_for_other_users()) } else { Command::new(BIN) };
    command.args(["load", "--module", module, "--events", events, "--producer-id", producer, "--instance", instance]);
    if let Some(uid) = uid {
        command.uid(uid).gid(uid).args(["--server-uid", "0"]);
    }
    command.output().unwrap()
}

#[test]
fn four_lanes_at_once_rows_equal_acknowledgements_and_resend_is_deduplicated() {
    let cluster = TestCluster::start();
    let name = instance();
    let mut appliance = cluster.appliance(&name, &[]);
    for round in 0..2 {
        let reports = drive_all(&name, 5_000);
        for (module, report) in &reports {
            assert_eq!(report.acked, 5_000, "round {round} {module:?}: {report:?}");
            assert_eq!(report.rejected, 0);
            let (rows, distinct) = cluster.committed_rows(*module, 1, 1, 5_000);
            assert_eq!((rows, distinct), (5_000, 5_000), "round {round} {module:?}");
        }
    }
    // Inside each sandboxed lane, the newest spool segment is open with
    // O_DIRECT (its appends bypass the page cache; a second descriptor may
    // be a record being read back), and every segment ends on a 4096-byte
    // block. Where the test's filesystem refuses O_DIRECT, the lanes write
    // through the page cache and only the block rule is checked.
    let probe = cluster.dir.join("spool/dpi/direct-probe");
    std::fs::write(&probe, b"").unwrap();
    let direct_io = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .map_err(|e| eprintln!("O_DIRECT refused here ({e}): not checked"))
        .is_ok();
    std::fs::remove_file(&probe).unwrap();
    for module in Module::ALL {
        let pid = cluster.lane_pid(module);
        let direct = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|fd| {
                let fd = fd.ok()?;
                let target = std::fs::read_link(fd.path()).ok()?;
                target.to_string_lossy().ends_with(".seg").then_some(fd.file_name())
            })
            .filter(|fd| {
                let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.to_string_lossy())).unwrap();
                let flags = info.lines().find_map(|l| l.strip_prefix("flags:")).unwrap().trim();
                u32::from_str_radix(flags, 8).unwrap() & libc::O_DIRECT as u32 != 0
            })
            .count();
        if direct_io {
            assert!((1..=2).contains(&direct), "{module:?}: {direct} O_DIRECT descriptors");
        }
        let spool = cluster.dir.join("spool").join(module.name());
        for (_, path) in applianced::storage::spool::segment_files(&spool).unwrap() {
            let len = std::fs::metadata(&path).unwrap().len();
            assert_eq!(len % 4096, 0, "{}: {len} bytes", path.display());
        }
    }
    // selftest with the appliance running: every lane socket is the
    // appliance's, and one event per lane makes the round trip.
    let output = cluster.selftest(&[]);
    let text = common::stdout(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("ok   lane sockets: bound by the appliance"), "{text}");
    assert!(text.contains("ok   lane round trip: one event per lane acknowledged"), "{text}");
    assert!(text.contains("ok   partition maintenance: runs 1; the last finished"), "{text}");
    // A supervisor whose maintenance stopped succeeding fails selftest: its
    // status file says the last success was longer ago than the bound.
    let embedded = applianced::control::cluster::Embedded::load(&cluster.dir).unwrap();
    let path = applianced::control::maintenance::MaintenanceStatus::path(&embedded.dir);
    let mut status = applianced::control::maintenance::MaintenanceStatus::load(&embedded.dir).unwrap();
    let stale_us = (applianced::base::limits::MAINTENANCE_STALE_S as i64 + 60) * 1_000_000;
    status.last_ok_us = applianced::base::clock::real_us() - stale_us;
    status.last_error = "retention: lock timeout".into();
    std::fs::write(&path, status.render()).unwrap();
    let output = cluster.selftest(&[]);
    let text = common::stdout(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("FAIL partition maintenance"), "{text}");
    assert!(text.contains("the last successful run finished 726"), "{text}");
    assert!(text.contains("s ago; the bound is 7200 s (runs 1;"), "{text}");
    assert!(text.contains("it failed (retention: lock timeout), retried next run)"), "{text}");
    appliance.stop().unwrap();
}

#[test]
fn the_same_load_command_twice_leaves_one_row_per_event() {
    let cluster = TestCluster::start();
    let name = instance();
    let mut appliance = cluster.appliance(&name, &["--io", "poll"]);
    for _ in 0..2 {
        let output = load(&name, "windows_agent", "3000", "77", None);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert!(String::from_utf8_lossy(&output.stdout).contains("acked=3000"));
    }
    assert_eq!(cluster.committed_rows(Module::WindowsAgent, 77, 1, 3000), (3000, 3000));
    let status = std::fs::read_to_string(cluster.dir.join("run/lane-windows_agent.status")).unwrap();
    assert!(status.contains("io_path = \"poll\""), "{status}");
    appliance.stop().unwrap();
}

#[test]
fn peers_are_admitted_only_on_their_own_lane() {
    if !is_root() {
        eprintln!("skipped: acting as other uids needs root");
        return;
    }
    let cluster = TestCluster::start();
    let name = instance();
    let (linux_uid, dpi_uid, stranger) = (40001, 40002, 40003);
    let mut appliance = cluster.appliance(
        &name,
        &["--peer-uid", &format!("linux_agent={linux_uid}"), "--peer-uid", &format!("dpi={dpi_uid}")],
    );
    let ok = load(&name, "linux_agent", "50", "1", Some(linux_uid));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let wrong_lane = load(&name, "dpi", "50", "2", Some(linux_uid));
    assert!(!wrong_lane.status.success(), "the Linux agent's uid was admitted on the DPI lane");
    for module in ["core", "dpi", "linux_agent", "windows_agent"] {
        let refused = load(&name, module, "5", "3", Some(stranger));
        assert!(!refused.status.success(), "uid {stranger} was admitted on {module}");
    }
    assert_eq!(cluster.producer_rows(Module::Dpi, 2), (0, 0));
    assert_eq!(cluster.committed_rows(Module::LinuxAgent, 1, 1, 50), (50, 50));
    appliance.stop().unwrap();
}

#[test]
fn clients_refuse_a_squatter_and_a_second_appliance_refuses_to_start() {
    let cluster = TestCluster::start();
    let name = instance();
    // A squatter binds the DPI name first (as another uid when we can).
    let script = format!(
        "import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_STREAM)\ns.bind('\\0ransomeye/{name}/dpi')\ns.listen(1)\nprint('bound',flush=True)\n\
         c,_=s.accept()\nc.settimeout(2)\nn=0\ntry:\n  while True:\n    d=c.recv(65536)\n    if not d: break\n    n+=len(d)\nexcept Exception: pass\nprint('received',n,flush=True)\n"
    );
    let mut squatter = Command::new("python3");
    squatter.args(["-c", &script]).stdout(std::process::Stdio::piped());
    if is_root() {
        squatter.uid(40009).gid(40009);
    }
    let mut squatter = squatter.spawn().unwrap();
    let mut out = squatter.stdout.take().unwrap();
    let mut first = [0u8; 6];
    out.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"bound\n");
    // The appliance refuses to start while the name is taken.
    let refused = Command::new(BIN).args(["run", "--state-dir", cluster.path(), "--instance", &name]).output().unwrap();
    assert_eq!(refused.status.code(), Some(6), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("already bound"));
    if is_root() {
        // A client expecting the appliance's uid sends nothing to the squatter.
        let output = load(&name, "dpi", "10", "1", None);
        assert!(!output.status.success());
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("refusing to send"),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        assert!(rest.contains("received 0"), "{rest}");
    }
    let _ = squatter.kill();
    let _ = squatter.wait();
    // With the name free the appliance starts; a second one on the same instance refuses.
    let mut appliance = cluster.appliance(&name, &[]);
    let second = Command::new(BIN).args(["run", "--state-dir", cluster.path(), "--instance", &name]).output().unwrap();
    assert_eq!(second.status.code(), Some(6), "{}", String::from_utf8_lossy(&second.stderr));
    appliance.stop().unwrap();
}

/// Connect raw, send `first`; if `after_welcome` is given, wait for WELCOME
/// and send it. Returns the ERROR frame's code (None if the lane sent none).
fn error_after(
    name: &str,
    module: Module,
    first: &[u8],
    after_welcome: Option<&[u8]>,
    then_close_write: bool,
) -> Option<u16> {
    let mut stream = UnixStream::connect_addr(&lane_address(name, module).unwrap()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(first).unwrap();
    let mut pending = after_welcome;
    if pending.is_none() && then_close_write {
        stream.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        match frame::decode_frame(&mut buf) {
            Ok(Some(f)) if f.kind == Kind::Error => return Some(frame::decode_error(&f.body).unwrap().0),
            Ok(Some(f)) => {
                if f.kind == Kind::Welcome {
                    if let Some(bytes) = pending.take() {
                        stream.write_all(bytes).unwrap();
                        if then_close_write {
                            stream.shutdown(std::net::Shutdown::Write).unwrap();
                        }
                    }
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => panic!("lane sent an undecodable frame: {e}"),
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn events_frame(module: Module, producer: u64, first_seq: u64, count: u32, field_count_delta: i32) -> BytesMut {
    let mut body = BytesMut::new();
    frame::encode_events_header(&mut body, first_seq, count);
    for seq in first_seq..first_seq + u64::from(count) {
        let mut fields = BytesMut::new();
        let event = synth::synthesize(module, producer, seq, &mut fields);
        let declared = (i32::from(event.field_count) + field_count_delta) as u16;
        frame::encode_record(&mut body, event.table, &event.source_id, event.event_time_us, declared, &fields);
    }
    let mut out = BytesMut::new();
    frame::encode_frame(&mut out, Kind::Events, &body);
    out
}

#[test]
fn malformed_input_gets_an_error_closes_only_that_connection_and_writes_nothing() {
    let cluster = TestCluster::start();
    let name = instance();
    let mut appliance = cluster.appliance(&name, &[]);
    let dpi = 2u8;
    let mut good = ModuleClient::connect(&name, Module::Dpi, applianced::base::sys::effective_uid(), 500, 1).unwrap();

    let mut unknown_version = hello_frame(501, dpi);
    unknown_version[2] = 2;
    let mut bad_checksum = hello_frame(502, dpi);
    bad_checksum[12] ^= 0xff;
    let mut oversize = hello_frame(503, dpi);
    oversize[8..12].copy_from_slice(&(applianced::base::limits::FRAME_BODY_BYTES_MAX as u32 + 1).to_be_bytes());
    let wrong_fields = events_frame(Module::Dpi, 504, 1, 3, -1);
    let whole = events_frame(Module::Dpi, 505, 1, 5, 0);
    let truncated = &whole[..whole.len() / 2];
    let gap = events_frame(Module::Dpi, 506, 5, 1, 0);
    let before_welcome = events_frame(Module::Dpi, 508, 1, 1, 0);
    let mut eager = hello_frame(508, dpi);
    eager.extend_from_slice(&before_welcome);
    let (h504, h505, h506, wrong_module) =
        (hello_frame(504, dpi), hello_frame(505, dpi), hello_frame(506, dpi), hello_frame(507, 3));

    type Case<'a> = (&'a str, &'a [u8], Option<&'a [u8]>, bool, ErrorCode, u64);
    let cases: [Case<'_>; 8] = [
        ("unknown version", &unknown_version, None, false, ErrorCode::UnsupportedVersion, 501),
        ("bad checksum", &bad_checksum, None, false, ErrorCode::BadChecksum, 502),
        ("oversize length", &oversize[..16], None, false, ErrorCode::FrameTooLarge, 503),
        ("wrong field count", &h504, Some(&wrong_fields), false, ErrorCode::FieldCount, 504),
        ("truncated frame", &h505, Some(truncated), true, ErrorCode::Malformed, 505),
        ("sequence gap", &h506, Some(&gap), false, ErrorCode::SequenceGap, 506),
        ("wrong module", &wrong_module, None, false, ErrorCode::WrongModule, 507),
        ("events before welcome", &eager, None, false, ErrorCode::HandshakeRequired, 508),
    ];
    let mut seq = 1u64;
    for (what, bytes, after_welcome, close_write, expected, producer) in cases {
        let code = error_after(&name, Module::Dpi, bytes, after_welcome, close_write);
        assert_eq!(code, Some(expected as u16), "{what}");
        assert_eq!(cluster.producer_rows(Module::Dpi, producer), (0, 0), "{what} wrote rows");
        // The good connection on the same lane is untouched.
        let body = synth::events_body(Module::Dpi, 500, seq, 10);
        good.send_events(&body).unwrap();
        seq += 10;
        let mut acked = 0;
        for _ in 0..200 {
            for reply in good.poll_replies(Duration::from_millis(50)).unwrap() {
                if let Reply::Ack { durable_seq, .. } = reply {
                    acked = durable_seq;
                }
            }
            if acked == seq - 1 {
                break;
            }
        }
        assert_eq!(acked, seq - 1, "good connection stalled after {what}");
    }
    let watermarks = cluster
        .admin()
        .query_value("SELECT count(*) FROM appliance.producer_watermarks WHERE producer_id BETWEEN 501 AND 508")
        .unwrap();
    assert_eq!(watermarks, "0");
    assert_eq!(cluster.committed_rows(Module::Dpi, 500, 1, 80), (80, 80));
    appliance.stop().unwrap();
}

#[test]
fn an_invalid_event_is_rejected_and_quarantined_without_failing_its_batch() {
    let cluster = TestCluster::start();
    let name = instance();
    let mut appliance = cluster.appliance(&name, &[]);
    let mut client =
        ModuleClient::connect(&name, Module::LinuxAgent, applianced::base::sys::effective_uid(), 600, 1).unwrap();
    let mut body = BytesMut::new();
    frame::encode_events_header(&mut body, 1, 3);
    for seq in 1..=3u64 {
        let mut fields = BytesMut::new();
        let event = synth::synthesize(Module::LinuxAgent, 600, seq, &mut fields);
        // Event 2 claims a time before 1970: rejected, quarantined.
        let time = if seq == 2 { -5 } else { event.event_time_us };
        frame::encode_record(&mut body, event.table, &event.source_id, time, event.field_count, &fields);
    }
    client.send_events(&body).unwrap();
    let (mut rejected, mut acked) = (Vec::new(), 0);
    for _ in 0..200 {
        for reply in client.poll_replies(Duration::from_millis(50)).unwrap() {
            match reply {
                Reply::Reject { seq, code, .. } => rejected.push((seq, code)),
                Reply::Ack { durable_seq, .. } => acked = durable_seq,
                Reply::Credit(_) | Reply::Status { .. } => {}
            }
        }
        if acked == 3 {
            break;
        }
    }
    assert_eq!(acked, 3);
    assert_eq!(rejected, vec![(2, frame::RejectCode::TimestampRange as u16)]);
    assert_eq!(cluster.committed_rows(Module::LinuxAgent, 600, 1, 3), (2, 2));
    let quarantined = cluster
        .admin()
        .query_value("SELECT producer_seq || ' ' || reason_code FROM linux_agent.quarantine WHERE producer_id = 600")
        .unwrap();
    assert_eq!(quarantined, format!("2 {}", frame::RejectCode::TimestampRange as u16));
    appliance.stop().unwrap();
}

#[test]
fn epochs_fence_older_producers_and_restart_sequences() {
    let cluster = TestCluster::start();
    let name = instance();
    let mut appliance = cluster.appliance(&name, &[]);
    let run = |epoch: u64, events: u64| {
        applianced::producer::load::run_load(&applianced::producer::load::LoadOptions::new(
            &name,
            Module::Core,
            700,
            epoch,
            events,
        ))
    };
    assert_eq!(run(1, 100).acked, 100);
    assert_eq!(run(2, 40).acked, 40);
    let fenced = run(1, 10);
    assert_eq!(fenced.acked, 0);
    assert!(fenced.last_error.as_deref().unwrap_or("").contains("fenced"), "{fenced:?}");
    assert_eq!(cluster.committed_rows(Module::Core, 700, 2, 40), (140, 140));
    let watermark = cluster.admin().query_value("SELECT producer_epoch || ':' || last_seq FROM appliance.producer_watermarks WHERE module = 'core' AND producer_id = 700").unwrap();
    assert_eq!(watermark, "2:40");
    appliance.stop().unwrap();
}
