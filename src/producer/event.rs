//! An event given as typed values, one per column of its table, encoded
//! into an EVENTS record exactly as the lane expects it (COPY BINARY field
//! encoding, PROTOCOL.md §5) and validated the way the lane validates it
//! (`codec::validate`), so a module learns a REJECT reason before sending.
//!
//! The table's columns are those after the six common columns (producer
//! id, epoch, seq, source id, event time, ingest time), in the order of
//! `model::schema` (the `generated/` docs list them per table).

use std::net::IpAddr;

use bytes::{BufMut, BytesMut};

use crate::codec::copy::PG_EPOCH_OFFSET_US;
use crate::codec::frame::{self, RecordRef, RejectCode};
use crate::codec::validate::{Invalid, validate_record};
use crate::model::matrix::Module;
use crate::model::schema::{ColumnType, EventTable, tables_of};

/// One column's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// NULL (only in a nullable column).
    Null,
    /// smallint, integer or bigint (checked against the column's range).
    Int(i64),
    /// real.
    Float(f32),
    /// text (UTF-8, no NUL, within the column's cap).
    Text(&'a str),
    /// bytea (within the column's cap).
    Bytes(&'a [u8]),
    /// uuid.
    Uuid([u8; 16]),
    /// inet: an address and its prefix length (32 or 128 for one host).
    Inet(IpAddr, u8),
    /// timestamp with time zone: microseconds since 1970-01-01 UTC.
    Time(i64),
}

/// Why an event could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventError {
    /// The module has no table of that name.
    UnknownTable { module: Module, table: String },
    /// More values than the table has columns.
    TooManyValues { table: &'static str, columns: usize },
    /// Fewer values than the table has columns.
    MissingValues { table: &'static str, given: usize, columns: usize },
    /// The value's type does not fit the column's.
    TypeMismatch { column: &'static str, expected: &'static str },
    /// An integer outside the column's range.
    OutOfRange { column: &'static str, value: i64 },
    /// The lane would reject this event (its code and reason, PROTOCOL.md §10).
    Rejected { code: RejectCode, reason: String },
}

impl std::fmt::Display for EventError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventError::UnknownTable { module, table } => write!(f, "{} has no table {table:?}", module.name()),
            EventError::TooManyValues { table, columns } => {
                write!(f, "{table} has {columns} columns: one value too many")
            }
            EventError::MissingValues { table, given, columns } => {
                write!(f, "{table} has {columns} columns, {given} values given")
            }
            EventError::TypeMismatch { column, expected } => write!(f, "{column} is {expected}"),
            EventError::OutOfRange { column, value } => write!(f, "{column}: {value} is out of range"),
            EventError::Rejected { code, reason } => write!(f, "rejected ({}): {reason}", *code as u16),
        }
    }
}

impl std::error::Error for EventError {}

/// Builds one event of one table, value by value, in column order.
#[derive(Debug)]
pub struct EventBuilder {
    module: Module,
    index: u8,
    table: &'static EventTable,
    fields: BytesMut,
    given: usize,
}

impl EventBuilder {
    /// An event of `module`'s table `table` (its name without the schema, e.g. `flows`).
    pub fn new(module: Module, table: &str) -> Result<EventBuilder, EventError> {
        let (index, found) = tables_of(module)
            .enumerate()
            .find(|(_, t)| t.name == table)
            .ok_or_else(|| EventError::UnknownTable { module, table: table.to_string() })?;
        let index = u8::try_from(index).map_err(|_| EventError::UnknownTable { module, table: table.to_string() })?;
        Ok(EventBuilder { module, index, table: found, fields: BytesMut::with_capacity(512), given: 0 })
    }

    /// The table's columns, in the order values are given: (name, SQL type, nullable).
    pub fn columns(&self) -> impl Iterator<Item = (&'static str, &'static str, bool)> {
        self.table.columns.iter().map(|c| (c.name, c.column_type.sql_name(), c.nullable))
    }

