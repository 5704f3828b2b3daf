//! Helpers of `applianced demo` (and of the tests): run the appliance as a
//! child process, drive every module with the load client at once, count
//! rows per module.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::base::limits::DATABASE_NAME;
use crate::base::sys;
use crate::control::cluster::Embedded;
use crate::control::error::AppError;
use crate::model::matrix::Module;
use crate::model::schema::tables_of;
use crate::producer::load::{LoadOptions, LoadReport, run_load};

/// A running `applianced run` child process.
pub struct Appliance {
    child: Child,
}

impl Appliance {
    /// Start `applianced run` and wait until it reports its lanes ready.
    pub fn start(state_dir: &Path, instance: &str) -> Result<Appliance, AppError> {
        Appliance::start_with(Path::new("/proc/self/exe"), state_dir, instance, &[])
    }

    /// The same with an explicit binary and extra `run` arguments (tests).
    pub fn start_with(binary: &Path, state_dir: &Path, instance: &str, extra: &[&str]) -> Result<Appliance, AppError> {
        Appliance::start_with_env(binary, state_dir, instance, extra, &[])
    }

    /// The same with extra environment variables (tests arm failpoints this way).
    pub fn start_with_env(
        binary: &Path,
        state_dir: &Path,
        instance: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Appliance, AppError> {
        Appliance::spawn(binary, state_dir, instance, extra, env, Stdio::inherit())
    }

    /// `applianced run` of `binary` with the environment `env`, its log
    /// lines (stderr) into `log`.
    pub fn start_logging_to(
        binary: &Path,
        state_dir: &Path,
        instance: &str,
        env: &[(&str, &str)],
        log: std::fs::File,
    ) -> Result<Appliance, AppError> {
        Appliance::spawn(binary, state_dir, instance, &[], env, Stdio::from(log))
    }

    fn spawn(
        binary: &Path,
        state_dir: &Path,
        instance: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> Result<Appliance, AppError> {
        let mut child = Command::new(binary)
            .envs(env.iter().copied())
            .arg("run")
            .arg("--state-dir")
            .arg(state_dir)
            .args(["--instance", instance])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|source| AppError::Io { step: "start applianced run", source })?;
        let stdout = child.stdout.take().ok_or_else(|| AppError::Refused("no stdout from applianced run".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("applianced: ready") => {
                    println!("demo: {line}");
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    let status =
                        child.wait().map_err(|source| AppError::Io { step: "wait for applianced run", source })?;
                    return Err(AppError::Refused(format!("applianced run exited before it was ready: {status}")));
                }
            }
        }
        // Keep draining its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Appliance { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) -> Result<(), AppError> {
        sys::send_signal(self.child.id() as i32, libc::SIGTERM)
            .map_err(|source| AppError::Io { step: "signal applianced run", source })?;
        let status = self.child.wait().map_err(|source| AppError::Io { step: "wait for applianced run", source })?;
        if status.success() { Ok(()) } else { Err(AppError::Refused(format!("applianced run exited with {status}"))) }
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = sys::send_signal(self.child.id() as i32, libc::SIGTERM);
            for _ in 0..300 {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One load client per module, all at once, producer 1 epoch 1 from seq 1.
pub fn drive_all(instance: &str, events_per_module: u64) -> Vec<(Module, LoadReport)> {
    let handles: Vec<_> = Module::ALL
        .into_iter()
        .map(|module| {
            let options = LoadOptions::new(instance, module, 1, 1, events_per_module);
            (module, std::thread::spawn(move || run_load(&options)))
        })
        .collect();
    handles
        .into_iter()
        .map(|(module, handle)| {
            (
                module,
                handle.join().unwrap_or_else(|_| LoadReport {
                    last_error: Some("load thread panicked".into()),
                    ..LoadReport::default()
                }),
            )
        })
        .collect()
}

/// Wait until PostgreSQL's watermark of `producer_id` on `module` covers
/// `(epoch, last_seq)`: an ACK means durable in the lane's spool, and the
/// commit follows. Returns whether it did within `timeout`.
pub fn wait_committed(
    conn: &mut crate::pg::Connection,
    module: Module,
    producer_id: u64,
    epoch: u64,
    last_seq: u64,
    timeout: std::time::Duration,
) -> Result<bool, crate::pg::PgError> {
    let started = std::time::Instant::now();
    let sql = format!(
        "SELECT (producer_epoch > {epoch} OR (producer_epoch = {epoch} AND last_seq >= {last_seq}))::text \
         FROM appliance.producer_watermarks WHERE module = '{}' AND producer_id = {producer_id}",
        module.name()
    );
    loop {
        let rows = conn.simple_query(&sql)?;
        if rows.first().and_then(|r| r.first()).and_then(|v| v.as_deref()) == Some("true") {
            return Ok(true);
        }
        if started.elapsed() > timeout {
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Wait until every `(module, last_seq)` of producer 1, epoch 1 is
/// committed; per module, how long after `since` its commit was seen
/// (None: not within `timeout`). Polls all of them together, so each time
/// is its own, not the sum of the waits before it.
pub fn wait_all_committed(
    conn: &mut crate::pg::Connection,
    targets: &[(Module, u64)],
    since: std::time::Instant,
    timeout: std::time::Duration,
) -> Result<Vec<Option<Duration>>, crate::pg::PgError> {
    let mut done: Vec<Option<Duration>> = vec![None; targets.len()];
    let started = std::time::Instant::now();
    while done.iter().any(Option::is_none) && started.elapsed() <= timeout {
        for ((module, last_seq), seen) in targets.iter().zip(done.iter_mut()) {
            if seen.is_none() && wait_committed(conn, *module, 1, 1, *last_seq, Duration::ZERO)? {
                *seen = Some(since.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(done)
}

/// The summary `applianced demo` ends with: one line per module and a
/// total (events, acknowledged and committed per second, ACK latency, rows
/// against acknowledgements), then where the state is, how to look at it
/// and how to remove it.
pub fn summary(rows: &[DemoRow], state_dir: &Path, log: Option<&Path>) -> String {
    let mut out = format!(
        "\n{:<14} {:>9} {:>10} {:>12} {:>9} {:>9} {:>9}  {}\n",
        "module", "events", "acked/s", "committed/s", "ack p50", "ack p99", "rows", "rows = acks"
    );
    let per_s = |n: u64, t: Option<Duration>| {
        t.map_or_else(|| "-".to_string(), |t| format!("{:.0}", n as f64 / t.as_secs_f64().max(1e-9)))
    };
    for r in rows {
        out.push_str(&format!(
            "{:<14} {:>9} {:>10} {:>12} {:>6.1} ms {:>6.1} ms {:>9}  {}\n",
            r.module.name(),
            r.acked,
            per_s(r.acked, Some(r.ack_time)),
            per_s(r.acked, r.commit_time),
            r.ack_p50_ms,
            r.ack_p99_ms,
            r.rows,
            if r.rows == r.acked && r.acked == r.events { "yes" } else { "NO" }
        ));
    }
    let total = |f: fn(&DemoRow) -> u64| rows.iter().map(f).sum::<u64>();
    let slowest = |f: fn(&DemoRow) -> Option<Duration>| {
        rows.iter().map(f).collect::<Option<Vec<_>>>().and_then(|t| t.into_iter().max())
    };
    let (acked, stored) = (total(|r| r.acked), total(|r| r.rows));
    out.push_str(&format!(
        "{:<14} {:>9} {:>10} {:>12} {:>9} {:>9} {:>9}  {}\n",
        "all",
        acked,
        per_s(acked, slowest(|r| Some(r.ack_time))),
        per_s(acked, slowest(|r| r.commit_time)),
        "",
        "",
        stored,
        if rows.iter().all(|r| r.rows == r.acked && r.acked == r.events) { "yes" } else { "NO" }
    ));
    let dir = state_dir.display();
    // This binary, as the commands to paste name it (cargo run's is not on PATH).
    let me = std::env::current_exe().map_or_else(|_| "applianced".to_string(), |p| p.display().to_string());
    out.push_str(&format!(
        "\nstate:  {dir} (stopped)\n\
         look:   {me} init --state-dir {dir}   # starts its PostgreSQL again\n        \
         psql -X -h {dir}/run -U ransomeye_admin -d ransomeye -c 'SELECT count(*) FROM dpi.flows'\n\
         remove: {me} stop --state-dir {dir} && rm -rf {dir}\n"
    ));
    if let Some(log) = log {
        out.push_str(&format!("log:    {}\n", log.display()));
    }
    out
}

/// One module's line of the demo's summary.
#[derive(Debug, Clone)]
pub struct DemoRow {
    pub module: Module,
    /// Events the demo sent to this module's lane.
    pub events: u64,
    pub acked: u64,
    /// From the start of the loads until this lane's last ACK.
    pub ack_time: Duration,
    /// From the start of the loads until its last event was seen committed.
    pub commit_time: Option<Duration>,
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    /// Rows of producer 1 in the module's tables.
    pub rows: u64,
}

/// Rows of producer 1 per module, summed over the module's tables.
pub fn row_counts(state_dir: &Path) -> Result<Vec<(Module, u64)>, AppError> {
    let embedded = Embedded::load(state_dir)?;
    let mut conn = embedded
        .connect_admin(DATABASE_NAME)
        .map_err(|source| AppError::Pg { step: "connect for row counts", source })?;
    let mut counts = Vec::new();
    for module in Module::ALL {
        let parts: Vec<String> = tables_of(module)
            .map(|t| format!("(SELECT count(*) FROM {} WHERE producer_id = 1)", t.qualified_name()))
            .collect();
        let value = conn
            .query_value(&format!("SELECT {}", parts.join(" + ")))
            .map_err(|source| AppError::Pg { step: "count rows", source })?;
        counts.push((module, value.parse().unwrap_or(0)));
    }
    Ok(counts)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn row(module: Module, acked: u64, rows: u64, commit_ms: Option<u64>) -> DemoRow {
        DemoRow {
            module,
            events: 1000,
            acked,
            ack_time: Duration::from_millis(500),
            commit_time: commit_ms.map(Duration::from_millis),
            ack_p50_ms: 1.5,
            ack_p99_ms: 9.0,
            rows,
        }
    }

    #[test]
    fn the_summary_says_whether_rows_equal_acks_and_where_the_state_is() {
        let text = summary(
            &[row(Module::Core, 1000, 1000, Some(1000)), row(Module::Dpi, 1000, 1000, Some(2000))],
            Path::new("/tmp/s"),
            Some(Path::new("/tmp/s/demo.log")),
        );
        let core = text.lines().find(|l| l.starts_with("core ")).unwrap();
        assert!(core.contains(" 2000 ") && core.contains(" 1000 ") && core.ends_with("yes"), "{core}");
        let all = text.lines().find(|l| l.starts_with("all ")).unwrap();
        // 2000 events: acked in 0.5 s, the last committed at 2 s.
        assert!(all.contains(" 4000 ") && all.contains(" 1000 ") && all.ends_with("yes"), "{all}");
        assert!(text.contains("state:  /tmp/s (stopped)") && text.contains("rm -rf /tmp/s"), "{text}");
        assert!(text.contains("psql -X -h /tmp/s/run -U ransomeye_admin") && text.contains("log:    /tmp/s/demo.log"));

        let short = summary(&[row(Module::Core, 1000, 999, None)], Path::new("/tmp/s"), None);
        let core = short.lines().find(|l| l.starts_with("core ")).unwrap();
        assert!(core.ends_with("NO") && core.contains(" - "), "{core}");
        assert!(!short.contains("log:"));
    }
}
