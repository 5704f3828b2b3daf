//! Why entering a sandbox, or placing a process on its CPUs, failed.

use super::SandboxReport;

#[derive(Debug)]
pub enum SandboxError {
    /// A system call of the set-up failed (`prctl`, `sched_setaffinity`,
    /// `ioprio_set`, `setrlimit`).
    Os { step: &'static str, source: std::io::Error },
    /// The Landlock ruleset could not be built or applied.
    Landlock(landlock::RulesetError),
    /// The lane's spool directory could not be opened for its Landlock rule.
    LandlockPath { dir: std::path::PathBuf, source: landlock::PathFdError },
    /// A seccomp rule or the filter could not be compiled (`syscall`: whose rule; none: the filter).
    SeccompCompile { syscall: Option<&'static str>, source: seccompiler::BackendError },
    /// The seccomp filter could not be installed.
    SeccompApply(seccompiler::Error),
    /// `--sandbox required`, and a layer is not enforced on this kernel.
    NotEnforced(Box<SandboxReport>),
    /// A CPU list that does not parse (`--lane-cpus`, `--pg-cpus`, `--cpus`).
    CpuList { text: String, why: &'static str },
}

impl SandboxError {
    pub fn os(step: &'static str) -> impl FnOnce(std::io::Error) -> SandboxError {
        move |source| SandboxError::Os { step, source }
    }
}

impl std::fmt::Display for SandboxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SandboxError::Os { step, source } => write!(f, "{step}: {source}"),
            SandboxError::Landlock(e) => write!(f, "landlock: {e}"),
            SandboxError::LandlockPath { dir, source } => {
                write!(f, "landlock: spool directory {}: {source}", dir.display())
            }
            SandboxError::SeccompCompile { syscall: Some(name), source } => {
                write!(f, "seccomp rule for {name}: {source}")
            }
            SandboxError::SeccompCompile { syscall: None, source } => write!(f, "seccomp filter: {source}"),
            SandboxError::SeccompApply(e) => write!(f, "seccomp: {e}"),
            SandboxError::NotEnforced(report) => {
                let report = report.status_lines().trim_end().replace('\n', ", ");
                write!(f, "--sandbox required, but not everything is enforced: {report}")
            }
            SandboxError::CpuList { text, why } => write!(f, "CPU list {text:?}: {why}"),
        }
    }
}

impl std::error::Error for SandboxError {}
