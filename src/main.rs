//! The `applianced` binary: argument parsing and exit codes only.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use std::collections::BTreeMap;

use applianced::app;
use applianced::control::{ddl, grants, supervisor};
use applianced::lane::connector::ConnectorArgs;
use applianced::lane::ingress::{GRANT_DEFAULT_LAST, PeerGrant, PeerId, PeerPolicy};
use applianced::lane::process::{IoMode, LaneArgs, run_connector, run_lane};
use applianced::model::matrix::Module;
use applianced::producer::load::{LoadOptions, run_load};
use applianced::sandbox::SandboxMode;
use applianced::tools::matrix_docs;
use argh::FromArgs;

/// RansomEye data plane: per-module ingest lanes into a hardened PostgreSQL.
#[derive(FromArgs)]
struct Cli {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Matrix(MatrixCmd),
    Init(InitCmd),
    Run(RunCmd),
    Stop(StopCmd),
    Selftest(SelftestCmd),
    Demo(DemoCmd),
    Bench(BenchCmd),
    Load(LoadCmd),
    Metrics(MetricsCmd),
    Status(StatusCmd),
    Lane(LaneCmd),
    LaneConnector(LaneConnectorCmd),
    SandboxProbe(SandboxProbeCmd),
    GenerateSql(GenerateSqlCmd),
}

/// Print the ownership matrix (markdown table, JSON, or the GRANT/REVOKE script).
#[derive(FromArgs)]
#[argh(subcommand, name = "matrix")]
struct MatrixCmd {
    /// markdown (default), json or sql
    #[argh(option, default = "String::from(\"markdown\")")]
    format: String,
    /// appliance instance name used in socket names (default "default")
    #[argh(option, default = "String::from(\"default\")")]
    instance: String,
}

/// Create or update the embedded PostgreSQL cluster, apply migrations, create partitions.
#[derive(FromArgs)]
#[argh(subcommand, name = "init")]
struct InitCmd {
    /// state directory of the embedded cluster (created if missing)
    #[argh(option)]
    state_dir: Option<PathBuf>,
    /// config file instead: embedded state_dir, or an external PostgreSQL (postgres_socket ...)
    #[argh(option)]
    config: Option<PathBuf>,
    /// directory of the PostgreSQL server binaries (default /usr/lib/postgresql/15/bin)
    #[argh(option)]
    pg_bin_dir: Option<PathBuf>,
    /// days of partitions to create ahead of today (default 7)
    #[argh(option, default = "applianced::base::limits::PARTITION_DAYS_AHEAD_DEFAULT")]
    partition_days_ahead: u32,
}

/// Run the appliance: the embedded cluster and one lane per module, until SIGTERM or SIGINT.
#[derive(FromArgs)]
#[argh(subcommand, name = "run")]
struct RunCmd {
    /// state directory created by `init`
    #[argh(option)]
    state_dir: PathBuf,
    /// instance name in socket names @ransomeye/<instance>/<module> (default "default")
    #[argh(option, default = "String::from(\"default\")")]
    instance: String,
    /// MODULE=UID[:FIRST-LAST]: admit this uid on MODULE's lane, claiming producer ids FIRST..LAST (default: every id below the reserved ones); repeatable; replaces the default, the uid that started the appliance
    #[argh(option)]
    peer_uid: Vec<String>,
    /// MODULE=GID[:FIRST-LAST]: admit this primary gid on MODULE's lane, as --peer-uid (repeatable)
    #[argh(option)]
    peer_gid: Vec<String>,
    /// lane I/O path: auto (io_uring, else poll), uring or poll
    #[argh(option, default = "String::from(\"auto\")")]
    io: String,
    /// days of partitions kept ahead of today (default 7)
    #[argh(option, default = "applianced::base::limits::PARTITION_DAYS_AHEAD_DEFAULT")]
    partition_days_ahead: u32,
    /// lane sandbox: best-effort (default), required (refuse to serve unless fully enforced) or off (debugging only)
    #[argh(option, default = "String::from(\"best-effort\")")]
    sandbox: String,
    /// same as --sandbox required (the packaged default)
    #[argh(switch)]
    require_sandbox: bool,
    /// CPUs of the lane processes, e.g. "3" or "6-7" (default: the highest quarter of the CPUs)
    #[argh(option)]
    lane_cpus: Option<String>,
    /// CPUs of the embedded PostgreSQL (default: the highest half of the CPUs)
    #[argh(option)]
    pg_cpus: Option<String>,
    /// MODULE=DAYS: keep this module's day partitions for DAYS days, then detach and drop them (repeatable; default 30 for every module)
    #[argh(option)]
    retention: Vec<String>,
    /// how many PostgreSQL connections each lane commits its spool over, 1 to 4 (default: one per CPU of PostgreSQL, --pg-cpus); transactions commit in spool order whatever the number
    #[argh(option)]
    commit_streams: Option<usize>,
    /// disk quota of each lane's spool in MiB (default 1024); beyond it producers are pushed back
    #[argh(option, default = "applianced::base::limits::SPOOL_QUOTA_BYTES_DEFAULT / (1024 * 1024)")]
    spool_quota_mb: u64,
    /// admit this uid on the metrics socket @ransomeye/<instance>/metrics, besides the appliance's own uid and root (repeatable)
    #[argh(option)]
    metrics_uid: Vec<u32>,
    /// also write the metrics exposition to this file every second, by rename (for node_exporter's textfile collector: a path ending in .prom)
    #[argh(option)]
    metrics_textfile: Option<PathBuf>,
}

