//! One batch: the rows, quarantined events and watermark advances that
//! commit together in one transaction (sans-I/O).
//!
//! Consumes validated records; produces the pipelined request
//! ([`crate::pg::pipeline::encode_batch_body`], then `encode_batch_tail`). Invariant: the sequence ranges
//! cover every event of the batch, rows and quarantined alike, contiguous
//! per (producer, epoch) and in arrival order, so the watermark advances
//! exactly over what the transaction makes durable.

use std::fmt::Write;

use bytes::{Bytes, BytesMut};

use crate::base::limits::{BATCH_BYTES_MAX, BATCH_ROWS_MAX, COPY_CHUNK_BYTES};
use crate::base::sendq::SendQueue;
use crate::codec::copy::{self, CommonValues};
use crate::codec::frame::RejectCode;
use crate::model::matrix::Module;
use crate::model::schema::{EventTable, tables_of};
use crate::pg::PgError;
use crate::pg::pipeline::{self, Pipeline};
use crate::storage::spool::Unreadable;

/// A contiguous run of one producer's sequence numbers in this batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerRange {
    pub producer_id: u64,
    pub epoch: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub rows: u64,
}

impl std::fmt::Display for ProducerRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "producer {} epoch {} seqs {}..{}", self.producer_id, self.epoch, self.first_seq, self.last_seq)
    }
}

/// An event recorded in the module's quarantine table instead of its table.
#[derive(Clone, Debug)]
pub struct Quarantined {
    pub producer_id: u64,
    pub epoch: u64,
    pub seq: u64,
    pub table_name: String,
    pub code: RejectCode,
    pub reason: String,
    pub raw: Vec<u8>,
}

impl Quarantined {
    /// What the event adds to a batch: its spool payload bytes, so
    /// `BATCH_BYTES_MAX` bounds spool records of quarantined events too.
    pub fn spooled_bytes(&self) -> usize {
        8 * 3 + 2 + 2 + self.table_name.len() + 2 + self.reason.len() + 4 + self.raw.len()
    }
}

/// The `table_name` of a quarantine row that records lost events.
pub const LOST_TABLE_NAME: &str = "(damaged spool record)";

/// The reason of a quarantine row that records the events of `range` as
/// lost (reason code 10): the range, and why.
pub fn lost_reason(range: &ProducerRange, why: &str) -> String {
    format!(
        "seqs {}..{} acknowledged and lost: their spool record was damaged on disk ({why})",
        range.first_seq, range.last_seq
    )
}

/// Frame bytes of one connection that this batch holds; returned to the
/// connection's credit when the batch commits.
#[derive(Clone, Copy, Debug)]
pub struct Release {
    pub slot: usize,
    pub generation: u64,
    pub bytes: usize,
}

#[derive(Debug)]
pub struct Batch {
    module: Module,
    pub started_ms: u64,
    /// COPY stream per table of the module (index as in `tables_of`), in
    /// chunks: the first begins with the COPY header, later ones (filled
    /// after it, or absorbed from the batches spooled after this one) hold
    /// whole rows only. Empty: no rows for that table. While rows are added
    /// the chunks are `COPY_CHUNK_BYTES` each and never grow; a batch read
    /// back from the spool, or a table rebuilt by `quarantine_outside_window`,
    /// holds one chunk per table of whatever size. Chunks are moved, never
    /// copied, when batches merge, and sent to PostgreSQL from where they
    /// are (shared with the link's send queue, not copied into a request).
    copies: Vec<Vec<Bytes>>,
    /// The chunk each table's rows are being encoded into (empty: none).
    /// It joins its table's `copies` when full, or when the batch is merged,
    /// rebuilt or sent ([`Batch::seal_chunks`]); the spool record reads it
    /// after them.
    filling: Vec<BytesMut>,
    pub rows: usize,
    pub bytes: usize,
    pub ranges: Vec<ProducerRange>,
    pub quarantined: Vec<Quarantined>,
    /// Ranges of acknowledged events this batch records as lost (reason 10):
    /// their producers are told once it commits.
    pub lost: Vec<ProducerRange>,
    pub releases: Vec<Release>,
    /// Smallest and largest ingest_time of the rows (Unix µs); (MAX, MIN) while empty.
    pub ingest_min_us: i64,
    pub ingest_max_us: i64,
}

