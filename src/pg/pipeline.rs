//! Pipelined request/response bookkeeping for the lane's PostgreSQL
//! connection (sans-I/O).
//!
//! A lane writes a whole request at once and then feeds backend messages
//! to [`Pipeline::on_message`] until it reports the outcome. A batch is one
//! transaction sent in one write: `BEGIN`; one `COPY ... FROM STDIN` per
//! table with its CopyData and CopyDone; one query with the quarantine
//! inserts and the watermark advances; `COMMIT`. PostgreSQL processes the
//! messages in order; after an error inside the transaction every later
//! statement fails with 25P02 and CopyData for a failed COPY is discarded
//! (protocol docs, "COPY Operations"), so the pipeline stays in step. The
//! batch counts as committed only if no error arrived and the COMMIT
//! statement's tag is exactly `COMMIT` (an aborted transaction answers
//! COMMIT with the tag `ROLLBACK`).

use bytes::{BufMut, Bytes, BytesMut};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use crate::base::sendq::SendQueue;

use super::wire::{PgError, Row, ServerError, decode_data_row, decode_error_fields};

/// CopyData message size used for batches: a batch's COPY chunks are
/// this size, so each chunk is one message.
const COPY_DATA_CHUNK_BYTES: usize = crate::base::limits::COPY_CHUNK_BYTES;

/// Pieces of a COPY stream shorter than this are copied into the request
/// (a trailer, a small batch's only chunk); longer ones are sent from where
/// they are. One send per shared piece costs more than copying a few KiB.
const COPY_SHARE_MIN_BYTES: usize = 4096;

/// What a finished request produced.
#[derive(Debug)]
pub enum Outcome {
    /// The rows of a lookup query.
    Rows(Vec<Row>),
    /// The batch transaction committed.
    Committed,
    /// The server refused; nothing of the request is durable.
    Failed(ServerError),
}

/// Byte offsets in a batch request where each stage ends: what the
/// failpoints cut a request at. `begin`, `mid_copy` and `after_copy_done`
/// count from the body's first byte; `after_tail` from the tail's
/// (`encode_batch_tail`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Stages {
    pub begin: usize,
    pub mid_copy: usize,
    pub after_copy_done: usize,
    pub after_tail: usize,
}

/// Response tracking for one request in flight.
#[derive(Debug)]
pub struct Pipeline {
    pub stages: Stages,
    ready_expected: usize,
    ready_seen: usize,
    rows: Vec<Row>,
    error: Option<ServerError>,
    last_tag: Option<String>,
    is_batch: bool,
    /// A batch: whether its tail (and COMMIT) is encoded.
    tail_sent: bool,
}

fn encode_error(e: std::io::Error) -> PgError {
    PgError::Io { step: "encode request", source: e }
}

/// A query whose rows are wanted (one statement).
pub fn encode_query(out: &mut BytesMut, sql: &str) -> Result<Pipeline, PgError> {
    frontend::query(sql, out).map_err(encode_error)?;
    Ok(Pipeline {
        stages: Stages::default(),
        ready_expected: 1,
        ready_seen: 0,
        rows: Vec::new(),
        error: None,
        last_tag: None,
        is_batch: false,
        tail_sent: false,
    })
}

/// A simple Query message: tag, length, the text, its NUL.
/// The first part of a batch transaction: BEGIN and each `(statement,
/// chunks, end)` as a COPY FROM STDIN whose CopyData messages carry the
/// chunks (pieces of `COPY_SHARE_MIN_BYTES` or more queued as they are,
/// shorter ones copied) and then `end` (the stream's trailer). The
/// transaction stays open (its pipeline reports no outcome) until
/// [`encode_batch_tail`] adds the rest: a lane sends the bodies of several
/// transactions at once, each on its own connection, and their tails one
/// at a time in spool order.
pub fn encode_batch_body(out: &mut SendQueue, copies: &[(&str, &[Bytes], &[u8])]) -> Result<Pipeline, PgError> {
    let base = out.len();
    let mut stages = Stages::default();
    frontend::query("BEGIN", out.buffer()).map_err(encode_error)?;
    stages.begin = out.len() - base;
    for (statement, pieces, end) in copies {
        frontend::query(statement, out.buffer()).map_err(encode_error)?;
        let copy_start = out.len() - base;
        for piece in *pieces {
            let mut at = 0;
            while at < piece.len() {
                let length = (piece.len() - at).min(COPY_DATA_CHUNK_BYTES);
                if length < COPY_SHARE_MIN_BYTES {
                    frontend::CopyData::new(&piece[at..at + length]).map_err(encode_error)?.write(out.buffer());
                } else {
                    // The CopyData header here, its data shared: the chunk
                    // is not copied into the request.
                    let buffer = out.buffer();
                    buffer.put_u8(b'd');
                    buffer.put_i32((length + 4) as i32);
                    out.push_shared(piece.slice(at..at + length));
                }
                at += length;
            }
        }
        if !end.is_empty() {
            frontend::CopyData::new(*end).map_err(encode_error)?.write(out.buffer());
        }
        if stages.mid_copy == 0 {
            stages.mid_copy = copy_start + (out.len() - base - copy_start) / 2;
        }
        frontend::copy_done(out.buffer());
    }
    stages.after_copy_done = out.len() - base;
    Ok(Pipeline {
        stages,
        ready_expected: copies.len() + 3,
        ready_seen: 0,
        rows: Vec::new(),
        error: None,
        last_tag: None,
        is_batch: true,
        tail_sent: false,
    })
}

