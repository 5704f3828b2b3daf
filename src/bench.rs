//! `applianced bench`: the appliance's ingest rate beside PostgreSQL's own
//! ceiling, measured in one run against one embedded cluster (issue 7).
//!
//! Consumes a state directory (a fresh one under `$TMPDIR` unless given) and
//! a number of events N; produces one report, as text or as one JSON object,
//! of four variants that each load N/4 synthetic events per module
//! ([`crate::synth`]) into the same tables with one stream per module:
//!
//! a. server-side `COPY <table> (<columns>) FROM '<file>' (FORMAT binary)`
//!    of files written with the crate's COPY encoder, one admin connection
//!    per module: PostgreSQL's own ceiling;
//! b. multi-row `INSERT ... VALUES`, 1,000 rows per statement and 10
//!    statements per transaction, rendered from the same tuple bytes:
//!    how generic log shippers write to PostgreSQL;
//! c. the appliance end to end (`applianced run` as a child process, one
//!    load client per module on its socket), counting acknowledged events;
//! d. c again while a Core reader tails every Core view through
//!    `ransomeye_core_reader`, keyset on ingest order.
//!
//! Runs in the `applianced bench` process: one thread per stream, each with
//! its own connection or socket; the appliance is a child process whose CPU
//! and peak RSS are read from `/proc`. Preparing files and statements is not
//! timed; the clock starts once every stream is connected.
//!
//! Invariants: every variant's producers have their own ids
//! ([`producer_id`]), so no variant (and no earlier run in a reused state
//! directory) deduplicates against another; every variant starts after
//! VACUUM (ANALYZE) and CHECKPOINT, so each begins with the same WAL and
//! vacuum debt; the rows stored per variant are counted afterwards and
//! printed beside the events counted. Bytes are defined once for all variants: the events'
//! tuples in COPY BINARY encoding (stream header and trailer excluded).
//! Everything printed was measured in this run; nothing asserts a time.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufWriter, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;

use crate::app::{self, AppError};
use crate::cluster::Embedded;
use crate::copy::{self, CommonValues, PG_EPOCH_OFFSET_US};
use crate::demo::Appliance;
use crate::limits::{ADMIN_ROLE, DATABASE_NAME, PARTITION_DAYS_AHEAD_DEFAULT, RECORD_BYTES_MAX};
use crate::load::{LoadOptions, LoadReport, run_load};
use crate::matrix::{Module, Role};
use crate::pg::{ConnectParams, Connection, PgError};
use crate::schema::{ColumnType, EVENT_TABLES, EventTable, tables_of};
use crate::{synth, sys};

/// Rows per INSERT statement in variant b: the size issue 7 compares with
/// (1,000-row INSERTs reached about 0.1 M rows/s on this machine kind).
const INSERT_ROWS_PER_STATEMENT: usize = 1_000;
/// INSERT statements per transaction in variant b (10,000 rows, the
/// appliance's own batch size, `limits::BATCH_ROWS_MAX`).
const INSERT_STATEMENTS_PER_TRANSACTION: usize = 10;
/// Rows per keyset query of the Core reader in variant d.
const READER_ROWS_PER_QUERY: u32 = 10_000;
/// Pause of the Core reader after a pass over every view found nothing new,
/// so an idle tail polls instead of spinning on one core of two.
const READER_IDLE_MS: u64 = 10;
/// Producer ids per variant; a variant's module i uses `base + variant * this + i`.
const PRODUCER_IDS_PER_VARIANT: u64 = 1_000;
/// Producer ids per bench run: a reused state directory gets the next block.
const PRODUCER_IDS_PER_RUN: u64 = 10 * PRODUCER_IDS_PER_VARIANT;
/// Clock ticks per second of `/proc/<pid>/stat` and `/proc/stat`: USER_HZ,
/// which the kernel fixes at 100 for user space on every Linux ABI
/// (proc(5), "in clock ticks"; `sysconf(_SC_CLK_TCK)` returns it), hard-coded
/// so this module needs no unsafe call.
const CLOCK_TICKS_PER_S: f64 = 100.0;
/// Bytes per MB in the MB/s figures (decimal, like the figures).
const BYTES_PER_MB: f64 = 1e6;

const _: () = assert!(Module::ALL.len() as u64 <= PRODUCER_IDS_PER_VARIANT);
const _: () = assert!(4 * PRODUCER_IDS_PER_VARIANT < PRODUCER_IDS_PER_RUN);

/// What `applianced bench` was asked to do.
pub struct BenchOptions {
    /// Events in total; each module gets `events / 4`.
    pub events: u64,
    pub json: bool,
    /// None: a new directory under `$TMPDIR`, removed after a clean run.
    pub state_dir: Option<PathBuf>,
    pub instance: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    CopyFromFile,
    Insert,
    Appliance,
    ApplianceWithReader,
}

impl Variant {
    fn number(self) -> u64 {
        match self {
            Variant::CopyFromFile => 1,
            Variant::Insert => 2,
            Variant::Appliance => 3,
            Variant::ApplianceWithReader => 4,
        }
    }