impl Batch {
    pub fn new(module: Module, now_ms: u64) -> Batch {
        Batch {
            module,
            started_ms: now_ms,
            copies: tables_of(module).map(|_| Vec::new()).collect(),
            filling: tables_of(module).map(|_| BytesMut::new()).collect(),
            rows: 0,
            bytes: 0,
            ranges: Vec::new(),
            quarantined: Vec::new(),
            lost: Vec::new(),
            releases: Vec::new(),
            ingest_min_us: i64::MAX,
            ingest_max_us: i64::MIN,
        }
    }

    /// Whether the batch holds any event (rows or quarantined).
    pub fn has_events(&self) -> bool {
        !self.ranges.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.releases.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.rows >= BATCH_ROWS_MAX || self.bytes >= BATCH_BYTES_MAX
    }

    fn note_seq(&mut self, producer_id: u64, epoch: u64, seq: u64, row: bool) {
        let rows = u64::from(row);
        if let Some(last) = self.ranges.last_mut() {
            if last.producer_id == producer_id && last.epoch == epoch && last.last_seq + 1 == seq {
                last.last_seq = seq;
                last.rows += rows;
                return;
            }
        }
        self.ranges.push(ProducerRange { producer_id, epoch, first_seq: seq, last_seq: seq, rows });
    }

    /// Add one validated row for `table` (index `table_index` in the module).
    pub fn add_row(&mut self, table_index: usize, table: &EventTable, common: &CommonValues, fields: &[u8]) {
        let (Some(chunks), Some(stream)) = (self.copies.get_mut(table_index), self.filling.get_mut(table_index)) else {
            return;
        };
        let row = copy::row_len(fields.len());
        if chunks.is_empty() && stream.is_empty() {
            *stream = BytesMut::with_capacity(COPY_CHUNK_BYTES.max(copy::HEADER_BYTES + row));
            copy::encode_header(stream);
        } else if stream.capacity() - stream.len() < row {
            chunks.push(std::mem::replace(stream, BytesMut::with_capacity(COPY_CHUNK_BYTES.max(row))).freeze());
        }
        let before = stream.len();
        copy::encode_row(stream, table, common, fields);
        self.bytes += stream.len() - before;
        self.rows += 1;
        self.ingest_min_us = self.ingest_min_us.min(common.ingest_time_us);
        self.ingest_max_us = self.ingest_max_us.max(common.ingest_time_us);
        self.note_seq(common.producer_id as u64, common.producer_epoch as u64, common.producer_seq as u64, true);
    }

    pub fn add_quarantined(&mut self, event: Quarantined) {
        self.bytes += event.spooled_bytes();
        self.note_seq(event.producer_id, event.epoch, event.seq, false);
        self.quarantined.push(event);
    }

    /// Append the batch spooled after this one: one transaction then
    /// commits both (COPY streams continue each other; ranges coalesce).
    pub fn absorb(&mut self, mut next: Batch) {
        self.seal_chunks();
        next.seal_chunks();
        for (mine, theirs) in self.copies.iter_mut().zip(next.copies) {
            for (n, mut chunk) in theirs.into_iter().enumerate() {
                if n == 0 && !mine.is_empty() {
                    // O(1): the header stays in place, the chunk starts after it.
                    let _ = chunk.split_to(copy::HEADER_BYTES.min(chunk.len()));
                }
                mine.push(chunk);
            }
        }
        self.rows += next.rows;
        self.bytes += next.bytes;
        self.ingest_min_us = self.ingest_min_us.min(next.ingest_min_us);
        self.ingest_max_us = self.ingest_max_us.max(next.ingest_max_us);
        for r in next.ranges {
            match self.ranges.last_mut() {
                Some(last)
                    if last.producer_id == r.producer_id
                        && last.epoch == r.epoch
                        && last.last_seq + 1 == r.first_seq =>
                {
                    last.last_seq = r.last_seq;
                    last.rows += r.rows;
                }
                _ => self.ranges.push(r),
            }
        }
        self.quarantined.extend(next.quarantined);
        self.lost.extend(next.lost);
    }

