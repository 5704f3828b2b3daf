//! SQL literals of COPY BINARY tuples, for the multi-row INSERTs of
//! variant b.
//!
//! Consumes one tuple as the crate's COPY encoder wrote it and the table it
//! belongs to; produces `(v1,v2,...)` with each value rendered from its
//! column type (PostgreSQL's binary send formats decoded back to text).
//! Sans-I/O (STYLE S3), in the bench thread preparing the statements.
//!
//! Invariant: a tuple renders only if it holds exactly the table's columns
//! and every field decodes; anything else is an error, never a guess. The
//! literals assume `standard_conforming_strings = on`, which the INSERT
//! streams set.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::base::clock::civil_from_days;
use crate::codec::copy::PG_EPOCH_OFFSET_US;
use crate::control::error::AppError;
use crate::model::schema::{ColumnType, EventTable};

fn undecodable() -> AppError {
    AppError::Refused("bench: a synthesized tuple does not decode".into())
}

/// One tuple as `(v1,v2,...)`, decoded from its COPY BINARY bytes by the
/// table's column types; fails unless the tuple holds exactly those columns.
pub(super) fn render_row(sql: &mut String, table: &EventTable, tuple: &[u8]) -> Result<(), AppError> {
    let (count, mut rest) = tuple.split_first_chunk::<2>().ok_or_else(undecodable)?;
    if i16::from_be_bytes(*count) as usize != table.all_columns().count() {
        return Err(undecodable());
    }
    sql.push('(');
    for (index, column) in table.all_columns().enumerate() {
        if index > 0 {
            sql.push(',');
        }
        match take_field(&mut rest)? {
            None => sql.push_str("NULL"),
            Some(value) => render_value(sql, column.column_type, value)?,
        }
    }
    sql.push(')');
    if rest.is_empty() { Ok(()) } else { Err(undecodable()) }
}

/// The next field: i32 length (-1 for NULL), then that many bytes.
fn take_field<'a>(rest: &mut &'a [u8]) -> Result<Option<&'a [u8]>, AppError> {
    let (length, tail) = rest.split_first_chunk::<4>().ok_or_else(undecodable)?;
    let Ok(length) = usize::try_from(i32::from_be_bytes(*length)) else {
        *rest = tail;
        return Ok(None);
    };
    let (value, tail) = tail.split_at_checked(length).ok_or_else(undecodable)?;
    *rest = tail;
    Ok(Some(value))
}

fn fixed<const N: usize>(value: &[u8]) -> Result<[u8; N], AppError> {
    value.try_into().map_err(|_| undecodable())
}

fn render_value(sql: &mut String, column_type: ColumnType, value: &[u8]) -> Result<(), AppError> {
    match column_type {
        ColumnType::Int2 => push_display(sql, i16::from_be_bytes(fixed(value)?)),
        ColumnType::Int4 => push_display(sql, i32::from_be_bytes(fixed(value)?)),
        ColumnType::Int8 => push_display(sql, i64::from_be_bytes(fixed(value)?)),
        ColumnType::Float4 => {
            let number = f32::from_be_bytes(fixed(value)?);
            // Rust prints finite floats without exponents; the rest need quotes.
            if number.is_finite() { push_display(sql, number) } else { push_display(sql, format!("'{number}'")) }
        }
        ColumnType::Text => {
            let text = std::str::from_utf8(value).map_err(|_| undecodable())?;
            sql.push('\'');
            sql.push_str(&text.replace('\'', "''"));
            sql.push('\'');
        }
        ColumnType::Bytea => {
            sql.push_str("'\\x");
            push_hex(sql, value);
            sql.push('\'');
        }
        ColumnType::Uuid => render_uuid(sql, &fixed::<16>(value)?),
        ColumnType::Inet => render_inet(sql, value)?,
        ColumnType::Timestamptz => {
            render_timestamp(sql, i64::from_be_bytes(fixed(value)?) + PG_EPOCH_OFFSET_US);
        }
    }
    Ok(())
}

fn push_display(sql: &mut String, value: impl std::fmt::Display) {
    let _ = write!(sql, "{value}");
}

