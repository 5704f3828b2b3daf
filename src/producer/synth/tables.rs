//! The per-table generators: which tables each module emits, how often,
//! and how each table's fields are made.
//!
//! Consumes the [`Writer`] of the event being made (its random stream,
//! producer and host); produces exactly the columns of the chosen table,
//! in `schema::tables_of(module)` order, through the writer. Sans-I/O
//! (STYLE S3), in the caller's thread.
//!
//! Invariants: each module's weights sum to 100 (const assertions below);
//! each module's generators follow the schema's table order (tested below)
//! and each generator writes its table's arity (asserted in
//! [`super::synthesize`]).

use bytes::BufMut;

use crate::model::matrix::Module;

use super::rng::{Rng, mix64};
use super::vocabulary::{
    ANALYSTS, CONTENT_TYPES, DETECTION_RULES, DGA_SUFFIXES, DNS_NAMES, HTTP_METHODS, LINUX_PROGRAMS, REG_DWORD, REG_SZ,
    REGISTRY_VALUES, SERVICES, SMB_SHARES, TRANSITION_REASONS, USER_AGENTS, WINDOWS_PROGRAMS,
};
use super::writer::Writer;
use super::{HOSTS_PER_PRODUCER, INCIDENT_SALT, SUBJECT_PRODUCERS, source_id, with_uuid_version};

/// How often a module emits a table, and how its fields are made.
pub(super) struct Generator {
    pub(super) table: &'static str,
    weight_percent: u64,
    pub(super) write: fn(&mut Writer<'_>),
}

const fn generator(table: &'static str, weight_percent: u64, write: fn(&mut Writer<'_>)) -> Generator {
    Generator { table, weight_percent, write }
}

const fn weights_total_percent(generators: &[Generator]) -> u64 {
    let mut total = 0;
    let mut index = 0;
    while index < generators.len() {
        total += generators[index].weight_percent;
        index += 1;
    }
    total
}

/// In `schema::tables_of(module)` order; a host sensor mostly reports files
/// and processes, a probe mostly flows.
const LINUX_AGENT: &[Generator] = &[
    generator("process_events", 35, linux_process),
    generator("file_events", 50, linux_file),
    generator("network_events", 15, linux_network),
];
const WINDOWS_AGENT: &[Generator] = &[
    generator("process_events", 25, windows_process),
    generator("file_events", 40, windows_file),
    generator("registry_events", 20, windows_registry),
    generator("network_events", 15, windows_network),
];
const DPI: &[Generator] = &[
    generator("flows", 30, dpi_flow),
    generator("dns", 25, dpi_dns),
    generator("tls", 15, dpi_tls),
    generator("smb", 15, dpi_smb),
    generator("http", 15, dpi_http),
];
const CORE: &[Generator] = &[
    generator("detections", 50, core_detection),
    generator("incident_transitions", 30, core_transition),
    generator("response_actions", 20, core_response),
];

const _: () = assert!(weights_total_percent(LINUX_AGENT) == 100);
const _: () = assert!(weights_total_percent(WINDOWS_AGENT) == 100);
const _: () = assert!(weights_total_percent(DPI) == 100);
const _: () = assert!(weights_total_percent(CORE) == 100);

pub(super) fn generators_of(module: Module) -> &'static [Generator] {
    match module {
        Module::Core => CORE,
        Module::Dpi => DPI,
        Module::LinuxAgent => LINUX_AGENT,
        Module::WindowsAgent => WINDOWS_AGENT,
    }
}

pub(super) fn choose_table(rng: &mut Rng, generators: &[Generator]) -> u8 {
    let mut roll = rng.below(100);
    for (index, generator) in generators.iter().enumerate() {
        if roll < generator.weight_percent {
            return index as u8;
        }
        roll -= generator.weight_percent;
    }
    0
}

// --- Linux agent ---