    /// The transaction that records a damaged spool record's events as
    /// lost: one quarantine row (reason 10) per producer range, and the
    /// watermark advance over it, so that later records continue the
    /// producer's sequence.
    pub fn lost(module: Module, now_ms: u64, ranges: &[ProducerRange], why: &str) -> Batch {
        let mut batch = Batch::new(module, now_ms);
        for range in ranges {
            batch.quarantined.push(Quarantined {
                producer_id: range.producer_id,
                epoch: range.epoch,
                seq: range.first_seq,
                table_name: LOST_TABLE_NAME.to_string(),
                code: RejectCode::SpoolRecordCorrupted,
                reason: lost_reason(range, why),
                raw: Vec::new(),
            });
            batch.ranges.push(ProducerRange { rows: 0, ..*range });
            batch.lost.push(*range);
        }
        batch
    }

    pub fn add_release(&mut self, release: Release) {
        self.releases.push(release);
    }

    /// The SQL that runs after the COPYs: quarantine inserts, then one
    /// watermark advance per producer range, in arrival order.
    fn tail_sql(&self) -> String {
        let mut sql = String::new();
        for q in &self.quarantined {
            let mut hex = String::with_capacity(q.raw.len() * 2);
            for byte in &q.raw {
                let _ = write!(hex, "{byte:02x}");
            }
            let _ = writeln!(
                sql,
                "INSERT INTO {} (received_at, producer_id, producer_epoch, producer_seq, table_name, reason_code, reason, payload) \
                 VALUES (clock_timestamp(), {}, {}, {}, '{}', {}, '{}', '\\x{hex}'::bytea);",
                self.module.quarantine_table(),
                q.producer_id,
                q.epoch,
                q.seq,
                q.table_name.replace('\'', "''"),
                q.code as u16,
                q.reason.replace('\'', "''"),
            );
        }
        for r in &self.ranges {
            let _ = writeln!(
                sql,
                "SELECT appliance.watermark_advance({}, {}, {}, {}, {});",
                r.producer_id, r.epoch, r.first_seq, r.last_seq, r.rows
            );
        }
        sql
    }

    /// Encode the transaction's body into `out`: BEGIN, then each table's
    /// chunks and the COPY trailer, as one COPY per table. The
    /// transaction stays open until [`Batch::encode_tail`].
    pub fn encode_body(&mut self, out: &mut SendQueue) -> Result<Pipeline, PgError> {
        self.seal_chunks();
        let statements: Vec<String> = tables_of(self.module).map(copy::copy_statement).collect();
        // Each table's chunks (shared, not copied), then the stream's trailer.
        let copies: Vec<(&str, &[Bytes], &[u8])> = self
            .copies
            .iter()
            .zip(statements.iter())
            .filter(|(chunks, _)| !chunks.is_empty())
            .map(|(chunks, statement)| (statement.as_str(), &chunks[..], &copy::TRAILER[..]))
            .collect();
        pipeline::encode_batch_body(out, &copies)
    }

    /// Move each table's filling chunk behind its full ones: the batch
    /// takes no more rows (it is sealed, merged or sent).
    fn seal_chunks(&mut self) {
        for (chunks, stream) in self.copies.iter_mut().zip(self.filling.iter_mut()) {
            if !stream.is_empty() {
                chunks.push(std::mem::take(stream).freeze());
            }
        }
    }

