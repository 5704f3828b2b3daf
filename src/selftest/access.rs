//! Who can reach the database, checked on the live host: each running
//! lane's OS identity and what `pg_ident.conf` lets that identity become;
//! the database socket's owner, group and mode; the connection slots and
//! how long an unauthenticated connection may hold one; the bound on
//! PostgreSQL's log.
//!
//! Expected values come from the matrix (`Role`), the accounts module and
//! `limits`; the observed ones from `/proc`, `stat` and PostgreSQL's own
//! views of its configuration files (`pg_ident_file_mappings`).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::Check;
use super::catalog::{rows, text};
use crate::base::limits::{
    ADMIN_ROLE, PG_AUTHENTICATION_TIMEOUT_S, PG_CONNECTIONS_MAX, PG_SUPERUSER_RESERVED_CONNECTIONS,
};
use crate::base::sys;
use crate::control::accounts::DB_GROUP;
use crate::control::cluster::{Embedded, IDENT_MAP};
use crate::control::launch::read_status;
use crate::control::supervisor::RunningAppliance;
use crate::model::matrix::{Module, Role};
use crate::pg::Connection;

/// OS user → the roles pg_ident.conf lets it log in as (as PostgreSQL loaded it).
fn ident_mappings(conn: &mut Connection, name: &'static str) -> Result<BTreeMap<String, Vec<String>>, Check> {
    let found = rows(
        conn,
        name,
        &format!(
            "SELECT sys_name, pg_username, coalesce(error, '') FROM pg_ident_file_mappings \
             WHERE map_name = '{IDENT_MAP}' ORDER BY line_number"
        ),
    )?;
    let mut mappings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in &found {
        if !text(row, 2).is_empty() {
            return Err(Check::failed(name, format!("pg_ident.conf: {}", text(row, 2))));
        }
        mappings.entry(text(row, 0).to_string()).or_default().push(text(row, 1).to_string());
    }
    Ok(mappings)
}

fn proc_field(status: &str, key: &str) -> String {
    status.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim().to_string()).unwrap_or_default()
}

/// How one running lane is kept from every role but its own, or why it is not.
fn lane_protection(
    module: Module,
    embedded: &Embedded,
    mappings: &BTreeMap<String, Vec<String>>,
    failures: &mut Vec<String>,
) -> String {
    let status = read_status(&embedded.dir, module);
    let pid = status.get("pid").cloned().unwrap_or_default();
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let uid: u32 = proc_field(&proc_status, "Uid:").split_whitespace().next().and_then(|u| u.parse().ok()).unwrap_or(0);
    let name = module.name();
    for key in ["CapEff:", "CapPrm:"] {
        if proc_field(&proc_status, key) != "0000000000000000" {
            failures
                .push(format!("{name} lane (pid {pid}) holds capabilities: {key} {}", proc_field(&proc_status, key)));
        }
    }
    let own = Role::Writer(module).name();
    let account = sys::account_by_uid(uid).ok().flatten().map(|a| a.name).unwrap_or_else(|| format!("uid {uid}"));
    let roles = mappings.get(&account).cloned().unwrap_or_default();
    let claims_own = status.get("identity").is_some_and(|i| i.starts_with("own:"));
    // A lane of its own identity must not be root or the server account. A
    // lane that shares the supervisor's identity (no right to switch uids)
    // is whatever that is: its sandbox is then its only protection.
    if claims_own && (uid == 0 || uid == embedded.server.uid) {
        failures.push(format!("{name} lane (pid {pid}) runs as uid {uid}: root or the PostgreSQL server account"));
    }
    let own_identity = claims_own && roles == [own];
    let connect_denied =
        status.get("connect_denied").map(String::as_str) == Some("true") && proc_field(&proc_status, "Seccomp:") == "2";
    let mut ways = Vec::new();
    if own_identity {
        ways.push(format!("own identity, pg_ident maps it to {own} only"));
    }
    if connect_denied {
        ways.push("no new connection (seccomp)".to_string());
    }
    if !claims_own {
        ways.push("identity shared with the supervisor".to_string());
        if !connect_denied {
            ways.clear();
        }
    }
    if ways.is_empty() {
        failures.push(format!(
            "{name} lane (pid {pid}, {account}) could reach other roles: pg_ident maps {account} to [{}] and its sandbox does not deny connect",
            roles.join(", ")
        ));
        return format!("{name}: UNPROTECTED");
    }
    format!("{name}: {} ({account})", ways.join(" and "))
}