/// Send synthetic events for one module and wait until every one is acknowledged.
#[derive(FromArgs)]
#[argh(subcommand, name = "load")]
struct LoadCmd {
    /// module: core, dpi, linux_agent or windows_agent
    #[argh(option)]
    module: String,
    /// number of events
    #[argh(option)]
    events: u64,
    /// producer id
    #[argh(option)]
    producer_id: u64,
    /// producer epoch (default 1)
    #[argh(option, default = "1")]
    epoch: u64,
    /// first sequence number (default 1)
    #[argh(option, default = "1")]
    start_seq: u64,
    /// appliance instance (default "default")
    #[argh(option, default = "String::from(\"default\")")]
    instance: String,
    /// uid the lane's socket must be owned by (default: this process's uid)
    #[argh(option)]
    server_uid: Option<u32>,
}

/// Internal: one lane process (started by `applianced run`, never by hand).
#[derive(FromArgs)]
#[argh(subcommand, name = "lane")]
struct LaneCmd {
    /// module of this lane
    #[argh(option)]
    module: String,
    /// state directory (shown by ps; the lane reads nothing else of it)
    #[argh(option)]
    #[allow(dead_code)]
    state_dir: PathBuf,
    /// the lane's spool directory
    #[argh(option)]
    spool_dir: PathBuf,
    /// the socket file of PostgreSQL
    #[argh(option)]
    pg_socket: PathBuf,
    /// an admitted peer and its producer ids: uid:UID:FIRST-LAST or gid:GID:FIRST-LAST (repeatable)
    #[argh(option)]
    allow: Vec<String>,
    /// auto, uring or poll
    #[argh(option, default = "String::from(\"auto\")")]
    io: String,
    /// off, best-effort or required
    #[argh(option, default = "String::from(\"best-effort\")")]
    sandbox: String,
    /// CPU list to pin this lane to
    #[argh(option, default = "String::from(\"0\")")]
    cpus: String,
    /// spool quota in bytes
    #[argh(option, default = "applianced::base::limits::SPOOL_QUOTA_BYTES_DEFAULT")]
    spool_quota: u64,
    /// bytes to keep free on the spool's filesystem (0: none)
    #[argh(option, default = "0")]
    disk_reserve: u64,
    /// how many PostgreSQL connections to commit over (1 to 4)
    #[argh(option, default = "1")]
    commit_streams: usize,
    /// run this sandbox probe instead of serving
    #[argh(option)]
    probe: Option<String>,
}

/// Internal: a lane's PostgreSQL connector (started by its lane, never by hand).
#[derive(FromArgs)]
#[argh(subcommand, name = "lane-connector")]
struct LaneConnectorCmd {
    /// the socket file of PostgreSQL
    #[argh(option)]
    pg_socket: PathBuf,
    /// the role every connection logs in as
    #[argh(option)]
    role: String,
    /// the database
    #[argh(option)]
    database: String,
    /// application_name of the connections
    #[argh(option)]
    application_name: String,
    /// off, best-effort or required
    #[argh(option)]
    sandbox: String,
}

