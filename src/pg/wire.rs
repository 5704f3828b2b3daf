//! Sans-I/O framing of PostgreSQL backend messages.
//!
//! Consumes bytes read from the server socket in a `BytesMut`; produces
//! parsed `postgres_protocol` messages. The 5-byte header's length is
//! checked against [`PG_MESSAGE_BYTES_MAX`] before the body is buffered, so
//! a hostile or broken server cannot make the client allocate without bound.

use std::fmt;

use bytes::BytesMut;
use postgres_protocol::message::backend::{ErrorFields, Message};

use crate::base::limits::PG_MESSAGE_BYTES_MAX;

/// Errors of the wire client. Variants name the failed step.
#[derive(Debug)]
pub enum PgError {
    /// Connecting to or talking over the socket failed.
    Io { step: &'static str, source: std::io::Error },
    /// The server sent something this client does not accept.
    Protocol(String),
    /// A message header announced more than the cap.
    MessageTooLarge { tag: u8, bytes: usize },
    /// The server answered with an ErrorResponse.
    Server(ServerError),
    /// The server asked for an authentication method this client refuses.
    UnsupportedAuth(&'static str),
}

/// The fields of an ErrorResponse the appliance acts on.
#[derive(Debug, Clone)]
pub struct ServerError {
    pub severity: String,
    pub sqlstate: String,
    pub message: String,
    pub detail: Option<String>,
}

impl PgError {
    /// SQLSTATE of a server error, if this is one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            PgError::Server(e) => Some(&e.sqlstate),
            PgError::Io { .. }
            | PgError::Protocol(_)
            | PgError::MessageTooLarge { .. }
            | PgError::UnsupportedAuth(_) => None,
        }
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgError::Io { step, source } => write!(f, "postgres {step}: {source}"),
            PgError::Protocol(what) => write!(f, "postgres protocol violation: {what}"),
            PgError::MessageTooLarge { tag, bytes } => write!(
                f,
                "postgres message '{}' of {bytes} bytes exceeds the {PG_MESSAGE_BYTES_MAX}-byte cap",
                *tag as char
            ),
            PgError::Server(e) => {
                write!(f, "postgres {} {}: {}", e.severity, e.sqlstate, e.message)?;
                if let Some(detail) = &e.detail {
                    write!(f, " ({detail})")?;
                }
                Ok(())
            }
            PgError::UnsupportedAuth(method) => {
                write!(f, "postgres asked for {method} authentication, which this client refuses")
            }
        }
    }
}

impl std::error::Error for PgError {}

/// One result row of a simple query, in text format.
pub type Row = Vec<Option<String>>;

/// Parse the next complete backend message from `buf`, if there is one.
/// Returns `Ok(None)` when more bytes are needed.
pub fn decode_message(buf: &mut BytesMut) -> Result<Option<Message>, PgError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let tag = buf[0];
    let length = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if length < 4 {
        return Err(PgError::Protocol(format!("message '{}' with length {length}", tag as char)));
    }
    if length > PG_MESSAGE_BYTES_MAX {
        return Err(PgError::MessageTooLarge { tag, bytes: length });
    }
    if buf.len() < length + 1 {
        buf.reserve(length + 1 - buf.len());
        return Ok(None);
    }
    Message::parse(buf).map_err(|e| PgError::Protocol(format!("unparsable message: {e}")))
}

/// The text values of one DataRow.
pub fn decode_data_row(body: &postgres_protocol::message::backend::DataRowBody) -> Result<Row, PgError> {
    use fallible_iterator::FallibleIterator;
    let buffer = body.buffer();
    let mut row = Row::new();
    let mut ranges = body.ranges();
    while let Some(range) = ranges.next().map_err(|e| PgError::Protocol(format!("data row: {e}")))? {
        row.push(range.map(|r| String::from_utf8_lossy(&buffer[r]).into_owned()));
    }
    Ok(row)
}

/// Collect the fields of an ErrorResponse or NoticeResponse.
pub fn decode_error_fields(mut fields: ErrorFields<'_>) -> Result<ServerError, PgError> {
    use postgres_protocol::message::backend::ErrorField;
    let mut error =
        ServerError { severity: String::new(), sqlstate: String::new(), message: String::new(), detail: None };
    loop {
        let field: Option<ErrorField<'_>> = fallible_iterator::FallibleIterator::next(&mut fields)
            .map_err(|e| PgError::Protocol(format!("error fields: {e}")))?;
        let Some(field) = field else { break };
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'V' => error.severity = value,
            b'C' => error.sqlstate = value,
            b'M' => error.message = value,
            b'D' => error.detail = Some(value),
            _ => {}
        }
    }
    Ok(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversize_header_is_rejected_before_buffering() {
        let mut buf = BytesMut::from(&[b'D', 0x7f, 0xff, 0xff, 0xff][..]);
        assert!(matches!(decode_message(&mut buf), Err(PgError::MessageTooLarge { tag: b'D', .. })));
        assert!(buf.capacity() < 1024 * 1024);
    }

    #[test]
    fn short_length_is_a_protocol_error() {
        let mut buf = BytesMut::from(&[b'Z', 0, 0, 0, 3][..]);
        assert!(matches!(decode_message(&mut buf), Err(PgError::Protocol(_))));
    }

    #[test]
    fn partial_message_waits_for_more() {
        let mut buf = BytesMut::from(&[b'Z', 0, 0, 0, 5][..]);
        assert!(matches!(decode_message(&mut buf), Ok(None)));
        buf.extend_from_slice(b"I");
        assert!(matches!(decode_message(&mut buf), Ok(Some(Message::ReadyForQuery(_)))));
        assert!(buf.is_empty());
    }
}