/// The end of a batch transaction whose body `pipeline` tracks: `tail_sql`
/// (after the COPYs, in the same transaction), then COMMIT. Sets
/// `stages.after_tail` relative to the tail's first byte.
pub fn encode_batch_tail(out: &mut BytesMut, pipeline: &mut Pipeline, tail_sql: &str) -> Result<(), PgError> {
    debug_assert!(pipeline.is_batch && !pipeline.tail_sent, "a batch's tail is encoded once");
    let base = out.len();
    frontend::query(tail_sql, out).map_err(encode_error)?;
    pipeline.stages.after_tail = out.len() - base;
    frontend::query("COMMIT", out).map_err(encode_error)?;
    pipeline.tail_sent = true;
    Ok(())
}

impl Pipeline {
    /// A batch whose tail is still to be encoded (`encode_batch_tail`).
    pub fn awaits_tail(&self) -> bool {
        self.is_batch && !self.tail_sent
    }

    /// Feed one backend message; returns the outcome once the last
    /// ReadyForQuery of the request arrived.
    pub fn on_message(&mut self, message: Message) -> Result<Option<Outcome>, PgError> {
        match message {
            Message::DataRow(body) => self.rows.push(decode_data_row(&body)?),
            Message::CommandComplete(body) => {
                let tag = body.tag().map_err(|e| PgError::Protocol(format!("command tag: {e}")))?;
                self.last_tag = Some(tag.to_string());
            }
            Message::ErrorResponse(body) => {
                let error = decode_error_fields(body.fields())?;
                self.error.get_or_insert(error);
            }
            Message::ReadyForQuery(_) => {
                self.ready_seen += 1;
                if self.ready_seen == self.ready_expected {
                    return Ok(Some(self.finish()));
                }
            }
            Message::CopyInResponse(_)
            | Message::RowDescription(_)
            | Message::EmptyQueryResponse
            | Message::NoticeResponse(_)
            | Message::ParameterStatus(_) => {}
            _ => return Err(PgError::Protocol("unexpected message in a pipelined request".into())),
        }
        Ok(None)
    }

    fn finish(&mut self) -> Outcome {
        if let Some(error) = self.error.take() {
            return Outcome::Failed(error);
        }
        if !self.is_batch {
            return Outcome::Rows(std::mem::take(&mut self.rows));
        }
        match self.last_tag.as_deref() {
            Some("COMMIT") => Outcome::Committed,
            other => Outcome::Failed(ServerError {
                severity: "ERROR".into(),
                sqlstate: "XX000".into(),
                message: format!("COMMIT answered with tag {other:?}"),
                detail: None,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body on the wire: BEGIN, each COPY's statement, CopyData messages
    /// of at most one chunk holding the pieces in order, CopyDone; pieces
    /// of a chunk's size and longer are sent from their own memory, never
    /// copied.
    #[test]
    fn a_body_sends_large_pieces_from_their_own_memory() {
        let big = Bytes::from(vec![7u8; COPY_DATA_CHUNK_BYTES * 2 + 3]);
        let small = Bytes::from(vec![1u8; 100]);
        let exact = Bytes::from(vec![2u8; COPY_DATA_CHUNK_BYTES]);
        let pieces = vec![big.clone(), small.clone(), Bytes::new(), exact.clone(), small.clone(), big.clone()];
        let statements = ["COPY a FROM STDIN (FORMAT binary)", "COPY b FROM STDIN"];
        let trailer = [0xffu8, 0xff];
        let copies: Vec<(&str, &[Bytes], &[u8])> = statements.iter().map(|s| (*s, &pieces[..], &trailer[..])).collect();
        let mut out = SendQueue::from(BytesMut::from(&b"already queued"[..]));
        let pipeline = encode_batch_body(&mut out, &copies).unwrap();
        let mut expected = BytesMut::from(&b"already queued"[..]);
        frontend::query("BEGIN", &mut expected).unwrap();
        for statement in statements {
            frontend::query(statement, &mut expected).unwrap();
            for piece in &pieces {
                for data in piece.chunks(COPY_DATA_CHUNK_BYTES) {
                    frontend::CopyData::new(data).unwrap().write(&mut expected);
                }
            }
            frontend::CopyData::new(&trailer[..]).unwrap().write(&mut expected);
            frontend::copy_done(&mut expected);
        }
        assert_eq!(pipeline.stages.after_copy_done, expected.len() - b"already queued".len());
        let mut sent = Vec::new();
        let mut shared_sends = 0;
        loop {
            let front = out.front();
            if front.is_empty() {
                break;
            }
            let inside = |owner: &Bytes| owner.as_ptr_range().contains(&front.as_ptr());
            if inside(&big) || inside(&exact) {
                shared_sends += 1;
            }
            assert!(!front.as_ptr_range().contains(&small.as_ptr()), "small pieces are copied");
            sent.extend_from_slice(front);
            let n = front.len();
            out.advance(n);
        }
        assert_eq!(sent, expected.to_vec());
        // Each COPY: big as two shared pieces and 3 copied bytes, exact as
        // one shared piece, big again.
        assert_eq!(shared_sends, 2 * 5);
    }
}
