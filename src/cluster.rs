//! The embedded PostgreSQL cluster: a private cluster inside the state
//! directory, created, configured, started and stopped by the appliance.
//!
//! Runs in the `init`, `run`, `stop` and `selftest` processes (never in a
//! lane). Invariants: the cluster listens on a Unix socket inside the state
//! directory only (no TCP), has data checksums, authenticates by peer
//! credentials mapped in `pg_ident.conf`, and its server settings are
//! generated from [`server_settings`], each with its reason. When invoked as
//! root, every PostgreSQL program runs as the unprivileged [`SERVER_USER`].

use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::limits::{ADMIN_ROLE, DATABASE_NAME, PG_START_TIMEOUT_S, UNIX_PATH_BYTES_MAX};
use crate::matrix::Role;
use crate::pg::{ConnectParams, Connection, PgError};
use crate::sys::{self, Account};

/// The OS account the embedded cluster runs as when the appliance is
/// started as root (PostgreSQL refuses to run as root). The packages create
/// it with sysusers.d; `init` creates it with useradd if it is missing.
pub const SERVER_USER: &str = "ransomeye";
/// The Debian package that provides the server binaries.
pub const SERVER_PACKAGE: &str = "postgresql-15";
/// Where Debian's package puts them.
pub const DEBIAN_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// The port only names the socket file (`.s.PGSQL.<port>`); nothing listens on TCP.
pub const DEFAULT_PORT: u16 = 5432;

/// Errors of the embedded-cluster steps.
#[derive(Debug)]
pub enum ClusterError {
    MissingBinaries { searched: PathBuf, root: bool },
    Io { step: &'static str, path: PathBuf, source: std::io::Error },
    Command { what: String, detail: String },
    Account(String),
    StateFile(String),
    PathTooLong(PathBuf),
    Pg { step: &'static str, source: PgError },
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterError::MissingBinaries { searched, root: true } => write!(
                f,
                "PostgreSQL server binaries not found in {} and installing {SERVER_PACKAGE} failed",
                searched.display()
            ),
            ClusterError::MissingBinaries { searched, root: false } => write!(
                f,
                "PostgreSQL server binaries not found in {}: install them with `sudo apt-get install {SERVER_PACKAGE}` (or run this command as root, which installs them), or pass --pg-bin-dir",
                searched.display()
            ),
            ClusterError::Io { step, path, source } => {
                write!(f, "{step} {}: {source}", path.display())
            }
            ClusterError::Command { what, detail } => write!(f, "{what} failed: {detail}"),
            ClusterError::Account(what) => write!(f, "OS account: {what}"),
            ClusterError::StateFile(what) => write!(f, "state file: {what}"),
            ClusterError::PathTooLong(path) => write!(
                f,
                "socket path {} is longer than {UNIX_PATH_BYTES_MAX} bytes; use a shorter --state-dir",
                path.display()
            ),
            ClusterError::Pg { step, source } => write!(f, "{step}: {source}"),
        }
    }
}

impl std::error::Error for ClusterError {}

fn io_err(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ClusterError + use<> {
    let path = path.to_path_buf();
    move |source| ClusterError::Io { step, path, source }
}

/// Paths inside a state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    pub root: PathBuf,
}

impl StateDir {
    pub fn new(root: &Path) -> Result<StateDir, ClusterError> {
        let root = if root.is_absolute() {
            root.to_path_buf()
        } else {
            std::env::current_dir().map_err(io_err("current directory", root))?.join(root)
        };
        Ok(StateDir { root })
    }
    pub fn pgdata(&self) -> PathBuf {
        self.root.join("pgdata")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn log_file(&self) -> PathBuf {
        self.root.join("log").join("postgresql.log")
    }
    pub fn state_file(&self) -> PathBuf {
        self.root.join("applianced.state")
    }
    pub fn socket_path(&self, port: u16) -> PathBuf {
        self.run_dir().join(format!(".s.PGSQL.{port}"))
    }
}

/// What `init` recorded about the cluster, read back by later commands.
#[derive(Clone, Debug)]
pub struct Embedded {
    pub dir: StateDir,
    pub pg_bin_dir: PathBuf,
    pub server: Account,
    pub port: u16,
}

impl Embedded {
    /// Read the state file of an initialised state directory.
    pub fn load(dir: &Path) -> Result<Embedded, ClusterError> {
        let dir = StateDir::new(dir)?;
        let path = dir.state_file();
        let text = fs::read_to_string(&path).map_err(io_err("read (was `applianced init` run?)", &path))?;
        let mut pairs = crate::config::parse_pairs(&text).map_err(|e| ClusterError::StateFile(e.to_string()))?;
        if let Some(other) = pairs.keys().find(|k| !["pg_bin_dir", "server_user", "port"].contains(&k.as_str())) {
            return Err(ClusterError::StateFile(format!("unknown key {other:?}")));
        }
        let bin = pairs.remove("pg_bin_dir").map(PathBuf::from);
        let user = pairs.remove("server_user");
        let port: Option<u16> = pairs.remove("port").and_then(|p| p.parse().ok());
        let missing = |k: &str| ClusterError::StateFile(format!("{} lacks {k}", path.display()));
        let user = user.ok_or_else(|| missing("server_user"))?;
        let server = sys::account_by_name(&user)
            .map_err(|e| ClusterError::Account(e.to_string()))?
            .ok_or_else(|| ClusterError::Account(format!("user {user} no longer exists")))?;
        Ok(Embedded {
            pg_bin_dir: bin.ok_or_else(|| missing("pg_bin_dir"))?,
            server,
            port: port.ok_or_else(|| missing("port"))?,
            dir,
        })
    }

