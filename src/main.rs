//! The `applianced` binary: argument parsing and exit codes only.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use std::collections::BTreeMap;

use applianced::ingress::PeerPolicy;
use applianced::lane::process::{IoMode, LaneArgs, run_lane};
use applianced::load::{LoadOptions, run_load};
use applianced::matrix::Module;
use applianced::sandbox::SandboxMode;
use applianced::{app, ddl, grants, matrix_docs, supervisor};
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
    Lane(LaneCmd),
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
    #[argh(option, default = "applianced::limits::PARTITION_DAYS_AHEAD_DEFAULT")]
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
    /// MODULE=UID: admit this uid on MODULE's lane (repeatable; replaces the default, the uid that started the appliance)
    #[argh(option)]
    peer_uid: Vec<String>,
    /// MODULE=GID: admit this primary gid on MODULE's lane (repeatable)
    #[argh(option)]
    peer_gid: Vec<String>,
    /// lane I/O path: auto (io_uring, else poll), uring or poll
    #[argh(option, default = "String::from(\"auto\")")]
    io: String,
    /// days of partitions kept ahead of today (default 7)
    #[argh(option, default = "applianced::limits::PARTITION_DAYS_AHEAD_DEFAULT")]
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
    /// disk quota of each lane's spool in MiB (default 1024); beyond it producers are pushed back
    #[argh(option, default = "applianced::limits::SPOOL_QUOTA_BYTES_DEFAULT / (1024 * 1024)")]
    spool_quota_mb: u64,
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
    /// state directory
    #[argh(option)]
    state_dir: PathBuf,
    /// admitted peer uid (repeatable)
    #[argh(option)]
    allow_uid: Vec<u32>,
    /// admitted peer gid (repeatable)
    #[argh(option)]
    allow_gid: Vec<u32>,
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
    #[argh(option, default = "applianced::limits::SPOOL_QUOTA_BYTES_DEFAULT")]
    spool_quota: u64,
}

/// Test probe: enter the lane sandbox, then try one thing it must forbid.
#[derive(FromArgs)]
#[argh(subcommand, name = "sandbox-probe")]
struct SandboxProbeCmd {
    /// status, open-outside, uring-openat, new-ring, forbidden-syscall or tcp-socket
    #[argh(option)]
    probe: String,
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
        app::AppError::Refused(format!("unknown module {name:?}; use core, dpi, linux_agent or windows_agent"))
    })
}

fn parse_peers(uids: &[String], gids: &[String]) -> Result<BTreeMap<Module, PeerPolicy>, app::AppError> {
    let mut peers = supervisor::default_peers();
    let mut replaced = Vec::new();
    for (spec, is_uid) in uids.iter().map(|s| (s, true)).chain(gids.iter().map(|s| (s, false))) {
        let (module, id) =
            spec.split_once('=').ok_or_else(|| app::AppError::Refused(format!("{spec:?}: expected MODULE=ID")))?;
        let module = parse_module(module)?;
        let id: u32 = id.parse().map_err(|_| app::AppError::Refused(format!("{spec:?}: ID must be a number")))?;
        let policy = peers.entry(module).or_insert_with(|| PeerPolicy { uids: Vec::new(), gids: Vec::new() });
        if !replaced.contains(&module) {
            replaced.push(module);
            *policy = PeerPolicy { uids: Vec::new(), gids: Vec::new() };
        }
        if is_uid { policy.uids.push(id) } else { policy.gids.push(id) }
    }
    Ok(peers)
}

fn parse_retention(specs: &[String]) -> Result<BTreeMap<Module, u32>, app::AppError> {
    let mut days: BTreeMap<Module, u32> =
        Module::ALL.iter().map(|m| (*m, applianced::limits::RETENTION_DAYS_DEFAULT)).collect();
    for spec in specs {
        let parsed = spec
            .split_once('=')
            .and_then(|(m, d)| Some((Module::from_name(m)?, d.parse::<u32>().ok()?)))
            .filter(|(_, d)| *d >= applianced::limits::RETENTION_DAYS_MIN);
        let Some((module, d)) = parsed else {
            return Err(app::AppError::Refused(format!(
                "--retention {spec:?}: expected MODULE=DAYS with DAYS >= {}",
                applianced::limits::RETENTION_DAYS_MIN
            )));
        };
        days.insert(module, d);
    }
    Ok(days)
}

fn parse_sandbox(text: &str) -> Result<SandboxMode, app::AppError> {
    SandboxMode::parse(text)
        .ok_or_else(|| app::AppError::Refused(format!("unknown --sandbox {text:?}; use best-effort, required or off")))
}