    fn key(self) -> &'static str {
        match self {
            Variant::CopyFromFile => "a_copy_from_file",
            Variant::Insert => "b_multi_row_insert",
            Variant::Appliance => "c_appliance",
            Variant::ApplianceWithReader => "d_appliance_with_core_reader",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Variant::CopyFromFile => "a server-side COPY FROM file",
            Variant::Insert => "b INSERT 1000 rows/statement",
            Variant::Appliance => "c appliance end to end",
            Variant::ApplianceWithReader => "d c + Core reader tailing",
        }
    }
}

/// What every variant shares.
struct Plan {
    per_module: u64,
    /// First producer id of this run (a multiple of [`PRODUCER_IDS_PER_RUN`]).
    producer_base: u64,
    /// ingest_time of the rows of a and b (c and d get the lanes' clock).
    ingest_time_us: i64,
    copy_dir: PathBuf,
    pgdata: PathBuf,
    admin: ConnectParams,
    reader: ConnectParams,
}

fn producer_id(plan: &Plan, variant: Variant, module_index: usize) -> u64 {
    plan.producer_base + variant.number() * PRODUCER_IDS_PER_VARIANT + module_index as u64
}

/// The appliance's own figures (c and d).
struct ApplianceFigures {
    ack_p50_ms: f64,
    ack_p99_ms: f64,
    cpu_s: f64,
    lanes: usize,
    lane_peak_rss_max_kib: u64,
    peak_rss_sum_kib: u64,
    /// Whether VmHWM was reset before the variant (else it is the peak since start).
    peak_rss_reset: bool,
    /// CPU of this process (the load clients, and the reader in d).
    client_cpu_s: f64,
    load_errors: Vec<String>,
}

struct ReaderFigures {
    rows: u64,
    queries: u64,
}

/// One variant's measurement.
struct Measured {
    variant: Variant,
    /// Committed rows (a, b) or acknowledged events (c, d).
    events: u64,
    stored_rows: u64,
    bytes: u64,
    elapsed: Duration,
    window: WindowFigures,
    appliance: Option<ApplianceFigures>,
    reader: Option<ReaderFigures>,
}

impl Measured {
    fn new(variant: Variant, events: u64, bytes: u64, elapsed: Duration, window: WindowFigures) -> Measured {
        Measured { variant, events, stored_rows: 0, bytes, elapsed, window, appliance: None, reader: None }
    }

    fn events_per_s(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / BYTES_PER_MB / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn per_million(&self, seconds: f64) -> f64 {
        seconds * 1e6 / (self.events.max(1) as f64)
    }
}

fn io_error(step: &'static str) -> impl FnOnce(std::io::Error) -> AppError {
    move |source| AppError::Io { step, source }
}

fn pg_error(step: &'static str) -> impl FnOnce(PgError) -> AppError {
    move |source| AppError::Pg { step, source }
}

/// `applianced bench`.
pub fn run(options: &BenchOptions) -> Result<(), AppError> {
    let per_module = options.events / Module::ALL.len() as u64;
    if per_module == 0 {
        return Err(AppError::Refused(format!("bench: --events must be at least {}", Module::ALL.len())));
    }
    let (dir, temporary) = match &options.state_dir {
        Some(dir) => (dir.clone(), false),
        None => (std::env::temp_dir().join(format!("applianced-bench-{}", std::process::id())), true),
    };
    eprintln!("bench: state directory {}", dir.display());
    let embedded = app::init(&dir, None, PARTITION_DAYS_AHEAD_DEFAULT)?;
    let started = Instant::now();
    let result = measure_all(&embedded, options, per_module);
    // The supervisor stops the cluster when it exits; this covers an early error.
    let stopped = embedded.stop();
    let measured = result?;
    stopped?;
    if temporary {
        fs::remove_dir_all(&dir).map_err(io_error("remove the bench state directory"))?;
    }
    let total = started.elapsed();
    if options.json {
        println!("{}", render_json(&measured, options.events, per_module, total));
    } else {
        print!("{}", render_text(&measured, options.events, per_module, total));
    }
    Ok(())
}

fn measure_all(embedded: &Embedded, options: &BenchOptions, per_module: u64) -> Result<Vec<Measured>, AppError> {
    let mut admin = embedded.connect_admin(DATABASE_NAME).map_err(pg_error("connect as admin"))?;
    let ingest_time_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| AppError::Refused("the clock is before 1970".into()))?
        .as_micros() as i64;
    let plan = Plan {
        per_module,
        producer_base: producer_base(&mut admin)?,
        ingest_time_us,
        copy_dir: embedded.dir.root.join("bench-copy"),
        pgdata: embedded.dir.pgdata(),
        admin: embedded.connect_params(ADMIN_ROLE, DATABASE_NAME),
        reader: embedded.connect_params(Role::CoreReader.name(), DATABASE_NAME),
    };
    let mut measured = vec![measure_copy_from_files(&mut admin, &plan)?, measure_inserts(&mut admin, &plan)?];
    let exe = std::env::current_exe().map_err(io_error("locate the applianced binary"))?;
    let mut appliance = Appliance::start_with(&exe, &embedded.dir.root, &options.instance, &[])?;
    for variant in [Variant::Appliance, Variant::ApplianceWithReader] {
        measured.push(measure_appliance(&mut admin, &appliance, &plan, &options.instance, variant)?);
    }
    for m in &mut measured {
        m.stored_rows = stored_rows(&mut admin, &plan, m.variant)?;
    }
    drop(admin);
    appliance.stop()?;
    Ok(measured)
}

