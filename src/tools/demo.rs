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
        let mut child = Command::new(binary)
            .envs(env.iter().copied())
            .arg("run")
            .arg("--state-dir")
            .arg(state_dir)
            .args(["--instance", instance])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
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