/// Each lane: its uid (not root, not the server account), no capability,
/// and at least one of: its own identity that pg_ident.conf maps to its
/// writer role only, or a sandbox without `socket` and `connect`. Also,
/// running or not: every lane identity present in pg_ident.conf maps to
/// exactly its writer role, and Core's identity to the reader role only.
pub fn lane_identities(embedded: &Embedded, conn: &mut Connection) -> Check {
    const NAME: &str = "lane identities";
    let mappings = match ident_mappings(conn, NAME) {
        Ok(mappings) => mappings,
        Err(check) => return check,
    };
    let mut failures = Vec::new();
    for module in Module::ALL {
        if let Some(roles) = mappings.get(module.lane_identity()) {
            if roles != &[Role::Writer(module).name()] {
                failures.push(format!("pg_ident maps {} to [{}]", module.lane_identity(), roles.join(", ")));
            }
        }
    }
    if let Some(roles) = mappings.get(Module::Core.os_identity()) {
        if roles != &[Role::CoreReader.name()] {
            failures.push(format!("pg_ident maps {} to [{}]", Module::Core.os_identity(), roles.join(", ")));
        }
    }
    let running = RunningAppliance::load(&embedded.dir).filter(|a| sys::process_exists(a.pid));
    let detail = match running {
        None => "appliance not running: pg_ident.conf checked only".to_string(),
        Some(_) => Module::ALL
            .into_iter()
            .map(|module| lane_protection(module, embedded, &mappings, &mut failures))
            .collect::<Vec<_>>()
            .join("; "),
    };
    Check::from_failures(NAME, detail, failures)
}

/// The socket: owned by the server account, mode 0770 with group
/// [`DB_GROUP`] (or 0700 for a cluster of one OS user), never open to
/// others. The superuser is reachable only by the operator. The slots:
/// every login role's connection limit plus the superuser's reserve fits
/// `max_connections`, and `authentication_timeout` is the appliance's.
pub fn database_access(embedded: &Embedded, conn: &mut Connection) -> Check {
    const NAME: &str = "database access";
    let mut failures = Vec::new();
    let socket = embedded.dir.socket_path(embedded.port);
    let socket_detail = match std::fs::metadata(&socket) {
        Ok(m) => {
            let mode = m.permissions().mode() & 0o777;
            let group = sys::spawn::group_by_name(DB_GROUP).ok().flatten();
            let expected = if group == Some(m.gid()) { 0o770 } else { 0o700 };
            if mode != expected || m.uid() != embedded.server.uid {
                failures.push(format!(
                    "socket {} is mode {mode:o} uid {} gid {}; expected mode {expected:o} owned by {}",
                    socket.display(),
                    m.uid(),
                    m.gid(),
                    embedded.server.name
                ));
            }
            if mode & 0o007 != 0 {
                failures.push(format!("any local user may connect() to {}", socket.display()));
            }
            let who = if expected == 0o770 {
                format!("{} and group {DB_GROUP}", embedded.server.name)
            } else {
                embedded.server.name.clone()
            };
            format!("socket mode {mode:o}: only {who} may connect()")
        }
        Err(e) => {
            failures.push(format!("socket {}: {e}", socket.display()));
            String::new()
        }
    };
    let superusers = match ident_mappings(conn, NAME) {
        Ok(m) => {
            m.into_iter().filter(|(_, roles)| roles.iter().any(|r| r == ADMIN_ROLE)).map(|(u, _)| u).collect::<Vec<_>>()
        }
        Err(check) => return check,
    };
    for user in &superusers {
        if Module::ALL.iter().any(|m| m.lane_identity() == user || m.os_identity() == user) {
            failures.push(format!("pg_ident maps {user}, a lane or module identity, to the superuser"));
        }
    }
    let settings = match rows(
        conn,
        NAME,
        "SELECT current_setting('max_connections'), current_setting('superuser_reserved_connections'), \
         extract(epoch FROM current_setting('authentication_timeout')::interval)::int, \
         (SELECT coalesce(sum(CASE WHEN rolconnlimit < 0 THEN 1000000 ELSE rolconnlimit END), 0) FROM pg_roles \
          WHERE rolcanlogin AND NOT rolsuper), \
         (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')",
    ) {
        Ok(rows) => rows,
        Err(check) => return check,
    };
    let Some(row) = settings.first() else { return Check::failed(NAME, "no settings row".into()) };
    let number = |i: usize| text(row, i).parse::<u64>().unwrap_or(u64::MAX);
    let (max, reserved, timeout, limits, in_use) = (number(0), number(1), number(2), number(3), number(4));
    if max != u64::from(PG_CONNECTIONS_MAX) || reserved != u64::from(PG_SUPERUSER_RESERVED_CONNECTIONS) {
        failures.push(format!(
            "max_connections {max} and superuser_reserved_connections {reserved}; the appliance sets {PG_CONNECTIONS_MAX} and {PG_SUPERUSER_RESERVED_CONNECTIONS}"
        ));
    }
    if limits.saturating_add(reserved) > max {
        failures.push(format!(
            "login roles may hold {limits} connections, beyond the {} slots not reserved for the superuser",
            max.saturating_sub(reserved)
        ));
    }
    if timeout > u64::from(PG_AUTHENTICATION_TIMEOUT_S) {
        failures.push(format!("authentication_timeout is {timeout} s, above {PG_AUTHENTICATION_TIMEOUT_S} s"));
    }
    Check::from_failures(
        NAME,
        format!(
            "{socket_detail}; superuser reachable by [{}]; slots {max}: {reserved} reserved for the superuser, login roles limited to {limits}, {in_use} in use; unauthenticated connections dropped after {timeout} s",
            superusers.join(", ")
        ),
        failures,
    )
}

