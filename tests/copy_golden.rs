//! Golden COPY BINARY streams, one per event table, and their load into a
//! real PostgreSQL (STYLE S19, S20).
//!
//! For every table in `schema::EVENT_TABLES`, three synthetic rows of
//! producer 1 (the first sequence numbers `synth` sends to that table) are
//! encoded with a fixed ingest time and compared byte for byte with
//! `tests/golden/<schema>.<table>.copy`; `UPDATE_GOLDEN=1` rewrites the
//! fixtures instead. Partitions exist only around today, so for the load the
//! same rows are re-encoded with the current time as ingest time; that
//! stream must differ from the fixture only in each row's eight ingest-time
//! bytes, which proves the fixture is what PostgreSQL accepts. It is loaded
//! through the module's writer role, and every column is read back as text
//! by the admin role and compared with the value that was encoded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use applianced::codec::copy::{self, CommonValues, PG_EPOCH_OFFSET_US};
use applianced::model::matrix::Role;
use applianced::model::schema::{Column, ColumnType, EVENT_TABLES, EventTable, tables_of};
use applianced::pg::Connection;
use applianced::producer::synth::{self, SyntheticEvent};
use bytes::BytesMut;
use common::TestCluster;

const PRODUCER_ID: u64 = 1;
const PRODUCER_EPOCH: i64 = 1;
const ROWS_PER_TABLE: usize = 3;
/// The rarest table gets 15 % of a module's events; 1,000 seqs hold 3 of each.
const SEQ_SEARCH_MAX: u64 = 1_000;
/// Ingest time of the fixtures: the synthetic clock's base, 2026-12-01T00:00:00Z.
const GOLDEN_INGEST_TIME_US: i64 = synth::BASE_TIME_US;
/// Signature (11 bytes), flags (4) and header extension length (4).
const COPY_HEADER_BYTES: usize = 19;
/// Where a row's ingest-time value starts: the field count (2); producer
/// id, epoch and seq (4 + 8 each); source id (4 + 16); event time (4 + 8);
/// the ingest time's own length (4).
const INGEST_VALUE_OFFSET: usize = 2 + 3 * 12 + 20 + 12 + 4;
/// Bytes of a row before the table's own fields.
const COMMON_ROW_BYTES: usize = INGEST_VALUE_OFFSET + 8;
/// The COPY trailer: a field count of -1.
const COPY_TRAILER_BYTES: usize = 2;

struct SyntheticRow {
    seq: u64,
    event: SyntheticEvent,
    fields: BytesMut,
}

/// The first three events of producer 1 that `synth` sends to `table`.
fn rows_for(table: &EventTable) -> Vec<SyntheticRow> {
    let index = tables_of(table.module).position(|t| t.name == table.name).unwrap();
    let mut rows = Vec::new();
    for seq in 1..=SEQ_SEARCH_MAX {
        let mut fields = BytesMut::new();
        let event = synth::synthesize(table.module, PRODUCER_ID, seq, &mut fields);
        if usize::from(event.table) == index {
            rows.push(SyntheticRow { seq, event, fields });
        }
        if rows.len() == ROWS_PER_TABLE {
            return rows;
        }
    }
    panic!("{}: fewer than {ROWS_PER_TABLE} events in {SEQ_SEARCH_MAX} seqs", table.qualified_name());
}

fn encode_stream(table: &EventTable, rows: &[SyntheticRow], ingest_time_us: i64) -> Vec<u8> {
    let mut out = BytesMut::new();
    copy::encode_header(&mut out);
    for row in rows {
        let common = CommonValues {
            producer_id: PRODUCER_ID as i64,
            producer_epoch: PRODUCER_EPOCH,
            producer_seq: row.seq as i64,
            source_id: row.event.source_id,
            event_time_us: row.event.event_time_us,
            ingest_time_us,
        };
        copy::encode_row(&mut out, table, &common, &row.fields);
    }
    copy::encode_trailer(&mut out);
    out.to_vec()
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("golden")
}

fn fixture_path(table: &EventTable) -> PathBuf {
    golden_dir().join(format!("{}.copy", table.qualified_name()))
}

fn update_mode() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|value| value == "1")
}