fn linux_process(w: &mut Writer<'_>) {
    let action = w.rng.pick(&[1i16, 1, 2, 3]); // exec, exec, fork, exit
    w.int2(action);
    w.int4_in(1_200, 400_000);
    w.int4_in(1, 1_199);
    let uid = if w.rng.percent(15) { 0 } else { 1_000 + w.rng.below(50) };
    w.int4(uid);
    w.int4(uid);
    let (exe, argv) = w.rng.pick(LINUX_PROGRAMS);
    w.text(exe);
    let document = w.pick_document();
    w.variable(|w| {
        w.put(argv);
        w.put_document(&document, false);
    });
    if action == 3 { w.null() } else { w.random_bytes::<32>() }
}

fn linux_file(w: &mut Writer<'_>) {
    let action = w.rng.pick(&[1i16, 2, 2, 3, 3, 4]); // open, write, rename, unlink
    w.int2(action);
    w.int4_in(1_200, 400_000);
    let uid = 1_000 + w.rng.below(50);
    w.int4(uid);
    w.document_pair(action == 3, false);
    w.write_volume(action == 2);
}

fn linux_network(w: &mut Writer<'_>) {
    w.int2_of(&[1i16, 1, 2, 3]); // connect, connect, accept, close
    w.int4_in(1_200, 400_000);
    let uid = if w.rng.percent(30) { 0 } else { 1_000 + w.rng.below(50) };
    w.int4(uid);
    w.connection();
}

// --- Windows agent ---

fn windows_pid(w: &mut Writer<'_>) {
    // Windows process ids are multiples of four.
    let pid = 4 * w.rng.range(100, 16_000);
    w.int8(pid);
}

fn windows_process(w: &mut Writer<'_>) {
    let action = w.rng.pick(&[1i16, 1, 1, 2]); // start, start, start, stop
    w.int2(action);
    windows_pid(w);
    windows_pid(w);
    w.user_sid();
    let (image, command_line, takes_path) = w.rng.pick(WINDOWS_PROGRAMS);
    w.text(image);
    let document = w.pick_document();
    w.variable(|w| {
        w.put(command_line);
        if takes_path {
            w.put_document(&document, true);
        }
    });
    w.int2_of(&[0x2000i16, 0x2000, 0x3000, 0x4000]); // medium, high, system
    if action == 2 { w.null() } else { w.random_bytes::<32>() }
}

fn windows_file(w: &mut Writer<'_>) {
    let action = w.rng.pick(&[1i16, 2, 2, 3, 3, 4]); // create, write, rename, delete
    w.int2(action);
    windows_pid(w);
    w.user_sid();
    w.document_pair(action == 3, true);
    w.write_volume(action == 2);
}

fn windows_registry(w: &mut Writer<'_>) {
    let action = w.rng.pick(&[1i16, 2, 2, 2, 3]); // create key, set value, delete value
    w.int2(action);
    windows_pid(w);
    w.user_sid();
    let (key, name, value_type, data) = w.rng.pick(REGISTRY_VALUES);
    w.text(key);
    match name {
        Some(name) => w.text(name),
        None => w.null(),
    }
    w.int2(value_type);
    if action == 3 {
        return w.null();
    }
    match value_type {
        REG_DWORD => {
            let dword = w.rng.below(5) as u32;
            w.field(&dword.to_le_bytes());
        }
        REG_SZ => w.variable(|w| {
            // REG_SZ data is NUL-terminated UTF-16LE.
            for byte in data.bytes().chain([0]) {
                w.out.put_slice(&[byte, 0]);
            }
        }),
        _ => w.random_bytes::<24>(),
    }
}

fn windows_network(w: &mut Writer<'_>) {
    w.int2_of(&[1i16, 1, 2, 3]); // connect, connect, accept, close
    windows_pid(w);
    w.connection();
}

// --- DPI probe ---

fn dpi_flow(w: &mut Writer<'_>) {
    w.random_uuid();
    let (port, protocol, app_protocol) = w.rng.pick(SERVICES);
    let v6 = w.rng.percent(15);
    w.int2(protocol);
    let source = w.local_address(v6);
    w.inet(source);
    w.int4_in(32_768, 60_999);
    let destination = w.remote_address(v6);
    w.inet(destination);
    w.int4(port);
    let packets = w.rng.range(1, 50_000);
    w.int8(packets);
    let packet_bytes = w.rng.range(60, 1_400);
    w.int8(packets * packet_bytes);
    w.int8_in(1, 900_000);
    match app_protocol {
        Some(name) => w.text(name),
        None => w.null(),
    }
}