    /// Table `index`'s COPY stream (header, rows; no trailer) in chunks.
    fn stream_chunks(&self, index: usize) -> impl Iterator<Item = &[u8]> {
        let filling = self.filling.get(index).filter(|s| !s.is_empty()).map(|s| &s[..]);
        self.copies.get(index).into_iter().flatten().map(|c| &c[..]).chain(filling)
    }

    /// Encode the transaction's tail into `out`: the quarantine inserts
    /// and the watermark advances, then COMMIT.
    pub fn encode_tail(&self, out: &mut BytesMut, pipeline: &mut Pipeline) -> Result<(), PgError> {
        pipeline::encode_batch_tail(out, pipeline, &self.tail_sql())
    }
}

// ----- spool records -----
//
// A sealed batch as one spool record payload (big-endian), format 3:
//   u32 format (3) | u32 ranges | ranges × (producer, epoch, first, last, rows: u64)
//   | u32 CRC32C of the bytes before it (the summary: which events the record holds)
//   | u64 rows | i64 ingest_min_us | i64 ingest_max_us | u16 copies | copies × (u16 table
//   index, u32 length, COPY stream without its trailer) | u32 quarantined |
//   quarantined × (producer, epoch, seq: u64, code u16, u16 + table name,
//   u16 + reason, u32 + raw record).
// The ranges come first so recovery reads only them; their own CRC lets
// recovery name the events of a record whose payload is damaged elsewhere.
// Formats written by earlier releases, read forever:
//   1: no summary CRC, no ingest_time bounds (rows follow the ranges);
//   2: no summary CRC.
// Every format ever written has a golden spool under tests/golden/spool/.

/// Payload format 1 (no summary CRC, no ingest_time bounds).
const FORMAT_1: u32 = 1;
/// Payload format 2 (no summary CRC).
const FORMAT_2: u32 = 2;
/// Payload format 3: what this release writes.
const FORMAT_3: u32 = 3;
/// The payload format this release writes.
pub const SPOOL_FORMAT: u32 = FORMAT_3;

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err(format!("spool payload truncated: {n} bytes wanted, {} left", self.bytes.len()));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u16(&mut self) -> Result<u16, String> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        self.take(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        Ok(u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }
    fn text(&mut self) -> Result<String, String> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "spool payload text is not UTF-8".to_string())
    }
}

/// The summary of a payload: its format and producer ranges, and where
/// the rest begins. Checked against the summary CRC (format 3).
fn read_summary(payload: &[u8]) -> Result<(u32, Vec<ProducerRange>, usize), Unreadable> {
    let damaged = |why: String| Unreadable::Damaged(why);
    let mut r = Reader { bytes: payload };
    let format = r.u32().map_err(damaged)?;
    match format {
        FORMAT_1 | FORMAT_2 | FORMAT_3 => {}
        0 => return Err(damaged("spool payload format 0".into())),
        newer => return Err(Unreadable::Newer(format!("a batch payload of format {newer}"))),
    }
    let count = r.u32().map_err(damaged)? as usize;
    if count.saturating_mul(40) > payload.len() {
        return Err(damaged("spool payload range count exceeds its size".into()));
    }
    let mut ranges = Vec::with_capacity(count);
    for _ in 0..count {
        let mut next = || r.u64().map_err(damaged);
        let range = ProducerRange {
            producer_id: next()?,
            epoch: next()?,
            first_seq: next()?,
            last_seq: next()?,
            rows: next()?,
        };
        if range.first_seq == 0 || range.last_seq < range.first_seq {
            return Err(damaged(format!("spool payload range {range} is invalid")));
        }
        ranges.push(range);
    }
    let mut at = 8 + 40 * count;
    if format == FORMAT_3 {
        let crc = r.u32().map_err(damaged)?;
        if crc != crc32c::crc32c(&payload[..at]) {
            return Err(damaged("spool payload summary checksum mismatch".into()));
        }
        at += 4;
    }
    if ranges.is_empty() {
        return Err(damaged("spool payload holds no events".into()));
    }
    Ok((format, ranges, at))
}