    fn save(&self) -> Result<(), ClusterError> {
        let text = format!(
            "# Written by `applianced init`; read by run, stop and selftest.\npg_bin_dir = \"{}\"\nserver_user = \"{}\"\nport = {}\n",
            self.pg_bin_dir.display(),
            self.server.name,
            self.port
        );
        let path = self.dir.state_file();
        fs::write(&path, text).map_err(io_err("write", &path))
    }

    /// Connection parameters for a role over the cluster's socket.
    pub fn connect_params(&self, role: &str, database: &str) -> ConnectParams {
        ConnectParams {
            socket_path: self.dir.socket_path(self.port),
            user: role.to_string(),
            database: database.to_string(),
            password: None,
            application_name: "applianced".to_string(),
        }
    }

    /// Connect as the bootstrap superuser.
    pub fn connect_admin(&self, database: &str) -> Result<Connection, PgError> {
        Connection::connect(&self.connect_params(ADMIN_ROLE, database))
    }

    /// A command for one of the PostgreSQL programs, run as the server user.
    fn pg_command(&self, program: &str) -> Command {
        let mut command = Command::new(self.pg_bin_dir.join(program));
        command.current_dir(&self.dir.root).env("LC_ALL", "C").env_remove("PGDATA");
        if sys::effective_uid() == 0 {
            // std drops supplementary groups (setgroups) before setuid.
            command.uid(self.server.uid).gid(self.server.gid);
        }
        command
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<Output, ClusterError> {
        let output =
            self.pg_command(program).args(args).output().map_err(io_err("execute", &self.pg_bin_dir.join(program)))?;
        if !output.status.success() {
            return Err(ClusterError::Command {
                what: format!("{program} {}", args.join(" ")),
                detail: format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim()),
            });
        }
        Ok(output)
    }

    /// The postmaster's pid, if it is running.
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = fs::read_to_string(self.dir.pgdata().join("postmaster.pid")).ok()?;
        text.lines().next().and_then(|l| l.trim().parse::<i32>().ok()).filter(|pid| sys::process_exists(*pid))
    }

    /// Whether the postmaster of this cluster is running.
    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some()
    }

    /// Start the cluster and wait until it accepts connections.
    pub fn start(&self) -> Result<(), ClusterError> {
        if self.is_running() {
            return Ok(());
        }
        let pgdata = self.dir.pgdata();
        let log = self.dir.log_file();
        let timeout = PG_START_TIMEOUT_S.to_string();
        let args = ["start", "-D", path_str(&pgdata)?, "-l", path_str(&log)?, "-w", "-t", &timeout, "-s"];
        self.run("pg_ctl", &args).map(|_| ())
    }

    /// Stop the cluster (fast shutdown: abort sessions, checkpoint, exit).
    pub fn stop(&self) -> Result<(), ClusterError> {
        if !self.is_running() {
            return Ok(());
        }
        let pgdata = self.dir.pgdata();
        let timeout = PG_START_TIMEOUT_S.to_string();
        self.run("pg_ctl", &["stop", "-D", path_str(&pgdata)?, "-m", "fast", "-w", "-t", &timeout, "-s"]).map(|_| ())
    }
}

fn path_str(path: &Path) -> Result<&str, ClusterError> {
    path.to_str().ok_or_else(|| ClusterError::StateFile(format!("path {} is not UTF-8", path.display())))
}

