//! The per-lane sandbox, entered in one ordered function before the lane
//! reads a single untrusted byte (STYLE S15).
//!
//! Order, each step with why it is there:
//! 1. every fd is open (listener, control socket, signalfd, the socket to
//!    the connector, the spool, /proc/self/status) — after Landlock nothing
//!    new can be opened outside the allowed paths, and after seccomp no
//!    socket can be created or connected at all;
//! 2. the io_uring ring exists, created disabled, restricted to Accept,
//!    Recv, Send and PollAdd, then enabled (done by the caller,
//!    `sys::uring`) — after seccomp, io_uring_setup/register are gone, so
//!    it must exist;
//! 3. no_new_privs — required for unprivileged Landlock and seccomp, and
//!    no exec can regain privileges;
//! 4. Landlock (tested with ABI 6 and 7 on Linux 6.18): no filesystem
//!    access except the spool rights beneath the lane's own spool
//!    directory (`spool_access`), no TCP bind or connect, abstract Unix sockets and
//!    signals scoped to the lane's own domain — it applies to io_uring
//!    operations too, unlike seccomp;
//! 5. seccomp allow-list (`seccomp.rs`, one per [`Profile`]), killing the
//!    process on anything else, including socket, connect, io_uring_setup
//!    and io_uring_register;
//! 6. verify what the kernel reports (`Seccomp: 2`, `NoNewPrivs: 1`, the
//!    Landlock status) and refuse to serve if `required` and anything is
//!    short of fully enforced.
//! Never SQPOLL rings or registered personalities: both would carry the
//! pre-sandbox credentials past Landlock.

pub mod seccomp;
/// Co-location: CPU placement, I/O priority, address-space limit.
pub mod colocate;
/// Why entering a sandbox or a placement failed.
pub mod error;

pub use error::SandboxError;

use std::io::Read;
use std::path::Path;

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope,
};

use crate::base::sys;

/// The Landlock ABI whose rights the ruleset handles (scopes need ABI 6).
pub const LANDLOCK_ABI: ABI = ABI::V6;

/// Which process enters a sandbox: its seccomp allow-list differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// A lane: producers, the spool, handed PostgreSQL connections.
    Lane,
    /// A lane's connector: opens PostgreSQL connections, nothing else.
    Connector,
}

impl Profile {
    pub fn allow_list(self) -> Vec<seccomp::Allowed> {
        match self {
            Profile::Lane => seccomp::lane_allow_list(),
            Profile::Connector => seccomp::connector_allow_list(),
        }
    }
}

/// How strictly to sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxMode {
    /// Debugging only: no sandbox at all (loudly logged).
    Off,
    /// Enforce what the kernel supports; warn loudly about the rest.
    BestEffort,
    /// Refuse to serve unless everything is enforced (the packaged default).
    Required,
}

impl SandboxMode {
    pub fn parse(text: &str) -> Option<SandboxMode> {
        match text {
            "off" => Some(SandboxMode::Off),
            "best-effort" => Some(SandboxMode::BestEffort),
            "required" => Some(SandboxMode::Required),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            SandboxMode::Off => "off",
            SandboxMode::BestEffort => "best-effort",
            SandboxMode::Required => "required",
        }
    }
}

/// What is enforced, as observed after entering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxReport {
    pub mode: SandboxMode,
    pub profile: Profile,
    pub uring_restricted: bool,
    pub no_new_privs: bool,
    pub landlock: String,
    pub landlock_full: bool,
    pub seccomp: bool,
}

impl SandboxReport {
    /// Every layer enforced (a lane also needs its restricted ring: the
    /// poll(2) fallback is not the sandbox the lane was designed for).
    pub fn fully_enforced(&self) -> bool {
        let ring = self.uring_restricted || self.profile == Profile::Connector;
        ring && self.no_new_privs && self.landlock_full && self.seccomp
    }

    /// Whether the process can open no new connection at all: its seccomp
    /// filter, which has neither `socket` nor `connect`, is in force.
    pub fn connect_denied(&self) -> bool {
        self.profile == Profile::Lane && self.seccomp
    }

    /// The status-file lines selftest reads.
    pub fn status_lines(&self) -> String {
        format!(
            "sandbox = \"{}\"\nio_uring_restricted = {}\nno_new_privs = {}\nlandlock = \"{}\"\nlandlock_full = {}\nseccomp = {}\nconnect_denied = {}\nsandbox_fully_enforced = {}\n",
            self.mode.name(),
            self.uring_restricted,
            self.no_new_privs,
            self.landlock,
            self.landlock_full,
            self.seccomp,
            self.connect_denied(),
            self.fully_enforced()
        )
    }
}