/// The producer ranges of a spool record payload (what recovery keeps).
pub fn spool_ranges(payload: &[u8]) -> Result<Vec<ProducerRange>, Unreadable> {
    read_summary(payload).map(|(_, ranges, _)| ranges)
}

/// The events a damaged record held, when its summary is still intact
/// (format 3: the ranges have a CRC of their own); None otherwise.
pub fn salvage_ranges(payload: &[u8]) -> Option<Vec<ProducerRange>> {
    match read_summary(payload) {
        Ok((FORMAT_3, ranges, _)) => Some(ranges),
        _ => None,
    }
}

/// A batch's spool record payload as parts to write in order: small
/// framing buffers owned here, the COPY chunks borrowed from the batch.
pub struct SpoolParts<'a> {
    head: Vec<u8>,
    /// Per table with rows: (u16 index, u32 length) and its chunks.
    streams: Vec<([u8; 6], Vec<&'a [u8]>)>,
    tail: Vec<u8>,
}

impl SpoolParts<'_> {
    pub fn slices(&self) -> Vec<&[u8]> {
        let mut parts = vec![&self.head[..]];
        for (prefix, chunks) in &self.streams {
            parts.push(&prefix[..]);
            parts.extend(chunks.iter().copied());
        }
        parts.push(&self.tail[..]);
        parts
    }
}

