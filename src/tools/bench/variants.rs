//! The variants' loads: a server-side COPY FROM file, a′ client-side COPY
//! FROM STDIN, b multi-row INSERT, c the appliance end to end, d c with
//! the Core reader tailing, e one module's burst through the appliance.
//!
//! Consumes the shared [`Plan`]; produces one [`Measured`] per variant.
//! Preparation (COPY files, INSERT statements, the byte count of c and d)
//! happens before the window opens and is not timed. Streams run one
//! thread each in the `applianced bench` process, each with its own
//! connection (a, b) or lane socket (c, d); the clock starts once every
//! stream is connected.
//!
//! Invariant: every variant loads the same number of events per module,
//! each module from its own producer id ([`super::producer_id`]), and counts
//! bytes the same way: the events' COPY BINARY tuples.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::base::limits::{RECORD_BYTES_MAX, TRANSACTION_ROWS_MAX};
use crate::codec::copy::{self, CommonValues};
use crate::control::error::AppError;
use crate::model::matrix::Module;
use crate::model::schema::{EventTable, tables_of};
use crate::pg::{ConnectParams, Connection};
use crate::producer::load::{LoadOptions, LoadReport, Prepared, run_load};
use crate::producer::synth;
use crate::tools::demo::Appliance;

use super::literal::render_row;
use super::procfs::{
    CLOCK_TICKS_PER_S, appliance_processes, peak_rss_kib, reset_peak_rss, tree_minor_faults, tree_ticks,
};
use super::reader::CoreReader;
use super::window::{close_window, open_window};
use super::{ApplianceFigures, Measured, Plan, Variant, io_error, pg_error, producer_id};

/// Rows per INSERT statement in variant b: the size issue 7 compares with
/// (1,000-row INSERTs reached about 0.1 M rows/s on this machine kind).
const INSERT_ROWS_PER_STATEMENT: usize = 1_000;
/// INSERT statements per transaction in variant b (10,000 rows, the
/// appliance's own batch size, `limits::BATCH_ROWS_MAX`).
const INSERT_STATEMENTS_PER_TRANSACTION: usize = 10;

// --- shared by every variant ---

/// Synthesize `events` events of one producer and hand each to `row` as
/// (index of its table in `tables_of(module)`, table, COPY tuple bytes).
pub(super) fn for_each_tuple(
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

/// One stream per module: `prepare` each module's job and count its bytes
/// (not timed), then run the jobs with `work` inside a window, timed.
fn measure_streams<J: Send + 'static>(
    admin: &mut Connection,
    plan: &Plan,
    variant: Variant,
    what: &str,
    prepare: impl Fn(Module, u64, &Plan) -> Result<(J, u64), AppError>,
    work: fn(&mut Connection, J) -> Result<(), AppError>,
) -> Result<Measured, AppError> {
    let mut jobs = Vec::new();
    let mut bytes = 0;
    for (index, module) in Module::ALL.into_iter().enumerate() {
        let (job, module_bytes) = prepare(module, producer_id(plan, variant, index), plan)?;
        jobs.push(job);
        bytes += module_bytes;
    }
    let window = open_window(admin, plan)?;
    eprintln!("bench: {}: {} streams of {what}", variant.key(), jobs.len());
    let elapsed = timed_streams(&plan.admin, jobs, work)?;
    let window = close_window(admin, &window)?;
    let events = plan.per_module * Module::ALL.len() as u64;
    Ok(Measured::new(variant, events, bytes, elapsed, window))
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

pub(super) fn measure_copy_from_files(admin: &mut Connection, plan: &Plan) -> Result<Measured, AppError> {
    let variant = Variant::CopyFromFile;
    let dir = plan.copy_dir.join(variant.key());
    fs::create_dir_all(&dir).map_err(io_error("create the COPY file directory"))?;
    for d in [&plan.copy_dir, &dir] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).map_err(io_error("chmod the COPY file directory"))?;
    }
    eprintln!("bench: a: writing COPY BINARY files to {} (not timed)", dir.display());
    let prepare = |module, producer, plan: &Plan| write_copy_files(&dir, module, producer, plan);
    let measured = measure_streams(admin, plan, variant, "server-side COPY FROM file", prepare, copy_files)?;
    fs::remove_dir_all(&plan.copy_dir).map_err(io_error("remove the COPY files"))?;
    Ok(measured)
}

// --- a′: client-side COPY FROM STDIN ---

/// One transaction of a′: per table with rows, its COPY statement and the
/// COPY BINARY stream (header, tuples, trailer).
type CopyTransaction = Vec<(String, Vec<u8>)>;