fn run(cmd: &RunCmd) -> Result<(), app::AppError> {
    let io = IoMode::parse(&cmd.io)
        .ok_or_else(|| app::AppError::Refused(format!("unknown --io {:?}; use auto, uring or poll", cmd.io)))?;
    let sandbox = if cmd.require_sandbox { SandboxMode::Required } else { parse_sandbox(&cmd.sandbox)? };
    let mut placement = applianced::colocate::default_placement(applianced::sys::cpu_count());
    if let Some(list) = &cmd.lane_cpus {
        placement.lane_cpus = applianced::colocate::parse_cpu_list(list).map_err(app::AppError::Refused)?;
    }
    if let Some(list) = &cmd.pg_cpus {
        placement.pg_cpus = applianced::colocate::parse_cpu_list(list).map_err(app::AppError::Refused)?;
    }
    let options = supervisor::RunOptions {
        state_dir: cmd.state_dir.clone(),
        instance: cmd.instance.clone(),
        peers: parse_peers(&cmd.peer_uid, &cmd.peer_gid)?,
        io,
        sandbox,
        placement,
        partition_days_ahead: cmd.partition_days_ahead,
        spool_quota_bytes: cmd.spool_quota_mb.saturating_mul(1024 * 1024),
        retention_days: parse_retention(&cmd.retention)?,
    };
    if options.spool_quota_bytes < applianced::limits::SPOOL_QUOTA_BYTES_MIN {
        return Err(app::AppError::Refused(format!(
            "--spool-quota-mb must be at least {} (room for two largest batches)",
            applianced::limits::SPOOL_QUOTA_BYTES_MIN / (1024 * 1024)
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
        server_uid: cmd.server_uid.unwrap_or_else(applianced::sys::effective_uid),
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
    if report.complete(&options) {
        ExitCode::SUCCESS
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
    let (Some(module), Some(io), Some(sandbox), Ok(cpus)) = (
        Module::from_name(&cmd.module),
        IoMode::parse(&cmd.io),
        SandboxMode::parse(&cmd.sandbox),
        applianced::colocate::parse_cpu_list(&cmd.cpus),
    ) else {
        eprintln!("applianced lane: bad --module, --io, --sandbox or --cpus");
        return ExitCode::from(2);
    };
    let args = LaneArgs {
        module,
        state_dir: cmd.state_dir.clone(),
        policy: PeerPolicy { uids: cmd.allow_uid.clone(), gids: cmd.allow_gid.clone() },
        io,
        sandbox,
        cpus,
        spool_quota_bytes: cmd.spool_quota,
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

/// Each probe runs in its own process (tests/sandbox.rs): the sandbox is
/// process-wide and irreversible. Prints `probe <name>: <outcome>`.
fn sandbox_probe(probe: &str) -> ExitCode {
    let mut ring = match applianced::lane::uring::create_ring() {
        Ok(ring) => ring,
        Err(e) => {
            println!("probe {probe}: no io_uring: {e}");
            return ExitCode::from(3);
        }
    };
    let Ok(status) = std::fs::File::open("/proc/self/status") else { return ExitCode::from(3) };
    let report = match applianced::sandbox::enter(SandboxMode::Required, true, status, None) {
        Ok(report) => report,
        Err(e) => {
            println!("probe {probe}: sandbox not entered: {e}");
            return ExitCode::from(3);
        }
    };
    let outcome = match probe {
        "status" => format!("{report:?}"),
        "open-outside" => match std::fs::File::open("/etc/hostname") {
            Ok(_) => "opened".to_string(),
            Err(e) => format!("errno {}", e.raw_os_error().unwrap_or(0)),
        },
        "uring-openat" => match ring.probe_openat("/etc/hostname") {
            Ok(code) => format!("cqe {code}"),
            Err(e) => format!("submit failed: {e}"),
        },
        "new-ring" => format!("created: {:?}", applianced::lane::uring::create_ring().map(|_| ())),
        "forbidden-syscall" => format!("getppid returned {}", applianced::sys::parent_pid()),
        "tcp-socket" => format!("socket: {:?}", std::net::TcpStream::connect("127.0.0.1:9")),
        other => format!("unknown probe {other}"),
    };
    println!("probe {probe}: {outcome}");
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("APPLIANCED_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // A failed log write (stderr on a full disk) must not become an
        // eprintln! that panics: the log line is lost, the process goes on.
        .log_internal_errors(false)
        .init();
    let cli: Cli = argh::from_env();
    let result = match &cli.command {
        Command::Matrix(cmd) => return matrix(cmd),
        Command::Init(cmd) => match (&cmd.state_dir, &cmd.config) {
            (Some(dir), None) => app::init(dir, cmd.pg_bin_dir.as_deref(), cmd.partition_days_ahead).map(|_| ()),
            (None, Some(config)) => app::init_external(config, cmd.partition_days_ahead),
            _ => Err(app::AppError::Refused("init needs exactly one of --state-dir or --config".into())),
        },
        Command::Run(cmd) => run(cmd),
        Command::Load(cmd) => return load(cmd),
        Command::Lane(cmd) => return lane(cmd),
        Command::SandboxProbe(cmd) => return sandbox_probe(&cmd.probe),
        Command::Stop(cmd) => app::stop(&cmd.state_dir),
        Command::Selftest(cmd) => app::selftest(cmd.state_dir.as_deref(), cmd.config.as_deref(), cmd.json),
        Command::Demo(cmd) => {
            app::demo(cmd.state_dir.as_deref(), cmd.pg_bin_dir.as_deref(), cmd.events, &cmd.instance).map(|_| ())
        }
        Command::Bench(cmd) => applianced::bench::run(&applianced::bench::BenchOptions {
            events: cmd.events,
            json: cmd.json,
            state_dir: cmd.state_dir.clone(),
            instance: cmd.instance.clone(),
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