/// PostgreSQL's log: written by its collector in files of bounded size,
/// and (while the appliance runs) pruned to a fixed count: the directory
/// stays within [`crate::base::limits::pg_log_bytes_max`].
pub fn postgresql_log(embedded: &Embedded, conn: &mut Connection) -> Check {
    const NAME: &str = "postgresql log";
    let mut failures = Vec::new();
    let found =
        match rows(conn, NAME, "SELECT current_setting('logging_collector'), current_setting('log_rotation_size')") {
            Ok(rows) => rows,
            Err(check) => return check,
        };
    let collector = found.first().map(|r| text(r, 0).to_string()).unwrap_or_default();
    if collector != "on" {
        failures
            .push(format!("logging_collector is {collector:?}: the log is not rotated (restart the cluster to apply)"));
    }
    let files = crate::control::cluster::pg_log_files(&embedded.dir).unwrap_or_default();
    let bytes: u64 = files.iter().map(|f| std::fs::metadata(f).map_or(0, |m| m.len())).sum::<u64>()
        + std::fs::metadata(embedded.dir.startup_log_file()).map_or(0, |m| m.len());
    let bound = crate::base::limits::pg_log_bytes_max();
    if bytes > bound {
        failures.push(format!("{bytes} bytes in {}, above the bound of {bound}", embedded.dir.log_dir().display()));
    }
    Check::from_failures(
        NAME,
        format!(
            "{} file(s), {bytes} bytes of at most {bound} ({} files of {} bytes kept, rotation at {})",
            files.len(),
            crate::base::limits::pg_log_files_max(),
            crate::base::limits::pg_log_file_bytes(),
            found.first().map(|r| text(r, 1)).unwrap_or("?")
        ),
        failures,
    )
}

/// Why selftest could not connect, in an operator's words where the
/// SQLSTATE says more than PostgreSQL's message.
pub fn unreachable_cause(error: &crate::pg::PgError) -> String {
    let hint = match error.sqlstate() {
        Some("53300") => format!(
            ": every connection slot is taken, the {PG_SUPERUSER_RESERVED_CONNECTIONS} reserved for the superuser too; \
             only the socket's owner and group {DB_GROUP} can connect, and a connection that does not \
             authenticate is dropped after {PG_AUTHENTICATION_TIMEOUT_S} s: look for the holder with \
             `ss -xp | grep PGSQL` as root"
        ),
        Some("57P03") => ": the cluster is starting or recovering from a crash; retry in a few seconds".to_string(),
        Some("28000") => {
            ": peer authentication refused this OS user (pg_ident.conf maps only the operator to the superuser)"
                .to_string()
        }
        _ => String::new(),
    };
    format!("{error}{hint}")
}