/// A module's rows in transactions of `TRANSACTION_ROWS_MAX` rows (the
/// lane's largest), one COPY per table each, and their tuple bytes.
fn copy_transactions(module: Module, producer_id: u64, plan: &Plan) -> Result<(Vec<CopyTransaction>, u64), AppError> {
    let tables: Vec<&'static EventTable> = tables_of(module).collect();
    let mut header = BytesMut::new();
    copy::encode_header(&mut header);
    let mut trailer = BytesMut::new();
    copy::encode_trailer(&mut trailer);
    let close = |streams: &mut Vec<Vec<u8>>| -> CopyTransaction {
        tables
            .iter()
            .zip(streams.iter_mut())
            .filter(|(_, data)| data.len() > header.len())
            .map(|(table, data)| {
                let columns: Vec<&str> = table.all_columns().map(|c| c.name).collect();
                let statement =
                    format!("COPY {} ({}) FROM STDIN (FORMAT binary)", table.qualified_name(), columns.join(", "));
                let mut stream = std::mem::replace(data, header.to_vec());
                stream.extend_from_slice(&trailer);
                (statement, stream)
            })
            .collect()
    };
    let mut streams: Vec<Vec<u8>> = tables.iter().map(|_| header.to_vec()).collect();
    let mut transactions = Vec::new();
    let (mut rows, mut bytes) = (0usize, 0u64);
    for_each_tuple(module, producer_id, plan.per_module, plan.ingest_time_us, |index, _, tuple| {
        bytes += tuple.len() as u64;
        streams.get_mut(index).ok_or_else(|| AppError::Refused("COPY stream index".into()))?.extend_from_slice(tuple);
        rows += 1;
        if rows == TRANSACTION_ROWS_MAX {
            transactions.push(close(&mut streams));
            rows = 0;
        }
        Ok(())
    })?;
    if rows > 0 {
        transactions.push(close(&mut streams));
    }
    Ok((transactions, bytes))
}

fn copy_stdin(conn: &mut Connection, transactions: Vec<CopyTransaction>) -> Result<(), AppError> {
    for transaction in &transactions {
        conn.execute("BEGIN").map_err(pg_error("begin a COPY transaction"))?;
        for (statement, data) in transaction {
            conn.copy_in(statement, data).map_err(pg_error("client-side COPY FROM STDIN"))?;
        }
        conn.execute("COMMIT").map_err(pg_error("commit a COPY transaction"))?;
    }
    Ok(())
}

