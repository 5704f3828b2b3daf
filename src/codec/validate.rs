//! Per-table validation of event records, in place (sans-I/O).
//!
//! Consumes a [`RecordRef`] borrowed from an EVENTS frame and the lane's
//! module; produces the target table, or a rejection with a reason. A
//! record that passes is guaranteed to be accepted by PostgreSQL's binary
//! input functions for its columns, so one bad event can never fail the
//! COPY of its batch. A field count that differs from the table is a
//! protocol error (the producer speaks another schema), not a bad event.

use crate::codec::frame::{ErrorCode, FrameError, RecordRef, RejectCode};
use crate::model::matrix::Module;
use crate::model::schema::{Column, ColumnType, EventTable, tables_of};

/// Event times accepted: 1970-01-01 up to (not including) 2200-01-01 UTC.
/// Skewed clocks inside this range are accepted; the partition key is the
/// appliance's ingest time, not this.
pub const EVENT_TIME_US_MIN: i64 = 0;
pub const EVENT_TIME_US_MAX: i64 = 7_258_118_400_000_000;

/// Why a record was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// The whole connection is closed with this error.
    Protocol(FrameError),
    /// This event is rejected and quarantined; the batch goes on.
    Reject { code: RejectCode, reason: String },
}

fn reject(code: RejectCode, reason: String) -> Invalid {
    Invalid::Reject { code, reason }
}

/// The table a record targets, or why it is invalid.
pub fn validate_record(module: Module, record: &RecordRef<'_>) -> Result<&'static EventTable, Invalid> {
    let Some(table) = tables_of(module).nth(record.table as usize) else {
        return Err(reject(
            RejectCode::UnknownTable,
            format!("table index {} is not a {} table", record.table, module.name()),
        ));
    };
    if usize::from(record.field_count) != table.columns.len() {
        return Err(Invalid::Protocol(FrameError::new(
            ErrorCode::FieldCount,
            format!(
                "{} has {} producer fields, record declares {}",
                table.qualified_name(),
                table.columns.len(),
                record.field_count
            ),
        )));
    }
    if !(EVENT_TIME_US_MIN..EVENT_TIME_US_MAX).contains(&record.event_time_us) {
        return Err(reject(
            RejectCode::TimestampRange,
            format!("event_time {} us is outside 1970..2200", record.event_time_us),
        ));
    }
    let mut rest = record.fields;
    for column in table.columns {
        let Some((length, tail)) = split_length(rest) else {
            return Err(Invalid::Protocol(FrameError::new(
                ErrorCode::Malformed,
                format!("field {}: truncated length", column.name),
            )));
        };
        if length < 0 {
            if length != -1 {
                return Err(Invalid::Protocol(FrameError::new(
                    ErrorCode::Malformed,
                    format!("field {}: length {length}", column.name),
                )));
            }
            if !column.nullable {
                return Err(reject(RejectCode::NullInNotNull, format!("{} is NOT NULL", column.name)));
            }
            rest = tail;
            continue;
        }
        let length = length as usize;
        if tail.len() < length {
            return Err(Invalid::Protocol(FrameError::new(
                ErrorCode::Malformed,
                format!("field {}: {length} bytes announced, {} left", column.name, tail.len()),
            )));
        }
        let (value, next) = tail.split_at(length);
        check_value(column, value)?;
        rest = next;
    }
    if !rest.is_empty() {
        return Err(Invalid::Protocol(FrameError::new(
            ErrorCode::Malformed,
            format!("{} bytes after the last field", rest.len()),
        )));
    }
    Ok(table)
}

fn split_length(bytes: &[u8]) -> Option<(i32, &[u8])> {
    let (head, tail) = bytes.split_first_chunk::<4>()?;
    Some((i32::from_be_bytes(*head), tail))
}

fn check_value(column: &Column, value: &[u8]) -> Result<(), Invalid> {
    let exact = |n: usize| {
        if value.len() == n {
            Ok(())
        } else {
            Err(reject(RejectCode::FieldLength, format!("{} needs {n} bytes, got {}", column.name, value.len())))
        }
    };
    match column.column_type {
        ColumnType::Int2 => exact(2),
        ColumnType::Int4 => exact(4),
        ColumnType::Int8 => exact(8),
        ColumnType::Uuid => exact(16),
        ColumnType::Timestamptz => {
            exact(8)?;
            let us = i64::from_be_bytes(value.try_into().unwrap_or([0; 8])) + crate::codec::copy::PG_EPOCH_OFFSET_US;
            if (EVENT_TIME_US_MIN..EVENT_TIME_US_MAX).contains(&us) {
                Ok(())
            } else {
                Err(reject(RejectCode::TimestampRange, format!("{} out of range", column.name)))
            }
        }
        ColumnType::Float4 => {
            exact(4)?;
            let v = f32::from_be_bytes(value.try_into().unwrap_or([0; 4]));
            if v.is_finite() {
                Ok(())
            } else {
                Err(reject(RejectCode::NotFinite, format!("{} is not finite", column.name)))
            }
        }
        ColumnType::Text => {
            capped(column, value)?;
            check_text(value).map_err(|e| match e {
                TextError::NotUtf8(e) => reject(RejectCode::TextNotUtf8, format!("{}: {e}", column.name)),
                TextError::Nul => reject(RejectCode::TextHasNul, format!("{} contains NUL", column.name)),
            })
        }
        ColumnType::Bytea => capped(column, value),
        ColumnType::Inet => check_inet(column, value),
    }
}

fn capped(column: &Column, value: &[u8]) -> Result<(), Invalid> {
    if value.len() > column.value_bytes_max as usize {
        return Err(reject(
            RejectCode::ValueTooLong,
            format!("{}: {} bytes exceeds {}", column.name, value.len(), column.value_bytes_max),
        ));
    }
    Ok(())
}

/// Why a text field is not valid `text`.
#[derive(Debug, PartialEq, Eq)]
enum TextError {
    NotUtf8(std::str::Utf8Error),
    Nul,
}

/// What PostgreSQL's text input needs: UTF-8 (the database encoding) and
/// no NUL. One pass, 8 bytes at a time, where the field is ASCII without
/// NUL (a byte in 1..=0x7F), as event text almost always is; a field with
/// any other byte gets the two full checks, UTF-8 first, for its verdict.
fn check_text(value: &[u8]) -> Result<(), TextError> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = value.chunks_exact(8);
    // With no byte ≥ 0x80, `w - ONES` borrows only through a zero byte,
    // which sets that byte's high bit: so the test is exact.
    let plain = words.by_ref().all(|w| {
        <[u8; 8]>::try_from(w).is_ok_and(|w| {
            let w = u64::from_le_bytes(w);
            (w | w.wrapping_sub(ONES)) & HIGH == 0
        })
    }) && words.remainder().iter().all(|&b| b != 0 && b < 0x80);
    if plain {
        return Ok(());
    }
    let text = std::str::from_utf8(value).map_err(TextError::NotUtf8)?;
    if text.contains('\0') { Err(TextError::Nul) } else { Ok(()) }
}

