//! The commands' orchestration: init, run, stop, selftest, demo.
//!
//! Each function is one command's sequence of steps; errors carry the step
//! and map to the exit codes documented in the README ([`AppError::exit_code`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cluster::{self, ClusterError, Embedded, InitOptions};
use crate::config::{ConfigError, Target};
use crate::limits::DATABASE_NAME;
use crate::migrate::{self, MigrateError};
use crate::pg::PgError;
use crate::selftest;
use crate::sys;

#[derive(Debug)]
pub enum AppError {
    Cluster(ClusterError),
    Config(ConfigError),
    Migrate(MigrateError),
    Pg {
        step: &'static str,
        source: PgError,
    },
    SelftestFailed,
    Io {
        step: &'static str,
        source: std::io::Error,
    },
}

impl AppError {
    /// Exit codes: 1 selftest failed, 3 cluster or OS step, 4 database, 5 config.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::SelftestFailed => 1,
            AppError::Cluster(_) | AppError::Io { .. } => 3,
            AppError::Migrate(_) | AppError::Pg { .. } => 4,
            AppError::Config(_) => 5,
        }
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppError::Cluster(e) => write!(f, "{e}"),
            AppError::Config(e) => write!(f, "{e}"),
            AppError::Migrate(e) => write!(f, "{e}"),
            AppError::Pg { step, source } => write!(f, "{step}: {source}"),
            AppError::SelftestFailed => write!(f, "selftest failed"),
            AppError::Io { step, source } => write!(f, "{step}: {source}"),
        }
    }
}

impl From<ClusterError> for AppError {
    fn from(e: ClusterError) -> Self {
        AppError::Cluster(e)
    }
}

/// `applianced init`: create or update the embedded cluster, apply
/// migrations, create partitions ahead.
pub fn init(
    state_dir: &Path,
    pg_bin_dir: Option<&Path>,
    days_ahead: u32,
) -> Result<Embedded, AppError> {
    let embedded = cluster::create_and_start(&InitOptions {
        state_dir,
        pg_bin_dir,
        port: cluster::DEFAULT_PORT,
    })?;
    println!(
        "cluster: running, socket {}",
        embedded.dir.socket_path(embedded.port).display()
    );
    let mut conn = embedded
        .connect_admin(DATABASE_NAME)
        .map_err(|source| AppError::Pg {
            step: "connect to the appliance database",
            source,
        })?;
    let applied = migrate::apply(&mut conn).map_err(AppError::Migrate)?;
    println!(
        "schema: version {} ({} migration(s) applied now)",
        migrate::latest_version(),
        applied.len()
    );
    // Yesterday too, so a host whose clock just crossed midnight still has a window.
    let created = conn
        .query_value(&format!(
            "SELECT appliance.ensure_partitions((now() AT TIME ZONE 'UTC')::date - 1, {})",
            days_ahead + 2
        ))
        .map_err(|source| AppError::Pg {
            step: "create partitions ahead",
            source,
        })?;
    println!(
        "partitions: {created} daily partition(s) created, horizon today+{days_ahead} days (UTC)"
    );
    Ok(embedded)
}

/// `applianced stop`.
pub fn stop(state_dir: &Path) -> Result<(), AppError> {
    let embedded = Embedded::load(state_dir)?;
    embedded.stop()?;
    println!("cluster: stopped");
    Ok(())
}

/// `applianced selftest`; prints the report and fails if any check fails.
pub fn selftest(
    state_dir: Option<&Path>,
    config: Option<&Path>,
    json: bool,
) -> Result<(), AppError> {
    let target = match (state_dir, config) {
        (Some(dir), None) => Target::Embedded(Embedded::load(dir)?),
        (None, Some(file)) => crate::config::load(file).map_err(AppError::Config)?,
        _ => {
            return Err(AppError::Config(ConfigError::Missing(
                "selftest needs exactly one of --state-dir or --config",
            )));
        }
    };
    let checks = match target.connect_admin() {
        Ok(mut conn) => selftest::run_checks(&mut conn),
        Err(e) => vec![selftest::unreachable("database reachable", e.to_string())],
    };
    let ok = if json {
        let (value, ok) = selftest::render_json(&checks);
        println!("{value:#}");
        ok
    } else {
        let (text, ok) = selftest::render_text(&checks);
        print!("{text}");
        ok
    };
    if ok {
        Ok(())
    } else {
        Err(AppError::SelftestFailed)
    }
}

/// Interval between supervisor checks of the cluster.
const SUPERVISE_INTERVAL_MS: u64 = 1000;
/// Restarts of the cluster the supervisor attempts in a row before giving up.
const CLUSTER_RESTARTS_MAX: u32 = 5;

/// `applianced run`: start the embedded cluster and keep it running until
/// SIGTERM or SIGINT, then stop it cleanly.
pub fn run(state_dir: &Path) -> Result<(), AppError> {
    sys::block_supervisor_signals().map_err(|source| AppError::Io {
        step: "block signals",
        source,
    })?;
    let embedded = Embedded::load(state_dir)?;
    embedded.start()?;
    tracing::info!(socket = %embedded.dir.socket_path(embedded.port).display(), "cluster running; supervising");
    let mut restarts = 0u32;
    loop {
        let signal =
            sys::wait_signal(Duration::from_millis(SUPERVISE_INTERVAL_MS)).map_err(|source| {
                AppError::Io {
                    step: "wait for signals",
                    source,
                }
            })?;
        if matches!(
            signal,
            Some(sys::Signal::Terminate | sys::Signal::Interrupt)
        ) {
            tracing::info!("signal received; stopping");
            embedded.stop()?;
            return Ok(());
        }
        if embedded.is_running() {
            restarts = 0;
            continue;
        }
        restarts += 1;
        tracing::warn!(restarts, "cluster is not running; restarting");
        if restarts > CLUSTER_RESTARTS_MAX {
            return Err(AppError::Cluster(ClusterError::Command {
                what: "supervise cluster".into(),
                detail: format!("gave up after {CLUSTER_RESTARTS_MAX} restarts"),
            }));
        }
        std::thread::sleep(Duration::from_millis(
            SUPERVISE_INTERVAL_MS << restarts.min(5),
        ));
        embedded.start()?;
    }
}

/// `applianced demo`: the main job on the embedded default. Today it
/// initialises a state directory, runs selftest and stops the cluster; the
/// ingest lanes (not built yet) will be driven here.
pub fn demo(state_dir: Option<&Path>, pg_bin_dir: Option<&Path>) -> Result<PathBuf, AppError> {
    let dir = match state_dir {
        Some(dir) => dir.to_path_buf(),
        None => std::env::temp_dir().join(format!("applianced-demo-{}", std::process::id())),
    };
    println!("demo: state directory {}", dir.display());
    let embedded = init(
        &dir,
        pg_bin_dir,
        crate::limits::PARTITION_DAYS_AHEAD_DEFAULT,
    )?;
    println!(
        "demo: matrix\n{}",
        crate::matrix_docs::render_markdown("default")
    );
    let result = selftest(Some(&dir), None, false);
    embedded.stop()?;
    println!("demo: cluster stopped; state kept in {}", dir.display());
    result.map(|()| dir)
}