/// The fixture as checked in (in update mode: as about to be written).
fn golden_bytes(table: &EventTable, rows: &[SyntheticRow]) -> Vec<u8> {
    if update_mode() {
        return encode_stream(table, rows, GOLDEN_INGEST_TIME_US);
    }
    let path = fixture_path(table);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (regenerate with UPDATE_GOLDEN=1)", path.display()))
}

fn first_difference(expected: &[u8], actual: &[u8]) -> String {
    let at = expected.iter().zip(actual).position(|(a, b)| a != b).unwrap_or(expected.len().min(actual.len()));
    format!("{} bytes in the fixture, {} encoded; first difference at byte {at}", expected.len(), actual.len())
}

#[test]
fn copy_streams_match_the_golden_fixtures() {
    let mut mismatches = Vec::new();
    for table in EVENT_TABLES {
        let stream = encode_stream(table, &rows_for(table), GOLDEN_INGEST_TIME_US);
        if update_mode() {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(fixture_path(table), &stream).unwrap();
            continue;
        }
        let fixture = golden_bytes(table, &[]);
        if fixture != stream {
            mismatches.push(format!("{}: {}", table.qualified_name(), first_difference(&fixture, &stream)));
        }
    }
    assert!(
        mismatches.is_empty(),
        "COPY bytes changed (UPDATE_GOLDEN=1 accepts the change):\n{}",
        mismatches.join("\n")
    );
    let mut expected: Vec<String> = EVENT_TABLES.iter().map(|t| format!("{}.copy", t.qualified_name())).collect();
    // Files only: tests/golden/spool/ holds the spool goldens.
    let mut present: Vec<String> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_type().unwrap().is_file())
        .map(|entry| entry.file_name().into_string().unwrap())
        .collect();
    expected.sort();
    present.sort();
    assert_eq!(present, expected, "one fixture per event table, nothing else");
}

/// `golden` with every row's ingest time replaced, after checking that the
/// bytes replaced are the fixture's ingest time.
fn with_ingest_time(golden: &[u8], rows: &[SyntheticRow], ingest_time_us: i64) -> Vec<u8> {
    let golden_value = (GOLDEN_INGEST_TIME_US - PG_EPOCH_OFFSET_US).to_be_bytes();
    let value = (ingest_time_us - PG_EPOCH_OFFSET_US).to_be_bytes();
    let mut patched = golden.to_vec();
    let mut row_start = COPY_HEADER_BYTES;
    for row in rows {
        let at = row_start + INGEST_VALUE_OFFSET;
        assert_eq!(&patched[at..at + 8], &golden_value, "seq {}: ingest time not where expected", row.seq);
        patched[at..at + 8].copy_from_slice(&value);
        row_start += COMMON_ROW_BYTES + row.fields.len();
    }
    assert_eq!(row_start + COPY_TRAILER_BYTES, golden.len(), "rows do not fill the fixture");
    patched
}

fn now_us() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(since_epoch.as_micros()).unwrap()
}

#[test]
fn fixtures_load_through_the_writer_roles_and_read_back() {
    let ingest_time_us = now_us();
    let cluster = TestCluster::start();
    let mut admin = cluster.admin();
    admin.execute("SET TimeZone = 'UTC'").unwrap();
    for table in EVENT_TABLES {
        let rows = rows_for(table);
        let live = encode_stream(table, &rows, ingest_time_us);
        let expected = with_ingest_time(&golden_bytes(table, &rows), &rows, ingest_time_us);
        assert!(
            live == expected,
            "{}: the live stream differs from the fixture beyond the ingest times",
            table.qualified_name()
        );
        let role = Role::Writer(table.module).name();
        let mut writer = cluster.connect(role);
        let loaded = writer
            .copy_in(&copy::copy_statement(table), &live)
            .unwrap_or_else(|e| panic!("COPY into {} as {role}: {e}", table.qualified_name()));
        assert_eq!(loaded, ROWS_PER_TABLE as u64, "{}", table.qualified_name());
        check_read_back(&mut admin, table, &rows, ingest_time_us);
    }
}

