//! One batch: the rows, quarantined events and watermark advances that
//! commit together in one transaction (sans-I/O).
//!
//! Consumes validated records; produces the pipelined request for
//! [`crate::pg::pipeline::encode_batch`]. Invariant: the sequence ranges
//! cover every event of the batch, rows and quarantined alike, contiguous
//! per (producer, epoch) and in arrival order, so the watermark advances
//! exactly over what the transaction makes durable.

use std::fmt::Write;

use bytes::BytesMut;

use crate::copy::{self, CommonValues};
use crate::frame::RejectCode;
use crate::limits::{BATCH_BYTES_MAX, BATCH_ROWS_MAX};
use crate::matrix::Module;
use crate::pg::PgError;
use crate::pg::pipeline::{self, Pipeline};
use crate::schema::{EventTable, tables_of};

/// A contiguous run of one producer's sequence numbers in this batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerRange {
    pub producer_id: u64,
    pub epoch: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub rows: u64,
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
    /// COPY stream per table of the module (index as in `tables_of`).
    copies: Vec<Option<BytesMut>>,
    pub rows: usize,
    pub bytes: usize,
    pub ranges: Vec<ProducerRange>,
    pub quarantined: Vec<Quarantined>,
    pub releases: Vec<Release>,
}

impl Batch {
    pub fn new(module: Module, now_ms: u64) -> Batch {
        Batch {
            module,
            started_ms: now_ms,
            copies: tables_of(module).map(|_| None).collect(),
            rows: 0,
            bytes: 0,
            ranges: Vec::new(),
            quarantined: Vec::new(),
            releases: Vec::new(),
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
        let Some(slot) = self.copies.get_mut(table_index) else { return };
        let stream = slot.get_or_insert_with(|| {
            let mut stream = BytesMut::with_capacity(64 * 1024);
            copy::encode_header(&mut stream);
            stream
        });
        let before = stream.len();
        copy::encode_row(stream, table, common, fields);
        self.bytes += stream.len() - before;
        self.rows += 1;
        self.note_seq(common.producer_id as u64, common.producer_epoch as u64, common.producer_seq as u64, true);
    }

    pub fn add_quarantined(&mut self, event: Quarantined) {
        self.bytes += event.raw.len();
        self.note_seq(event.producer_id, event.epoch, event.seq, false);
        self.quarantined.push(event);
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

    /// Close the COPY streams and encode the whole transaction into `out`.
    pub fn encode(&mut self, out: &mut BytesMut) -> Result<Pipeline, PgError> {
        let statements: Vec<String> = tables_of(self.module).map(copy::copy_statement).collect();
        for stream in self.copies.iter_mut().flatten() {
            copy::encode_trailer(stream);
        }
        let copies: Vec<(&str, &[u8])> = self
            .copies
            .iter()
            .zip(statements.iter())
            .filter_map(|(stream, statement)| stream.as_ref().map(|s| (statement.as_str(), &s[..])))
            .collect();
        pipeline::encode_batch(out, &copies, &self.tail_sql())
    }
}