/// Find the server binaries; as root, install the package when missing.
pub fn locate_binaries(explicit: Option<&Path>) -> Result<PathBuf, ClusterError> {
    let dir = explicit.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(DEBIAN_BIN_DIR));
    let complete = |d: &Path| ["postgres", "initdb", "pg_ctl"].iter().all(|p| d.join(p).is_file());
    if complete(&dir) {
        return Ok(dir);
    }
    let root = sys::effective_uid() == 0;
    if !root || explicit.is_some() {
        return Err(ClusterError::MissingBinaries { searched: dir, root: false });
    }
    install_server_package()?;
    if complete(&dir) { Ok(dir) } else { Err(ClusterError::MissingBinaries { searched: dir, root }) }
}

fn install_server_package() -> Result<(), ClusterError> {
    eprintln!("applianced: PostgreSQL server binaries are missing; installing {SERVER_PACKAGE} with apt-get");
    // Debian's package would otherwise create and start a "main" cluster
    // listening on localhost:5432, a TCP port the appliance must not open.
    let conf = Path::new("/etc/postgresql-common/createcluster.conf");
    let parent = conf.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    let existing = fs::read_to_string(conf).unwrap_or_default();
    let mut text: String = existing
        .lines()
        .filter(|l| !l.trim_start().starts_with("create_main_cluster"))
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str("create_main_cluster = false\n");
    fs::write(conf, text).map_err(io_err("write", conf))?;
    for args in [&["update", "-q"][..], &["install", "-y", "-q", "--no-install-recommends", SERVER_PACKAGE][..]] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(io_err("execute", Path::new("apt-get")))?;
        if !status.success() {
            return Err(ClusterError::Command {
                what: format!("apt-get {}", args.join(" ")),
                detail: status.to_string(),
            });
        }
    }
    Ok(())
}

/// The account PostgreSQL runs as: the caller, or [`SERVER_USER`] for root.
fn server_account() -> Result<Account, ClusterError> {
    let euid = sys::effective_uid();
    if euid != 0 {
        return sys::account_by_uid(euid)
            .map_err(|e| ClusterError::Account(e.to_string()))?
            .ok_or_else(|| ClusterError::Account(format!("uid {euid} has no passwd entry")));
    }
    let lookup = || sys::account_by_name(SERVER_USER).map_err(|e| ClusterError::Account(e.to_string()));
    if let Some(account) = lookup()? {
        return Ok(account);
    }
    // Two `init`s at once (the tests set up clusters in parallel) would run
    // two useradds: both can succeed, one uid overwriting the other in
    // /etc/passwd, and the loser then runs initdb as a uid with no entry
    // (seen on this machine). One creator at a time, and look again once
    // the lock is held.
    let lock_path = Path::new(ACCOUNT_LOCK_PATH);
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path)
        .map_err(io_err("open", lock_path))?;
    sys::lock_exclusive(&lock).map_err(io_err("lock", lock_path))?;
    if let Some(account) = lookup()? {
        return Ok(account);
    }
    eprintln!("applianced: creating system user {SERVER_USER} to run PostgreSQL (it refuses to run as root)");
    let status = Command::new("useradd")
        .args(["--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"])
        .args(["--shell", "/usr/sbin/nologin", "--comment", "RansomEye appliance", SERVER_USER])
        .status()
        .map_err(io_err("execute", Path::new("useradd")))?;
    if !status.success() {
        return Err(ClusterError::Command { what: format!("useradd {SERVER_USER}"), detail: status.to_string() });
    }
    lookup()?.ok_or_else(|| ClusterError::Account(format!("{SERVER_USER} missing after useradd")))
}

/// Serializes creating [`SERVER_USER`] between concurrent `init`s (root only).
const ACCOUNT_LOCK_PATH: &str = "/run/applianced-account.lock";

/// One generated server setting.
pub struct Setting {
    pub name: &'static str,
    pub value: String,
    pub reason: &'static str,
}