/// Every column of the loaded rows, as PostgreSQL prints it, against the
/// text the encoded value must print as.
fn check_read_back(admin: &mut Connection, table: &EventTable, rows: &[SyntheticRow], ingest_time_us: i64) {
    let columns: Vec<String> = table.columns.iter().map(|c| format!("{}::text", c.name)).collect();
    let sql = format!(
        "SELECT producer_id::text, producer_epoch::text, producer_seq::text, source_id::text, event_time::text, \
         (extract(epoch FROM ingest_time) * 1000000)::bigint::text, {} \
         FROM {} AS t WHERE t.producer_id = {PRODUCER_ID} ORDER BY t.producer_seq",
        columns.join(", "),
        table.qualified_name()
    );
    let actual = admin.simple_query(&sql).unwrap();
    let expected: Vec<Vec<Option<String>>> = rows.iter().map(|row| expected_row(table, row, ingest_time_us)).collect();
    assert_eq!(actual, expected, "{}", table.qualified_name());
}

fn expected_row(table: &EventTable, row: &SyntheticRow, ingest_time_us: i64) -> Vec<Option<String>> {
    let mut values = vec![
        Some(PRODUCER_ID.to_string()),
        Some(PRODUCER_EPOCH.to_string()),
        Some(row.seq.to_string()),
        Some(uuid_text(&row.event.source_id)),
        Some(timestamp_text(row.event.event_time_us)),
        Some(ingest_time_us.to_string()),
    ];
    let mut rest = &row.fields[..];
    for column in table.columns {
        let (length, tail) = rest.split_first_chunk::<4>().unwrap();
        let length = i32::from_be_bytes(*length);
        let Ok(length) = usize::try_from(length) else {
            values.push(None);
            rest = tail;
            continue;
        };
        let (value, next) = tail.split_at(length);
        values.push(Some(value_text(column, value)));
        rest = next;
    }
    assert!(rest.is_empty());
    values
}

/// The text output of PostgreSQL's type for a binary value.
fn value_text(column: &Column, value: &[u8]) -> String {
    match column.column_type {
        ColumnType::Int2 => i16::from_be_bytes(value.try_into().unwrap()).to_string(),
        ColumnType::Int4 => i32::from_be_bytes(value.try_into().unwrap()).to_string(),
        ColumnType::Int8 => i64::from_be_bytes(value.try_into().unwrap()).to_string(),
        // float4out prints the shortest text that reads back exactly, as Rust does.
        ColumnType::Float4 => f32::from_be_bytes(value.try_into().unwrap()).to_string(),
        ColumnType::Text => String::from_utf8(value.to_vec()).unwrap(),
        ColumnType::Bytea => format!("\\x{}", hex(value)),
        ColumnType::Uuid => uuid_text(value.try_into().unwrap()),
        ColumnType::Inet => inet_text(value),
        ColumnType::Timestamptz => {
            let pg_us = i64::from_be_bytes(value.try_into().unwrap());
            timestamp_text(pg_us + PG_EPOCH_OFFSET_US)
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn uuid_text(id: &[u8; 16]) -> String {
    let h = hex(id);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// `text(inet)` prints the prefix length even for a host address.
fn inet_text(value: &[u8]) -> String {
    match value {
        [2, 32, 0, 4, address @ ..] => {
            format!("{}/32", Ipv4Addr::from(<[u8; 4]>::try_from(address).unwrap()))
        }
        [3, 128, 0, 16, address @ ..] => {
            format!("{}/128", Ipv6Addr::from(<[u8; 16]>::try_from(address).unwrap()))
        }
        _ => panic!("not a host inet: {value:?}"),
    }
}

/// timestamptz output with TimeZone UTC and DateStyle ISO: trailing zeros
/// of the fraction are dropped, and so is a zero fraction.
fn timestamp_text(unix_us: i64) -> String {
    let seconds = unix_us.div_euclid(1_000_000);
    let micros = unix_us.rem_euclid(1_000_000);
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let of_day = seconds.rem_euclid(86_400);
    let mut text =
        format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", of_day / 3600, of_day / 60 % 60, of_day % 60);
    if micros != 0 {
        text.push('.');
        text.push_str(format!("{micros:06}").trim_end_matches('0'));
    }
    text.push_str("+00");
    text
}

use applianced::tools::bench::civil_from_days;

#[test]
fn timestamp_text_matches_postgres_output() {
    assert_eq!(timestamp_text(synth::BASE_TIME_US), "2026-12-01 00:00:00+00");
    assert_eq!(timestamp_text(synth::BASE_TIME_US + 1_234_500), "2026-12-01 00:00:01.2345+00");
    assert_eq!(timestamp_text(951_782_400_000_001), "2000-02-29 00:00:00.000001+00");
}
