//! The commands' errors and the exit codes the README promises
//! ([`AppError::exit_code`]).

use crate::control::cluster::ClusterError;
use crate::control::config::ConfigError;
use crate::control::migrate::MigrateError;
use crate::pg::PgError;

#[derive(Debug)]
pub enum AppError {
    Cluster(ClusterError),
    Config(ConfigError),
    Migrate(MigrateError),
    Pg {
        step: &'static str,
        source: PgError,
    },
    SelftestFailed,
    Io {
        step: &'static str,
        source: std::io::Error,
    },
    /// The appliance refuses to proceed (socket already bound, lane failure).
    Refused(String),
    /// A command-line argument is wrong (exit 2).
    Usage(String),
}

impl AppError {
    /// Exit codes: 1 selftest failed, 2 usage, 3 cluster or OS step, 4 database, 5 config, 6 refused.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::SelftestFailed => 1,
            AppError::Usage(_) => 2,
            AppError::Cluster(_) | AppError::Io { .. } => 3,
            AppError::Refused(_) => 6,
            AppError::Migrate(_) | AppError::Pg { .. } => 4,
            AppError::Config(_) => 5,
        }
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppError::Cluster(e) => write!(f, "{e}"),
            AppError::Config(e) => write!(f, "{e}"),
            AppError::Migrate(e) => write!(f, "{e}"),
            AppError::Pg { step, source } => write!(f, "{step}: {source}"),
            AppError::SelftestFailed => write!(f, "selftest failed"),
            AppError::Io { step, source } => write!(f, "{step}: {source}"),
            AppError::Refused(why) | AppError::Usage(why) => write!(f, "{why}"),
        }
    }
}

impl From<ClusterError> for AppError {
    fn from(e: ClusterError) -> Self {
        AppError::Cluster(e)
    }
}