/// Server settings of the embedded cluster, each with its reason.
pub fn server_settings(dir: &StateDir, port: u16) -> Vec<Setting> {
    let s = |name, value: &str, reason| Setting { name, value: value.to_string(), reason };
    vec![
        s(
            "listen_addresses",
            "''",
            "no TCP listener at all: clients reach the cluster only through the Unix socket in the state directory",
        ),
        Setting {
            name: "unix_socket_directories",
            value: format!("'{}'", dir.run_dir().display()),
            reason: "a private socket directory, so no other cluster's socket name can collide",
        },
        s(
            "unix_socket_permissions",
            "0777",
            "any local user may reach the socket; peer authentication and pg_ident.conf decide who gets in as which role",
        ),
        Setting {
            name: "port",
            value: port.to_string(),
            reason: "only names the socket file (.s.PGSQL.<port>); nothing listens on TCP",
        },
        s("fsync", "on", "an acknowledged event must survive power loss"),
        s(
            "synchronous_commit",
            "on",
            "COMMIT returns only after its WAL is flushed; a spooled batch is released only after its COMMIT",
        ),
        s("full_page_writes", "on", "protects against torn 8 kB page writes after a crash"),
        s(
            "wal_sync_method",
            "fdatasync",
            "Linux default, stated explicitly; 90 us per flush measured on this machine kind",
        ),
        s(
            "wal_level",
            "replica",
            "keeps base backups and WAL archiving possible; minimal would only help COPY into tables created in the same transaction",
        ),
        s(
            "wal_compression",
            "lz4",
            "full-page images (checksums make the first read after a checkpoint write them) compress about 2x; lz4 is in Debian's build",
        ),
        s(
            "wal_buffers",
            "64MB",
            "a 10k-row COPY batch writes about 2.5 MB of WAL; large buffers avoid backend-side WAL writes mid-batch",
        ),
        s(
            "max_wal_size",
            "8GB",
            "a 1M-event burst writes about 425 MB of WAL; checkpoints are triggered by time, not by bursts",
        ),
        s("min_wal_size", "1GB", "recycled segments avoid file creation during bursts"),
        s(
            "checkpoint_timeout",
            "15min",
            "fewer checkpoints mean fewer full-page images (about 170 B per freshly loaded row)",
        ),
        s("checkpoint_completion_target", "0.9", "spreads checkpoint writes so they do not compete with ingest"),
        s(
            "shared_buffers",
            "1GB",
            "room for the current day's leaves and indexes while leaving memory to Core, DPI and the agents on a co-located host",
        ),
        s("huge_pages", "try", "use huge pages if the host provides them; never fail to start without them"),
        s(
            "max_connections",
            "64",
            "four lanes with a few COPY connections each, Core readers, maintenance and selftest; bounded so memory is bounded",
        ),
        s("autovacuum", "on", "insert-only tables still need vacuum to set the visibility map and freeze tuples"),
        s("autovacuum_naptime", "15s", "insert-triggered vacuums of fresh leaves start soon after their threshold"),
        s("autovacuum_max_workers", "2", "at most two vacuum workers, one core's worth, on a 2-core co-located host"),
        s("log_checkpoints", "on", "checkpoint timing is the main source of ingest jitter; keep it visible"),
        s(
            "log_lock_waits",
            "on",
            "any lock wait over deadlock_timeout is logged, so partition DDL waiting on ingest (or the reverse) is visible",
        ),
        s("deadlock_timeout", "1s", "threshold for log_lock_waits"),
        s("password_encryption", "scram-sha-256", "if a password is ever set (external mode), it is stored as SCRAM"),
        s("track_io_timing", "on", "I/O time in pg_stat views for the performance reports"),
        s("logging_collector", "off", "pg_ctl -l writes the log file; no extra process"),
        s(
            "jit",
            "off",
            "the packaged unit sets MemoryDenyWriteExecute=yes, which forbids the executable mappings LLVM JIT needs (a JIT-compiled query would fail); ingest gains nothing from JIT",
        ),
    ]
}

fn render_settings(dir: &StateDir, port: u16) -> String {
    let mut text = String::from(
        "# Generated by applianced from src/cluster.rs; every change is overwritten by `applianced init`.\n",
    );
    for setting in server_settings(dir, port) {
        text.push_str(&format!("# {}\n{} = {}\n", setting.reason, setting.name, setting.value));
    }
    text
}

/// pg_ident.conf: which OS user may log in as which role.
fn render_ident(server: &Account, operator: &Account) -> String {
    let mut text = String::from(
        "# Generated by applianced. Map \"applianced\": OS user -> PostgreSQL role (peer authentication).\n",
    );
    let mut users = vec![server.name.as_str()];
    if operator.name != server.name {
        users.push(operator.name.as_str());
    }
    for user in &users {
        text.push_str(&format!("applianced {user} {ADMIN_ROLE}\n"));
    }
    // In embedded mode the user who runs the appliance runs every lane and
    // the load clients, so it may act as each login role.
    for role in Role::ALL.into_iter().filter(|r| r.can_login()) {
        text.push_str(&format!("applianced {} {}\n", operator.name, role.name()));
    }
    text
}

