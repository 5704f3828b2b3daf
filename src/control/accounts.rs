//! The OS accounts of the appliance: the PostgreSQL server account, one
//! identity per lane, and the group that may reach the database socket.
//!
//! Runs in `init` and `run` (never in a lane). As root, what is missing is
//! created (`useradd`, `groupadd`, `usermod --append`), one creator at a
//! time; the packages create the same accounts from sysusers.d. Invariants:
//! no lane identity is root, the server account or the caller; each is
//! its own user with its own group, and a member of [`DB_GROUP`] only.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::Path;
use std::process::Command;

use crate::base::sys::{self, Account, spawn::Identity};
use crate::model::matrix::Module;

/// The OS account the embedded cluster runs as when the appliance is
/// started as root (PostgreSQL refuses to run as root). The packages create
/// it with sysusers.d; `init` creates it with useradd if it is missing.
pub const SERVER_USER: &str = "ransomeye";
/// The group whose members may connect to the database socket (mode 0770):
/// the server account, the lane identities, and Core's reader identity.
pub const DB_GROUP: &str = "ransomeye-db";
/// Serializes creating accounts between concurrent `init`s (root only):
/// two useradds at once can both succeed, one uid overwriting the other in
/// /etc/passwd (seen on this machine).
const ACCOUNT_LOCK_PATH: &str = "/run/applianced-account.lock";

#[derive(Debug)]
pub enum AccountError {
    Lookup { name: String, source: std::io::Error },
    Missing(String),
    Lock(std::io::Error),
    Command { what: String, detail: String },
}

impl fmt::Display for AccountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccountError::Lookup { name, source } => write!(f, "look up {name}: {source}"),
            AccountError::Missing(what) => write!(f, "{what}"),
            AccountError::Lock(e) => write!(f, "lock {ACCOUNT_LOCK_PATH}: {e}"),
            AccountError::Command { what, detail } => write!(f, "{what} failed: {detail}"),
        }
    }
}

impl std::error::Error for AccountError {}

fn lookup_user(name: &str) -> Result<Option<Account>, AccountError> {
    sys::account_by_name(name).map_err(|source| AccountError::Lookup { name: name.into(), source })
}

fn lookup_group(name: &str) -> Result<Option<u32>, AccountError> {
    sys::spawn::group_by_name(name).map_err(|source| AccountError::Lookup { name: name.into(), source })
}

/// The identity an account's processes get: its uid, primary gid and
/// supplementary groups as the group database lists them.
pub fn identity_of(account: &Account) -> Result<Identity, AccountError> {
    let groups = sys::spawn::account_groups(&account.name, account.gid)
        .map_err(|source| AccountError::Lookup { name: account.name.clone(), source })?;
    Ok(Identity { uid: account.uid, gid: account.gid, groups })
}

/// Whether `account` is a member of `gid` (primary or supplementary).
pub fn is_member(account: &Account, gid: u32) -> Result<bool, AccountError> {
    Ok(identity_of(account)?.groups.contains(&gid))
}

fn run(program: &str, args: &[&str]) -> Result<(), AccountError> {
    let status = Command::new(program)
        .args(args)
        .status()
        .map_err(|e| AccountError::Command { what: program.into(), detail: e.to_string() })?;
    if !status.success() {
        return Err(AccountError::Command {
            what: format!("{program} {}", args.join(" ")),
            detail: status.to_string(),
        });
    }
    Ok(())
}

/// Held while accounts are created; the flock is released when the file closes.
struct AccountLock {
    _file: fs::File,
}

fn lock() -> Result<AccountLock, AccountError> {
    let path = Path::new(ACCOUNT_LOCK_PATH);
    let file =
        fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(AccountError::Lock)?;
    sys::lock_exclusive(&file).map_err(AccountError::Lock)?;
    Ok(AccountLock { _file: file })
}

/// Create a system user (with its own group, no home, no shell) unless it
/// exists; root only. Looked up again under the lock.
fn ensure_user(name: &str, comment: &str, _lock: &AccountLock) -> Result<Account, AccountError> {
    if let Some(account) = lookup_user(name)? {
        return Ok(account);
    }
    eprintln!("applianced: creating system user {name} ({comment})");
    run(
        "useradd",
        &[
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            comment,
            name,
        ],
    )?;
    lookup_user(name)?.ok_or_else(|| AccountError::Missing(format!("{name} missing after useradd")))
}