fn push_hex(sql: &mut String, bytes: &[u8]) {
    for byte in bytes {
        let _ = write!(sql, "{byte:02x}");
    }
}

fn render_uuid(sql: &mut String, id: &[u8; 16]) {
    sql.push('\'');
    for (range, dash) in [(0..4, true), (4..6, true), (6..8, true), (8..10, true), (10..16, false)] {
        push_hex(sql, &id[range]);
        if dash {
            sql.push('-');
        }
    }
    sql.push('\'');
}

/// inet_send's form: family (2 IPv4, 3 IPv6), bits, is_cidr, length, address.
fn render_inet(sql: &mut String, value: &[u8]) -> Result<(), AppError> {
    let (&[family, bits, _, length], address) = value.split_first_chunk::<4>().ok_or_else(undecodable)?;
    if usize::from(length) != address.len() {
        return Err(undecodable());
    }
    let (text, full_bits) = match family {
        2 => (Ipv4Addr::from(fixed::<4>(address)?).to_string(), 32),
        3 => (Ipv6Addr::from(fixed::<16>(address)?).to_string(), 128),
        _ => return Err(undecodable()),
    };
    if bits == full_bits {
        push_display(sql, format!("'{text}'"))
    } else {
        push_display(sql, format!("'{text}/{bits}'"))
    }
    Ok(())
}

/// A timestamptz literal in UTC with microseconds.
fn render_timestamp(sql: &mut String, unix_us: i64) {
    const DAY_US: i64 = 86_400_000_000;
    let (year, month, day) = civil_from_days(unix_us.div_euclid(DAY_US));
    let of_day_us = unix_us.rem_euclid(DAY_US);
    let seconds = of_day_us / 1_000_000;
    let _ = write!(
        sql,
        "'{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:06}+00'",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        of_day_us % 1_000_000
    );
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::codec::copy::{self, CommonValues};
    use crate::model::matrix::Module;
    use crate::model::schema::EVENT_TABLES;
    use crate::producer::synth;
    use crate::tools::bench::variants::for_each_tuple;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(synth::BASE_TIME_US / 86_400_000_000), (2026, 12, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn timestamp_literal() {
        let mut sql = String::new();
        render_timestamp(&mut sql, PG_EPOCH_OFFSET_US + 3_723_000_007);
        assert_eq!(sql, "'2000-01-01 01:02:03.000007+00'");
    }

    #[test]
    fn every_synthesized_tuple_renders() {
        for module in Module::ALL {
            for_each_tuple(module, 7, 500, synth::BASE_TIME_US, |_, table, tuple| {
                let mut sql = String::new();
                render_row(&mut sql, table, tuple)?;
                assert!(sql.starts_with('(') && sql.ends_with(')'));
                Ok(())
            })
            .unwrap();
        }
    }

    #[test]
    fn dns_row_literals() {
        let table = EVENT_TABLES.iter().find(|t| t.name == "dns").unwrap();
        let mut fields = BytesMut::new();
        for (length, value) in
            [(16i32, &[0xab; 16][..]), (4, b"it's"), (4, &7i32.to_be_bytes()), (2, &3i16.to_be_bytes())]
        {
            fields.extend_from_slice(&length.to_be_bytes());
            fields.extend_from_slice(value);
        }
        fields.extend_from_slice(&(-1i32).to_be_bytes());
        let common = CommonValues {
            producer_id: 1,
            producer_epoch: 2,
            producer_seq: 3,
            source_id: [0x11; 16],
            event_time_us: PG_EPOCH_OFFSET_US,
            ingest_time_us: PG_EPOCH_OFFSET_US + 1,
        };
        let mut tuple = BytesMut::new();
        copy::encode_row(&mut tuple, table, &common, &fields);
        let mut sql = String::new();
        render_row(&mut sql, table, &tuple).unwrap();
        assert_eq!(
            sql,
            "(1,2,3,'11111111-1111-1111-1111-111111111111','2000-01-01 00:00:00.000000+00','2000-01-01 00:00:00.000001+00',\
             'abababab-abab-abab-abab-abababababab','it''s',7,3,NULL)"
        );
    }
}
