//! Configuration: parsed once into a raw key/value map, validated into a
//! typed [`Target`] that the rest of the code accepts (STYLE S24).
//!
//! The file is the flat subset of TOML the packaged
//! `/etc/ransomeye/applianced.toml` uses: `key = "string"` or
//! `key = integer`, `#` comments. Unknown keys are errors, so a typo never
//! silently falls back to a default.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::base::limits::{ADMIN_ROLE, DATABASE_NAME};
use crate::control::cluster::{ClusterError, Embedded};
use crate::pg::{ConnectParams, Connection, PgError};

/// Keys the file may contain, with their meaning (documented in the README).
pub const KEYS: &[(&str, &str)] = &[
    ("state_dir", "embedded mode: the state directory `applianced init` created"),
    ("postgres_socket", "external mode: full path of the server's Unix socket (.s.PGSQL.<port>)"),
    ("postgres_admin_role", "external mode: the role selftest and init connect as (default ransomeye_admin)"),
    ("postgres_database", "external mode: the database (default ransomeye)"),
    ("postgres_password_file", "external mode: file holding the admin role's password, for SCRAM-SHA-256"),
];

/// Where the database is.
#[derive(Clone, Debug)]
pub enum Target {
    Embedded(Embedded),
    External { params: ConnectParams },
}

#[derive(Debug)]
pub enum ConfigError {
    Read { path: PathBuf, source: std::io::Error },
    Syntax { line: usize, text: String },
    UnknownKey(String),
    Missing(&'static str),
    Cluster(ClusterError),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Read { path, source } => write!(f, "config {}: {source}", path.display()),
            ConfigError::Syntax { line, text } => {
                write!(f, "config line {line}: cannot parse {text:?}")
            }
            ConfigError::UnknownKey(key) => write!(f, "config: unknown key {key:?}"),
            ConfigError::Missing(what) => write!(f, "config: {what}"),
            ConfigError::Cluster(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parse the config file's pairs, refusing any key not in [`KEYS`].
pub fn parse_raw(text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let raw = crate::codec::pairs::parse_pairs(text).map_err(|e| ConfigError::Syntax { line: e.line, text: e.text })?;
    if let Some(key) = raw.keys().find(|key| !KEYS.iter().any(|(k, _)| k == key)) {
        return Err(ConfigError::UnknownKey(key.clone()));
    }
    Ok(raw)
}

/// Load and validate a config file.
pub fn load(path: &Path) -> Result<Target, ConfigError> {
    let text = fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    let raw = parse_raw(&text)?;
    if let Some(dir) = raw.get("state_dir") {
        if raw.contains_key("postgres_socket") {
            return Err(ConfigError::Missing("state_dir and postgres_socket are exclusive"));
        }
        return Embedded::load(Path::new(dir)).map(Target::Embedded).map_err(ConfigError::Cluster);
    }
    let socket = raw.get("postgres_socket").ok_or(ConfigError::Missing("set state_dir or postgres_socket"))?;
    let password = match raw.get("postgres_password_file") {
        Some(file) => Some(
            fs::read_to_string(file)
                .map_err(|source| ConfigError::Read { path: PathBuf::from(file), source })?
                .trim_end()
                .to_string(),
        ),
        None => None,
    };
    Ok(Target::External {
        params: ConnectParams {
            socket_path: PathBuf::from(socket),
            user: raw.get("postgres_admin_role").cloned().unwrap_or_else(|| ADMIN_ROLE.to_string()),
            database: raw.get("postgres_database").cloned().unwrap_or_else(|| DATABASE_NAME.to_string()),
            password,
            application_name: "applianced".to_string(),
        },
    })
}

impl Target {
    /// Connect to the application database as the admin role.
    pub fn connect_admin(&self) -> Result<Connection, PgError> {
        match self {
            Target::Embedded(embedded) => embedded.connect_admin(DATABASE_NAME),
            Target::External { params } => Connection::connect(params),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flat_toml_and_rejects_unknown_keys() {
        let raw = parse_raw("# c\n[appliance]\nstate_dir = \"/var/lib/x\" # note\n").unwrap();
        assert_eq!(raw.get("state_dir").map(String::as_str), Some("/var/lib/x"));
        assert!(matches!(parse_raw("stat_dir = \"x\""), Err(ConfigError::UnknownKey(_))));
        assert!(matches!(parse_raw("state_dir = x"), Err(ConfigError::Syntax { .. })));
    }
}