/// PostgreSQL's inet binary format (network.c, inet_recv): family
/// (2 = IPv4, 3 = IPv6), bits, is_cidr, address length, address.
fn check_inet(column: &Column, value: &[u8]) -> Result<(), Invalid> {
    let bad = |why: &str| reject(RejectCode::BadInet, format!("{}: {why}", column.name));
    let [family, bits, is_cidr, length, address @ ..] = value else {
        return Err(bad("shorter than 4 bytes"));
    };
    let (expected_length, max_bits) = match family {
        2 => (4u8, 32u8),
        3 => (16, 128),
        _ => return Err(bad("family is neither 2 (IPv4) nor 3 (IPv6)")),
    };
    if *length != expected_length || address.len() != usize::from(expected_length) {
        return Err(bad("address length does not match the family"));
    }
    if *bits > max_bits || *is_cidr != 0 {
        return Err(bad("bits out of range or cidr flag set"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two full checks the one-pass test stands in for.
    fn two_passes(value: &[u8]) -> Result<(), TextError> {
        let text = std::str::from_utf8(value).map_err(TextError::NotUtf8)?;
        if text.contains('\0') { Err(TextError::Nul) } else { Ok(()) }
    }

    #[test]
    fn text_checks_give_the_verdict_of_utf8_then_nul() {
        let table: [(&[u8], Option<bool>); 12] = [
            (b"", None),
            (b"a", None),
            (b"/usr/bin/encrypt-everything.sh", None),
            (b"\x7f\x01 control bytes are text", None),
            ("caf\u{e9} \u{1f512} na\u{ef}ve".as_bytes(), None),
            (b"\0", Some(false)),
            (b"exactly8\0", Some(false)),
            (b"in the middle\0 of a word", Some(false)),
            (b"\xff", Some(true)),
            (b"lone continuation \x80 byte", Some(true)),
            (b"truncated \xe2\x82", Some(true)),
            // Invalid UTF-8 and a NUL: UTF-8 is reported, as before.
            (b"\0 then \xc3\x28", Some(true)),
        ];
        for (value, expected) in table {
            let verdict = check_text(value);
            match expected {
                None => assert_eq!(verdict, Ok(()), "{value:?}"),
                Some(false) => assert_eq!(verdict, Err(TextError::Nul), "{value:?}"),
                Some(true) => assert!(matches!(verdict, Err(TextError::NotUtf8(_))), "{value:?}"),
            }
            assert_eq!(verdict, two_passes(value), "{value:?}");
        }
    }

    /// Every byte value at every position of fields of 1 to 24 bytes (word
    /// and remainder, both alignments of a field inside a buffer): the
    /// one-pass verdict equals the two passes'.
    #[test]
    fn text_checks_agree_with_the_two_passes_on_every_byte_at_every_position() {
        let base = b"xxabcdefghijklmnopqrstuvwxyz";
        for start in 0..2 {
            for len in 1..=24 {
                for at in 0..len {
                    for byte in 0..=255u8 {
                        let mut buffer = base.to_vec();
                        buffer[start + at] = byte;
                        let value = &buffer[start..start + len];
                        assert_eq!(check_text(value), two_passes(value), "{value:?}");
                    }
                }
            }
        }
    }
}