/// The first producer id above every producer this state directory has seen.
fn producer_base(admin: &mut Connection) -> Result<u64, AppError> {
    let highest = admin
        .query_value("SELECT coalesce(max(producer_id), 0) FROM appliance.producer_watermarks")
        .map_err(pg_error("read the highest producer id"))?;
    let highest: u64 = highest.parse().map_err(|_| AppError::Refused(format!("producer id {highest:?}")))?;
    Ok((highest / PRODUCER_IDS_PER_RUN + 1) * PRODUCER_IDS_PER_RUN)
}

// --- measurement windows ---

/// State at the start of a variant, after VACUUM and CHECKPOINT.
struct Window {
    lsn: String,
    machine_ticks: u64,
    own_ticks: u64,
    postmaster: u32,
    cluster_ticks: u64,
    opened: Instant,
}

/// What a window measured.
struct WindowFigures {
    wal_bytes: u64,
    /// Busy CPU of the whole machine per second of the window (cores in use).
    machine_cores: f64,
    /// CPU seconds of this process (load clients and reader in c and d).
    own_cpu_s: f64,
    /// CPU seconds of the cluster: postmaster, backends, background workers.
    cluster_cpu_s: f64,
}

/// VACUUM (ANALYZE) every event table, so autovacuum work left by the
/// previous variant does not land in this one and the planner has the
/// statistics autovacuum would give it (without them the Core reader's
/// keyset query seq-scans whole leaves instead of using the BRIN index,
/// measured with EXPLAIN ANALYZE on a 200,000-event run), and CHECKPOINT,
/// so every variant pays the same full-page images; then read the WAL
/// position and the CPU clocks.
fn open_window(admin: &mut Connection, plan: &Plan) -> Result<Window, AppError> {
    let tables: Vec<String> = EVENT_TABLES.iter().map(EventTable::qualified_name).collect();
    admin.execute(&format!("VACUUM (ANALYZE) {}", tables.join(", "))).map_err(pg_error("vacuum before a variant"))?;
    admin.execute("CHECKPOINT").map_err(pg_error("checkpoint before a variant"))?;
    let lsn = admin.query_value("SELECT pg_current_wal_lsn()::text").map_err(pg_error("read the WAL position"))?;
    let postmaster = postmaster_pid(&plan.pgdata)?;
    Ok(Window {
        lsn,
        machine_ticks: machine_busy_ticks()?,
        own_ticks: process_ticks("self")?,
        postmaster,
        cluster_ticks: tree_ticks(postmaster)?,
        opened: Instant::now(),
    })
}

/// WAL bytes, machine CPU and this process's CPU since `window` opened. The
/// window is a little longer than the timed load (it also waits for the
/// reader's last query), so machine CPU is divided by the window's own length.
fn close_window(admin: &mut Connection, window: &Window) -> Result<WindowFigures, AppError> {
    let wal = admin
        .query_value(&format!("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{}')::bigint", window.lsn))
        .map_err(pg_error("read the WAL position"))?;
    let wal_bytes = wal.parse().map_err(|_| AppError::Refused(format!("WAL difference {wal:?}")))?;
    let machine_s = machine_busy_ticks()?.saturating_sub(window.machine_ticks) as f64 / CLOCK_TICKS_PER_S;
    let own_cpu_s = process_ticks("self")?.saturating_sub(window.own_ticks) as f64 / CLOCK_TICKS_PER_S;
    let cluster_cpu_s = tree_ticks(window.postmaster)?.saturating_sub(window.cluster_ticks) as f64 / CLOCK_TICKS_PER_S;
    let machine_cores = machine_s / window.opened.elapsed().as_secs_f64().max(1e-9);
    Ok(WindowFigures { wal_bytes, machine_cores, own_cpu_s, cluster_cpu_s })
}