/// Start one lane process exactly as `run` does (its identity, spool, connector and sandbox), have it try one thing the sandbox must forbid, and print the outcome.
#[derive(FromArgs)]
#[argh(subcommand, name = "sandbox-probe")]
struct SandboxProbeCmd {
    /// status, open-outside, uring-openat, new-ring, forbidden-syscall, tcp-socket, pg-socket, pg-connector or pg-identity
    #[argh(option)]
    probe: String,
    /// state directory of the cluster
    #[argh(option)]
    state_dir: PathBuf,
    /// the module whose lane to probe (default dpi)
    #[argh(option, default = "String::from(\"dpi\")")]
    module: String,
    /// sandbox mode of the probed lane (default required)
    #[argh(option, default = "String::from(\"required\")")]
    sandbox: String,
}

/// Stop the embedded cluster.
#[derive(FromArgs)]
#[argh(subcommand, name = "stop")]
struct StopCmd {
    /// state directory created by `init`
    #[argh(option)]
    state_dir: PathBuf,
}

/// Check a live installation: schema version, privileges against the matrix, durability, partitions.
#[derive(FromArgs)]
#[argh(subcommand, name = "selftest")]
struct SelftestCmd {
    /// state directory of an embedded installation
    #[argh(option)]
    state_dir: Option<PathBuf>,
    /// config file (embedded state_dir or external postgres_socket)
    #[argh(option)]
    config: Option<PathBuf>,
    /// print the report as JSON
    #[argh(switch)]
    json: bool,
}

/// Print the appliance's metrics once, in the OpenMetrics text format: from its state directory, or from its metrics socket.
#[derive(FromArgs)]
#[argh(subcommand, name = "metrics")]
struct MetricsCmd {
    /// state directory of the running appliance (read its files)
    #[argh(option)]
    state_dir: Option<PathBuf>,
    /// instance name of the running appliance (read its socket @ransomeye/<instance>/metrics instead)
    #[argh(option)]
    instance: Option<String>,
    /// with --instance: the uid the appliance runs as; a socket bound by another uid is refused (default: your own)
    #[argh(option)]
    server_uid: Option<u32>,
}

/// Per lane: events/s acknowledged and committed, commit lag, spool, connections, PostgreSQL link.
#[derive(FromArgs)]
#[argh(subcommand, name = "status")]
struct StatusCmd {
    /// state directory of the running appliance
    #[argh(option)]
    state_dir: PathBuf,
    /// print one table and exit (default: refresh until interrupted)
    #[argh(switch)]
    once: bool,
    /// milliseconds between the two reports a rate is computed from (default 2000, at least 1000)
    #[argh(option, default = "2000")]
    interval_ms: u64,
}

/// The main job on the embedded default: init a private cluster, run the appliance, load all four lanes, selftest, stop.
#[derive(FromArgs)]
#[argh(subcommand, name = "demo")]
struct DemoCmd {
    /// events in total across the four modules (default 1,000,000)
    #[argh(option, default = "1_000_000")]
    events: u64,
    /// appliance instance (default "default")
    #[argh(option, default = "String::from(\"default\")")]
    instance: String,
    /// state directory (default: a new directory under $TMPDIR)
    #[argh(option)]
    state_dir: Option<PathBuf>,
    /// directory of the PostgreSQL server binaries
    #[argh(option)]
    pg_bin_dir: Option<PathBuf>,
    /// log lines to the terminal (default: to demo.log in the state directory)
    #[argh(switch)]
    verbose: bool,
}

