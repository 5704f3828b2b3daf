//! Starting a lane process: which OS identity it runs as, the spool
//! directory it owns, and the descriptors it gets (its listening socket as
//! fd 3, its control socket as fd 4).
//!
//! Runs in the supervisor (`applianced run`) and in `applianced
//! sandbox-probe`, never in a lane. The identity is decided once:
//! - **own**: each lane runs as [`Module::lane_identity`], when this
//!   process can switch uids (root, which creates the accounts where
//!   missing, or a holder of CAP_SETUID and CAP_SETGID, as the packaged
//!   unit) and the accounts exist; `pg_ident.conf` maps each to its
//!   module's writer role only;
//! - **shared**: every lane runs as the caller (an appliance started by an
//!   ordinary user); then only the lane sandbox, which leaves no `socket`
//!   or `connect` system call, keeps a lane from reaching PostgreSQL as a
//!   role other than its own.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Child;

use crate::base::sys::{self, Account, spawn::Identity};
use crate::control::accounts::{self, Accounts};
use crate::control::cluster::{Embedded, StateDir};
use crate::lane::process::{CONTROL_FD, IoMode, LISTEN_FD};
use crate::model::matrix::Module;
use crate::sandbox::SandboxMode;
use crate::storage::disk::DiskReserve;

#[derive(Debug)]
pub enum LaunchError {
    Accounts(accounts::AccountError),
    Io {
        step: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A spool directory the lane identity must own is owned by another uid,
    /// and this process may not change that.
    SpoolOwner {
        path: PathBuf,
        owner: u32,
        lane: String,
    },
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LaunchError::Accounts(e) => write!(f, "lane identities: {e}"),
            LaunchError::Io { step, path, source } => write!(f, "{step} {}: {source}", path.display()),
            LaunchError::SpoolOwner { path, owner, lane } => write!(
                f,
                "spool directory {} is owned by uid {owner}, not by the lane identity {lane} \
                 (the package creates it with systemd-tmpfiles --create /usr/lib/tmpfiles.d/applianced.conf)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for LaunchError {}

fn io_error(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LaunchError + use<> {
    let path = path.to_path_buf();
    move |source| LaunchError::Io { step, path, source }
}

/// Who the lanes run as.
#[derive(Clone, Debug)]
pub enum LaneIdentities {
    /// One dedicated account per lane.
    Own(BTreeMap<Module, (Account, Identity)>),
    /// Every lane runs as the caller's uid.
    Shared { uid: u32 },
}

impl LaneIdentities {
    /// What the status file and selftest say about a lane's identity.
    pub fn label(&self, module: Module) -> String {
        match self {
            LaneIdentities::Own(lanes) => {
                lanes.get(&module).map_or_else(|| "unknown".into(), |(a, _)| format!("own:{}", a.name))
            }
            LaneIdentities::Shared { uid } => format!("shared:uid {uid}"),
        }
    }
}

/// Decide the lanes' identity (see the module comment). As root this
/// creates the lane accounts and the database group where missing.
pub fn lane_identities(accounts: &Accounts) -> Result<LaneIdentities, LaunchError> {
    let can_switch = sys::effective_uid() == 0
        || (sys::spawn::has_permitted_capability(sys::spawn::CAP_SETUID).unwrap_or(false)
            && sys::spawn::has_permitted_capability(sys::spawn::CAP_SETGID).unwrap_or(false));
    if !can_switch || accounts.lanes.len() != Module::ALL.len() {
        return Ok(LaneIdentities::Shared { uid: sys::real_uid() });
    }
    let mut lanes = BTreeMap::new();
    for (module, account) in &accounts.lanes {
        if accounts.is_forbidden_lane_uid(account.uid) {
            return Err(LaunchError::Accounts(accounts::AccountError::Missing(format!(
                "{} has uid {}, which is root, the server account or the caller",
                account.name, account.uid
            ))));
        }
        let identity = accounts::identity_of(account).map_err(LaunchError::Accounts)?;
        lanes.insert(*module, (account.clone(), identity));
    }
    Ok(LaneIdentities::Own(lanes))
}

/// What a lane is started with, beside its module.
#[derive(Clone, Debug)]
pub struct LaneOptions {
    pub io: IoMode,
    pub sandbox: SandboxMode,
    pub cpus: Vec<usize>,
    pub spool_quota_bytes: u64,
    /// Bytes to keep free on the spool's filesystem (`disk_reserve`).
    pub disk_reserve_bytes: u64,
    /// The lane's grants, as `applianced lane --allow` arguments.
    pub grants: Vec<String>,
    /// PostgreSQL connections the lane commits over.
    pub commit_streams: usize,
}

/// Starts lane processes.
pub struct Launcher {
    exe: OwnedFd,
    embedded: Embedded,
    pub identities: LaneIdentities,
}

impl Launcher {
    pub fn new(embedded: &Embedded, identities: LaneIdentities) -> Result<Launcher, LaunchError> {
        let exe = sys::spawn::open_self_exe().map_err(io_error("open", Path::new("/proc/self/exe")))?;
        Ok(Launcher { exe, embedded: embedded.clone(), identities })
    }

    fn identity(&self, module: Module) -> Option<&(Account, Identity)> {
        match &self.identities {
            LaneIdentities::Own(lanes) => lanes.get(&module),
            LaneIdentities::Shared { .. } => None,
        }
    }

    /// Make `spool` a directory the lane's identity owns (mode 2750, group
    /// of the server account, so that selftest can list it), with
    /// everything already inside it (an upgrade from lanes that ran as
    /// another uid) handed over too. Without the right to chown, the
    /// directory must already be the lane's.
    pub fn prepare_spool(&self, module: Module, spool: &Path) -> Result<(), LaunchError> {
        if let Some(parent) = spool.parent() {
            if !parent.exists() {
                create_dir_durable(parent, 0o711)?;
                if sys::effective_uid() == 0 {
                    let server = &self.embedded.server;
                    sys::lchown(parent, server.uid, server.gid).map_err(io_error("chown", parent))?;
                }
            }
        }
        let Some((account, _)) = self.identity(module) else {
            // Shared identity: the lane creates its spool itself, or finds
            // its own; a directory another uid owns would fail it later.
            if let Ok(metadata) = fs::metadata(spool) {
                let owner = std::os::unix::fs::MetadataExt::uid(&metadata);
                if owner != sys::effective_uid() {
                    return Err(LaunchError::SpoolOwner {
                        path: spool.to_path_buf(),
                        owner,
                        lane: format!("uid {} (shared identity)", sys::effective_uid()),
                    });
                }
            }
            return Ok(());
        };
        if !spool.exists() {
            create_dir_durable(spool, 0o750)?;
        }
        let owner = std::os::unix::fs::MetadataExt::uid(&fs::metadata(spool).map_err(io_error("stat", spool))?);
        if sys::effective_uid() != 0 {
            if owner != account.uid {
                return Err(LaunchError::SpoolOwner { path: spool.to_path_buf(), owner, lane: account.name.clone() });
            }
            return Ok(());
        }
        let gid = self.embedded.server.gid;
        chown_tree(spool, account.uid, gid, 2)?;
        fs::set_permissions(spool, fs::Permissions::from_mode(0o2750)).map_err(io_error("chmod", spool))
    }

    /// Start one lane: `listener` becomes its fd 3; the returned socket is
    /// the supervisor's end of its control socket (fd 4 in the lane).
    pub fn launch(
        &self,
        module: Module,
        listener: BorrowedFd<'_>,
        options: &LaneOptions,
        spool: &Path,
        env: Vec<(String, String)>,
        probe: Option<&str>,
    ) -> Result<(Child, OwnedFd), LaunchError> {
        self.prepare_spool(module, spool)?;
        let (supervisor_end, lane_end) = sys::fdpass::seqpacket_pair().map_err(io_error("control socket of", spool))?;
        let mut args: Vec<std::ffi::OsString> = vec!["lane".into(), "--module".into(), module.name().into()];
        for (flag, value) in [
            ("--io", options.io.name().to_string()),
            ("--sandbox", options.sandbox.name().to_string()),
            ("--cpus", crate::sandbox::colocate::render_cpu_list(&options.cpus)),
            ("--spool-quota", options.spool_quota_bytes.to_string()),
            ("--disk-reserve", options.disk_reserve_bytes.to_string()),
            ("--commit-streams", options.commit_streams.to_string()),
        ] {
            args.push(flag.into());
            args.push(value.into());
        }
        args.extend(["--state-dir".into(), self.embedded.dir.root.clone().into_os_string()]);
        args.extend(["--spool-dir".into(), spool.to_path_buf().into_os_string()]);
        args.extend(["--pg-socket".into(), self.embedded.dir.socket_path(self.embedded.port).into_os_string()]);
        for grant in &options.grants {
            args.extend(["--allow".into(), grant.into()]);
        }
        if let Some(probe) = probe {
            args.extend(["--probe".into(), probe.into()]);
        }
        let spec = sys::spawn::ChildSpec {
            name: format!("applianced-lane-{}", module.name()),
            args,
            env,
            fds: vec![(listener.as_raw_fd(), LISTEN_FD), (lane_end.as_raw_fd(), CONTROL_FD)],
            identity: self.identity(module).map(|(_, identity)| identity.clone()),
        };
        let child = sys::spawn::spawn_self(&self.exe, &spec).map_err(io_error("start the lane with", spool))?;
        Ok((child, supervisor_end))
    }
}

/// The free-space reserve of the spools' filesystem for lanes with
/// `spool_quota` bytes of spool each: PostgreSQL's share of it counts only
/// if its data directory is on the same filesystem.
pub fn disk_reserve(dir: &StateDir, spool_quota: u64) -> std::io::Result<DiskReserve> {
    use std::os::unix::fs::MetadataExt;
    let spools = dir.root.join("spool");
    let spools = if spools.is_dir() { spools } else { dir.root.clone() };
    let space = sys::fs_space(std::os::fd::AsFd::as_fd(&fs::File::open(&spools)?))?;
    let pg_shares_fs = fs::metadata(dir.pgdata())?.dev() == fs::metadata(&spools)?.dev();
    Ok(DiskReserve::new(
        space.total,
        pg_shares_fs,
        Module::ALL.len() as u64,
        spool_quota,
        crate::base::limits::pg_log_bytes_max(),
    ))
}

/// Create one directory and make its entry durable in its parent.
fn create_dir_durable(path: &Path, mode: u32) -> Result<(), LaunchError> {
    fs::DirBuilder::new().mode(mode).create(path).map_err(io_error("create", path))?;
    let parent = path.parent().unwrap_or(Path::new("/"));
    fs::File::open(parent).and_then(|d| d.sync_all()).map_err(io_error("fsync", parent))
}

/// chown `path` and what lies beneath it, `depth` levels down (a spool has
/// its segments, lock and `quarantine/` with its files), without following links.
fn chown_tree(path: &Path, uid: u32, gid: u32, depth: u32) -> Result<(), LaunchError> {
    sys::lchown(path, uid, gid).map_err(io_error("chown", path))?;
    let metadata = fs::symlink_metadata(path).map_err(io_error("stat", path))?;
    if depth == 0 || !metadata.is_dir() {
        return Ok(());
    }
    for entry in fs::read_dir(path).map_err(io_error("list", path))? {
        let entry = entry.map_err(io_error("list", path))?;
        chown_tree(&entry.path(), uid, gid, depth - 1)?;
    }
    Ok(())
}

// ----- where a lane's files are in the state directory -----

/// `<state>/spool/<module>`: the lane's spool directory.
pub fn spool_dir(dir: &StateDir, module: Module) -> PathBuf {
    dir.root.join("spool").join(module.name())
}

/// `<state>/run/lane-<module>.status`: what the supervisor records about a
/// serving lane (its pid and identity, and the lane's own report: I/O
/// path, CPUs, sandbox), replaced whenever the lane (re)starts.
pub fn status_path(dir: &StateDir, module: Module) -> std::path::PathBuf {
    dir.run_dir().join(format!("lane-{}.status", module.name()))
}

/// `<state>/run/lane-<module>.metrics`: the lane's last metrics report
/// (`lane::metrics`), replaced every `LANE_METRICS_INTERVAL_MS` while it
/// serves, with the pid of the lane that sent it.
pub fn metrics_path(dir: &StateDir, module: Module) -> std::path::PathBuf {
    dir.run_dir().join(format!("lane-{}.metrics", module.name()))
}

/// A lane's last metrics report and its age; None while it has none.
pub fn read_metrics(dir: &StateDir, module: Module) -> Option<crate::lane::metrics::LaneSample> {
    let path = metrics_path(dir, module);
    let text = std::fs::read_to_string(&path).ok()?;
    let age_s = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map(|d| d.as_secs_f64());
    let mut pairs = crate::codec::pairs::parse_pairs(&text).ok()?;
    let last_error = pairs.remove("last_error");
    let values = pairs.into_iter().filter_map(|(key, value)| Some((key, value.parse().ok()?))).collect();
    Some(crate::lane::metrics::LaneSample { module, values, age_s, last_error })
}

/// The last metrics report of every lane that has one.
pub fn read_all_metrics(dir: &StateDir) -> Vec<crate::lane::metrics::LaneSample> {
    Module::ALL.into_iter().filter_map(|module| read_metrics(dir, module)).collect()
}

/// The key/value pairs of a lane's status file; empty while it is absent
/// or not yet written.
pub fn read_status(dir: &StateDir, module: Module) -> BTreeMap<String, String> {
    std::fs::read_to_string(status_path(dir, module))
        .ok()
        .and_then(|text| crate::codec::pairs::parse_pairs(&text).ok())
        .unwrap_or_default()
}