fn dpi_dns(w: &mut Writer<'_>) {
    w.random_uuid();
    let generated = w.rng.percent(25);
    let (name, canonical_name) = w.rng.pick(DNS_NAMES);
    w.variable(|w| {
        if generated {
            let letters = w.rng.range(12, 24) as usize;
            w.lowercase(letters);
            let suffix = w.rng.pick(DGA_SUFFIXES);
            w.put(suffix);
        } else {
            w.put(name);
        }
    });
    w.int4_of(&[1u64, 1, 1, 28, 5, 16, 33]); // A, AAAA, CNAME, TXT, SRV
    w.int2(if generated { 3 } else { 0 }); // NXDOMAIN, NOERROR
    if generated {
        return w.null();
    }
    let answers = w.rng.range(1, 4);
    w.variable(|w| {
        if let Some(canonical_name) = canonical_name {
            w.put(canonical_name);
            w.put(",");
        }
        for index in 0..answers {
            if index > 0 {
                w.put(",");
            }
            let address = w.remote_address(false);
            w.dotted(&address);
        }
    });
}

fn dpi_tls(w: &mut Writer<'_>) {
    w.random_uuid();
    w.or_null(95, |w| {
        let (name, _) = w.rng.pick(DNS_NAMES);
        w.text(name);
    });
    let tls13 = w.rng.percent(60);
    w.int4(if tls13 { 0x0304 } else { 0x0303 });
    let suites: &[u64] = if tls13 { &[0x1301, 0x1302, 0x1303] } else { &[0xc02f, 0xc030, 0xcca8] };
    w.int4_of(suites);
    w.or_null(95, |w| w.random_bytes::<16>());
    // TLS 1.3 encrypts the certificate, so the probe only sees it for 1.2.
    if tls13 { w.null() } else { w.random_bytes::<32>() }
}

