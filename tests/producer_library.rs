//! The producer library from where a module team stands: the C ABI
//! (`libransomeye_producer.so`, `producer-c/include/ransomeye_producer.h`)
//! used by the C example built with `cc`, and the Python bindings used by
//! the Python example, each sending events to a running appliance. The
//! rows are read back from PostgreSQL: every event stored exactly once, and
//! a sample row compared column by column with the value the example gave.
//! Throughput is printed beside `applianced load`'s in the same run, never
//! asserted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use applianced::model::matrix::Module;
use applianced::model::schema::{ColumnType, tables_of};
use common::{TestCluster, instance};

const EVENTS: u64 = 20_000;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A C compiler and python3, installed from Debian's archive when missing
/// and the tests run as root (a fresh CI machine), as the cluster's server
/// binaries are.
fn ensure_tools() {
    let missing = |tool: &str| {
        Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().map_or(true, |o| !o.status.success())
    };
    if !(missing("cc") || missing("python3")) {
        return;
    }
    assert!(common::is_root(), "install a C compiler (cc) and python3 to run the producer library tests");
    let install = "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends gcc libc6-dev python3";
    assert!(Command::new("sh").args(["-c", install]).status().unwrap().success(), "{install}");
}

/// Build the C ABI library (debug profile) and return its directory.
fn library_dir() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "ransomeye-producer"])
        .current_dir(workspace())
        .status()
        .expect("cargo build -p ransomeye-producer");
    assert!(status.success(), "building the C ABI library failed");
    let target = std::env::var("CARGO_TARGET_DIR").map_or_else(|_| workspace().join("target"), PathBuf::from);
    let built = target.join("debug/libransomeye_producer.so");
    assert!(built.exists(), "no {}", built.display());
    // The library's soname is libransomeye_producer.so.0 (what a linked
    // program loads); a directory with both names, as an install has.
    let dir = std::env::temp_dir().join(format!("rp-lib-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["libransomeye_producer.so", "libransomeye_producer.so.0"] {
        let _ = std::fs::remove_file(dir.join(name));
        std::fs::copy(&built, dir.join(name)).unwrap();
    }
    dir
}

/// What both examples give column `type` of event `seq` (the test's copy of
/// their rule), as PostgreSQL prints it; None: not compared (event time).
fn expected_text(column_type: ColumnType, seq: u64) -> Option<String> {
    let bytes: Vec<u8> = (0..16u64).map(|b| ((seq >> ((b % 8) * 8)) as u8) ^ b as u8).collect();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Some(match column_type {
        ColumnType::Int2 => (seq % 3).to_string(),
        ColumnType::Int4 => (seq % 65536).to_string(),
        ColumnType::Int8 => seq.to_string(),
        ColumnType::Float4 => format!("{}", ((seq % 100) as f32) / 100.0),
        ColumnType::Text => format!("example-{seq}"),
        ColumnType::Bytea => format!("\\x{hex}"),
        ColumnType::Uuid => {
            format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
        }
        ColumnType::Inet => format!("10.{}.{}.{}/32", (seq >> 16) & 255, (seq >> 8) & 255, seq & 255),
        ColumnType::Timestamptz => return None,
    })
}

/// Compare every column (but the event time) of the row of `seq`.
fn check_sample(cluster: &TestCluster, module: Module, table: &str, producer: u64, seq: u64) {
    let table = tables_of(module).find(|t| t.name == table).unwrap();
    let columns: Vec<String> = table.columns.iter().map(|c| format!("{}::text", c.name)).collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE producer_id = {producer} AND producer_seq = {seq}",
        columns.join(", "),
        table.qualified_name()
    );
    let rows = cluster.admin().simple_query(&sql).unwrap();
    assert_eq!(rows.len(), 1, "{sql}");
    for (column, value) in table.columns.iter().zip(&rows[0]) {
        if let Some(expected) = expected_text(column.column_type, seq) {
            assert_eq!(value.as_deref(), Some(expected.as_str()), "{}.{}", table.qualified_name(), column.name);
        }
    }
}