fn ensure_group(name: &str, _lock: &AccountLock) -> Result<u32, AccountError> {
    if let Some(gid) = lookup_group(name)? {
        return Ok(gid);
    }
    eprintln!("applianced: creating system group {name}");
    run("groupadd", &["--system", name])?;
    lookup_group(name)?.ok_or_else(|| AccountError::Missing(format!("group {name} missing after groupadd")))
}

fn ensure_member(account: &Account, group: &str, gid: u32, _lock: &AccountLock) -> Result<(), AccountError> {
    if is_member(account, gid)? {
        return Ok(());
    }
    run("usermod", &["--append", "--groups", group, &account.name])
}

/// The account PostgreSQL runs as: the caller, or [`SERVER_USER`] for root
/// (created if missing).
pub fn server_account() -> Result<Account, AccountError> {
    let euid = sys::effective_uid();
    if euid != 0 {
        return sys::account_by_uid(euid)
            .map_err(|source| AccountError::Lookup { name: format!("uid {euid}"), source })?
            .ok_or_else(|| AccountError::Missing(format!("uid {euid} has no passwd entry")));
    }
    if let Some(account) = lookup_user(SERVER_USER)? {
        return Ok(account);
    }
    let lock = lock()?;
    ensure_user(SERVER_USER, "RansomEye appliance", &lock)
}

/// The accounts a state directory's cluster is configured for.
#[derive(Clone, Debug)]
pub struct Accounts {
    /// Who ran `init` (or `run`): maps to the superuser and every login role.
    pub operator: Account,
    /// The PostgreSQL server account.
    pub server: Account,
    /// Each lane's own identity, when the host has them (all four or none).
    pub lanes: BTreeMap<Module, Account>,
    /// [`DB_GROUP`], when the server account is a member (the socket then
    /// is mode 0770 and group-owned by it; otherwise 0700).
    pub db_group: Option<u32>,
    /// Core's OS identity, mapped to the reader role, when it exists.
    pub core_reader: Option<Account>,
}

/// As root: create the lane identities and [`DB_GROUP`] where missing and
/// make the server account, the lanes and Core's identity (if it exists)
/// members of the group. Otherwise: look up what the package created.
pub fn resolve(server: Account) -> Result<Accounts, AccountError> {
    let operator = sys::account_by_uid(sys::real_uid())
        .map_err(|source| AccountError::Lookup { name: "the caller".into(), source })?
        .ok_or_else(|| AccountError::Missing("the calling uid has no passwd entry".into()))?;
    let core_reader = lookup_user(Module::Core.os_identity())?;
    if sys::effective_uid() == 0 {
        let lock = lock()?;
        let gid = ensure_group(DB_GROUP, &lock)?;
        let mut lanes = BTreeMap::new();
        for module in Module::ALL {
            let account = ensure_user(module.lane_identity(), module.lane_identity_comment(), &lock)?;
            ensure_member(&account, DB_GROUP, gid, &lock)?;
            lanes.insert(module, account);
        }
        ensure_member(&server, DB_GROUP, gid, &lock)?;
        if let Some(core) = &core_reader {
            ensure_member(core, DB_GROUP, gid, &lock)?;
        }
        return Ok(Accounts { operator, server, lanes, db_group: Some(gid), core_reader });
    }
    let mut lanes = BTreeMap::new();
    for module in Module::ALL {
        if let Some(account) = lookup_user(module.lane_identity())? {
            lanes.insert(module, account);
        }
    }
    if lanes.len() != Module::ALL.len() {
        lanes.clear();
    }
    let db_group = match lookup_group(DB_GROUP)? {
        Some(gid) if is_member(&server, gid)? => Some(gid),
        _ => None,
    };
    Ok(Accounts { operator, server, lanes, db_group, core_reader })
}

impl Accounts {
    /// Whether an account is one the lanes must never run as.
    pub fn is_forbidden_lane_uid(&self, uid: u32) -> bool {
        uid == 0 || uid == self.server.uid || uid == self.operator.uid
    }
}