pub(super) fn measure_copy_from_stdin(admin: &mut Connection, plan: &Plan) -> Result<Measured, AppError> {
    eprintln!("bench: a': encoding COPY BINARY streams in memory (not timed)");
    measure_streams(admin, plan, Variant::CopyFromStdin, "client-side COPY FROM STDIN", copy_transactions, copy_stdin)
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

pub(super) fn measure_inserts(admin: &mut Connection, plan: &Plan) -> Result<Measured, AppError> {
    eprintln!("bench: b: rendering INSERT statements (not timed)");
    let what = format!("{INSERT_ROWS_PER_STATEMENT}-row INSERTs");
    measure_streams(admin, plan, Variant::Insert, &what, render_inserts, insert_statements)
}

// --- c and d: the appliance ---

/// The load clients of `variant`: (module, producer id, events). c and d:
/// one per module, N/4 events each; e: one DPI producer with all N.
fn load_plan(plan: &Plan, variant: Variant) -> Vec<(Module, u64, u64)> {
    let all = Module::ALL.into_iter().enumerate();
    match variant {
        Variant::OneModuleBurst => all
            .filter(|(_, m)| *m == Module::Dpi)
            .map(|(index, module)| {
                (module, producer_id(plan, variant, index), plan.per_module * Module::ALL.len() as u64)
            })
            .collect(),
        _ => all.map(|(index, module)| (module, producer_id(plan, variant, index), plan.per_module)).collect(),
    }
}

/// Each load client's events, encoded before the timed window (see [`Prepared`]).
fn prepare_loads(plan: &Plan, instance: &str, variant: Variant) -> Vec<LoadOptions> {
    load_plan(plan, variant)
        .into_iter()
        .map(|(module, producer, events)| {
            let mut options = LoadOptions::new(instance, module, producer, 1, events);
            options.prepared = Some(Arc::new(Prepared::new(module, producer, 1, events)));
            options
        })
        .collect()
}

/// One load client per module on its lane socket, all at once.
fn drive_lanes(loads: Vec<LoadOptions>) -> Vec<LoadReport> {
    let handles: Vec<_> = loads.into_iter().map(|options| std::thread::spawn(move || run_load(&options))).collect();
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
    for (module, producer, events) in load_plan(plan, variant) {
        for_each_tuple(module, producer, events, plan.ingest_time_us, |_, _, t| {
            bytes += t.len() as u64;
            Ok(())
        })?;
    }
    Ok(bytes)
}

pub(super) fn measure_appliance(
    admin: &mut Connection,
    appliance: &Appliance,
    plan: &Plan,
    instance: &str,
    variant: Variant,
) -> Result<Measured, AppError> {
    let bytes = appliance_bytes(plan, variant)?;
    let loads = prepare_loads(plan, instance, variant);
    let reader = match variant {
        Variant::ApplianceWithReader => Some(CoreReader::start(plan.reader.clone())?),
        _ => None,
    };
    let peak_rss_reset = appliance_processes(appliance.pid())?.into_iter().all(reset_peak_rss);
    let cpu_before = tree_ticks(appliance.pid())?;
    let faults_before = tree_minor_faults(appliance.pid())?;
    let window = open_window(admin, plan)?;
    eprintln!(
        "bench: {}: {} load client(s) on the lane sockets (events encoded beforehand)",
        variant.key(),
        load_plan(plan, variant).len()
    );
    let started = Instant::now();
    let reports = drive_lanes(loads);
    let acked = started.elapsed();
    // An ACK means spool-durable; the variant ends when PostgreSQL has
    // committed every event (issue 7: "to acknowledged commits").
    wait_all_committed(admin, plan, variant)?;
    let elapsed = started.elapsed();
    let reader = reader.map(CoreReader::finish).transpose()?;
    let window = close_window(admin, &window)?;
    let processes = appliance_processes(appliance.pid())?;
    let cpu_s = tree_ticks(appliance.pid())?.saturating_sub(cpu_before) as f64 / CLOCK_TICKS_PER_S;
    let minor_faults = tree_minor_faults(appliance.pid())?.saturating_sub(faults_before);
    let figures =
        appliance_figures(&reports, &processes, cpu_s, minor_faults, window.own_cpu_s, peak_rss_reset, acked)?;
    let events = reports.iter().map(|r| r.acked).sum();
    let mut measured = Measured::new(variant, events, bytes, elapsed, window);
    measured.appliance = Some(figures);
    measured.reader = reader;
    Ok(measured)
}

/// Interval between polls of the watermarks while waiting for the last
/// commit: 5 ms, under 0.5% of a 1,000,000-event run on this machine.
const COMMIT_POLL_INTERVAL_MS: u64 = 5;
/// How long the bench waits for the lanes to commit what they acknowledged.
const COMMIT_WAIT_TIMEOUT_S: u64 = 600;

/// Wait until the watermark of every load client of `variant` covers its
/// last event: every acknowledged event is then committed in PostgreSQL.
fn wait_all_committed(admin: &mut Connection, plan: &Plan, variant: Variant) -> Result<(), AppError> {
    let loads = load_plan(plan, variant);
    let producers: Vec<String> = loads
        .iter()
        .map(|(module, producer, events)| {
            format!("(module = '{}' AND producer_id = {producer} AND last_seq >= {events})", module.name())
        })
        .collect();
    let sql = format!(
        "SELECT count(*)::text FROM appliance.producer_watermarks WHERE producer_epoch = 1 AND ({})",
        producers.join(" OR ")
    );
    let deadline = Instant::now() + Duration::from_secs(COMMIT_WAIT_TIMEOUT_S);
    let expected = producers.len().to_string();
    loop {
        if admin.query_value(&sql).map_err(pg_error("read the producer watermarks"))? == expected {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(AppError::Refused(format!(
                "bench: {}: acknowledged events not committed after {COMMIT_WAIT_TIMEOUT_S} s",
                variant.key()
            )));
        }
        std::thread::sleep(Duration::from_millis(COMMIT_POLL_INTERVAL_MS));
    }
}

fn appliance_figures(
    reports: &[LoadReport],
    processes: &[u32],
    cpu_s: f64,
    minor_faults: u64,
    client_cpu_s: f64,
    peak_rss_reset: bool,
    acked: Duration,
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
        minor_faults,
        lanes: processes.len().saturating_sub(1),
        // processes[0] is the supervisor; the rest are its lanes.
        lane_peak_rss_max_kib: peaks.iter().skip(1).copied().max().unwrap_or(0),
        peak_rss_sum_kib: peaks.iter().sum(),
        peak_rss_reset,
        client_cpu_s,
        acked,
        load_errors: reports.iter().filter_map(|r| r.last_error.clone()).collect(),
    })
}
