//! The commands' orchestration: init, run, stop, selftest, demo.
//!
//! Each function is one command's sequence of steps; errors carry the step
//! and map to the exit codes documented in the README ([`AppError::exit_code`]).

use std::path::{Path, PathBuf};

use crate::control::cluster::Embedded;
use crate::control::config::{ConfigError, Target};
use crate::model::matrix::Module;
use crate::selftest;

pub use crate::control::error::AppError;

pub use crate::control::setup::{init, init_external};

/// `applianced stop`.
pub fn stop(state_dir: &Path) -> Result<(), AppError> {
    let embedded = Embedded::load(state_dir)?;
    embedded.stop()?;
    println!("cluster: stopped");
    Ok(())
}

/// `applianced metrics`: every lane's last metrics report, in the
/// OpenMetrics text format, once (for scripts and textfile collectors).
pub fn metrics(state_dir: &Path) -> Result<(), AppError> {
    let dir = crate::control::cluster::StateDir::new(state_dir)?;
    let supervisor = crate::control::supervisor::RunningAppliance::load(&dir).map(|r| r.pid);
    print!("{}", crate::control::exposition::exposition(&dir, supervisor, ""));
    Ok(())
}

/// `applianced metrics --instance NAME`: the exposition from the running
/// appliance's metrics socket, whose owner must be `server_uid` (default:
/// this process's uid), checked by SO_PEERCRED before reading a byte.
pub fn scrape(instance: &str, server_uid: Option<u32>) -> Result<(), AppError> {
    use std::io::Read;
    let name = crate::control::exposition::socket_name(instance);
    let expected = server_uid.unwrap_or_else(crate::base::sys::effective_uid);
    let stream = crate::producer::client::connect_verified(&name, expected)
        .map_err(|e| AppError::Refused(format!("@{name}: {e} (is the appliance running, as uid {expected}?)")))?;
    let io = |step| move |source| AppError::Io { step, source };
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).map_err(io("metrics socket"))?;
    let mut text = String::new();
    (&stream)
        .take(crate::control::exposition::EXPOSITION_BYTES_MAX as u64)
        .read_to_string(&mut text)
        .map_err(io("read the metrics socket"))?;
    if text.is_empty() {
        return Err(AppError::Refused(format!(
            "@{name} closed without a byte: this uid is not admitted (--metrics-uid)"
        )));
    }
    print!("{text}");
    Ok(())
}

/// `applianced status`: per lane, rates from two metrics reports
/// `interval_ms` apart, commit lag, spool, connections, PostgreSQL link;
/// once (`once`) or refreshed until interrupted, like `top`.
pub fn status(state_dir: &Path, once: bool, interval_ms: u64) -> Result<(), AppError> {
    let dir = crate::control::cluster::StateDir::new(state_dir)?;
    let read = || crate::control::launch::read_all_metrics(&dir);
    let interval = std::time::Duration::from_millis(interval_ms.max(crate::base::limits::LANE_METRICS_INTERVAL_MS));
    let mut before = read();
    loop {
        let started = std::time::Instant::now();
        std::thread::sleep(interval);
        let after = read();
        if after.is_empty() {
            return Err(AppError::Refused(format!(
                "no lane metrics in {}: is the appliance of this state directory running?",
                dir.run_dir().display()
            )));
        }
        let table = crate::lane::metrics::status_table(&before, &after, started.elapsed().as_secs_f64());
        if once {
            print!("{table}");
            return Ok(());
        }
        // Clear the screen and redraw, as top does.
        print!("\x1b[H\x1b[2J{table}");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        before = after;
    }
}