    /// Start again with no value (the table is kept; the buffer reused).
    pub fn clear(&mut self) {
        self.fields.clear();
        self.given = 0;
    }

    /// The next column's value.
    pub fn push(&mut self, value: Value<'_>) -> Result<&mut EventBuilder, EventError> {
        let Some(column) = self.table.columns.get(self.given) else {
            return Err(EventError::TooManyValues { table: self.table.name, columns: self.table.columns.len() });
        };
        let mismatch = || EventError::TypeMismatch { column: column.name, expected: column.column_type.sql_name() };
        let range = |value: i64, lo: i64, hi: i64| {
            if (lo..=hi).contains(&value) { Ok(()) } else { Err(EventError::OutOfRange { column: column.name, value }) }
        };
        let out = &mut self.fields;
        match (column.column_type, value) {
            (_, Value::Null) => out.put_i32(-1),
            (ColumnType::Int2, Value::Int(v)) => {
                range(v, i16::MIN.into(), i16::MAX.into())?;
                out.put_i32(2);
                out.put_i16(v as i16);
            }
            (ColumnType::Int4, Value::Int(v)) => {
                range(v, i32::MIN.into(), i32::MAX.into())?;
                out.put_i32(4);
                out.put_i32(v as i32);
            }
            (ColumnType::Int8, Value::Int(v)) => {
                out.put_i32(8);
                out.put_i64(v);
            }
            (ColumnType::Float4, Value::Float(v)) => {
                out.put_i32(4);
                out.put_f32(v);
            }
            (ColumnType::Text, Value::Text(v)) => put_bytes(out, v.as_bytes()),
            (ColumnType::Bytea, Value::Bytes(v)) => put_bytes(out, v),
            (ColumnType::Uuid, Value::Uuid(v)) => put_bytes(out, &v),
            (ColumnType::Inet, Value::Inet(address, bits)) => {
                // PostgreSQL's inet binary format: family, bits, is_cidr, length, address.
                let (family, octets): (u8, Vec<u8>) = match address {
                    IpAddr::V4(a) => (2, a.octets().to_vec()),
                    IpAddr::V6(a) => (3, a.octets().to_vec()),
                };
                out.put_i32(4 + octets.len() as i32);
                out.put_slice(&[family, bits, 0, octets.len() as u8]);
                out.put_slice(&octets);
            }
            (ColumnType::Timestamptz, Value::Time(us)) => {
                out.put_i32(8);
                out.put_i64(us.saturating_sub(PG_EPOCH_OFFSET_US));
            }
            _ => return Err(mismatch()),
        }
        self.given += 1;
        Ok(self)
    }

    /// The finished record (an EVENTS record: header and fields), checked
    /// as the lane checks it. The builder is cleared for the next event.
    pub fn finish(&mut self, source_id: &[u8; 16], event_time_us: i64, out: &mut BytesMut) -> Result<(), EventError> {
        let columns = self.table.columns.len();
        if self.given != columns {
            let error = EventError::MissingValues { table: self.table.name, given: self.given, columns };
            self.clear();
            return Err(error);
        }
        let result = self.checked_record(&self.fields, source_id, event_time_us, out);
        self.clear();
        result
    }

    /// The record of an event whose fields the caller encoded already (COPY
    /// BINARY field encoding, every column of this table, PROTOCOL.md §5),
    /// checked as the lane checks it. The values pushed so far are dropped.
    pub fn finish_encoded(
        &mut self,
        fields: &[u8],
        source_id: &[u8; 16],
        event_time_us: i64,
        out: &mut BytesMut,
    ) -> Result<(), EventError> {
        self.clear();
        self.checked_record(fields, source_id, event_time_us, out)
    }

