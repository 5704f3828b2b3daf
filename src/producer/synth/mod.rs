//! Deterministic synthetic telemetry, for load generation and tests.
//!
//! Consumes a module, a producer id and a sequence number; produces the
//! fields of one event in COPY BINARY field encoding (exactly what a
//! producer puts in an EVENTS record, see [`crate::codec::frame::RecordRef`]) and
//! the values of its record header. Content is a pure function of the three
//! inputs: a splitmix64 stream seeded from them picks the table and every
//! value, so a load run or a golden fixture is reproducible byte for byte
//! (STYLE S19). The values imitate a ransomware intrusion as the sensors see
//! it: encryptors and shells on Linux hosts, `vssadmin` and Run keys on
//! Windows, SMB writes of `.locked` files and DGA lookups on the wire, and
//! Core's detections, incident transitions and response actions.
//!
//! Sans-I/O (STYLE S3): no clock, no socket, no allocation beyond what the
//! caller's `BytesMut` needs; runs in whichever process calls it.
//!
//! Invariant: every event passes [`crate::codec::validate::validate_record`] for
//! its module; the tests below frame, decode and validate thousands of them.
//!
//! Layout, in the order an event is made: `rng` (the splitmix64 stream),
//! `writer` (COPY field encoding of single values), `vocabulary` (the
//! words, paths and names values are drawn from), `values` (composite
//! values several tables share: documents, SIDs, addresses, connections)
//! and `tables` (how often each module emits each table, and how each
//! table's fields are made).

mod rng;
mod writer;
mod vocabulary;
mod values;
mod tables;

use bytes::BytesMut;

use crate::model::matrix::Module;

use self::rng::{Rng, mix64};
use self::tables::{choose_table, generators_of};
use self::writer::Writer;

/// 2026-12-01T00:00:00Z in microseconds since 1970-01-01 UTC: the clock of
/// every synthetic producer starts here, so fixtures do not depend on today.
pub const BASE_TIME_US: i64 = 1_796_083_200_000_000;
/// Event `seq` happens `seq` times this after [`BASE_TIME_US`]: 1,000
/// events per second and producer, the rate of a busy host sensor.
pub const EVENT_SPACING_US: i64 = 1_000;
/// Jitter added to each event time; below the spacing, so event times
/// strictly increase with `seq`.
const EVENT_JITTER_US_MAX: u64 = 500;
/// Event times restart after this many sequence numbers (31.7 years at the
/// spacing above), so any `u64` seq keeps the time inside validate's range.
const EVENT_TIME_SEQS_WRAP: u64 = 1_000_000_000_000;
/// Hosts behind one producer: a Windows relay forwards several hosts and a
/// DPI sensor watches a subnet; each host has its own source id.
pub const HOSTS_PER_PRODUCER: u64 = 8;
/// Agent producers (ids 1..=this) whose hosts Core's detections name as subject.
const SUBJECT_PRODUCERS: u64 = 4;

const _: () = assert!(EVENT_JITTER_US_MAX < EVENT_SPACING_US as u64);
const _: () = assert!(
    BASE_TIME_US + EVENT_TIME_SEQS_WRAP as i64 * EVENT_SPACING_US + (EVENT_JITTER_US_MAX as i64)
        < crate::codec::validate::EVENT_TIME_US_MAX
);

/// One synthetic event, ready to be framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyntheticEvent {
    /// Index of the table in `schema::tables_of(module)`.
    pub table: u8,
    pub source_id: [u8; 16],
    /// Microseconds since 1970-01-01 UTC.
    pub event_time_us: i64,
    pub field_count: u16,
}

/// Append the fields (COPY BINARY field encoding: i32 BE length, -1 for
/// NULL, then the PostgreSQL binary send format of the value) of the event
/// `seq` of producer `producer_id` for `module` to `fields`, and return its
/// header values.
pub fn synthesize(module: Module, producer_id: u64, seq: u64, fields: &mut BytesMut) -> SyntheticEvent {
    let mut rng = Rng(mix64(mix64(mix64(module_salt(module)) ^ producer_id) ^ seq));
    let generators = generators_of(module);
    let table = choose_table(&mut rng, generators);
    let host = rng.below(HOSTS_PER_PRODUCER);
    let jitter_us = rng.below(EVENT_JITTER_US_MAX) as i64;
    let event_time_us = BASE_TIME_US + (seq % EVENT_TIME_SEQS_WRAP) as i64 * EVENT_SPACING_US + jitter_us;
    let mut writer = Writer { out: fields, rng, producer_id, host, count: 0 };
    let generator = &generators[usize::from(table)];
    (generator.write)(&mut writer);
    // Pair assertion with the schema (STYLE S12): right table, right arity.
    debug_assert!(
        crate::model::schema::tables_of(module)
            .nth(usize::from(table))
            .is_some_and(|t| t.name == generator.table && t.columns.len() == usize::from(writer.count))
    );
    SyntheticEvent { table, source_id: source_id(producer_id, host), event_time_us, field_count: writer.count }
}

/// Append the EVENTS record of synthetic event `seq` of (module, producer)
/// to `out`; `fields` is scratch space. Returns the event's table index.
pub fn record(module: Module, producer_id: u64, seq: u64, fields: &mut BytesMut, out: &mut BytesMut) -> u8 {
    fields.clear();
    let event = synthesize(module, producer_id, seq, fields);
    crate::codec::frame::encode_record(
        out,
        event.table,
        &event.source_id,
        event.event_time_us,
        event.field_count,
        fields,
    );
    event.table
}