/// Synthesize `events` events of one producer and hand each to `row` as
/// (index of its table in `tables_of(module)`, table, COPY tuple bytes).
fn for_each_tuple(
    module: Module,
    producer_id: u64,
    events: u64,
    ingest_time_us: i64,
    mut row: impl FnMut(usize, &'static EventTable, &[u8]) -> Result<(), AppError>,
) -> Result<(), AppError> {
    let tables: Vec<&'static EventTable> = tables_of(module).collect();
    let mut fields = BytesMut::with_capacity(RECORD_BYTES_MAX);
    let mut tuple = BytesMut::with_capacity(2 * RECORD_BYTES_MAX);
    for seq in 1..=events {
        fields.clear();
        let event = synth::synthesize(module, producer_id, seq, &mut fields);
        let index = usize::from(event.table);
        let table = tables.get(index).ok_or_else(|| AppError::Refused(format!("synth table {index} of {module:?}")))?;
        let common = CommonValues {
            producer_id: producer_id as i64,
            producer_epoch: 1,
            producer_seq: seq as i64,
            source_id: event.source_id,
            event_time_us: event.event_time_us,
            ingest_time_us,
        };
        tuple.clear();
        copy::encode_row(&mut tuple, table, &common, &fields);
        row(index, table, &tuple)?;
    }
    Ok(())
}

/// Run one job per stream, each on its own thread and connection; the
/// clock starts when every stream is connected and stops when all are done.
fn timed_streams<J: Send + 'static>(
    params: &ConnectParams,
    jobs: Vec<J>,
    work: fn(&mut Connection, J) -> Result<(), AppError>,
) -> Result<Duration, AppError> {
    let barrier = Arc::new(Barrier::new(jobs.len() + 1));
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let barrier = Arc::clone(&barrier);
            let params = params.clone();
            std::thread::spawn(move || {
                let connected = Connection::connect(&params).map_err(pg_error("connect a bench stream"));
                barrier.wait();
                work(&mut connected?, job)
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    let outcomes: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|_| Err(AppError::Refused("a bench stream panicked".into()))))
        .collect();
    let elapsed = started.elapsed();
    outcomes.into_iter().collect::<Result<Vec<()>, _>>().map(|_| elapsed)
}

// --- a: server-side COPY FROM file ---

struct CopyFile {
    table: &'static EventTable,
    path: PathBuf,
}

/// One COPY BINARY file per table of `module`, readable by the server user
/// (the cluster runs as `ransomeye` when the bench runs as root).
fn write_copy_files(
    dir: &Path,
    module: Module,
    producer_id: u64,
    plan: &Plan,
) -> Result<(Vec<CopyFile>, u64), AppError> {
    let mut files = Vec::new();
    let mut writers = Vec::new();
    let mut stream_edge = BytesMut::new();
    copy::encode_header(&mut stream_edge);
    for table in tables_of(module) {
        let path = dir.join(format!("{}.copy", table.qualified_name()));
        let mut writer = BufWriter::new(fs::File::create(&path).map_err(io_error("create a COPY file"))?);
        writer.write_all(&stream_edge).map_err(io_error("write a COPY file"))?;
        files.push(CopyFile { table, path });
        writers.push(writer);
    }
    let mut bytes = 0u64;
    for_each_tuple(module, producer_id, plan.per_module, plan.ingest_time_us, |index, _, tuple| {
        bytes += tuple.len() as u64;
        let writer = writers.get_mut(index).ok_or_else(|| AppError::Refused("COPY file index".into()))?;
        writer.write_all(tuple).map_err(io_error("write a COPY file"))
    })?;
    stream_edge.clear();
    copy::encode_trailer(&mut stream_edge);
    for (writer, file) in writers.iter_mut().zip(&files) {
        writer.write_all(&stream_edge).and_then(|()| writer.flush()).map_err(io_error("write a COPY file"))?;
        fs::set_permissions(&file.path, fs::Permissions::from_mode(0o644)).map_err(io_error("chmod a COPY file"))?;
    }
    Ok((files, bytes))
}

fn copy_from_file_statement(file: &CopyFile) -> String {
    let columns: Vec<&str> = file.table.all_columns().map(|c| c.name).collect();
    let path = file.path.display().to_string().replace('\'', "''");
    format!("COPY {} ({}) FROM '{path}' (FORMAT binary)", file.table.qualified_name(), columns.join(", "))
}

fn copy_files(conn: &mut Connection, files: Vec<CopyFile>) -> Result<(), AppError> {
    for file in &files {
        conn.execute(&copy_from_file_statement(file)).map_err(pg_error("server-side COPY FROM file"))?;
    }
    Ok(())
}

fn measure_copy_from_files(admin: &mut Connection, plan: &Plan) -> Result<Measured, AppError> {
    let variant = Variant::CopyFromFile;
    let dir = plan.copy_dir.join(variant.key());
    fs::create_dir_all(&dir).map_err(io_error("create the COPY file directory"))?;
    for d in [&plan.copy_dir, &dir] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).map_err(io_error("chmod the COPY file directory"))?;
    }
    eprintln!("bench: a: writing COPY BINARY files to {} (not timed)", dir.display());
    let mut jobs = Vec::new();
    let mut bytes = 0;
    for (index, module) in Module::ALL.into_iter().enumerate() {
        let (files, module_bytes) = write_copy_files(&dir, module, producer_id(plan, variant, index), plan)?;
        jobs.push(files);
        bytes += module_bytes;
    }
    let window = open_window(admin, plan)?;
    eprintln!("bench: a: {} streams of server-side COPY FROM file", jobs.len());
    let elapsed = timed_streams(&plan.admin, jobs, copy_files)?;
    let window = close_window(admin, &window)?;
    fs::remove_dir_all(&plan.copy_dir).map_err(io_error("remove the COPY files"))?;
    let events = plan.per_module * Module::ALL.len() as u64;
    Ok(Measured::new(variant, events, bytes, elapsed, window))
}

