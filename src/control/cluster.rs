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
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::base::limits::{ADMIN_ROLE, DATABASE_NAME, PG_START_TIMEOUT_S, UNIX_PATH_BYTES_MAX};
use crate::base::sys::{self, Account};
use crate::control::accounts::{self, Accounts};
use crate::model::matrix::Role;
use crate::pg::{ConnectParams, Connection, PgError};

pub use crate::control::accounts::SERVER_USER;
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
    /// The pid in `pgdata/postmaster.pid`, if that process is running.
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = fs::read_to_string(self.pgdata().join("postmaster.pid")).ok()?;
        text.lines().next().and_then(|l| l.trim().parse::<i32>().ok()).filter(|pid| sys::process_exists(*pid))
    }

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
    /// Size and free space of the filesystem holding the state directory.
    pub fn fs_space(&self) -> std::io::Result<sys::FsSpace> {
        let root = fs::File::open(&self.root)?;
        sys::fs_space(std::os::fd::AsFd::as_fd(&root))
    }

    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    /// PostgreSQL's log directory: the logging collector's rotated files
    /// ([`PG_LOG_PREFIX`]) and the postmaster's start-up output.
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("log")
    }
    /// What the postmaster writes before its logging collector runs
    /// (`pg_ctl -l`); truncated at every start.
    pub fn startup_log_file(&self) -> PathBuf {
        self.log_dir().join("startup.log")
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
        let mut pairs = crate::codec::pairs::parse_pairs(&text).map_err(|e| ClusterError::StateFile(e.to_string()))?;
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
            // With the server account's supplementary groups (DB_GROUP among
            // them): the postmaster gives the socket that group.
            let groups = sys::spawn::account_groups(&self.server.name, self.server.gid)
                .unwrap_or_else(|_| vec![self.server.gid]);
            let identity = sys::spawn::Identity { uid: self.server.uid, gid: self.server.gid, groups };
            sys::spawn::run_as(&mut command, identity);
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
        self.dir.postmaster_pid()
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
        let log = self.dir.startup_log_file();
        // pg_ctl appends: start each life with an empty file, so it stays bounded.
        if log.exists() {
            fs::write(&log, b"").map_err(io_err("truncate", &log))?;
        }
        prune_logs(&self.dir).map_err(io_err("prune the PostgreSQL log in", &self.dir.log_dir()))?;
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

/// One generated server setting.
pub struct Setting {
    pub name: &'static str,
    pub value: String,
    pub reason: &'static str,
}

/// Server settings of the embedded cluster, each with its reason.
/// `socket_group`: the group given the socket (mode 0770), or None for a
/// socket only its owner may connect to (0700: a cluster of one OS user).
pub fn server_settings(dir: &StateDir, port: u16, socket_group: Option<&str>) -> Vec<Setting> {
    let s = |name, value: &str, reason| Setting { name, value: value.to_string(), reason };
    let socket_access = match socket_group {
        Some(group) => vec![
            Setting {
                name: "unix_socket_group",
                value: format!("'{group}'"),
                reason: "the socket's group: the server account, the lane identities and Core's reader identity are its members",
            },
            s(
                "unix_socket_permissions",
                "0770",
                "connect() needs write permission on the socket: only its owner and group may even start a session, so no other local user can take a connection slot",
            ),
        ],
        None => vec![s(
            "unix_socket_permissions",
            "0700",
            "one OS user runs the whole appliance (started without root): only that user may connect()",
        )],
    };
    let mut settings = vec![
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
    ];
    settings.extend(socket_access);
    settings.extend(log_settings(dir));
    settings.extend(connection_settings());
    // The state filesystem's size decides the WAL bounds; if it cannot be
    // read, the largest bound (a large filesystem) is assumed.
    let fs_total = dir.fs_space().map_or(u64::MAX, |space| space.total);
    settings.extend(durability_and_tuning_settings(port));
    settings.extend(wal_size_settings(fs_total));
    settings
}

/// `max_wal_size` and `min_wal_size` for a state filesystem of `fs_total`
/// bytes (`disk::max_wal_size`): WAL must be checkpointed away long before
/// it could fill the filesystem it shares with the spools.
fn wal_size_settings(fs_total: u64) -> Vec<Setting> {
    let max = crate::storage::disk::max_wal_size(fs_total);
    let mb = |bytes: u64| format!("{}MB", bytes / (1024 * 1024));
    vec![
        Setting {
            name: "max_wal_size",
            value: mb(max),
            reason: "a sixteenth of the state filesystem, between 64 MB and 8 GB: a 1M-event burst writes about 215 MB of WAL, so on a large filesystem checkpoints are triggered by time, not by bursts, and on a small one WAL is checkpointed away before it can fill it; the lanes' free-space reserve holds twice this",
        },
        Setting {
            name: "min_wal_size",
            value: mb(crate::storage::disk::min_wal_size(max)),
            reason: "half of max_wal_size, at most 1 GB: recycled segments avoid file creation during bursts",
        },
    ]
}

/// The connection slots (`max_connections`) and how long a connection
/// that has not authenticated may hold one.
fn connection_settings() -> Vec<Setting> {
    let s = |name, value: String, reason| Setting { name, value, reason };
    vec![
        s(
            "max_connections",
            crate::base::limits::PG_CONNECTIONS_MAX.to_string(),
            "four lanes with a few COPY connections each, Core readers, maintenance and selftest; bounded so memory is bounded",
        ),
        s(
            "superuser_reserved_connections",
            crate::base::limits::PG_SUPERUSER_RESERVED_CONNECTIONS.to_string(),
            "slots only the superuser may use (init, selftest): a full cluster still lets the operator in",
        ),
        s(
            "authentication_timeout",
            format!("{}s", crate::base::limits::PG_AUTHENTICATION_TIMEOUT_S),
            "a connection holds a slot from accept() until it authenticates: peer authentication takes milliseconds, so a peer that sends nothing is dropped after this",
        ),
    ]
}

/// PostgreSQL's own log: the logging collector writes files of at most
/// [`crate::base::limits::pg_log_file_bytes`] each, named by their start time, and
/// the supervisor keeps the newest [`crate::base::limits::pg_log_files_max`]
/// ([`prune_logs`]), so no input can grow the log past their product.
fn log_settings(dir: &StateDir) -> Vec<Setting> {
    let s = |name, value: String, reason| Setting { name, value, reason };
    vec![
        s(
            "logging_collector",
            "on".into(),
            "the collector rotates the log by size and age (files pruned by the appliance)",
        ),
        s("log_directory", format!("'{}'", dir.log_dir().display()), "the state directory's log/ (mode 0700)"),
        s(
            "log_filename",
            format!("'{PG_LOG_PREFIX}%Y%m%d-%H%M%S.log'"),
            "a new name at every rotation, so no rotation appends to an old file; the oldest files are deleted beyond the count",
        ),
        s(
            "log_rotation_size",
            format!("{}kB", crate::base::limits::pg_log_file_bytes() / 1024),
            "size bound of one file: the collector starts a new file once this much is written",
        ),
        s("log_rotation_age", "1d".into(), "at least one new file a day, so pruning by count also ages the log out"),
        s("log_truncate_on_rotation", "off".into(), "names never repeat, so nothing to truncate"),
        s("log_file_mode", "0600".into(), "the log may hold statement text: the server account only"),
    ]
}

/// Durability, WAL, memory, vacuum and logging settings, each with its reason.
fn durability_and_tuning_settings(port: u16) -> Vec<Setting> {
    let s = |name, value: &str, reason| Setting { name, value: value.to_string(), reason };
    vec![
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
        s(
            "jit",
            "off",
            "the packaged unit sets MemoryDenyWriteExecute=yes, which forbids the executable mappings LLVM JIT needs (a JIT-compiled query would fail); ingest gains nothing from JIT",
        ),
    ]
}

fn render_settings(dir: &StateDir, port: u16, socket_group: Option<&str>) -> String {
    let mut text = String::from(
        "# Generated by applianced from src/control/cluster.rs; every change is overwritten by `applianced init`.\n",
    );
    for setting in server_settings(dir, port, socket_group) {
        text.push_str(&format!("# {}\n{} = {}\n", setting.reason, setting.name, setting.value));
    }
    text
}

/// The name of the peer-authentication map in `pg_ident.conf`.
pub const IDENT_MAP: &str = "applianced";

/// Who may log in as which role (pg_ident.conf), in order:
/// - the operator (who ran `init`: root, the package's `ransomeye`, or the
///   one user of a cluster started without root) as the superuser and every
///   login role: it owns the cluster, and without root it also runs every
///   lane, the load clients and the tests;
/// - each lane identity as its module's writer role only;
/// - Core's OS identity as the reader role only.
pub fn ident_mappings(accounts: &Accounts) -> Vec<(String, &'static str)> {
    let mut mappings = vec![(accounts.operator.name.clone(), ADMIN_ROLE)];
    for role in Role::ALL.into_iter().filter(|r| r.can_login()) {
        mappings.push((accounts.operator.name.clone(), role.name()));
    }
    for (module, account) in &accounts.lanes {
        mappings.push((account.name.clone(), Role::Writer(*module).name()));
    }
    if let Some(core) = &accounts.core_reader {
        mappings.push((core.name.clone(), Role::CoreReader.name()));
    }
    mappings
}

fn render_ident(accounts: &Accounts) -> String {
    let mut text = String::from(
        "# Generated by applianced. Map \"applianced\": OS user -> PostgreSQL role (peer authentication).\n",
    );
    for (user, role) in ident_mappings(accounts) {
        text.push_str(&format!("{IDENT_MAP} {user} {role}\n"));
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
    let server = accounts::server_account().map_err(|e| ClusterError::Account(e.to_string()))?;
    let accounts = accounts::resolve(server.clone()).map_err(|e| ClusterError::Account(e.to_string()))?;
    let embedded = Embedded { dir, pg_bin_dir, server, port: options.port };
    let dir = &embedded.dir;
    // 0711: other local users (module identities) may traverse to the socket
    // directory but not list or read anything; pgdata and log stay 0700.
    make_dir(&dir.root, 0o711, &embedded.server)?;
    make_dir(&dir.run_dir(), 0o755, &embedded.server)?;
    make_dir(&dir.log_dir(), 0o700, &embedded.server)?;
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
    configure(&embedded, &accounts)?;
    embedded.save()?;
    create_database(&embedded)?;
    Ok(embedded)
}

/// Write the generated settings, pg_hba.conf and pg_ident.conf for
/// `accounts`, then reload a running cluster or start a stopped one.
/// Settings that need a restart (the socket's group and mode, the log
/// collector) apply at the cluster's next start.
pub fn configure(embedded: &Embedded, accounts: &Accounts) -> Result<(), ClusterError> {
    let pgdata = embedded.dir.pgdata();
    write_settings(embedded, accounts)?;
    write_owned(&pgdata.join("pg_hba.conf"), HBA, &embedded.server)?;
    write_owned(&pgdata.join("pg_ident.conf"), &render_ident(accounts), &embedded.server)?;
    if embedded.is_running() {
        // Regenerated hba/ident/settings take effect without dropping sessions.
        reload(embedded)
    } else {
        embedded.start()
    }
}

/// Write the generated settings (`applianced.conf`) again: `run` does it
/// at every start, so settings that follow the host (the WAL bounds follow
/// the state filesystem's size) are current. They apply at the cluster's
/// next start or reload.
pub fn write_settings(embedded: &Embedded, accounts: &Accounts) -> Result<(), ClusterError> {
    let group = accounts.db_group.map(|_| accounts::DB_GROUP);
    let settings = render_settings(&embedded.dir, embedded.port, group);
    write_owned(&embedded.dir.pgdata().join("applianced.conf"), &settings, &embedded.server)
}

/// Ask a running cluster to read its configuration again (`pg_ctl reload`).
pub fn reload(embedded: &Embedded) -> Result<(), ClusterError> {
    embedded.run("pg_ctl", &["reload", "-D", path_str(&embedded.dir.pgdata())?, "-s"]).map(|_| ())
}

/// The prefix of the logging collector's file names in `log/`.
pub const PG_LOG_PREFIX: &str = "postgresql-";

/// The collector's log files, oldest first (their names sort by start time).
pub fn pg_log_files(dir: &StateDir) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.log_dir())?
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(PG_LOG_PREFIX) && n.ends_with(".log")))
        .map(|e| e.path())
        .collect();
    files.sort();
    Ok(files)
}

