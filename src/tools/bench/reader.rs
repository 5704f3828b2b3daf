//! The Core reader of variant d: tails every Core view while the appliance
//! ingests, as Core's own consumers do.
//!
//! Consumes connection parameters of the `ransomeye_core_reader` role;
//! produces the rows and keyset queries it read. Runs on its own thread in
//! the `applianced bench` process, with its own connection, from
//! [`CoreReader::start`] until [`CoreReader::finish`].
//!
//! Invariant: each view is read by keyset in ingest order, (ingest_time,
//! producer_id, producer_seq), starting at the server's clock when the
//! reader starts: Core tails new rows, not the backlog of earlier variants.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::control::error::AppError;
use crate::model::schema::{EVENT_TABLES, EventTable};
use crate::pg::{ConnectParams, Connection};

use super::pg_error;

/// Rows per keyset query of the Core reader in variant d.
const READER_ROWS_PER_QUERY: u32 = 10_000;
/// Pause of the Core reader after a pass over every view found nothing new,
/// so an idle tail polls instead of spinning on one core of two.
const READER_IDLE_MS: u64 = 10;

/// What the Core reader read in variant d.
pub(super) struct ReaderFigures {
    pub(super) rows: u64,
    pub(super) queries: u64,
}

/// One Core view and the ingest-order key of the last row read from it.
struct ViewCursor {
    select: String,
    key_positions: [usize; 3],
    last: [String; 3],
}

/// Keyset on ingest order, as Core tails: (ingest_time, producer_id, producer_seq).
const INGEST_ORDER: [&str; 3] = ["ingest_time", "producer_id", "producer_seq"];

impl ViewCursor {
    /// A cursor that starts at `since`: Core tails new rows, not the backlog.
    fn new(table: &EventTable, since: &str) -> Result<ViewCursor, AppError> {
        let columns: Vec<&str> = table.all_columns().filter(|c| c.core_view).map(|c| c.name).collect();
        let position = |key: &str| {
            columns.iter().position(|c| *c == key).ok_or_else(|| AppError::Refused(format!("view lacks {key}")))
        };
        let key_positions = [position(INGEST_ORDER[0])?, position(INGEST_ORDER[1])?, position(INGEST_ORDER[2])?];
        let select = format!("SELECT {} FROM {}", columns.join(", "), table.view_name());
        Ok(ViewCursor { select, key_positions, last: [since.to_string(), "0".into(), "0".into()] })
    }

    /// Read the next page; returns the rows read. The redundant
    /// `ingest_time >=` bound lets the BRIN index skip old block ranges,
    /// which a row comparison alone cannot use.
    fn read_page(&mut self, conn: &mut Connection) -> Result<u64, AppError> {
        let [time, producer, seq] = &self.last;
        let keys = INGEST_ORDER.join(", ");
        let sql = format!(
            "{} WHERE ingest_time >= '{time}' AND ({keys}) > ('{time}', {producer}, {seq}) ORDER BY {keys} LIMIT {READER_ROWS_PER_QUERY}",
            self.select
        );
        let rows = conn.simple_query(&sql).map_err(pg_error("Core reader keyset query"))?;
        if let Some(row) = rows.last() {
            for (slot, position) in self.last.iter_mut().zip(self.key_positions) {
                *slot = row.get(position).cloned().flatten().ok_or_else(|| AppError::Refused("null key".into()))?;
            }
        }
        Ok(rows.len() as u64)
    }
}

/// The reader thread of variant d and its stop flag.
pub(super) struct CoreReader {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Result<ReaderFigures, AppError>>,
}

impl CoreReader {
    /// Connect as the Core reader role and tail from the server's clock now.
    pub(super) fn start(params: ConnectParams) -> Result<CoreReader, AppError> {
        let mut conn = Connection::connect(&params).map_err(pg_error("connect as the Core reader"))?;
        let since = conn.query_value("SELECT clock_timestamp()::text").map_err(pg_error("read the server clock"))?;
        let mut cursors = Vec::new();
        for table in EVENT_TABLES {
            cursors.push(ViewCursor::new(table, &since)?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || tail(&mut conn, &mut cursors, &flag));
        Ok(CoreReader { stop, handle })
    }

    pub(super) fn finish(self) -> Result<ReaderFigures, AppError> {
        self.stop.store(true, Ordering::Release);
        self.handle.join().unwrap_or_else(|_| Err(AppError::Refused("the Core reader panicked".into())))
    }
}

fn tail(conn: &mut Connection, cursors: &mut [ViewCursor], stop: &AtomicBool) -> Result<ReaderFigures, AppError> {
    let mut figures = ReaderFigures { rows: 0, queries: 0 };
    while !stop.load(Ordering::Acquire) {
        let mut pass_rows = 0;
        for cursor in cursors.iter_mut() {
            pass_rows += cursor.read_page(conn)?;
            figures.queries += 1;
        }
        figures.rows += pass_rows;
        if pass_rows == 0 {
            std::thread::sleep(Duration::from_millis(READER_IDLE_MS));
        }
    }
    Ok(figures)
}