// --- b: multi-row INSERT ---

/// A module's INSERT statements of up to [`INSERT_ROWS_PER_STATEMENT`]
/// rows each, per table in the order the rows fill up, and their tuple bytes.
fn render_inserts(module: Module, producer_id: u64, plan: &Plan) -> Result<(Vec<String>, u64), AppError> {
    let mut pending: Vec<(String, usize)> = tables_of(module).map(|_| (String::new(), 0)).collect();
    let mut statements = Vec::new();
    let mut bytes = 0u64;
    for_each_tuple(module, producer_id, plan.per_module, plan.ingest_time_us, |index, table, tuple| {
        bytes += tuple.len() as u64;
        let (sql, rows) = pending.get_mut(index).ok_or_else(|| AppError::Refused("INSERT table index".into()))?;
        if *rows == 0 {
            let columns: Vec<&str> = table.all_columns().map(|c| c.name).collect();
            let _ = write!(sql, "INSERT INTO {} ({}) VALUES ", table.qualified_name(), columns.join(", "));
        } else {
            sql.push(',');
        }
        render_row(sql, table, tuple)?;
        *rows += 1;
        if *rows == INSERT_ROWS_PER_STATEMENT {
            statements.push(std::mem::take(sql));
            *rows = 0;
        }
        Ok(())
    })?;
    statements.extend(pending.into_iter().filter(|(_, rows)| *rows > 0).map(|(sql, _)| sql));
    Ok((statements, bytes))
}

fn insert_statements(conn: &mut Connection, statements: Vec<String>) -> Result<(), AppError> {
    // The literals rely on it (backslashes in Windows paths are data).
    conn.execute("SET standard_conforming_strings = on").map_err(pg_error("set standard_conforming_strings"))?;
    for transaction in statements.chunks(INSERT_STATEMENTS_PER_TRANSACTION) {
        conn.execute("BEGIN").map_err(pg_error("begin an INSERT transaction"))?;
        for statement in transaction {
            conn.execute(statement).map_err(pg_error("multi-row INSERT"))?;
        }
        conn.execute("COMMIT").map_err(pg_error("commit an INSERT transaction"))?;
    }
    Ok(())
}

fn measure_inserts(admin: &mut Connection, plan: &Plan) -> Result<Measured, AppError> {
    let variant = Variant::Insert;
    eprintln!("bench: b: rendering INSERT statements (not timed)");
    let mut jobs = Vec::new();
    let mut bytes = 0;
    for (index, module) in Module::ALL.into_iter().enumerate() {
        let (statements, module_bytes) = render_inserts(module, producer_id(plan, variant, index), plan)?;
        jobs.push(statements);
        bytes += module_bytes;
    }
    let window = open_window(admin, plan)?;
    eprintln!("bench: b: {} streams of {INSERT_ROWS_PER_STATEMENT}-row INSERTs", jobs.len());
    let elapsed = timed_streams(&plan.admin, jobs, insert_statements)?;
    let window = close_window(admin, &window)?;
    let events = plan.per_module * Module::ALL.len() as u64;
    Ok(Measured::new(variant, events, bytes, elapsed, window))
}

// --- SQL literals of COPY BINARY tuples (variant b) ---

fn undecodable() -> AppError {
    AppError::Refused("bench: a synthesized tuple does not decode".into())
}