/// Run an example; it must exit 0 and report every event acknowledged.
fn run_example(mut command: Command, what: &str) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{what} failed: {stdout} {}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(&format!("acked={EVENTS} rejected=0")), "{what}: {stdout}");
    println!("{what}: {}", stdout.trim());
    stdout
}

#[test]
fn c_and_python_modules_send_through_the_library_and_every_event_is_stored_once() {
    ensure_tools();
    let lib = library_dir();
    let build = std::env::temp_dir().join(format!("rp-example-{}", std::process::id()));
    std::fs::create_dir_all(&build).unwrap();
    let binary = build.join("send_events");
    let status = Command::new("cc")
        .args(["-Wall", "-Wextra", "-Werror", "-O2", "-o"])
        .arg(&binary)
        .arg(workspace().join("examples/c/send_events.c"))
        .arg(format!("-I{}", workspace().join("producer-c/include").display()))
        .arg(format!("-L{}", lib.display()))
        .arg("-lransomeye_producer")
        .status()
        .expect("cc (install a C compiler)");
    assert!(status.success(), "the C example does not build against the header");

    let cluster = TestCluster::start();
    let name = instance();
    let _appliance = cluster.appliance(&name, &[]);

    // C, every lane.
    for (i, module) in Module::ALL.into_iter().enumerate() {
        let producer = 7100 + i as u64;
        let mut command = Command::new(&binary);
        command
            .args(["--module", module.name(), "--events", &EVENTS.to_string(), "--producer-id"])
            .arg(producer.to_string())
            .args(["--instance", &name])
            .env("LD_LIBRARY_PATH", &lib);
        run_example(command, &format!("C example, {}", module.name()));
        assert_eq!(cluster.committed_rows(module, producer, 1, EVENTS), (EVENTS, EVENTS), "{module:?}");
    }
    check_sample(&cluster, Module::LinuxAgent, "process_events", 7102, 4242);
    check_sample(&cluster, Module::Dpi, "flows", 7101, 17);

    // Python, every lane, through the bindings.
    let mut python_rates = Vec::new();
    for (i, module) in Module::ALL.into_iter().enumerate() {
        let producer = 7200 + i as u64;
        let mut command = Command::new("python3");
        command
            .arg(workspace().join("examples/python/send_events.py"))
            .args(["--module", module.name(), "--events", &EVENTS.to_string(), "--producer-id"])
            .arg(producer.to_string())
            .args(["--instance", &name])
            .env("PYTHONPATH", workspace().join("python"))
            .env("RANSOMEYE_PRODUCER_LIB", lib.join("libransomeye_producer.so"));
        let out = run_example(command, &format!("Python example, {}", module.name()));
        python_rates.push(out.split("events/s=").nth(1).unwrap_or("?").trim().to_string());
        assert_eq!(cluster.committed_rows(module, producer, 1, EVENTS), (EVENTS, EVENTS), "{module:?}");
    }
    check_sample(&cluster, Module::Dpi, "flows", 7201, 99);
    check_sample(&cluster, Module::WindowsAgent, "process_events", 7203, 12345);

    // applianced load in the same run, for the printed comparison.
    let load = common::applianced(&[
        "load",
        "--module",
        "dpi",
        "--events",
        &EVENTS.to_string(),
        "--producer-id",
        "7300",
        "--instance",
        &name,
    ]);
    println!("Python example events/s per module: {python_rates:?}; applianced load: {}", common::stdout(&load).trim());
}