/// Keep PostgreSQL's log within [`crate::base::limits::pg_log_bytes_max`]:
/// delete the oldest collector files beyond [`crate::base::limits::pg_log_files_max`]
/// (the newest, being written, is never deleted), and empty any kept file
/// that grew past twice the rotation size. The collector names files to
/// the second, so a flood faster than one file a second appends to the
/// same name instead of rotating; the collector writes with O_APPEND, so
/// emptying a file it writes is safe, and a line says what was dropped.
/// Returns how many files were deleted or emptied.
pub fn prune_logs(dir: &StateDir) -> std::io::Result<usize> {
    let files = match pg_log_files(dir) {
        Ok(files) => files,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let excess = files.len().saturating_sub(crate::base::limits::pg_log_files_max());
    for file in &files[..excess] {
        match fs::remove_file(file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let mut emptied = 0;
    let cap = 2 * crate::base::limits::pg_log_file_bytes();
    for file in &files[excess..] {
        let Ok(metadata) = fs::metadata(file) else { continue };
        if metadata.len() <= cap {
            continue;
        }
        let mut handle = fs::OpenOptions::new().append(true).open(file)?;
        handle.set_len(0)?;
        let note = format!(
            "applianced: {} bytes of this file dropped: it grew past {cap} bytes within a second (a flood)\n",
            metadata.len()
        );
        std::io::Write::write_all(&mut handle, note.as_bytes())?;
        emptied += 1;
    }
    Ok(excess + emptied)
}

/// Why the cluster last stopped or failed to start, as PostgreSQL logged
/// it: the last PANIC line in the tails (`PG_LOG_TAIL_BYTES`) of the
/// start-up log and the newest collector file, else the last FATAL line.
pub fn last_failure(dir: &StateDir) -> Option<String> {
    let mut files = vec![dir.startup_log_file()];
    files.extend(pg_log_files(dir).ok()?.pop());
    let mut panic = None;
    let mut fatal = None;
    for file in files {
        let Ok(text) = read_tail(&file, crate::base::limits::PG_LOG_TAIL_BYTES) else { continue };
        for line in text.lines() {
            if line.contains("PANIC:") {
                panic = Some(line.trim().to_string());
            } else if line.contains("FATAL:") {
                fatal = Some(line.trim().to_string());
            }
        }
    }
    panic.or(fatal)
}

/// The last `bytes` of a file (lossy UTF-8, from the first whole line).
fn read_tail(path: &Path, bytes: u64) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = fs::File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(bytes)))?;
    let mut buffer = Vec::with_capacity(bytes.min(len) as usize);
    file.take(bytes).read_to_end(&mut buffer)?;
    let text = String::from_utf8_lossy(&buffer).into_owned();
    Ok(if len > bytes { text.split_once('\n').map_or(String::new(), |(_, rest)| rest.to_string()) } else { text })
}

/// Everything PostgreSQL logged that is still kept, oldest first.
pub fn read_pg_log(dir: &StateDir) -> std::io::Result<String> {
    let mut text = fs::read_to_string(dir.startup_log_file()).unwrap_or_default();
    for file in pg_log_files(dir)? {
        text.push_str(&String::from_utf8_lossy(&fs::read(file)?));
    }
    Ok(text)
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