/// `applianced selftest`; prints the report and fails if any check fails.
pub fn selftest(state_dir: Option<&Path>, config: Option<&Path>, json: bool) -> Result<(), AppError> {
    let target = match (state_dir, config) {
        (Some(dir), None) => Target::Embedded(Embedded::load(dir)?),
        (None, Some(file)) => crate::control::config::load(file).map_err(AppError::Config)?,
        _ => {
            return Err(AppError::Config(ConfigError::Missing(
                "selftest needs exactly one of --state-dir or --config",
            )));
        }
    };
    let checks = match target.connect_admin() {
        Ok(mut conn) => {
            let mut checks = selftest::run_checks(&mut conn);
            if let Target::Embedded(embedded) = &target {
                checks.push(selftest::access::database_access(embedded, &mut conn));
                checks.push(selftest::access::lane_identities(embedded, &mut conn));
                checks.push(selftest::access::postgresql_log(embedded, &mut conn));
                checks.push(selftest::lanes::lane_sockets(embedded));
                checks.push(selftest::lanes::lane_round_trip(embedded, &mut conn));
                checks.push(selftest::lanes::lane_sandbox(embedded));
                checks.push(selftest::lanes::spool_integrity(embedded, &mut conn));
                checks.push(selftest::lanes::disk_space(embedded));
                checks.push(selftest::lanes::maintenance(embedded));
                checks.push(selftest::lanes::commit_lag(embedded));
            }
            checks
        }
        Err(e) => {
            let mut why = selftest::access::unreachable_cause(&e);
            let mut checks = Vec::new();
            if let Target::Embedded(embedded) = &target {
                if let Some(cause) = crate::control::cluster::last_failure(&embedded.dir) {
                    why.push_str(&format!("; PostgreSQL last logged: {cause}"));
                }
                checks.push(selftest::lanes::disk_space(embedded));
            }
            checks.insert(0, selftest::unreachable("database reachable", why));
            checks
        }
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
    if ok { Ok(()) } else { Err(AppError::SelftestFailed) }
}

/// The state directory `applianced demo` uses: the one given, or a new one
/// under $TMPDIR named after this process.
pub fn demo_dir(state_dir: Option<&Path>) -> PathBuf {
    match state_dir {
        Some(dir) => dir.to_path_buf(),
        None => std::env::temp_dir().join(format!("applianced-demo-{}", std::process::id())),
    }
}

/// `applianced demo`: the main job on the embedded default. Initialise a
/// state directory, run the appliance as a child process, drive all four
/// modules at once with the load client, wait for every commit, check row
/// counts against acknowledgements, run selftest, stop cleanly, and print
/// a summary. With `log` (not `--verbose`), the appliance's log lines go
/// to that file (the caller sends this process's own there too).
pub fn demo(
    state_dir: Option<&Path>,
    pg_bin_dir: Option<&Path>,
    events_total: u64,
    instance: &str,
    log: Option<&Path>,
) -> Result<PathBuf, AppError> {
    let dir = demo_dir(state_dir);
    println!("demo: state directory {}", dir.display());
    if let Some(log) = log {
        println!("demo: log lines go to {} (--verbose: to the terminal)", log.display());
    }
    init(&dir, pg_bin_dir, crate::base::limits::PARTITION_DAYS_AHEAD_DEFAULT)?;
    embedded_stop_quietly(&dir);
    let mut appliance = match log {
        Some(log) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|source| AppError::Io { step: "open the demo log", source })?;
            let me = Path::new("/proc/self/exe");
            crate::tools::demo::Appliance::start_logging_to(me, &dir, instance, &[], file)?
        }
        None => crate::tools::demo::Appliance::start(&dir, instance)?,
    };
    let per_module = events_total / Module::ALL.len() as u64;
    println!("demo: driving {per_module} events into each of the {} lanes at once", Module::ALL.len());
    let started = std::time::Instant::now();
    let results = crate::tools::demo::drive_all(instance, per_module);
    for (module, report) in &results {
        if let Some(error) = &report.last_error {
            println!("demo: lane {}: last error: {error}", module.name());
        }
    }
    let commit_times = {
        let embedded = Embedded::load(&dir)?;
        let mut conn = embedded
            .connect_admin(crate::base::limits::DATABASE_NAME)
            .map_err(|source| AppError::Pg { step: "connect to wait for commits", source })?;
        let targets: Vec<(Module, u64)> = results.iter().map(|(m, r)| (*m, r.acked)).collect();
        let wait = std::time::Duration::from_secs(crate::base::limits::COMMIT_WAIT_S);
        let times = crate::tools::demo::wait_all_committed(&mut conn, &targets, started, wait)
            .map_err(|source| AppError::Pg { step: "wait for commits", source })?;
        for ((module, _), time) in targets.iter().zip(&times) {
            if time.is_none() {
                println!("demo: lane {} did not commit its spooled events within {wait:?}", module.name());
            }
        }
        times
    };
    let counts = crate::tools::demo::row_counts(&dir)?;
    let rows: Vec<crate::tools::demo::DemoRow> = results
        .iter()
        .zip(commit_times)
        .map(|((module, report), commit_time)| crate::tools::demo::DemoRow {
            module: *module,
            events: per_module,
            acked: report.acked,
            ack_time: report.elapsed,
            commit_time,
            ack_p50_ms: report.latency_percentile_ms(0.50),
            ack_p99_ms: report.latency_percentile_ms(0.99),
            rows: counts.iter().find(|(m, _)| m == module).map_or(0, |(_, n)| *n),
        })
        .collect();
    let complete = rows.iter().all(|r| r.acked == per_module && r.rows == per_module);
    let checked = selftest(Some(&dir), None, false);
    appliance.stop()?;
    print!("{}", crate::tools::demo::summary(&rows, &dir, log));
    checked?;
    if !complete {
        return Err(AppError::Refused("demo: not every event was acknowledged and stored exactly once".into()));
    }
    Ok(dir)
}