/// An EVENTS body holding the synthetic events `first_seq ..
/// first_seq + count` of one producer, ready for `frame::encode_frame` or
/// `ModuleClient::send_events`.
pub fn events_body(module: Module, producer_id: u64, first_seq: u64, count: u32) -> BytesMut {
    let mut body = BytesMut::new();
    let mut fields = BytesMut::new();
    crate::codec::frame::encode_events_header(&mut body, first_seq, count);
    for seq in first_seq..first_seq + u64::from(count) {
        record(module, producer_id, seq, &mut fields, &mut body);
    }
    body
}

/// The source id of host `host_index` behind producer `producer_id`: an
/// RFC 9562 version 8 (custom) UUID, stable across runs.
pub fn source_id(producer_id: u64, host_index: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&mix64(producer_id ^ SOURCE_SALT).to_be_bytes());
    id[8..].copy_from_slice(&mix64(mix64(producer_id) ^ host_index).to_be_bytes());
    with_uuid_version(id, 8)
}

/// Salts ("SRCID_v1", "DOMAIN", "INCID") that keep the id streams apart.
const SOURCE_SALT: u64 = 0x5352_4349_445f_7631;
const DOMAIN_SALT: u64 = 0x0000_444f_4d41_494e;
const INCIDENT_SALT: u64 = 0x0000_0049_4e43_4944;

fn with_uuid_version(mut id: [u8; 16], version: u8) -> [u8; 16] {
    id[6] = (id[6] & 0x0f) | (version << 4);
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

/// The HELLO module codes, so streams of different modules never coincide.
fn module_salt(module: Module) -> u64 {
    match module {
        Module::Core => 1,
        Module::Dpi => 2,
        Module::LinuxAgent => 3,
        Module::WindowsAgent => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::frame::{decode_events, encode_events_header, encode_record};
    use crate::codec::validate::validate_record;
    use crate::model::schema::tables_of;

    const EVENTS_PER_MODULE: u64 = 2_000;

    /// Frame, decode and validate; every table and both NULL and non-NULL
    /// of every nullable column must appear.
    #[test]
    fn every_event_validates_and_every_table_appears() {
        let mut averages = Vec::new();
        for module in Module::ALL {
            let mut body = BytesMut::new();
            let mut fields = BytesMut::new();
            let mut field_bytes = 0;
            encode_events_header(&mut body, 1, EVENTS_PER_MODULE as u32);
            for seq in 1..=EVENTS_PER_MODULE {
                fields.clear();
                let event = synthesize(module, 7, seq, &mut fields);
                field_bytes += fields.len();
                encode_record(
                    &mut body,
                    event.table,
                    &event.source_id,
                    event.event_time_us,
                    event.field_count,
                    &fields,
                );
            }
            let events = decode_events(&body).unwrap();
            let mut seen = std::collections::HashSet::new();
            for record in &events.records {
                let table = validate_record(module, record).unwrap();
                seen.insert((table.name, None));
                let mut rest = record.fields;
                for column in table.columns {
                    let (length, tail) = rest.split_first_chunk::<4>().unwrap();
                    let length = i32::from_be_bytes(*length);
                    seen.insert((table.name, Some((column.name, length < 0))));
                    rest = &tail[usize::try_from(length).unwrap_or(0)..];
                }
            }
            for table in tables_of(module) {
                assert!(seen.contains(&(table.name, None)), "{} never chosen", table.name);
                for column in table.columns.iter().filter(|c| c.nullable) {
                    for null in [false, true] {
                        assert!(
                            seen.contains(&(table.name, Some((column.name, null)))),
                            "{}.{} null={null} never seen",
                            table.name,
                            column.name
                        );
                    }
                }
            }
            let average = field_bytes as u64 / EVENTS_PER_MODULE;
            eprintln!("{}: {average} field bytes per event on average", module.name());
            averages.push((module, average));
        }
        // DPI rows are mostly fixed-width (a flow is about 112 bytes), so
        // its average sits near 125 bytes; host and Core events near 150-190.
        for (module, average) in averages {
            assert!((100..=300).contains(&average), "{module:?}: {average} bytes");
        }
    }

    #[test]
    fn same_inputs_give_identical_bytes() {
        for module in Module::ALL {
            for seq in [1, 2, 1_000, u64::MAX] {
                let mut first = BytesMut::new();
                let mut second = BytesMut::from(&b"prefix"[..]);
                let a = synthesize(module, 42, seq, &mut first);
                let b = synthesize(module, 42, seq, &mut second);
                assert_eq!(a, b);
                assert_eq!(&first[..], &second[6..]);
                let mut other = BytesMut::new();
                synthesize(module, 43, seq, &mut other);
                assert_ne!(first, other, "producer id must change the content");
            }
        }
    }

    #[test]
    fn event_times_increase_and_source_ids_are_few() {
        let mut fields = BytesMut::new();
        let mut previous = 0;
        let mut sources = std::collections::HashSet::new();
        for seq in 1..=1_000 {
            let event = synthesize(Module::LinuxAgent, 3, seq, &mut fields);
            assert!(event.event_time_us > previous);
            assert!(event.event_time_us - BASE_TIME_US < (seq as i64 + 1) * EVENT_SPACING_US);
            previous = event.event_time_us;
            sources.insert(event.source_id);
        }
        assert_eq!(sources.len() as u64, HOSTS_PER_PRODUCER);
    }
}
