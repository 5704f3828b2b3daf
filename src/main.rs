//! The `applianced` binary: argument parsing and exit codes only.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use applianced::{app, ddl, grants, matrix_docs};
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
    /// state directory (created if missing)
    #[argh(option)]
    state_dir: PathBuf,
    /// directory of the PostgreSQL server binaries (default /usr/lib/postgresql/15/bin)
    #[argh(option)]
    pg_bin_dir: Option<PathBuf>,
    /// days of partitions to create ahead of today (default 7)
    #[argh(option, default = "applianced::limits::PARTITION_DAYS_AHEAD_DEFAULT")]
    partition_days_ahead: u32,
}

/// Start and supervise the embedded cluster until SIGTERM or SIGINT.
#[derive(FromArgs)]
#[argh(subcommand, name = "run")]
struct RunCmd {
    /// state directory created by `init`
    #[argh(option)]
    state_dir: PathBuf,
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

/// The main job on the embedded default: init a private cluster, selftest, stop.
#[derive(FromArgs)]
#[argh(subcommand, name = "demo")]
struct DemoCmd {
    /// state directory (default: a new directory under $TMPDIR)
    #[argh(option)]
    state_dir: Option<PathBuf>,
    /// directory of the PostgreSQL server binaries
    #[argh(option)]
    pg_bin_dir: Option<PathBuf>,
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
        std::fs::write(cmd.dir.join(name), text).map_err(|source| app::AppError::Io {
            step: "write sql",
            source,
        })?;
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("APPLIANCED_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli: Cli = argh::from_env();
    let result = match &cli.command {
        Command::Matrix(cmd) => return matrix(cmd),
        Command::Init(cmd) => app::init(
            &cmd.state_dir,
            cmd.pg_bin_dir.as_deref(),
            cmd.partition_days_ahead,
        )
        .map(|_| ()),
        Command::Run(cmd) => app::run(&cmd.state_dir),
        Command::Stop(cmd) => app::stop(&cmd.state_dir),
        Command::Selftest(cmd) => {
            app::selftest(cmd.state_dir.as_deref(), cmd.config.as_deref(), cmd.json)
        }
        Command::Demo(cmd) => {
            app::demo(cmd.state_dir.as_deref(), cmd.pg_bin_dir.as_deref()).map(|_| ())
        }
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