impl Batch {
    /// The batch as a spool record payload (COPY streams without
    /// trailers), in parts: the lane writes them without assembling a copy.
    pub fn spool_parts(&self) -> SpoolParts<'_> {
        let mut out = Vec::with_capacity(64 + 40 * self.ranges.len());
        out.extend_from_slice(&SPOOL_FORMAT.to_be_bytes());
        out.extend_from_slice(&(self.ranges.len() as u32).to_be_bytes());
        for r in &self.ranges {
            for v in [r.producer_id, r.epoch, r.first_seq, r.last_seq, r.rows] {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        let summary_crc = crc32c::crc32c(&out);
        out.extend_from_slice(&summary_crc.to_be_bytes());
        out.extend_from_slice(&(self.rows as u64).to_be_bytes());
        out.extend_from_slice(&self.ingest_min_us.to_be_bytes());
        out.extend_from_slice(&self.ingest_max_us.to_be_bytes());
        let streams: Vec<([u8; 6], Vec<&[u8]>)> = (0..self.copies.len())
            .map(|index| (index, self.stream_chunks(index).collect::<Vec<&[u8]>>()))
            .filter(|(_, chunks)| !chunks.is_empty())
            .map(|(index, chunks)| {
                let length: usize = chunks.iter().map(|c| c.len()).sum();
                let mut prefix = [0u8; 6];
                prefix[..2].copy_from_slice(&(index as u16).to_be_bytes());
                prefix[2..].copy_from_slice(&(length as u32).to_be_bytes());
                (prefix, chunks)
            })
            .collect();
        out.extend_from_slice(&(streams.len() as u16).to_be_bytes());
        let head = out;
        let mut out = Vec::new();
        out.extend_from_slice(&(self.quarantined.len() as u32).to_be_bytes());
        for q in &self.quarantined {
            for v in [q.producer_id, q.epoch, q.seq] {
                out.extend_from_slice(&v.to_be_bytes());
            }
            out.extend_from_slice(&(q.code as u16).to_be_bytes());
            for text in [q.table_name.as_bytes(), q.reason.as_bytes()] {
                out.extend_from_slice(&(text.len() as u16).to_be_bytes());
                out.extend_from_slice(text);
            }
            out.extend_from_slice(&(q.raw.len() as u32).to_be_bytes());
            out.extend_from_slice(&q.raw);
        }
        SpoolParts { head, streams, tail: out }
    }

    /// Rebuild a batch from its spool record payload (any format ever written).
    pub fn from_spool_payload(module: Module, now_ms: u64, payload: &[u8]) -> Result<Batch, String> {
        let mut batch = Batch::new(module, now_ms);
        let (format, ranges, at) = read_summary(payload).map_err(|e| match e {
            Unreadable::Damaged(why) | Unreadable::Newer(why) => why,
        })?;
        batch.ranges = ranges;
        let mut r = Reader { bytes: payload };
        r.take(at)?;
        batch.rows = r.u64()? as usize;
        if format == FORMAT_1 {
            // Not recorded: unknown bounds, so the partition-window check
            // reads every row's ingest_time.
            (batch.ingest_min_us, batch.ingest_max_us) = (i64::MIN, i64::MAX);
        } else {
            batch.ingest_min_us = r.u64()? as i64;
            batch.ingest_max_us = r.u64()? as i64;
        }
        for _ in 0..r.u16()? {
            let index = r.u16()? as usize;
            let length = r.u32()? as usize;
            let stream = r.take(length)?;
            let slot = batch.copies.get_mut(index).ok_or_else(|| format!("spool payload names table #{index}"))?;
            if !slot.is_empty() {
                return Err(format!("spool payload repeats table #{index}"));
            }
            if !stream.starts_with(copy::SIGNATURE) {
                return Err(format!("spool payload: table #{index} stream lacks the COPY header"));
            }
            batch.bytes += stream.len();
            slot.push(Bytes::copy_from_slice(stream));
        }
        for _ in 0..r.u32()? {
            let (producer_id, epoch, seq) = (r.u64()?, r.u64()?, r.u64()?);
            let raw_code = r.u16()?;
            let code = RejectCode::from_u16(raw_code).ok_or_else(|| format!("spool reject code {raw_code}"))?;
            let (table_name, reason) = (r.text()?, r.text()?);
            let length = r.u32()? as usize;
            let raw = r.take(length)?.to_vec();
            let event = Quarantined { producer_id, epoch, seq, table_name, code, reason, raw };
            batch.bytes += event.spooled_bytes();
            batch.quarantined.push(event);
        }
        if !r.bytes.is_empty() {
            return Err(format!("{} bytes after the spool payload", r.bytes.len()));
        }
        Ok(batch)
    }
}

/// One row of a COPY BINARY stream: its bytes and the common columns the
/// lane needs (producer, epoch, seq, ingest_time in Unix µs).
struct CopyRow<'a> {
    bytes: &'a [u8],
    producer_id: u64,
    epoch: u64,
    seq: u64,
    ingest_time_us: i64,
}

/// Split a COPY stream (header, rows, no trailer) into rows. The stream is
/// the lane's own encoding (`copy::encode_row`), read back from memory or
/// from a checksummed spool record; a malformed one is an error, never a panic.
fn copy_rows(stream: &[u8], header: bool) -> Result<Vec<CopyRow<'_>>, String> {
    let mut rows = Vec::new();
    let mut at = if header { copy::HEADER_BYTES } else { 0 };
    let short = || "COPY stream ends inside a row".to_string();
    while at < stream.len() {
        let start = at;
        let count = i16::from_be_bytes(stream.get(at..at + 2).ok_or_else(short)?.try_into().map_err(|_| short())?);
        at += 2;
        let mut common = [0i64; 6];
        for field in 0..count.max(0) as usize {
            let length = i32::from_be_bytes(stream.get(at..at + 4).ok_or_else(short)?.try_into().map_err(|_| short())?);
            at += 4;
            let length = if length < 0 { 0 } else { length as usize };
            let value = stream.get(at..at + length).ok_or_else(short)?;
            if let Some(slot) = common.get_mut(field).filter(|_| field != 3 && length == 8) {
                *slot = i64::from_be_bytes(value.try_into().map_err(|_| short())?);
            }
            at += length;
        }
        rows.push(CopyRow {
            bytes: &stream[start..at],
            producer_id: common[0] as u64,
            epoch: common[1] as u64,
            seq: common[2] as u64,
            ingest_time_us: common[5] + copy::PG_EPOCH_OFFSET_US,
        });
    }
    Ok(rows)
}