    /// Append the record of `fields` (this table's columns) to `out` if the
    /// lane would accept it, else say why.
    fn checked_record(
        &self,
        fields: &[u8],
        source_id: &[u8; 16],
        event_time_us: i64,
        out: &mut BytesMut,
    ) -> Result<(), EventError> {
        let field_count = self.table.columns.len() as u16;
        let record = RecordRef { table: self.index, field_count, source_id, event_time_us, fields, raw: &[] };
        match validate_record(self.module, &record) {
            Ok(_) => {
                frame::encode_record(out, self.index, source_id, event_time_us, field_count, fields);
                Ok(())
            }
            Err(Invalid::Reject { code, reason }) => Err(EventError::Rejected { code, reason }),
            // A field count or encoding the lane would close the connection
            // for: reported as a bad field length, before anything is sent.
            Err(Invalid::Protocol(error)) => {
                Err(EventError::Rejected { code: RejectCode::FieldLength, reason: error.reason })
            }
        }
    }
}

fn put_bytes(out: &mut BytesMut, value: &[u8]) {
    out.put_i32(value.len() as i32);
    out.put_slice(value);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A valid value of an SQL type.
    fn valid(sql_type: &str) -> Value<'static> {
        match sql_type {
            "smallint" | "integer" | "bigint" => Value::Int(7),
            "real" => Value::Float(0.5),
            "text" => Value::Text("value"),
            "bytea" => Value::Bytes(b"\x01\x02"),
            "uuid" => Value::Uuid([9; 16]),
            "inet" => Value::Inet(IpAddr::from([10, 0, 0, 1]), 32),
            _ => Value::Time(1_800_000_000_000_000),
        }
    }

    /// A valid value for every column.
    fn fill(b: &mut EventBuilder) {
        let types: Vec<&str> = b.columns().map(|(_, t, _)| t).collect();
        for t in types {
            b.push(valid(t)).unwrap();
        }
    }

    #[test]
    fn typed_events_of_every_table_encode_as_the_lane_reads_them() {
        for module in Module::ALL {
            for table in tables_of(module) {
                let mut b = EventBuilder::new(module, table.name).unwrap();
                let mut out = BytesMut::new();
                fill(&mut b);
                b.finish(&[7; 16], 1_800_000_000_000_000, &mut out).unwrap();
                let mut body = BytesMut::new();
                frame::encode_events_header(&mut body, 1, 1);
                body.extend_from_slice(&out);
                let events = frame::decode_events(&body).unwrap();
                assert_eq!(events.records.len(), 1);
                assert_eq!(validate_record(module, &events.records[0]).unwrap().name, table.name);
            }
        }
    }

    #[test]
    fn bad_values_are_refused_before_anything_is_sent() {
        let mut b = EventBuilder::new(Module::LinuxAgent, "process_events").unwrap();
        let mut out = BytesMut::new();
        // (value for the first column, smallint `action`, expected error)
        assert!(matches!(b.push(Value::Int(70_000)), Err(EventError::OutOfRange { column: "action", .. })));
        assert!(matches!(b.push(Value::Text("x")), Err(EventError::TypeMismatch { column: "action", .. })));
        b.push(Value::Int(1)).unwrap();
        assert!(matches!(b.finish(&[0; 16], 0, &mut out), Err(EventError::MissingValues { given: 1, .. })));
        // A value the lane would reject: an event time outside 1970..2200.
        fill(&mut b);
        assert!(matches!(
            b.finish(&[0; 16], -1, &mut out),
            Err(EventError::Rejected { code: RejectCode::TimestampRange, .. })
        ));
        // NULL in a NOT NULL column (`action`), the others valid.
        b.push(Value::Null).unwrap();
        let rest: Vec<&str> = b.columns().skip(1).map(|(_, t, _)| t).collect();
        for t in rest {
            b.push(valid(t)).unwrap();
        }
        assert!(matches!(
            b.finish(&[0; 16], 1_800_000_000_000_000, &mut out),
            Err(EventError::Rejected { code: RejectCode::NullInNotNull, .. })
        ));
        assert!(out.is_empty(), "nothing encoded for refused events");
        assert!(matches!(EventBuilder::new(Module::Dpi, "process_events"), Err(EventError::UnknownTable { .. })));
    }
}