/// What a lane may do beneath its spool directory, and nowhere else:
/// create, write, read, truncate and unlink its segment files, list them.
pub fn spool_access() -> BitFlags<AccessFs> {
    AccessFs::ReadFile
        | AccessFs::WriteFile
        | AccessFs::MakeReg
        | AccessFs::RemoveFile
        | AccessFs::Truncate
        | AccessFs::ReadDir
}

fn landlock(mode: SandboxMode, spool_dir: Option<&Path>) -> Result<(String, bool), SandboxError> {
    let level = match mode {
        SandboxMode::Required => CompatLevel::HardRequirement,
        SandboxMode::BestEffort | SandboxMode::Off => CompatLevel::BestEffort,
    };
    // Every handled right is denied everywhere except the spool rights
    // beneath the lane's own spool directory.
    let mut created = Ruleset::default()
        .set_compatibility(level)
        .handle_access(AccessFs::from_all(LANDLOCK_ABI))
        .and_then(|r| r.handle_access(AccessNet::from_all(LANDLOCK_ABI)))
        .and_then(|r| r.scope(Scope::from_all(LANDLOCK_ABI)))
        .and_then(|r| r.create())
        .map_err(SandboxError::Landlock)?;
    if let Some(dir) = spool_dir {
        let fd = PathFd::new(dir).map_err(|source| SandboxError::LandlockPath { dir: dir.to_path_buf(), source })?;
        created = created.add_rule(PathBeneath::new(fd, spool_access())).map_err(SandboxError::Landlock)?;
    }
    let status = created.restrict_self().map_err(SandboxError::Landlock)?;
    let full = status.ruleset == RulesetStatus::FullyEnforced;
    let text = match status.ruleset {
        RulesetStatus::FullyEnforced => "fully enforced",
        RulesetStatus::PartiallyEnforced => "PARTIALLY enforced",
        RulesetStatus::NotEnforced => "NOT enforced",
    };
    Ok((format!("{text} (handled ABI {})", LANDLOCK_ABI as i32), full))
}

/// Read `/proc/self/status` through a descriptor opened before the sandbox.
fn proc_status(file: &mut std::fs::File) -> String {
    let mut text = Vec::new();
    let mut chunk = [0u8; 4096];
    // Plain read(2) only: read_to_string would also call statx.
    while let Ok(n) = file.read(&mut chunk) {
        if n == 0 {
            break;
        }
        text.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&text).into_owned()
}

fn status_value<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|l| l.strip_prefix(key)).map(str::trim)
}

/// Enter the sandbox (steps 3 to 6). `proc_status_file` is
/// `/proc/self/status`, opened before (step 1).
pub fn enter(
    mode: SandboxMode,
    profile: Profile,
    uring_restricted: bool,
    mut proc_status_file: std::fs::File,
    spool_dir: Option<&Path>,
) -> Result<SandboxReport, SandboxError> {
    if mode == SandboxMode::Off {
        tracing::error!(
            ?profile,
            "SANDBOX OFF (--sandbox off): this process runs without no_new_privs, Landlock or seccomp"
        );
        return Ok(SandboxReport {
            mode,
            profile,
            uring_restricted,
            no_new_privs: false,
            landlock: "off".into(),
            landlock_full: false,
            seccomp: false,
        });
    }
    sys::set_no_new_privs().map_err(SandboxError::os("prctl(PR_SET_NO_NEW_PRIVS)"))?;
    let (landlock, landlock_full) = landlock(mode, spool_dir)?;
    let program = seccomp::compile(&profile.allow_list())?;
    seccompiler::apply_filter_all_threads(&program).map_err(SandboxError::SeccompApply)?;
    let status = proc_status(&mut proc_status_file);
    let report = SandboxReport {
        mode,
        profile,
        uring_restricted,
        no_new_privs: status_value(&status, "NoNewPrivs:") == Some("1"),
        landlock,
        landlock_full,
        seccomp: status_value(&status, "Seccomp:") == Some("2"),
    };
    if !report.fully_enforced() {
        if mode == SandboxMode::Required {
            return Err(SandboxError::NotEnforced(Box::new(report)));
        }
        let report_line = report.status_lines().trim_end().replace('\n', ", ");
        tracing::error!(report = report_line, "SANDBOX ONLY PARTIALLY ENFORCED on this kernel (best-effort mode)");
    }
    Ok(report)
}