const HBA: &str = "# Generated by applianced: local peer authentication only, through map \"applianced\" in pg_ident.conf.\n\
# No host lines: TCP is also off (listen_addresses = '').\n\
local all all peer map=applianced\n";

fn make_dir(path: &Path, mode: u32, owner: &Account) -> Result<(), ClusterError> {
    fs::create_dir_all(path).map_err(io_err("create", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", path))?;
    if sys::effective_uid() == 0 {
        sys::lchown(path, owner.uid, owner.gid).map_err(io_err("chown", path))?;
    }
    Ok(())
}

fn write_owned(path: &Path, text: &str, owner: &Account) -> Result<(), ClusterError> {
    fs::write(path, text).map_err(io_err("write", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err("chmod", path))?;
    if sys::effective_uid() == 0 {
        sys::lchown(path, owner.uid, owner.gid).map_err(io_err("chown", path))?;
    }
    Ok(())
}

/// Options of `applianced init` for the embedded cluster.
pub struct InitOptions<'a> {
    pub state_dir: &'a Path,
    pub pg_bin_dir: Option<&'a Path>,
    pub port: u16,
}

/// Create (or re-check) the cluster, write its configuration and start it.
/// Idempotent: an existing data directory is kept; config files are regenerated.
pub fn create_and_start(options: &InitOptions<'_>) -> Result<Embedded, ClusterError> {
    let dir = StateDir::new(options.state_dir)?;
    if dir.socket_path(options.port).as_os_str().len() > UNIX_PATH_BYTES_MAX {
        return Err(ClusterError::PathTooLong(dir.socket_path(options.port)));
    }
    let pg_bin_dir = locate_binaries(options.pg_bin_dir)?;
    let server = server_account()?;
    let operator = sys::account_by_uid(sys::real_uid())
        .map_err(|e| ClusterError::Account(e.to_string()))?
        .ok_or_else(|| ClusterError::Account("the calling uid has no passwd entry".into()))?;
    let embedded = Embedded { dir, pg_bin_dir, server, port: options.port };
    let dir = &embedded.dir;
    // 0711: other local users (module identities) may traverse to the socket
    // directory but not list or read anything; pgdata and log stay 0700.
    make_dir(&dir.root, 0o711, &embedded.server)?;
    make_dir(&dir.run_dir(), 0o755, &embedded.server)?;
    make_dir(dir.log_file().parent().unwrap_or(&dir.root), 0o700, &embedded.server)?;
    if !dir.pgdata().join("PG_VERSION").exists() {
        make_dir(&dir.pgdata(), 0o700, &embedded.server)?;
        let pgdata = dir.pgdata();
        let username = format!("--username={ADMIN_ROLE}");
        embedded.run(
            "initdb",
            &[
                "-D",
                path_str(&pgdata)?,
                "--data-checksums",
                &username,
                "--encoding=UTF8",
                "--locale=C",
                "--auth-local=peer",
                "--auth-host=reject",
            ],
        )?;
        let conf = pgdata.join("postgresql.conf");
        let mut text = fs::read_to_string(&conf).map_err(io_err("read", &conf))?;
        text.push_str("\n# Settings of the RansomEye appliance.\ninclude 'applianced.conf'\n");
        write_owned(&conf, &text, &embedded.server)?;
    }
    let pgdata = dir.pgdata();
    write_owned(&pgdata.join("applianced.conf"), &render_settings(dir, options.port), &embedded.server)?;
    write_owned(&pgdata.join("pg_hba.conf"), HBA, &embedded.server)?;
    write_owned(&pgdata.join("pg_ident.conf"), &render_ident(&embedded.server, &operator), &embedded.server)?;
    embedded.save()?;
    if embedded.is_running() {
        // Regenerated hba/ident/settings take effect without dropping sessions;
        // settings that need a restart apply at the next start.
        let pgdata = embedded.dir.pgdata();
        embedded.run("pg_ctl", &["reload", "-D", path_str(&pgdata)?, "-s"])?;
    } else {
        embedded.start()?;
    }
    create_database(&embedded)?;
    Ok(embedded)
}

fn create_database(embedded: &Embedded) -> Result<(), ClusterError> {
    let pg = |step| move |source| ClusterError::Pg { step, source };
    let mut admin = embedded.connect_admin("postgres").map_err(pg("connect as admin"))?;
    let exists = admin
        .simple_query(&format!("SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'"))
        .map_err(pg("look up database"))?;
    if exists.is_empty() {
        admin
            .execute(&format!(
                "CREATE DATABASE {DATABASE_NAME} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
            ))
            .map_err(pg("create database"))?;
    }
    Ok(())
}
