//! `applianced bench`: the appliance's ingest rate beside PostgreSQL's own
//! ceiling, measured in one run against one embedded cluster (issue 7).
//!
//! Consumes a state directory (a fresh one under `$TMPDIR` unless given) and
//! a number of events N; produces one report, as text or as one JSON object,
//! of four variants that each load N/4 synthetic events per module
//! ([`crate::producer::synth`]) into the same tables with one stream per module:
//!
//! a. server-side `COPY <table> (<columns>) FROM '<file>' (FORMAT binary)`
//!    of files written with the crate's COPY encoder, one admin connection
//!    per module: PostgreSQL's own ceiling;
//! b. multi-row `INSERT ... VALUES`, 1,000 rows per statement and 10
//!    statements per transaction, rendered from the same tuple bytes:
//!    how generic log shippers write to PostgreSQL;
//! c. the appliance end to end (`applianced run` as a child process, one
//!    load client per module on its socket, sending events it encoded
//!    before the window: [`crate::producer::load::Prepared`]), until every event is
//!    acknowledged and committed;
//! d. c again while a Core reader tails every Core view through
//!    `ransomeye_core_reader`, keyset on ingest order;
//! a′. client-side `COPY <table> (<columns>) FROM STDIN (FORMAT binary)` of
//!    the same pre-encoded rows over the Unix socket, one admin connection
//!    per module, in transactions of the lane's size (`TRANSACTION_ROWS_MAX`
//!    rows, one COPY per table each): what any client could do, the honest
//!    ceiling for c;
//! e. one module's burst: all N events from one DPI producer through the
//!    appliance (one lane, one commit stream), against a's four streams.
//!
//! `--rounds R` runs a, a′, c, e once per round, interleaved (a, a′, c, e,
//! a, a′, c, e, ...), so drift on a shared machine hits every variant alike;
//! b and d run in the first round only. The ratios are printed per round
//! with their median and spread.
//!
//! Runs in the `applianced bench` process: one thread per stream, each with
//! its own connection or socket; the appliance is a child process whose CPU
//! and peak RSS are read from `/proc`. Preparing files, statements and the
//! load clients' encoded events is not timed; the clock starts once every stream is connected.
//!
//! Invariants: every variant's producers have their own ids
//! ([`producer_id`]), so no variant (and no earlier run in a reused state
//! directory) deduplicates against another; every variant starts after
//! VACUUM (ANALYZE) and CHECKPOINT, so each begins with the same WAL and
//! vacuum debt; the rows stored per variant are counted afterwards and
//! printed beside the events counted. Bytes are defined once for all variants: the events'
//! tuples in COPY BINARY encoding (stream header and trailer excluded).
//! Everything printed was measured in this run; nothing asserts a time.
//!
//! Layout: this file holds the options, the plan every variant shares, the
//! measurement record and the run from start to report; `variants` loads
//! the events in each of the four ways, with `literal` rendering the SQL
//! literals of b and `reader` the Core reader of d; `window` brackets
//! every variant with VACUUM, CHECKPOINT, WAL and CPU readings taken from
//! `procfs`; `report` prints the result as text or JSON.

mod variants;
pub mod literal;
pub use crate::base::clock::civil_from_days;
mod reader;
mod window;
mod procfs;
mod report;

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::base::limits::{ADMIN_ROLE, DATABASE_NAME, PARTITION_DAYS_AHEAD_DEFAULT};
use crate::control::cluster::Embedded;
use crate::control::error::AppError;
use crate::control::setup;
use crate::model::matrix::{Module, Role};
use crate::model::schema::tables_of;
use crate::pg::{ConnectParams, Connection, PgError};
use crate::tools::demo::Appliance;

use self::reader::ReaderFigures;
use self::report::{render_json, render_text};
use self::variants::{measure_appliance, measure_copy_from_files, measure_copy_from_stdin, measure_inserts};
use self::window::WindowFigures;

/// Producer ids per variant; a variant's module i uses `base + variant * this + i`.
const PRODUCER_IDS_PER_VARIANT: u64 = 1_000;
/// Producer ids per bench run: a reused state directory gets the next block.
const PRODUCER_IDS_PER_RUN: u64 = 10 * PRODUCER_IDS_PER_VARIANT;
/// Bytes per MB in the MB/s figures (decimal, like the figures).
const BYTES_PER_MB: f64 = 1e6;

const _: () = assert!(Module::ALL.len() as u64 <= PRODUCER_IDS_PER_VARIANT);
const _: () = assert!(7 * PRODUCER_IDS_PER_VARIANT <= PRODUCER_IDS_PER_RUN);

/// What `applianced bench` was asked to do.
pub struct BenchOptions {
    /// Events in total; each module gets `events / 4`.
    pub events: u64,
    pub json: bool,
    /// None: a new directory under `$TMPDIR`, removed after a clean run.
    pub state_dir: Option<PathBuf>,
    pub instance: String,
    /// Rounds of the interleaved variants (at least 1).
    pub rounds: u32,
    /// The appliance's `run --commit-streams` (None: its default).
    pub commit_streams: Option<usize>,
}