/// Measure the appliance beside server-side COPY FROM file and multi-row INSERT, in one run on one embedded cluster.
#[derive(FromArgs)]
#[argh(subcommand, name = "bench")]
struct BenchCmd {
    /// events in total across the four modules (default 1,000,000)
    #[argh(option, default = "1_000_000")]
    events: u64,
    /// print the results as one JSON object (the last line of stdout)
    #[argh(switch)]
    json: bool,
    /// state directory (default: a new directory under $TMPDIR, removed after the run)
    #[argh(option)]
    state_dir: Option<PathBuf>,
    /// appliance instance in socket names (default "bench")
    #[argh(option, default = "String::from(\"bench\")")]
    instance: String,
    /// rounds of a, a', c and e, interleaved, for medians and spread (default 1; b and d run in the first round)
    #[argh(option, default = "1")]
    rounds: u32,
    /// the appliance's --commit-streams (default: run's default)
    #[argh(option)]
    commit_streams: Option<usize>,
}

/// Render sql/0003..0005 from the code (developer command).
#[derive(FromArgs)]
#[argh(subcommand, name = "generate-sql")]
struct GenerateSqlCmd {
    /// directory to write into (normally sql)
    #[argh(option)]
    dir: PathBuf,
}

fn matrix(cmd: &MatrixCmd) -> ExitCode {
    match cmd.format.as_str() {
        "markdown" => print!("{}", matrix_docs::render_markdown(&cmd.instance)),
        "json" => println!("{:#}", matrix_docs::render_json(&cmd.instance)),
        "sql" => print!("{}", grants::render_sql()),
        other => {
            eprintln!("applianced: unknown --format {other:?}; use markdown, json or sql");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

fn generate_sql(cmd: &GenerateSqlCmd) -> Result<(), app::AppError> {
    let files = [
        ("0003_event_tables.sql", ddl::render_event_tables_sql()),
        ("0004_core_views.sql", ddl::render_core_views_sql()),
        ("0005_ownership_matrix.sql", grants::render_sql()),
    ];
    for (name, text) in files {
        std::fs::write(cmd.dir.join(name), text).map_err(|source| app::AppError::Io { step: "write sql", source })?;
    }
    Ok(())
}

fn parse_module(name: &str) -> Result<Module, app::AppError> {
    Module::from_name(name).ok_or_else(|| {
        app::AppError::Usage(format!("unknown module {name:?}; use core, dpi, linux_agent or windows_agent"))
    })
}

fn parse_peers(uids: &[String], gids: &[String]) -> Result<BTreeMap<Module, Vec<PeerGrant>>, app::AppError> {
    let mut peers = supervisor::default_peers();
    let mut replaced = Vec::new();
    for (spec, is_uid) in uids.iter().map(|s| (s, true)).chain(gids.iter().map(|s| (s, false))) {
        let usage = || {
            app::AppError::Usage(format!(
                "{spec:?}: expected MODULE=ID or MODULE=ID:FIRST-LAST with LAST below {}",
                applianced::base::limits::RESERVED_PRODUCER_ID_FIRST
            ))
        };
        let (module, rest) = spec.split_once('=').ok_or_else(usage)?;
        let module = parse_module(module)?;
        let (id, range) = match rest.split_once(':') {
            Some((id, range)) => (id, Some(range)),
            None => (rest, None),
        };
        let id: u32 = id.parse().map_err(|_| usage())?;
        let (first, last) = match range {
            None => (0, GRANT_DEFAULT_LAST),
            Some(range) => {
                let (first, last) = range.split_once('-').ok_or_else(usage)?;
                (first.parse::<u64>().map_err(|_| usage())?, last.parse::<u64>().map_err(|_| usage())?)
            }
        };
        if first > last || last > GRANT_DEFAULT_LAST {
            return Err(usage());
        }
        let who = if is_uid { PeerId::Uid(id) } else { PeerId::Gid(id) };
        let grants = peers.entry(module).or_default();
        if !replaced.contains(&module) {
            replaced.push(module);
            grants.clear();
        }
        grants.push(PeerGrant { who, first_producer: first, last_producer: last });
    }
    Ok(peers)
}

fn parse_retention(specs: &[String]) -> Result<BTreeMap<Module, u32>, app::AppError> {
    let mut days: BTreeMap<Module, u32> =
        Module::ALL.iter().map(|m| (*m, applianced::base::limits::RETENTION_DAYS_DEFAULT)).collect();
    for spec in specs {
        let parsed = spec
            .split_once('=')
            .and_then(|(m, d)| Some((Module::from_name(m)?, d.parse::<u32>().ok()?)))
            .filter(|(_, d)| *d >= applianced::base::limits::RETENTION_DAYS_MIN);
        let Some((module, d)) = parsed else {
            return Err(app::AppError::Usage(format!(
                "--retention {spec:?}: expected MODULE=DAYS with DAYS >= {}",
                applianced::base::limits::RETENTION_DAYS_MIN
            )));
        };
        days.insert(module, d);
    }
    Ok(days)
}

fn parse_sandbox(text: &str) -> Result<SandboxMode, app::AppError> {
    SandboxMode::parse(text)
        .ok_or_else(|| app::AppError::Usage(format!("unknown --sandbox {text:?}; use best-effort, required or off")))
}

fn run(cmd: &RunCmd) -> Result<(), app::AppError> {
    let io = IoMode::parse(&cmd.io)
        .ok_or_else(|| app::AppError::Usage(format!("unknown --io {:?}; use auto, uring or poll", cmd.io)))?;
    let sandbox = if cmd.require_sandbox { SandboxMode::Required } else { parse_sandbox(&cmd.sandbox)? };
    let mut placement = applianced::sandbox::colocate::default_placement(applianced::base::sys::cpu_count());
    if let Some(list) = &cmd.lane_cpus {
        placement.lane_cpus =
            applianced::sandbox::colocate::parse_cpu_list(list).map_err(|e| app::AppError::Usage(e.to_string()))?;
    }
    if let Some(list) = &cmd.pg_cpus {
        placement.pg_cpus =
            applianced::sandbox::colocate::parse_cpu_list(list).map_err(|e| app::AppError::Usage(e.to_string()))?;
    }
    let commit_streams =
        cmd.commit_streams.unwrap_or_else(|| applianced::sandbox::colocate::default_commit_streams(&placement));
    if !(1..=applianced::base::limits::COMMIT_STREAMS_MAX).contains(&commit_streams) {
        return Err(app::AppError::Usage(format!(
            "--commit-streams must be 1 to {}",
            applianced::base::limits::COMMIT_STREAMS_MAX
        )));
    }
    let options = supervisor::RunOptions {
        commit_streams,
        state_dir: cmd.state_dir.clone(),
        instance: cmd.instance.clone(),
        peers: parse_peers(&cmd.peer_uid, &cmd.peer_gid)?,
        io,
        sandbox,
        placement,
        partition_days_ahead: cmd.partition_days_ahead,
        spool_quota_bytes: cmd.spool_quota_mb.saturating_mul(1024 * 1024),
        retention_days: parse_retention(&cmd.retention)?,
        metrics_uids: cmd.metrics_uid.clone(),
        metrics_textfile: cmd.metrics_textfile.clone(),
    };
    if options.spool_quota_bytes < applianced::base::limits::SPOOL_QUOTA_BYTES_MIN {
        return Err(app::AppError::Usage(format!(
            "--spool-quota-mb must be at least {} (room for two largest batches)",
            applianced::base::limits::SPOOL_QUOTA_BYTES_MIN / (1024 * 1024)
        )));
    }
    supervisor::run(&options)
}

fn load(cmd: &LoadCmd) -> ExitCode {
    let module = match parse_module(&cmd.module) {
        Ok(module) => module,
        Err(e) => {
            eprintln!("applianced: {e}");
            return ExitCode::from(2);
        }
    };
    let options = LoadOptions {
        instance: cmd.instance.clone(),
        module,
        events: cmd.events,
        producer_id: cmd.producer_id,
        epoch: cmd.epoch,
        start_seq: cmd.start_seq,
        server_uid: cmd.server_uid.unwrap_or_else(applianced::base::sys::effective_uid),
        prepared: None,
    };
    let report = run_load(&options);
    let rate = report.acked as f64 / report.elapsed.as_secs_f64().max(1e-9);
    println!(
        "load: module={} producer={} epoch={} seq={}..{} sent={} resent={} acked={} rejected={} reconnects={} elapsed={:.3}s rate={rate:.0} events/s ack_p50={:.1}ms ack_p99={:.1}ms",
        module.name(),
        options.producer_id,
        options.epoch,
        options.start_seq,
        options.start_seq + options.events.saturating_sub(1),
        report.sent,
        report.resent,
        report.acked,
        report.rejected,
        report.reconnects,
        report.elapsed.as_secs_f64(),
        report.latency_percentile_ms(0.50),
        report.latency_percentile_ms(0.99),
    );
    for lost in &report.lost {
        eprintln!("load: ACKNOWLEDGED EVENTS LOST BY THE APPLIANCE: {lost}");
    }
    if report.complete(&options) {
        ExitCode::SUCCESS
    } else if report.acked == options.events {
        eprintln!(
            "load: every event acknowledged, but the appliance lost {} range(s) it had acknowledged",
            report.lost.len()
        );
        ExitCode::from(1)
    } else {
        eprintln!(
            "load: {} of {} events unacknowledged; last error: {}",
            options.events - report.acked,
            options.events,
            report.last_error.as_deref().unwrap_or("none")
        );
        ExitCode::from(1)
    }
}

fn lane(cmd: &LaneCmd) -> ExitCode {
    let grants: Result<Vec<PeerGrant>, String> = cmd.allow.iter().map(|g| PeerGrant::parse(g)).collect();
    let streams = 1..=applianced::base::limits::COMMIT_STREAMS_MAX;
    let (Some(module), Some(io), Some(sandbox), Ok(cpus), Ok(grants), true) = (
        Module::from_name(&cmd.module),
        IoMode::parse(&cmd.io),
        SandboxMode::parse(&cmd.sandbox),
        applianced::sandbox::colocate::parse_cpu_list(&cmd.cpus),
        grants,
        streams.contains(&cmd.commit_streams),
    ) else {
        eprintln!("applianced lane: bad --module, --io, --sandbox, --cpus, --allow or --commit-streams");
        return ExitCode::from(2);
    };
    let args = LaneArgs {
        module,
        spool_dir: cmd.spool_dir.clone(),
        pg_socket: cmd.pg_socket.clone(),
        policy: PeerPolicy { grants },
        io,
        sandbox,
        cpus,
        spool_quota_bytes: cmd.spool_quota,
        disk_reserve_bytes: cmd.disk_reserve,
        commit_streams: cmd.commit_streams,
        probe: cmd.probe.clone(),
    };
    match run_lane(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // write! rather than eprintln!: stderr may be unwritable (full disk).
            let _ = std::io::Write::write_fmt(
                &mut std::io::stderr(),
                format_args!("applianced lane {}: {e}\n", module.name()),
            );
            ExitCode::from(3)
        }
    }
}

fn lane_connector(cmd: &LaneConnectorCmd) -> ExitCode {
    let Some(sandbox) = SandboxMode::parse(&cmd.sandbox) else {
        eprintln!("applianced lane-connector: bad --sandbox");
        return ExitCode::from(2);
    };
    let args = ConnectorArgs {
        sandbox,
        socket_path: cmd.pg_socket.clone(),
        role: cmd.role.clone(),
        database: cmd.database.clone(),
        application_name: cmd.application_name.clone(),
    };
    match run_connector(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("applianced lane-connector: {e}\n"));
            ExitCode::from(3)
        }
    }
}