impl Batch {
    /// Move every row whose ingest_time is outside `[lo_us, hi_us)` (the
    /// module's partition window) to the quarantine, so the batch commits
    /// instead of failing with 23514. Returns how many rows moved.
    pub fn quarantine_outside_window(&mut self, lo_us: i64, hi_us: i64) -> Result<usize, String> {
        if self.rows == 0 || (self.ingest_min_us >= lo_us && self.ingest_max_us < hi_us) {
            return Ok(0);
        }
        self.seal_chunks();
        let names: Vec<String> = tables_of(self.module).map(|t| t.qualified_name()).collect();
        let mut moved = Vec::new();
        for (index, chunks) in self.copies.iter_mut().enumerate() {
            let mut rows = Vec::new();
            for (n, chunk) in chunks.iter().enumerate() {
                rows.extend(copy_rows(chunk, n == 0)?);
            }
            if rows.iter().all(|r| r.ingest_time_us >= lo_us && r.ingest_time_us < hi_us) {
                continue;
            }
            let mut kept = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            copy::encode_header(&mut kept);
            let mut kept_rows = 0;
            for row in rows {
                if row.ingest_time_us >= lo_us && row.ingest_time_us < hi_us {
                    kept.extend_from_slice(row.bytes);
                    kept_rows += 1;
                    continue;
                }
                moved.push(Quarantined {
                    producer_id: row.producer_id,
                    epoch: row.epoch,
                    seq: row.seq,
                    table_name: names.get(index).cloned().unwrap_or_default(),
                    code: RejectCode::PartitionWindow,
                    reason: format!(
                        "ingest_time {} us is outside every partition window [{lo_us}, {hi_us}) us",
                        row.ingest_time_us
                    ),
                    raw: row.bytes.to_vec(),
                });
            }
            *chunks = if kept_rows > 0 { vec![kept.freeze()] } else { Vec::new() };
        }
        for q in &moved {
            if let Some(range) = self.ranges.iter_mut().find(|r| {
                r.producer_id == q.producer_id && r.epoch == q.epoch && (r.first_seq..=r.last_seq).contains(&q.seq)
            }) {
                range.rows = range.rows.saturating_sub(1);
            }
        }
        let count = moved.len();
        self.rows -= count.min(self.rows);
        self.quarantined.extend(moved);
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::copy::CommonValues;

    /// Rows past a chunk's capacity start the next chunk: no chunk is
    /// reallocated, and the chunks in order are the stream one growing
    /// buffer would hold.
    #[test]
    fn rows_fill_fixed_chunks_that_concatenate_to_the_stream() {
        let module = Module::Dpi;
        let (index, table) = tables_of(module).enumerate().next().unwrap();
        let mut batch = Batch::new(module, 0);
        let mut expected = BytesMut::new();
        copy::encode_header(&mut expected);
        let fields = vec![0u8; 1000];
        for seq in 1..=1_000 {
            let common = CommonValues {
                producer_id: 1,
                producer_epoch: 1,
                producer_seq: seq,
                source_id: [3; 16],
                event_time_us: 1_800_000_000_000_000,
                ingest_time_us: 1_800_000_000_000_000,
            };
            batch.add_row(index, table, &common, &fields);
            copy::encode_row(&mut expected, table, &common, &fields);
        }
        assert!(batch.copies[index].len() >= 3, "{} full chunks for about 1 MB", batch.copies[index].len());
        let filling = batch.filling[index].as_ptr();
        batch.seal_chunks();
        let chunks = &batch.copies[index];
        assert!(chunks.len() >= 4, "{} chunks for about 1 MB", chunks.len());
        assert_eq!(chunks.last().map(|c| c.as_ptr()), Some(filling), "sealing moved the filling chunk, not a copy");
        assert!(
            chunks[..chunks.len() - 1].iter().all(|c| c.len() > COPY_CHUNK_BYTES - copy::row_len(fields.len())),
            "a full chunk was left part empty"
        );
        assert_eq!(chunks.concat(), expected.to_vec());
        assert_eq!(batch.bytes + copy::HEADER_BYTES, expected.len());
    }

    /// Every spool format ever written (record version, payload format), as
    /// written by the release that defined it and frozen under
    /// `tests/golden/spool/<record version>-<payload format>/`, is read by
    /// this release: each record's events, rows, quarantined events and
    /// COPY streams exactly as that release's writer recorded them in the
    /// manifest beside it.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn golden_spools_of_every_format_replay_exactly() {
        let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/spool");
        let mut formats = 0;
        for entry in std::fs::read_dir(&golden).unwrap() {
            let source = entry.unwrap().path();
            if !source.is_dir() {
                continue; // README.md
            }
            // A copy: opening a spool takes its lock and makes quarantine/.
            let dir = std::env::temp_dir().join(format!(
                "golden-{}-{}",
                std::process::id(),
                source.file_name().unwrap().to_string_lossy()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            for file in std::fs::read_dir(&source).unwrap() {
                let file = file.unwrap().path();
                std::fs::copy(&file, dir.join(file.file_name().unwrap())).unwrap();
            }
            let readers = crate::storage::spool::Readers { summarize: spool_ranges, salvage: salvage_ranges };
            let (spool, recovery) = crate::storage::spool::Spool::open(&dir, 64 << 20, readers).unwrap();
            let manifest = std::fs::read_to_string(dir.join("manifest.txt")).unwrap();
            let expected: Vec<&str> = manifest.lines().filter(|l| l.starts_with("record ")).collect();
            assert_eq!(recovery.entries.len(), expected.len(), "{}", source.display());
            for (entry, line) in recovery.entries.iter().zip(expected) {
                let crate::storage::spool::Recovered::Record(location, _) = entry else {
                    panic!("{}: a damaged record: {entry:?}", source.display())
                };
                // The directory names the record version its file holds.
                let name = source.file_name().unwrap().to_string_lossy().into_owned();
                assert!(name.starts_with(&format!("record{}-", location.version)), "{name}: record {location}");
                let payload = spool.read(location).unwrap();
                let batch = Batch::from_spool_payload(Module::Dpi, 0, &payload).unwrap();
                let ranges: Vec<String> = batch
                    .ranges
                    .iter()
                    .map(|r| format!("{}:{}:{}-{}:{}", r.producer_id, r.epoch, r.first_seq, r.last_seq, r.rows))
                    .collect();
                let tables: Vec<String> = batch
                    .copies
                    .iter()
                    .enumerate()
                    .filter(|(_, chunks)| !chunks.is_empty())
                    .map(|(i, chunks)| format!("{i}:{:08x}", crc32c::crc32c(&chunks.concat())))
                    .collect();
                let found = format!(
                    "record {} rows {} quarantined {} ranges {} tables {}",
                    location.id,
                    batch.rows,
                    batch.quarantined.len(),
                    ranges.join(","),
                    tables.join(",")
                );
                assert_eq!(found, line, "{}", source.display());
            }
            drop(spool);
            std::fs::remove_dir_all(&dir).unwrap();
            formats += 1;
        }
        assert_eq!(
            formats, 4,
            "record 1 / payload 1, record 1 / payload 2, record 2 / payload 3, record 3 / payload 3"
        );
    }
}