impl BenchOptions {
    /// The commit streams the appliance runs with.
    fn commit_streams(&self) -> usize {
        self.commit_streams.unwrap_or_else(|| {
            crate::sandbox::colocate::default_commit_streams(&crate::sandbox::colocate::default_placement(
                crate::base::sys::cpu_count(),
            ))
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    CopyFromFile,
    Insert,
    Appliance,
    ApplianceWithReader,
    CopyFromStdin,
    OneModuleBurst,
}

impl Variant {
    fn number(self) -> u64 {
        match self {
            Variant::CopyFromFile => 1,
            Variant::Insert => 2,
            Variant::Appliance => 3,
            Variant::ApplianceWithReader => 4,
            Variant::CopyFromStdin => 5,
            Variant::OneModuleBurst => 6,
        }
    }

    fn key(self) -> &'static str {
        match self {
            Variant::CopyFromFile => "a_copy_from_file",
            Variant::Insert => "b_multi_row_insert",
            Variant::Appliance => "c_appliance",
            Variant::ApplianceWithReader => "d_appliance_with_core_reader",
            Variant::CopyFromStdin => "a_prime_copy_from_stdin",
            Variant::OneModuleBurst => "e_one_module_burst",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Variant::CopyFromFile => "a server-side COPY FROM file",
            Variant::Insert => "b INSERT 1000 rows/statement",
            Variant::Appliance => "c appliance end to end",
            Variant::ApplianceWithReader => "d c + Core reader tailing",
            Variant::CopyFromStdin => "a' client COPY FROM STDIN",
            Variant::OneModuleBurst => "e appliance, one DPI producer",
        }
    }
}

/// What every variant of a round shares.
#[derive(Clone)]
struct Plan {
    per_module: u64,
    /// First producer id of this round (a multiple of [`PRODUCER_IDS_PER_RUN`]).
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
    /// Minor page faults of the supervisor and its lanes in the variant.
    minor_faults: u64,
    lanes: usize,
    lane_peak_rss_max_kib: u64,
    peak_rss_sum_kib: u64,
    /// Whether VmHWM was reset before the variant (else it is the peak since start).
    peak_rss_reset: bool,
    /// CPU of this process (the load clients, and the reader in d).
    client_cpu_s: f64,
    /// From the start until the last ACK (spool-durable); `Measured::elapsed`
    /// runs on until the last commit.
    acked: Duration,
    load_errors: Vec<String>,
}

/// One variant's measurement.
struct Measured {
    variant: Variant,
    round: u32,
    /// Committed rows (a, b) or acknowledged events (c, d; timed until
    /// PostgreSQL committed the last of them).
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
        Measured { variant, round: 1, events, stored_rows: 0, bytes, elapsed, window, appliance: None, reader: None }
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
    let embedded = setup::init(&dir, None, PARTITION_DAYS_AHEAD_DEFAULT)?;
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
        println!("{}", render_json(&measured, options.events, per_module, options.commit_streams(), total));
    } else {
        print!("{}", render_text(&measured, options.events, per_module, options.commit_streams(), total));
    }
    Ok(())
}

fn measure_all(embedded: &Embedded, options: &BenchOptions, per_module: u64) -> Result<Vec<Measured>, AppError> {
    let mut admin = embedded.connect_admin(DATABASE_NAME).map_err(pg_error("connect as admin"))?;
    let ingest_time_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| AppError::Refused("the clock is before 1970".into()))?
        .as_micros() as i64;
    let first = Plan {
        per_module,
        producer_base: producer_base(&mut admin)?,
        ingest_time_us,
        copy_dir: embedded.dir.root.join("bench-copy"),
        pgdata: embedded.dir.pgdata(),
        admin: embedded.connect_params(ADMIN_ROLE, DATABASE_NAME),
        reader: embedded.connect_params(Role::CoreReader.name(), DATABASE_NAME),
    };
    let exe = std::env::current_exe().map_err(io_error("locate the applianced binary"))?;
    let streams = options.commit_streams().to_string();
    let mut appliance =
        Appliance::start_with(&exe, &embedded.dir.root, &options.instance, &["--commit-streams", &streams])?;
    let mut measured = Vec::new();
    for round in 1..=options.rounds.max(1) {
        let plan =
            Plan { producer_base: first.producer_base + u64::from(round - 1) * PRODUCER_IDS_PER_RUN, ..first.clone() };
        eprintln!("bench: round {round} of {}", options.rounds.max(1));
        let mut round_measured =
            vec![measure_copy_from_files(&mut admin, &plan)?, measure_copy_from_stdin(&mut admin, &plan)?];
        if round == 1 {
            round_measured.push(measure_inserts(&mut admin, &plan)?);
        }
        round_measured.push(measure_appliance(&mut admin, &appliance, &plan, &options.instance, Variant::Appliance)?);
        round_measured.push(measure_appliance(
            &mut admin,
            &appliance,
            &plan,
            &options.instance,
            Variant::OneModuleBurst,
        )?);
        if round == 1 {
            let variant = Variant::ApplianceWithReader;
            round_measured.push(measure_appliance(&mut admin, &appliance, &plan, &options.instance, variant)?);
        }
        for mut m in round_measured {
            m.round = round;
            m.stored_rows = stored_rows(&mut admin, &plan, m.variant)?;
            measured.push(m);
        }
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