/// Python batches given column by column (`Stream.send_columns`) in every
/// form the bindings take: NULL in a nullable column, text as str (not
/// ASCII) and as bytes, inet as a string and as an ipaddress object. A
/// batch with a bad row raises an error naming that row; the rows before
/// it are queued and stored, the rows after it are not.
#[test]
fn python_batches_take_nulls_text_and_addresses_and_a_bad_row_is_named() {
    ensure_tools();
    let lib = library_dir();
    let cluster = TestCluster::start();
    let name = instance();
    let _appliance = cluster.appliance(&name, &[]);
    let script = r#"
import ipaddress, sys
from ransomeye_producer import Event, ProducerError, Stream, RP_ERR_ARGUMENT, RP_ERR_EVENT
instance, uid, t = sys.argv[1], int(sys.argv[2]), 1_800_000_000_000_000
with Stream(instance, "core", 7500, 1, uid) as s:
    e = Event("core", "detections")
    s.send_columns(e, [[b"\x01" * 16, b"\x02" * 16], ["rule-\u00e4", b"rule-b"], [1, 2], [0.5, 0.75],
                       [bytes(16)] * 2, ["one", "two"], [None, "why"]], b"S" * 16, t)
    try:
        s.send_columns(e, [[b"\x03" * 16] * 3, ["r3", "r4", "r5"], [3, 40000, 5], [0.0] * 3,
                           [bytes(16)] * 3, ["a", "b", "c"], [None] * 3], b"S" * 16, [t, t, t])
        raise SystemExit("a smallint of 40000 was accepted")
    except ProducerError as err:
        assert err.status == RP_ERR_EVENT and str(err).startswith("row 1:"), (err.status, str(err))
    s.flush(60_000)
    print(f"core acked={s.acked}")
with Stream(instance, "dpi", 7501, 1, uid) as s:
    e = Event("dpi", "flows")
    s.send_columns(e, [[b"\x04" * 16] * 2, [6, 17], ["192.0.2.1", ipaddress.ip_address("2001:db8::1")], [1, 2],
                       [b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02"], [80, 53], [1, 2], [3, 4], [5, 6], ["http", None]],
                   b"S" * 16, t)
    # Packed whole: uuids and IPv4 addresses as bytes, integers as an array; a
    # packed column of the wrong size is refused before anything is queued.
    import array
    cols = [b"\x05" * 32, [6, 6], b"\xc0\x00\x02\x07\xc0\x00\x02\x08", array.array("q", [1, 2]),
            b"\x0a\x00\x00\x03\x0a\x00\x00\x04", [1, 2], array.array("q", [7, 8]), [3, 4], [5, 6], [None, None]]
    s.send_columns(e, cols, b"S" * 16, t)
    try:
        s.send_columns(e, [b"\x05" * 33] + cols[1:], b"S" * 16, t)
        raise SystemExit("a packed uuid column of 33 bytes for 2 rows was accepted")
    except ProducerError as err:
        assert err.status == RP_ERR_ARGUMENT, (err.status, str(err))
    s.flush(60_000)
    print(f"dpi acked={s.acked}")
"#;
    let output = Command::new("python3")
        .args(["-c", script, &name, &applianced::base::sys::effective_uid().to_string()])
        .env("PYTHONPATH", workspace().join("python"))
        .env("RANSOMEYE_PRODUCER_LIB", lib.join("libransomeye_producer.so"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout} {}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("core acked=3") && stdout.contains("dpi acked=4"), "{stdout}");
    assert_eq!(cluster.committed_rows(Module::Core, 7500, 1, 3), (3, 3));
    let rows = cluster
        .admin()
        .simple_query(
            "SELECT producer_seq::text, rule_id, severity::text, coalesce(evidence, 'NULL') \
             FROM core.detections WHERE producer_id = 7500 ORDER BY producer_seq",
        )
        .unwrap();
    let rows: Vec<Vec<&str>> = rows.iter().map(|r| r.iter().map(|v| v.as_deref().unwrap_or("")).collect()).collect();
    assert_eq!(
        rows,
        vec![vec!["1", "rule-\u{e4}", "1", "NULL"], vec!["2", "rule-b", "2", "why"], vec!["3", "r3", "3", "NULL"]]
    );
    let rows = cluster
        .admin()
        .simple_query(
            "SELECT src_addr::text, dst_addr::text FROM dpi.flows WHERE producer_id = 7501 ORDER BY producer_seq",
        )
        .unwrap();
    let rows: Vec<Vec<&str>> = rows.iter().map(|r| r.iter().map(|v| v.as_deref().unwrap_or("")).collect()).collect();
    assert_eq!(
        rows,
        vec![
            vec!["192.0.2.1/32", "10.0.0.1/32"],
            vec!["2001:db8::1/128", "10.0.0.2/32"],
            vec!["192.0.2.7/32", "10.0.0.3/32"],
            vec!["192.0.2.8/32", "10.0.0.4/32"]
        ]
    );
    let packets = cluster
        .admin()
        .simple_query("SELECT src_port::text, packets::text, flow_id::text FROM dpi.flows WHERE producer_id = 7501 AND producer_seq = 4")
        .unwrap();
    let row: Vec<&str> = packets[0].iter().map(|v| v.as_deref().unwrap_or("")).collect();
    assert_eq!(row, vec!["2", "8", "05050505-0505-0505-0505-050505050505"]);
}

/// A Rust stream of `producer` to `module`'s lane of appliance `name`, as
/// the appliance's own uid.
fn stream_to(name: &str, module: Module, producer: u64) -> applianced::producer::stream::Stream {
    let config = applianced::producer::stream::StreamConfig {
        instance: name.to_string(),
        module,
        producer_id: producer,
        epoch: 1,
        server_uid: applianced::base::sys::effective_uid(),
    };
    applianced::producer::stream::Stream::connect(config).unwrap()
}

/// Push event `seq`'s values into `event`, chosen by column type (`text`
/// for every text column), and queue it on `stream`; returns its seq.
fn send_example(
    stream: &mut applianced::producer::stream::Stream,
    event: &mut applianced::producer::event::EventBuilder,
    seq: u64,
    text: &str,
) -> u64 {
    use applianced::producer::event::Value;
    let types: Vec<&str> = event.columns().map(|(_, t, _)| t).collect();
    for t in types {
        let value = match t {
            "smallint" => Value::Int((seq % 3) as i64),
            "integer" => Value::Int((seq % 65536) as i64),
            "bigint" => Value::Int(seq as i64),
            "text" => Value::Text(text),
            "uuid" => Value::Uuid([seq as u8; 16]),
            "inet" => Value::Inet(std::net::IpAddr::from([10, 0, 0, seq as u8]), 32),
            "real" => Value::Float(0.25),
            "bytea" => Value::Bytes(b"x"),
            _ => Value::Time(1_800_000_000_000_000),
        };
        event.push(value).unwrap();
    }
    stream.send_event(event, &[1; 16], 1_800_000_000_000_000).unwrap()
}

/// The Rust stream across a lane killed while events are in flight: the
/// stream reconnects, resends from the lane's WELCOME, and every event is
/// stored exactly once. Waits for events (the lane's new pid, the flush),
/// never for a time.
#[test]
fn the_stream_resends_across_a_lane_restart_and_stores_every_event_once() {
    use applianced::producer::event::EventBuilder;
    use std::time::Duration;

    let cluster = TestCluster::start();
    let name = instance();
    let _appliance = cluster.appliance(&name, &[]);
    let mut stream = stream_to(&name, Module::Dpi, 7400);
    let mut event = EventBuilder::new(Module::Dpi, "dns").unwrap();
    let total = 60_000u64;
    let pid = cluster.lane_pid(Module::Dpi);
    for seq in 1..=total {
        assert_eq!(send_example(&mut stream, &mut event, seq, &format!("example-{seq}")), seq);
        if seq == total / 2 {
            // Half sent: kill the lane; the supervisor restarts it.
            let _ = stream.pump(Duration::ZERO);
            let status = Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
            assert!(status.success());
        }
        if seq % 1024 == 0 {
            let _ = stream.pump(Duration::ZERO);
        }
    }
    stream.flush(Duration::from_secs(120)).unwrap();
    assert_ne!(cluster.lane_pid(Module::Dpi), pid, "the lane was restarted");
    assert_eq!(stream.acked_seq(), total);
    assert!(stream.stats().reconnects >= 1, "{:?}", stream.stats());
    println!("stream stats: {:?}", stream.stats());
    assert_eq!(cluster.committed_rows(Module::Dpi, 7400, 1, total), (total, total));
}

/// A stream inside the module's own event loop: it waits on the stream's
/// descriptor (readable, and writable while frames wait for room) and
/// pumps without waiting; 200,000 events outrun the socket's buffer, so
/// frames do wait (`pending_output` > 0 seen), and every event is
/// acknowledged and stored once without a blocking call until the end.
#[test]
fn a_stream_in_an_event_loop_waits_for_room_and_replies_on_its_descriptor() {
    use applianced::producer::event::EventBuilder;
    use std::time::{Duration, Instant};

    let cluster = TestCluster::start();
    let name = instance();
    let _appliance = cluster.appliance(&name, &[]);
    let mut stream = stream_to(&name, Module::LinuxAgent, 7600);
    let mut event = EventBuilder::new(Module::LinuxAgent, "file_events").unwrap();
    let total = 200_000u64;
    let (mut seq, mut waited_for_room) = (0u64, 0u32);
    let started = Instant::now();
    while stream.acked_seq() < total {
        assert!(started.elapsed() < Duration::from_secs(300), "stuck at {} of {total}", stream.acked_seq());
        // Queue a slice of events while the stream holds few unsent bytes.
        while seq < total && stream.pending_output() < 1 << 20 && seq - stream.acked_seq() < 50_000 {
            seq += 1;
            send_example(&mut stream, &mut event, seq, &format!("/data/file-{seq}"));
        }
        stream.pump(Duration::ZERO).unwrap();
        let pending = stream.pending_output();
        let mut events = libc::POLLIN;
        if pending > 0 {
            events |= libc::POLLOUT;
            waited_for_room += 1;
        }
        let mut fds = [libc::pollfd { fd: stream.fd().unwrap(), events, revents: 0 }];
        applianced::base::sys::poll(&mut fds, 100).unwrap();
    }
    assert!(waited_for_room > 0, "the socket never filled: the test did not exercise waiting for room");
    println!("event loop: {total} events, waited for room {waited_for_room} times, {:?}", started.elapsed());
    assert_eq!(cluster.committed_rows(Module::LinuxAgent, 7600, 1, total), (total, total));
}

/// The header declares exactly the functions the library defines, and the
/// same `RP_*` values (the C compiler checks the signatures when the
/// example builds with -Werror against it).
#[test]
fn the_header_declares_exactly_what_the_library_exports() {
    let header = std::fs::read_to_string(workspace().join("producer-c/include/ransomeye_producer.h")).unwrap();
    let source = std::fs::read_to_string(workspace().join("producer-c/src/lib.rs")).unwrap();
    let names = |text: &str, marker: &str| -> std::collections::BTreeSet<String> {
        text.match_indices(marker)
            .map(|(at, _)| {
                let rest = &text[at + marker.len()..];
                let start = rest.find("rp_").unwrap();
                rest[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
            })
            .collect()
    };
    let declared: std::collections::BTreeSet<String> = header
        .lines()
        .filter(|l| !l.trim_start().starts_with('*') && !l.trim_start().starts_with("/*"))
        .flat_map(|l| {
            l.match_indices("rp_")
                .filter_map(|(at, _)| {
                    let name: String = l[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    l[at + name.len()..].starts_with('(').then_some(name)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let defined = names(&source, "extern \"C\" fn ");
    assert_eq!(declared, defined, "header and library differ");
    for line in header.lines().filter(|l| l.starts_with("#define RP_")) {
        let mut parts = line.split_whitespace().skip(1);
        let (name, value) = (parts.next().unwrap(), parts.next().unwrap().trim_matches(['(', ')']));
        assert!(
            ["c_int", "u32"].iter().any(|t| source.contains(&format!("pub const {name}: {t} = {value};"))),
            "{name} = {value} in the header, not in the library"
        );
    }
}

/// A scripted lane on the module's socket (this test's own uid owns it):
/// the stream is acknowledged up to seq 3, reconnects, and is WELCOMEd at
/// seq 1, below its own ACK: the appliance lost seqs 2..3. The stream must
/// report the loss and continue in the next epoch from seq 1 with the
/// events not yet acknowledged (PROTOCOL.md §4.2), never from seq 4.
#[test]
fn the_stream_reports_a_welcome_below_its_ack_and_continues_in_a_new_epoch() {
    use applianced::codec::frame::{self, Kind};
    use applianced::producer::stream::{Stream, StreamConfig};
    use bytes::BytesMut;
    use std::io::{Read, Write};
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
    use std::time::Duration;

    let name = instance();
    let address = SocketAddr::from_abstract_name(Module::Dpi.socket_name(&name).as_bytes()).unwrap();
    let listener = UnixListener::bind_addr(&address).unwrap();
    // Read frames until one of `kind` arrives.
    fn next_frame(socket: &mut UnixStream, buffer: &mut BytesMut, kind: Kind) -> frame::Frame {
        loop {
            if let Some(f) = frame::decode_frame(buffer).unwrap() {
                if f.kind == kind {
                    return f;
                }
                continue;
            }
            let mut chunk = [0u8; 65536];
            let n = socket.read(&mut chunk).unwrap();
            assert!(n > 0, "the stream closed while {kind:?} was expected");
            buffer.extend_from_slice(&chunk[..n]);
        }
    }
    let lane = std::thread::spawn(move || {
        let mut seen = Vec::new();
        // (WELCOME epoch and seq, EVENTS expected: first seq and how many, then ACK)
        type Welcome = (u64, u64);
        type Expected = Option<(u64, u32)>;
        let script: [(Welcome, Expected); 3] = [((1, 0), Some((1, 3))), ((1, 1), None), ((2, 0), Some((1, 2)))];
        for ((epoch, seq), events) in script {
            let (mut socket, _) = listener.accept().unwrap();
            let mut buffer = BytesMut::new();
            let hello = next_frame(&mut socket, &mut buffer, Kind::Hello);
            let hello = frame::decode_hello(&hello.body).unwrap();
            seen.push(hello.producer_epoch.get());
            let mut out = BytesMut::new();
            let welcome_epoch = epoch.max(hello.producer_epoch.get());
            frame::encode_welcome(&mut out, welcome_epoch, seq, 1 << 20);
            socket.write_all(&out).unwrap();
            let Some((first, count)) = events else { continue };
            let mut received = 0;
            while received < count {
                let f = next_frame(&mut socket, &mut buffer, Kind::Events);
                let events = frame::decode_events(&f.body).unwrap();
                assert_eq!(events.first_seq, first + u64::from(received), "epoch {welcome_epoch}");
                received += events.records.len() as u32;
            }
            out.clear();
            frame::encode_ack(&mut out, welcome_epoch, first + u64::from(count) - 1);
            socket.write_all(&out).unwrap();
            if welcome_epoch == 1 {
                // Wait for the two events sent after the ACK, then break the connection.
                next_frame(&mut socket, &mut buffer, Kind::Events);
            }
        }
        seen
    });
    let config = StreamConfig {
        instance: name,
        module: Module::Dpi,
        producer_id: 4,
        epoch: 1,
        server_uid: applianced::base::sys::effective_uid(),
    };
    let mut stream = Stream::connect(config).unwrap();
    let record = |seq: u64| {
        let mut out = BytesMut::new();
        applianced::producer::synth::record(Module::Dpi, 4, seq, &mut BytesMut::new(), &mut out);
        out
    };
    for seq in 1..=3 {
        stream.send_record(&record(seq)).unwrap();
    }
    stream.flush(Duration::from_secs(30)).unwrap();
    assert_eq!((stream.epoch(), stream.acked_seq()), (1, 3));
    for seq in 4..=5 {
        stream.send_record(&record(seq)).unwrap();
    }
    stream.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(lane.join().unwrap(), [1, 1, 2], "HELLO epochs");
    assert_eq!((stream.epoch(), stream.acked_seq()), (2, 2), "continued in epoch 2 from seq 1");
    let lost = &stream.stats().lost;
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(lost[0].contains("seqs 2..3 of epoch 1 were lost"), "{lost:?}");
}
