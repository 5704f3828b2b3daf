//! COPY BINARY encoder (sans-I/O).
//!
//! Consumes validated event records; produces the byte stream of
//! `COPY <table> (<explicit columns>) FROM STDIN (FORMAT binary)` into a
//! `BytesMut`: the 19-byte file header, one tuple per event, the trailer.
//! The appliance writes the common columns itself (producer id, epoch and
//! seq from the session, source id and event time from the record header,
//! ingest time from its own clock); the record's remaining fields are
//! already in COPY field encoding and are appended verbatim, never
//! re-encoded. Format: PostgreSQL docs, "COPY — Binary Format";
//! `src/backend/commands/copyfromparse.c`.

use bytes::{BufMut, BytesMut};

use crate::model::schema::{COMMON_COLUMNS, EventTable};

/// "PGCOPY\n\377\r\n\0", the binary COPY signature.
pub const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Microseconds from 1970-01-01 to 2000-01-01, PostgreSQL's timestamp epoch.
pub const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// The columns the appliance fills for every row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommonValues {
    pub producer_id: i64,
    pub producer_epoch: i64,
    pub producer_seq: i64,
    pub source_id: [u8; 16],
    /// Microseconds since 1970-01-01 UTC.
    pub event_time_us: i64,
    /// Microseconds since 1970-01-01 UTC.
    pub ingest_time_us: i64,
}

/// The COPY statement for a table, naming every column explicitly.
pub fn copy_statement(table: &EventTable) -> String {
    let columns: Vec<&str> = table.all_columns().map(|c| c.name).collect();
    format!("COPY {} ({}) FROM STDIN (FORMAT binary)", table.qualified_name(), columns.join(", "))
}

/// Signature, flags (no OIDs) and an empty header extension.
/// Bytes of [`encode_header`]: signature, flags, header extension length.
pub const HEADER_BYTES: usize = SIGNATURE.len() + 8;

pub fn encode_header(out: &mut BytesMut) {
    out.put_slice(SIGNATURE);
    out.put_i32(0);
    out.put_i32(0);
}

/// The COPY BINARY trailer: a field count of -1.
pub const TRAILER: [u8; 2] = (-1i16).to_be_bytes();

/// Append the file trailer ([`TRAILER`]).
pub fn encode_trailer(out: &mut BytesMut) {
    out.put_slice(&TRAILER);
}

fn put_i64_field(out: &mut BytesMut, value: i64) {
    out.put_i32(8);
    out.put_i64(value);
}

/// The bytes [`encode_row`] writes for a row whose table fields take
/// `fields_len` bytes: the field count, the six common columns (length
/// words, five 8-byte values, the 16-byte source id), then the fields.
pub fn row_len(fields_len: usize) -> usize {
    2 + 6 * 4 + 5 * 8 + 16 + fields_len
}

/// One tuple: common columns, then the record's fields verbatim.
/// `fields` must hold exactly `table.columns.len()` validated fields.
pub fn encode_row(out: &mut BytesMut, table: &EventTable, common: &CommonValues, fields: &[u8]) {
    let field_count = COMMON_COLUMNS.len() + table.columns.len();
    out.reserve(row_len(fields.len()));
    out.put_i16(field_count as i16);
    put_i64_field(out, common.producer_id);
    put_i64_field(out, common.producer_epoch);
    put_i64_field(out, common.producer_seq);
    out.put_i32(16);
    out.put_slice(&common.source_id);
    put_i64_field(out, common.event_time_us - PG_EPOCH_OFFSET_US);
    put_i64_field(out, common.ingest_time_us - PG_EPOCH_OFFSET_US);
    out.put_slice(fields);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::schema::EVENT_TABLES;

    #[test]
    fn statement_names_every_column() {
        let table = &EVENT_TABLES[0];
        assert_eq!(
            copy_statement(table),
            "COPY linux_agent.process_events (producer_id, producer_epoch, producer_seq, source_id, event_time, ingest_time, action, pid, ppid, uid, gid, exe, cmdline, sha256) FROM STDIN (FORMAT binary)"
        );
    }

    #[test]
    fn golden_bytes_of_one_row() {
        // dpi.dns: flow_id uuid, query_name text, query_type int4, response_code int2, answers text NULL.
        let table = EVENT_TABLES.iter().find(|t| t.name == "dns").unwrap();
        let mut fields = BytesMut::new();
        fields.put_i32(16);
        fields.put_slice(&[0xaa; 16]);
        fields.put_i32(3);
        fields.put_slice(b"a.b");
        fields.put_i32(4);
        fields.put_i32(1);
        fields.put_i32(2);
        fields.put_i16(0);
        fields.put_i32(-1);
        let common = CommonValues {
            producer_id: 1,
            producer_epoch: 2,
            producer_seq: 3,
            source_id: [0x11; 16],
            event_time_us: PG_EPOCH_OFFSET_US + 5,
            ingest_time_us: PG_EPOCH_OFFSET_US + 6,
        };
        let mut out = BytesMut::new();
        encode_header(&mut out);
        encode_row(&mut out, table, &common, &fields);
        encode_trailer(&mut out);
        let mut expected: Vec<u8> = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
        expected.extend_from_slice(&[0, 11]); // 6 common + 5 table fields
        for value in [1u64, 2, 3] {
            expected.extend_from_slice(&[0, 0, 0, 8]);
            expected.extend_from_slice(&value.to_be_bytes());
        }
        expected.extend_from_slice(&[0, 0, 0, 16]);
        expected.extend_from_slice(&[0x11; 16]);
        expected.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 5]);
        expected.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 6]);
        expected.extend_from_slice(&fields);
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(&out[..], &expected[..]);
    }
}