/// One tuple as `(v1,v2,...)`, decoded from its COPY BINARY bytes by the
/// table's column types; fails unless the tuple holds exactly those columns.
fn render_row(sql: &mut String, table: &EventTable, tuple: &[u8]) -> Result<(), AppError> {
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

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01
/// (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms", civil_from_days).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

// --- c and d: the appliance ---

/// One load client per module on its lane socket, all at once.
fn drive_lanes(plan: &Plan, instance: &str, variant: Variant) -> Vec<LoadReport> {
    let handles: Vec<_> = Module::ALL
        .into_iter()
        .enumerate()
        .map(|(index, module)| {
            let options = LoadOptions {
                instance: instance.to_string(),
                module,
                events: plan.per_module,
                producer_id: producer_id(plan, variant, index),
                epoch: 1,
                start_seq: 1,
                server_uid: sys::effective_uid(),
            };
            std::thread::spawn(move || run_load(&options))
        })
        .collect();
    handles
        .into_iter()
        .map(|h| {
            h.join().unwrap_or_else(|_| LoadReport {
                last_error: Some("load thread panicked".into()),
                ..LoadReport::default()
            })
        })
        .collect()
}

/// COPY tuple bytes of the events the load clients of `variant` send
/// (synthesized here too, with the lanes' encoding of the common columns).
fn appliance_bytes(plan: &Plan, variant: Variant) -> Result<u64, AppError> {
    let mut bytes = 0u64;
    for (index, module) in Module::ALL.into_iter().enumerate() {
        for_each_tuple(module, producer_id(plan, variant, index), plan.per_module, plan.ingest_time_us, |_, _, t| {
            bytes += t.len() as u64;
            Ok(())
        })?;
    }
    Ok(bytes)
}

fn measure_appliance(
    admin: &mut Connection,
    appliance: &Appliance,
    plan: &Plan,
    instance: &str,
    variant: Variant,
) -> Result<Measured, AppError> {
    let bytes = appliance_bytes(plan, variant)?;
    let reader = match variant {
        Variant::ApplianceWithReader => Some(CoreReader::start(plan.reader.clone())?),
        Variant::CopyFromFile | Variant::Insert | Variant::Appliance => None,
    };
    let peak_rss_reset = appliance_processes(appliance.pid())?.into_iter().all(reset_peak_rss);
    let cpu_before = tree_ticks(appliance.pid())?;
    let window = open_window(admin, plan)?;
    eprintln!("bench: {}: {} load clients on the lane sockets", variant.key(), Module::ALL.len());
    let started = Instant::now();
    let reports = drive_lanes(plan, instance, variant);
    let elapsed = started.elapsed();
    let reader = reader.map(CoreReader::finish).transpose()?;
    let window = close_window(admin, &window)?;
    let processes = appliance_processes(appliance.pid())?;
    let cpu_s = tree_ticks(appliance.pid())?.saturating_sub(cpu_before) as f64 / CLOCK_TICKS_PER_S;
    let figures = appliance_figures(&reports, &processes, cpu_s, window.own_cpu_s, peak_rss_reset)?;
    let events = reports.iter().map(|r| r.acked).sum();
    let mut measured = Measured::new(variant, events, bytes, elapsed, window);
    measured.appliance = Some(figures);
    measured.reader = reader;
    Ok(measured)
}

fn appliance_figures(
    reports: &[LoadReport],
    processes: &[u32],
    cpu_s: f64,
    client_cpu_s: f64,
    peak_rss_reset: bool,
) -> Result<ApplianceFigures, AppError> {
    let all = LoadReport {
        ack_latencies_us: reports.iter().flat_map(|r| r.ack_latencies_us.clone()).collect(),
        ..LoadReport::default()
    };
    let mut peaks = Vec::new();
    for pid in processes {
        peaks.push(peak_rss_kib(*pid)?);
    }
    Ok(ApplianceFigures {
        ack_p50_ms: all.latency_percentile_ms(0.50),
        ack_p99_ms: all.latency_percentile_ms(0.99),
        cpu_s,
        lanes: processes.len().saturating_sub(1),
        // processes[0] is the supervisor; the rest are its lanes.
        lane_peak_rss_max_kib: peaks.iter().skip(1).copied().max().unwrap_or(0),
        peak_rss_sum_kib: peaks.iter().sum(),
        peak_rss_reset,
        client_cpu_s,
        load_errors: reports.iter().filter_map(|r| r.last_error.clone()).collect(),
    })
}

/// Rows stored for `variant`'s producers, summed over every event table.
fn stored_rows(admin: &mut Connection, plan: &Plan, variant: Variant) -> Result<u64, AppError> {
    let mut parts = Vec::new();
    for (index, module) in Module::ALL.into_iter().enumerate() {
        let producer = producer_id(plan, variant, index);
        for table in tables_of(module) {
            parts.push(format!("(SELECT count(*) FROM {} WHERE producer_id = {producer})", table.qualified_name()));
        }
    }
    let value = admin.query_value(&format!("SELECT {}", parts.join(" + "))).map_err(pg_error("count stored rows"))?;
    value.parse().map_err(|_| AppError::Refused(format!("row count {value:?}")))
}

// --- d: the Core reader ---

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
struct CoreReader {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Result<ReaderFigures, AppError>>,
}

impl CoreReader {
    /// Connect as the Core reader role and tail from the server's clock now.
    fn start(params: ConnectParams) -> Result<CoreReader, AppError> {
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

    fn finish(self) -> Result<ReaderFigures, AppError> {
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

// --- /proc ---

/// The fields of `/proc/<pid>/stat` after the command name, which may hold
/// spaces and parentheses; index 0 is field 3 (state) of proc(5).
fn stat_fields(pid: &str) -> Result<Vec<String>, AppError> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).map_err(io_error("read /proc/<pid>/stat"))?;
    let (_, rest) = text.rsplit_once(')').ok_or_else(|| AppError::Refused(format!("/proc/{pid}/stat: no ')'")))?;
    Ok(rest.split_whitespace().map(str::to_string).collect())
}

/// Clock ticks of proc(5) stat fields, counted from field 3 (index 0).
fn stat_ticks(fields: &[String], indexes: &[usize]) -> Option<u64> {
    indexes.iter().map(|i| fields.get(*i).and_then(|f| f.parse::<i64>().ok()).map(|t| t.max(0) as u64)).sum()
}

/// utime + stime of one process (fields 14 and 15), in clock ticks.
fn process_ticks(pid: &str) -> Result<u64, AppError> {
    stat_ticks(&stat_fields(pid)?, &[11, 12]).ok_or_else(|| AppError::Refused(format!("/proc/{pid}/stat: no utime")))
}

/// Every process whose parent is `parent`.
fn children_of(parent: u32) -> Result<Vec<u32>, AppError> {
    let mut children = Vec::new();
    for entry in fs::read_dir("/proc").map_err(io_error("list /proc"))? {
        let name = entry.map_err(io_error("list /proc"))?.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        // A process may exit between listing and reading; it is not a child then.
        let Ok(fields) = stat_fields(&pid.to_string()) else { continue };
        if fields.get(1).and_then(|f| f.parse::<u32>().ok()) == Some(parent) {
            children.push(pid);
        }
    }
    Ok(children)
}

/// CPU ticks of `root` and its children: its own utime and stime, the
/// cutime and cstime of the children it has reaped (fields 16 and 17), and
/// the utime and stime of the children still alive. A child that exits between
/// two readings moves from the last term to the second, so differences
/// stay right for short-lived backends and restarted lanes.
fn tree_ticks(root: u32) -> Result<u64, AppError> {
    let fields = stat_fields(&root.to_string())?;
    let mut ticks = stat_ticks(&fields, &[11, 12, 13, 14])
        .ok_or_else(|| AppError::Refused(format!("/proc/{root}/stat: no utime")))?;
    for child in children_of(root)? {
        // A child that exited since the listing is already in cutime.
        ticks += process_ticks(&child.to_string()).unwrap_or(0);
    }
    Ok(ticks)
}

/// The postmaster's pid, the first line of `postmaster.pid`.
fn postmaster_pid(pgdata: &Path) -> Result<u32, AppError> {
    let text = fs::read_to_string(pgdata.join("postmaster.pid")).map_err(io_error("read postmaster.pid"))?;
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| AppError::Refused("postmaster.pid: no pid".into()))
}

/// The supervisor first, then its children (the lanes).
fn appliance_processes(supervisor: u32) -> Result<Vec<u32>, AppError> {
    let mut processes = vec![supervisor];
    processes.extend(children_of(supervisor)?);
    Ok(processes)
}

/// VmHWM of a process in KiB.
fn peak_rss_kib(pid: u32) -> Result<u64, AppError> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).map_err(io_error("read /proc/<pid>/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| AppError::Refused(format!("/proc/{pid}/status: no VmHWM")))
}

/// Reset VmHWM to the current RSS (proc(5), clear_refs value 5), so the
/// peak read after a variant is that variant's. False if not permitted.
fn reset_peak_rss(pid: u32) -> bool {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Busy CPU ticks of the whole machine: the `cpu` line of `/proc/stat`
/// without idle and iowait (and without guest time, already in user).
fn machine_busy_ticks() -> Result<u64, AppError> {
    let text = fs::read_to_string("/proc/stat").map_err(io_error("read /proc/stat"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| AppError::Refused("/proc/stat: no cpu line".into()))?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    Ok([0, 1, 2, 5, 6, 7].iter().filter_map(|i| ticks.get(*i)).sum())
}

// --- output ---

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ratio(numerator: &Measured, denominator: &Measured) -> f64 {
    numerator.events_per_s() / denominator.events_per_s().max(1e-9)
}

fn find(measured: &[Measured], variant: Variant) -> Option<&Measured> {
    measured.iter().find(|m| m.variant == variant)
}

fn render_text(measured: &[Measured], requested: u64, per_module: u64, total: Duration) -> String {
    let mut out = String::new();
    let events = per_module * Module::ALL.len() as u64;
    let _ = writeln!(
        out,
        "bench: {events} events per variant ({per_module} per module x {} modules, {requested} requested), one stream per module",
        Module::ALL.len()
    );
    let _ = writeln!(
        out,
        "bench: MB = 10^6 bytes of the events' COPY BINARY tuples; busy cores = machine CPU s per s; \
         PG CPU = cluster processes' CPU s per 10^6 events; each variant after VACUUM (ANALYZE) + CHECKPOINT"
    );
    let _ = writeln!(
        out,
        "\n{:<30} {:>9} {:>9} {:>8} {:>11} {:>8} {:>9} {:>11} {:>10} {:>10}",
        "variant",
        "events",
        "stored",
        "seconds",
        "events/s",
        "MB/s",
        "B/event",
        "WAL B/event",
        "busy cores",
        "PG CPU s/M"
    );
    for m in measured {
        let _ = writeln!(
            out,
            "{:<30} {:>9} {:>9} {:>8.3} {:>11.0} {:>8.1} {:>9.1} {:>11.1} {:>10.2} {:>10.2}",
            m.variant.label(),
            m.events,
            m.stored_rows,
            m.elapsed.as_secs_f64(),
            m.events_per_s(),
            m.mb_per_s(),
            m.bytes as f64 / m.events.max(1) as f64,
            m.window.wal_bytes as f64 / m.events.max(1) as f64,
            m.window.machine_cores,
            m.per_million(m.window.cluster_cpu_s),
        );
    }
    render_appliance_text(&mut out, measured);
    render_ratios_text(&mut out, measured);
    let _ = writeln!(
        out,
        "bench: whole run {:.1} s (cluster init, preparation, settling and verification included)",
        total.as_secs_f64()
    );
    out
}

fn render_appliance_text(out: &mut String, measured: &[Measured]) {
    let _ = writeln!(
        out,
        "\n{:<30} {:>10} {:>10} {:>14} {:>6} {:>18} {:>14} {:>16}",
        "appliance",
        "ack p50 ms",
        "ack p99 ms",
        "CPU s/M events",
        "lanes",
        "lane VmHWM max MiB",
        "VmHWM sum MiB",
        "client CPU s/M"
    );
    for m in measured {
        let Some(a) = &m.appliance else { continue };
        let _ = writeln!(
            out,
            "{:<30} {:>10.1} {:>10.1} {:>14.2} {:>6} {:>18.1} {:>14.1} {:>16.2}{}",
            m.variant.label(),
            a.ack_p50_ms,
            a.ack_p99_ms,
            m.per_million(a.cpu_s),
            a.lanes,
            mib(a.lane_peak_rss_max_kib),
            mib(a.peak_rss_sum_kib),
            m.per_million(a.client_cpu_s),
            if a.peak_rss_reset { "" } else { "  (VmHWM not reset: peak since start)" },
        );
        for error in &a.load_errors {
            let _ = writeln!(out, "  load client error: {error}");
        }
    }
    if let Some(r) = find(measured, Variant::ApplianceWithReader).and_then(|m| m.reader.as_ref().map(|r| (m, r))) {
        let (m, reader) = r;
        let _ = writeln!(
            out,
            "{:<30} read {} rows of {} written, in {} keyset queries ({:.0} rows/s)",
            "d Core reader",
            reader.rows,
            m.events,
            reader.queries,
            reader.rows as f64 / m.elapsed.as_secs_f64().max(1e-9)
        );
    }
}

fn render_ratios_text(out: &mut String, measured: &[Measured]) {
    let get = |v| find(measured, v);
    let (Some(a), Some(b), Some(c), Some(d)) =
        (get(Variant::CopyFromFile), get(Variant::Insert), get(Variant::Appliance), get(Variant::ApplianceWithReader))
    else {
        return;
    };
    let _ = writeln!(
        out,
        "\nratios (events/s): c/a = {:.3}   c/b = {:.2}   d/c = {:.3}",
        ratio(c, a),
        ratio(c, b),
        ratio(d, c)
    );
}

fn measured_json(m: &Measured) -> serde_json::Value {
    let mut value = serde_json::json!({
        "events": m.events,
        "stored_rows": m.stored_rows,
        "bytes": m.bytes,
        "seconds": m.elapsed.as_secs_f64(),
        "events_per_s": m.events_per_s(),
        "mb_per_s": m.mb_per_s(),
        "wal_bytes": m.window.wal_bytes,
        "wal_bytes_per_event": m.window.wal_bytes as f64 / m.events.max(1) as f64,
        "machine_cpu_cores": m.window.machine_cores,
        "cluster_cpu_s_per_million": m.per_million(m.window.cluster_cpu_s),
    });
    if let (Some(a), Some(object)) = (&m.appliance, value.as_object_mut()) {
        object.insert("ack_p50_ms".into(), a.ack_p50_ms.into());
        object.insert("ack_p99_ms".into(), a.ack_p99_ms.into());
        object.insert("appliance_cpu_s_per_million".into(), m.per_million(a.cpu_s).into());
        object.insert("lanes".into(), a.lanes.into());
        object.insert("lane_peak_rss_max_kib".into(), a.lane_peak_rss_max_kib.into());
        object.insert("peak_rss_sum_kib".into(), a.peak_rss_sum_kib.into());
        object.insert("peak_rss_reset".into(), a.peak_rss_reset.into());
        object.insert("client_cpu_s_per_million".into(), m.per_million(a.client_cpu_s).into());
        object.insert("load_errors".into(), a.load_errors.clone().into());
    }
    if let (Some(r), Some(object)) = (&m.reader, value.as_object_mut()) {
        object.insert("reader_rows".into(), r.rows.into());
        object.insert("reader_queries".into(), r.queries.into());
    }
    value
}

fn render_json(measured: &[Measured], requested: u64, per_module: u64, total: Duration) -> serde_json::Value {
    let mut variants = serde_json::Map::new();
    for m in measured {
        variants.insert(m.variant.key().into(), measured_json(m));
    }
    let get = |v| find(measured, v);
    let ratio_of = |n, d| match (get(n), get(d)) {
        (Some(n), Some(d)) => serde_json::Value::from(ratio(n, d)),
        _ => serde_json::Value::Null,
    };
    serde_json::json!({
        "events_requested": requested,
        "events_per_module": per_module,
        "modules": Module::ALL.len(),
        "bytes_definition": "COPY BINARY tuple bytes of the events (stream header and trailer excluded)",
        "variants": variants,
        "ratios": {
            "c_over_a": ratio_of(Variant::Appliance, Variant::CopyFromFile),
            "c_over_b": ratio_of(Variant::Appliance, Variant::Insert),
            "d_over_c": ratio_of(Variant::ApplianceWithReader, Variant::Appliance),
        },
        "run_seconds": total.as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