fn embedded_stop_quietly(dir: &Path) {
    if let Ok(embedded) = Embedded::load(dir) {
        let _ = embedded.stop();
    }
}

/// `applianced sandbox-probe`: one lane process, started exactly as `run`
/// starts lanes (identity, spool directory, connector, sandbox), that runs
/// `probe` instead of serving. Its own spool directory
/// (`<state>/spool/probe-<module>`) and socket name keep it apart from a
/// running appliance. Returns how the lane process ended.
pub fn sandbox_probe(
    state_dir: &Path,
    module: Module,
    sandbox: crate::sandbox::SandboxMode,
    probe: &str,
) -> Result<std::process::ExitStatus, AppError> {
    use std::os::fd::AsFd;
    use std::os::linux::net::SocketAddrExt;
    let embedded = Embedded::load(state_dir)?;
    let accounts = crate::control::accounts::resolve(embedded.server.clone())
        .map_err(|e| AppError::Refused(format!("OS accounts: {e}")))?;
    let identities =
        crate::control::launch::lane_identities(&accounts).map_err(|e| AppError::Refused(e.to_string()))?;
    let launcher =
        crate::control::launch::Launcher::new(&embedded, identities).map_err(|e| AppError::Refused(e.to_string()))?;
    let name = format!("ransomeye/probe-{}/{}", std::process::id(), module.name());
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|source| AppError::Io { step: "probe socket address", source })?;
    let listener = std::os::unix::net::UnixListener::bind_addr(&address)
        .map_err(|source| AppError::Io { step: "bind the probe socket", source })?;
    let placement = crate::sandbox::colocate::default_placement(crate::base::sys::cpu_count());
    let options = crate::control::launch::LaneOptions {
        io: crate::lane::process::IoMode::Auto,
        sandbox,
        commit_streams: crate::sandbox::colocate::default_commit_streams(&placement),
        cpus: placement.lane_cpus,
        spool_quota_bytes: crate::base::limits::SPOOL_QUOTA_BYTES_DEFAULT,
        disk_reserve_bytes: crate::control::launch::disk_reserve(
            &embedded.dir,
            crate::base::limits::SPOOL_QUOTA_BYTES_DEFAULT,
        )
        .map_err(|source| AppError::Io { step: "read the state filesystem's size", source })?
        .bytes(),
        grants: crate::control::supervisor::lane_grants(&crate::control::supervisor::default_peers(), module),
    };
    let spool = embedded.dir.root.join("spool").join(format!("probe-{}", module.name()));
    let env = crate::control::supervisor::lane_env(1);
    let (mut child, _control) = launcher
        .launch(module, listener.as_fd(), &options, &spool, env, Some(probe))
        .map_err(|e| AppError::Refused(e.to_string()))?;
    child.wait().map_err(|source| AppError::Io { step: "wait for the probed lane", source })
}