/// Each probe runs in a lane process of its own (tests/sandbox.rs): the
/// sandbox is process-wide and irreversible. The lane prints `probe <name>:
/// <outcome>`; when the sandbox kills it, this prints how.
fn sandbox_probe(cmd: &SandboxProbeCmd) -> Result<(), app::AppError> {
    let module = parse_module(&cmd.module)?;
    let sandbox = parse_sandbox(&cmd.sandbox)?;
    let status = app::sandbox_probe(&cmd.state_dir, module, sandbox, &cmd.probe)?;
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        println!(
            "probe {}: killed by signal {signal}{}",
            cmd.probe,
            match signal {
                libc::SIGSYS => " (SIGSYS)",
                libc::SIGABRT => " (SIGABRT)",
                _ => "",
            }
        );
        return Ok(());
    }
    if status.success() { Ok(()) } else { Err(app::AppError::Refused(format!("the probed lane failed: {status}"))) }
}

/// Log lines to `writer`: `time LEVEL target: message key=value ...`, or
/// with APPLIANCED_LOG_FORMAT=json one JSON object per line (log shippers).
fn init_logs<W>(writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("APPLIANCED_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(writer)
        // A failed log write (stderr on a full disk) must not become an
        // eprintln! that panics: the log line is lost, the process goes on.
        .log_internal_errors(false);
    if std::env::var("APPLIANCED_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().flatten_event(true).init();
    } else {
        logs.init();
    }
}

/// Where `applianced demo` writes log lines unless `--verbose`:
/// `<state dir>/demo.log` (the directory is created for it).
fn demo_log(cmd: &DemoCmd) -> Option<(PathBuf, std::fs::File)> {
    if cmd.verbose {
        return None;
    }
    let dir = app::demo_dir(cmd.state_dir.as_deref());
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join("demo.log");
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&path).ok()?;
    Some((path, file))
}

