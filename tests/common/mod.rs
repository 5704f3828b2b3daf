//! Test harness: a real, throwaway PostgreSQL cluster per test, created by
//! the `applianced init` binary itself (as an unprivileged user when the
//! tests run as root) and stopped and removed when the handle drops.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

use applianced::base::limits::DATABASE_NAME;
use applianced::pg::{ConnectParams, Connection};

pub const BIN: &str = env!("CARGO_BIN_EXE_applianced");

static NEXT: AtomicU32 = AtomicU32::new(0);
static SERVER_BINARIES: Once = Once::new();

/// Find the PostgreSQL server binaries once per test process; as root this
/// installs Debian's postgresql-15 when missing (once, so parallel tests do
/// not race for the dpkg lock), otherwise it names the package to install.
fn ensure_server_binaries() {
    SERVER_BINARIES.call_once(|| {
        if let Err(e) = applianced::control::cluster::locate_binaries(None) {
            panic!("{e}");
        }
    });
}

/// A running embedded cluster in a temporary state directory.
pub struct TestCluster {
    pub dir: PathBuf,
}

pub fn applianced(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run applianced")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl TestCluster {
    /// Create, configure, start and migrate a cluster with a short partition horizon.
    pub fn start() -> TestCluster {
        TestCluster::start_with_env(&[])
    }

    /// The same, with extra environment variables for `init` (test-build knobs).
    pub fn start_with_env(env: &[(&str, &str)]) -> TestCluster {
        TestCluster::start_in(&std::env::temp_dir(), env)
    }

    /// The same, with the state directory made under `parent` (a
    /// filesystem a test mounted).
    pub fn start_in(parent: &Path, env: &[(&str, &str)]) -> TestCluster {
        ensure_server_binaries();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = parent.join(format!("ad-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cluster = TestCluster { dir };
        let output = Command::new(BIN)
            .args(["init", "--state-dir", cluster.path(), "--partition-days-ahead", "2"])
            .envs(env.iter().copied())
            .output()
            .expect("run applianced init");
        assert!(
            output.status.success(),
            "init failed: {}\n{}",
            stdout(&output),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster
    }

    pub fn path(&self) -> &str {
        self.dir.to_str().expect("utf-8 temp dir")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("run").join(".s.PGSQL.5432")
    }

    pub fn params(&self, role: &str) -> ConnectParams {
        ConnectParams {
            socket_path: self.socket(),
            user: role.to_string(),
            database: DATABASE_NAME.to_string(),
            password: None,
            application_name: "applianced-test".to_string(),
        }
    }

    /// Connect as a role (peer authentication maps the test's OS user).
    pub fn connect(&self, role: &str) -> Connection {
        Connection::connect(&self.params(role)).unwrap_or_else(|e| panic!("connect as {role}: {e}"))
    }

    /// Connect as the admin role, waiting up to 60 s while the cluster is
    /// down or in crash recovery (the fault tests kill it).
    pub fn admin(&self) -> Connection {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            match Connection::connect(&self.params(applianced::base::limits::ADMIN_ROLE)) {
                Ok(conn) => return conn,
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("admin connect: {e}; retrying");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => panic!("connect as admin: {e}"),
            }
        }
    }

    pub fn selftest(&self, extra: &[&str]) -> Output {
        let mut args = vec!["selftest", "--state-dir", self.path()];
        args.extend_from_slice(extra);
        applianced(&args)
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let _ = applianced(&["stop", "--state-dir", self.path()]);
        remove_dir(&self.dir);
    }
}

fn remove_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

static NEXT_INSTANCE: AtomicU32 = AtomicU32::new(0);

/// A unique appliance instance name for this test process.
pub fn instance() -> String {
    format!("t{}-{}", std::process::id(), NEXT_INSTANCE.fetch_add(1, Ordering::SeqCst))
}

impl TestCluster {
    /// Run `applianced run` on this cluster (drops before the cluster: declare it after).
    pub fn appliance(&self, instance: &str, extra: &[&str]) -> applianced::tools::demo::Appliance {
        self.appliance_with_env(instance, extra, &[])
    }

    /// The same, with extra environment variables.
    pub fn appliance_with_env(
        &self,
        instance: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> applianced::tools::demo::Appliance {
        applianced::tools::demo::Appliance::start_with_env(Path::new(BIN), &self.dir, instance, extra, env)
            .unwrap_or_else(|e| panic!("applianced run: {e}"))
    }

    /// Wait until the producer's watermark covers (epoch, last_seq), then count its rows.
    pub fn committed_rows(
        &self,
        module: applianced::model::matrix::Module,
        producer_id: u64,
        epoch: u64,
        last_seq: u64,
    ) -> (u64, u64) {
        let wait = std::time::Duration::from_secs(applianced::base::limits::COMMIT_WAIT_S);
        let committed =
            applianced::tools::demo::wait_committed(&mut self.admin(), module, producer_id, epoch, last_seq, wait)
                .unwrap();
        assert!(committed, "{module:?} producer {producer_id}: ({epoch}, {last_seq}) not committed within {wait:?}");
        self.producer_rows(module, producer_id)
    }

    /// Rows of one producer across a module's tables, and how many distinct (producer, epoch, seq).
    pub fn producer_rows(&self, module: applianced::model::matrix::Module, producer_id: u64) -> (u64, u64) {
        let union: Vec<String> = applianced::model::schema::tables_of(module)
            .map(|t| {
                format!(
                    "SELECT producer_id, producer_epoch, producer_seq FROM {} WHERE producer_id = {producer_id}",
                    t.qualified_name()
                )
            })
            .collect();
        let sql = format!(
            "SELECT count(*), count(DISTINCT (producer_id, producer_epoch, producer_seq)) FROM ({}) x",
            union.join(" UNION ALL ")
        );
        let rows = self.admin().simple_query(&sql).unwrap();
        let value = |i: usize| rows[0][i].as_deref().unwrap().parse::<u64>().unwrap();
        (value(0), value(1))
    }
}

/// Whether the tests run as root (needed to act as other uids).
pub fn is_root() -> bool {
    applianced::base::sys::effective_uid() == 0
}

static BIN_COPY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The binary at a path any uid can execute: the checkout may sit under a
/// directory that other users cannot traverse (CI clones anywhere).
pub fn bin_for_other_users() -> &'static Path {
    BIN_COPY.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ad-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let copy = dir.join("applianced");
        std::fs::copy(BIN, &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        copy
    })
}

impl TestCluster {
    /// The pid a lane reports in its status file (0 while it has none).
    pub fn lane_pid(&self, module: applianced::model::matrix::Module) -> i32 {
        let dir = applianced::control::cluster::StateDir::new(&self.dir).unwrap();
        applianced::control::launch::read_status(&dir, module).get("pid").and_then(|p| p.parse().ok()).unwrap_or(0)
    }
}

/// A HELLO frame of `producer` (epoch 1) for the module with wire code
/// `module_code` (DPI is 2).
pub fn hello_frame(producer: u64, module_code: u8) -> bytes::BytesMut {
    let mut out = bytes::BytesMut::new();
    applianced::codec::frame::encode_hello(&mut out, module_code, producer, 1);
    out
}