fn dpi_smb(w: &mut Writer<'_>) {
    w.random_uuid();
    // SMB2 NEGOTIATE, TREE_CONNECT, CREATE, READ, WRITE, WRITE, SET_INFO.
    let command = w.rng.pick(&[0u64, 3, 5, 8, 9, 9, 17]);
    w.int4(command);
    w.int4_of(&[0x0210u64, 0x0300, 0x0302, 0x0311]);
    let share = w.rng.pick(SMB_SHARES);
    if command == 0 {
        w.null()
    } else {
        w.text(share)
    }
    if command < 5 {
        w.null();
    } else {
        let document = w.pick_document();
        let locked = w.rng.percent(40);
        w.variable(|w| {
            w.put(document.directory);
            w.put(r"\");
            w.put(document.folder);
            w.put(r"\");
            w.put(document.subfolder);
            w.put(r"\");
            w.put(document.stem);
            w.put("-");
            w.decimal(document.number);
            w.put(document.extension);
            if locked {
                w.put(".locked");
            }
        });
    }
    // STATUS_SUCCESS, STATUS_ACCESS_DENIED, STATUS_OBJECT_NAME_NOT_FOUND.
    w.int8_of(&[0u64, 0, 0, 0, 0xc000_0022, 0xc000_0034]);
    let pages = if command >= 8 { w.rng.range(1, 256) } else { 0 };
    w.int8(4096 * pages);
}

fn dpi_http(w: &mut Writer<'_>) {
    w.random_uuid();
    let method = w.rng.pick(HTTP_METHODS);
    w.text(method);
    let (host, _) = w.rng.pick(DNS_NAMES);
    w.text(host);
    let number = w.rng.range(1, 99_999);
    let template = w.rng.below(3);
    w.variable(|w| match template {
        0 => {
            w.put("/api/v2/upload?id=");
            w.decimal(number);
            w.put("&chunk=");
            w.decimal(number % 64);
            w.put("&session=");
            w.lowercase(24);
        }
        1 => {
            w.put("/updates/stable/x64/agent-8.");
            w.decimal(number);
            w.put(".bin?channel=enterprise");
        }
        _ => {
            w.put("/wp-content/plugins/gate.php?bot=");
            w.lowercase(16);
            w.put("&os=win10&av=defender");
        }
    });
    let status = w.rng.pick(&[200i16, 200, 200, 204, 301, 403, 404, 500]);
    w.int2(status);
    w.or_null(90, |w| {
        let agent = w.rng.pick(USER_AGENTS);
        w.text(agent);
    });
    if method == "HEAD" || status == 204 {
        w.null();
    } else {
        let content_type = w.rng.pick(CONTENT_TYPES);
        w.text(content_type);
    }
    w.int8_in(0, 5_000_000);
}

// --- Core ---

/// One of 16 incidents per producer, so an incident timeline has many rows.
fn incident_id(w: &mut Writer<'_>) {
    let incident = w.rng.below(16);
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&mix64(w.producer_id ^ INCIDENT_SALT).to_be_bytes());
    id[8..].copy_from_slice(&mix64(incident).to_be_bytes());
    w.field(&with_uuid_version(id, 8));
}

fn actor(w: &mut Writer<'_>) {
    if w.rng.percent(60) {
        w.text("core-engine");
    } else {
        let analyst = w.rng.pick(ANALYSTS);
        w.text(analyst);
    }
}

fn core_detection(w: &mut Writer<'_>) {
    w.random_uuid();
    let (rule, severity, summary) = w.rng.pick(DETECTION_RULES);
    w.text(rule);
    w.int2(severity);
    let score = w.rng.range(500, 999);
    w.float4(score);
    let subject = source_id(w.rng.range(1, SUBJECT_PRODUCERS), w.rng.below(HOSTS_PER_PRODUCER));
    w.field(&subject);
    let pid = w.rng.range(1_200, 400_000);
    w.variable(|w| {
        w.put(summary);
        w.decimal(pid);
        w.put(" on ");
        w.hostname();
    });
    let files = w.rng.range(20, 5_000);
    let entropy = w.rng.range(7_800, 7_999);
    let sample = w.pick_document();
    w.or_null(70, |w| {
        w.variable(|w| {
            w.put(r#"{"rule":""#);
            w.put(rule);
            w.put(r#"","files":"#);
            w.decimal(files);
            w.put(r#","entropy_mean":7."#);
            w.decimal(entropy % 1_000);
            w.put(r#","window_s":30,"sample":""#);
            w.put_document(&sample, false);
            w.put(r#""}"#);
        });
    });
}

fn core_transition(w: &mut Writer<'_>) {
    incident_id(w);
    // new, triaged, contained, eradicated, recovered, closed
    let from_state = w.rng.below(5) as i16;
    w.int2(from_state);
    w.int2(from_state + 1);
    actor(w);
    w.or_null(60, |w| {
        let reason = w.rng.pick(TRANSITION_REASONS);
        w.text(reason);
    });
}

fn core_response(w: &mut Writer<'_>) {
    w.random_uuid();
    w.or_null(80, incident_id);
    // isolate host, kill process, quarantine file, block address
    let kind = w.rng.pick(&[1i16, 2, 3, 4]);
    w.int2(kind);
    let pid = w.rng.range(1_200, 400_000);
    let document = w.pick_document();
    let address = w.remote_address(false);
    w.variable(|w| match kind {
        1 => w.hostname(),
        2 => {
            w.put("pid:");
            w.decimal(pid);
            w.put("@");
            w.hostname();
        }
        3 => w.put_document(&document, false),
        _ => w.dotted(&address),
    });
    actor(w);
    let outcome = w.rng.pick(&[1i16, 1, 1, 0, 2]); // succeeded, pending, failed
    w.int2(outcome);
    w.or_null(50, |w| {
        w.text(if outcome == 2 {
            "agent unreachable: no acknowledgement within 30 s, retry scheduled by the response queue"
        } else {
            "applied by the agent and verified by the next heartbeat"
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::schema::tables_of;

    #[test]
    fn generators_follow_the_schema_order() {
        for module in Module::ALL {
            let names: Vec<&str> = tables_of(module).map(|t| t.name).collect();
            let generated: Vec<&str> = generators_of(module).iter().map(|g| g.table).collect();
            assert_eq!(names, generated, "{module:?}");
        }
    }
}