fn main() -> ExitCode {
    let cli: Cli = argh::from_env();
    let demo_log = match &cli.command {
        Command::Demo(cmd) => demo_log(cmd),
        _ => None,
    };
    match &demo_log {
        Some((_, file)) => match file.try_clone() {
            Ok(file) => init_logs(std::sync::Mutex::new(file)),
            Err(_) => init_logs(std::io::stderr),
        },
        None => init_logs(std::io::stderr),
    }
    // The packaged unit grants CAP_SETUID and CAP_SETGID as ambient
    // capabilities to every command it runs; only `run` uses them, to start
    // lanes as their identities. Every command lowers them at once to its
    // permitted set (nothing it executes, pg_ctl and PostgreSQL included,
    // inherits one). Root keeps its capabilities: init needs them.
    if applianced::base::sys::effective_uid() != 0 {
        if let Err(e) = applianced::base::sys::spawn::lower_capabilities() {
            eprintln!("applianced: cannot lower capabilities: {e}");
            return ExitCode::from(3);
        }
    }
    let result = match &cli.command {
        Command::Matrix(cmd) => return matrix(cmd),
        Command::Init(cmd) => match (&cmd.state_dir, &cmd.config) {
            (Some(dir), None) => app::init(dir, cmd.pg_bin_dir.as_deref(), cmd.partition_days_ahead).map(|_| ()),
            (None, Some(config)) => app::init_external(config, cmd.partition_days_ahead),
            _ => Err(app::AppError::Usage("init needs exactly one of --state-dir or --config".into())),
        },
        Command::Run(cmd) => run(cmd),
        Command::Load(cmd) => return load(cmd),
        Command::Lane(cmd) => return lane(cmd),
        Command::LaneConnector(cmd) => return lane_connector(cmd),
        Command::SandboxProbe(cmd) => sandbox_probe(cmd),
        Command::Stop(cmd) => app::stop(&cmd.state_dir),
        Command::Metrics(cmd) => match (&cmd.state_dir, &cmd.instance) {
            (Some(dir), None) => app::metrics(dir),
            (None, Some(instance)) => app::scrape(instance, cmd.server_uid),
            _ => Err(app::AppError::Usage("give --state-dir DIR or --instance NAME".into())),
        },
        Command::Status(cmd) => app::status(&cmd.state_dir, cmd.once, cmd.interval_ms),
        Command::Selftest(cmd) => app::selftest(cmd.state_dir.as_deref(), cmd.config.as_deref(), cmd.json),
        Command::Demo(cmd) => {
            let log = demo_log.as_ref().map(|(path, _)| path.as_path());
            app::demo(cmd.state_dir.as_deref(), cmd.pg_bin_dir.as_deref(), cmd.events, &cmd.instance, log).map(|_| ())
        }
        Command::Bench(cmd) => applianced::tools::bench::run(&applianced::tools::bench::BenchOptions {
            events: cmd.events,
            json: cmd.json,
            state_dir: cmd.state_dir.clone(),
            instance: cmd.instance.clone(),
            rounds: cmd.rounds,
            commit_streams: cmd.commit_streams,
        }),
        Command::GenerateSql(cmd) => generate_sql(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(app::AppError::SelftestFailed) => ExitCode::from(1),
        Err(error) => {
            eprintln!("applianced: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
