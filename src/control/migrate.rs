//! Versioned schema migrations from `sql/`, applied by `applianced init`.
//!
//! Each migration runs in its own transaction together with the insert of
//! its row in `ransomeye_meta.schema_version`, under a transaction-scoped
//! advisory lock, so two concurrent `init`s cannot both apply it. A
//! migration already applied is skipped; one whose text changed since it
//! was applied is an error (the checksum is recorded). Runs in the `init`
//! process as the bootstrap superuser.

use crate::base::limits::META_SCHEMA;
use crate::pg::{Connection, PgError};

/// A migration: its version, file name and SQL text.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. The files are compiled into the binary.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "0001_roles.sql", sql: include_str!("../../sql/0001_roles.sql") },
    Migration { version: 2, name: "0002_appliance.sql", sql: include_str!("../../sql/0002_appliance.sql") },
    Migration { version: 3, name: "0003_event_tables.sql", sql: include_str!("../../sql/0003_event_tables.sql") },
    Migration { version: 4, name: "0004_core_views.sql", sql: include_str!("../../sql/0004_core_views.sql") },
    Migration {
        version: 5,
        name: "0005_ownership_matrix.sql",
        sql: include_str!("../../sql/0005_ownership_matrix.sql"),
    },
    Migration {
        version: 6,
        name: "0006_brin_summarize_by_vacuum.sql",
        sql: include_str!("../../sql/0006_brin_summarize_by_vacuum.sql"),
    },
    Migration {
        version: 7,
        name: "0007_summarize_brin_nowait.sql",
        sql: include_str!("../../sql/0007_summarize_brin_nowait.sql"),
    },
    Migration {
        version: 8,
        name: "0008_maintenance_without_superuser.sql",
        sql: include_str!("../../sql/0008_maintenance_without_superuser.sql"),
    },
];

/// The schema version a fully migrated database has.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// FNV-1a 64 of the migration text: detects a file edited after it was
/// applied (not a security control; the file ships inside the binary).
fn checksum(sql: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in sql.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Errors of applying migrations.
#[derive(Debug)]
pub enum MigrateError {
    Pg { migration: &'static str, source: PgError },
    Changed { migration: &'static str, recorded: String, current: String },
}

impl std::fmt::Display for MigrateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MigrateError::Pg { migration, source } => write!(f, "migration {migration}: {source}"),
            MigrateError::Changed { migration, recorded, current } => write!(
                f,
                "migration {migration} was applied with checksum {recorded} but the binary carries {current}; add a new migration instead of editing an applied one"
            ),
        }
    }
}

impl std::error::Error for MigrateError {}

/// Apply every pending migration; returns the versions applied now.
pub fn apply(conn: &mut Connection) -> Result<Vec<u32>, MigrateError> {
    let bootstrap = format!(
        "CREATE SCHEMA IF NOT EXISTS {META_SCHEMA};\n\
         REVOKE ALL ON SCHEMA {META_SCHEMA} FROM PUBLIC;\n\
         CREATE TABLE IF NOT EXISTS {META_SCHEMA}.schema_version (\n\
             version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,\n\
             applied_at timestamptz NOT NULL DEFAULT clock_timestamp());"
    );
    conn.execute(&bootstrap).map_err(|source| MigrateError::Pg { migration: "bootstrap", source })?;
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        let pg = |source| MigrateError::Pg { migration: migration.name, source };
        // One transaction: lock, check, apply, record.
        conn.execute("BEGIN; SELECT pg_advisory_xact_lock(7325841)").map_err(pg)?;
        let recorded = conn
            .simple_query(&format!(
                "SELECT checksum FROM {META_SCHEMA}.schema_version WHERE version = {}",
                migration.version
            ))
            .map_err(|e| rollback(conn, pg(e)))?;
        let current = checksum(migration.sql);
        if let Some(row) = recorded.first() {
            conn.execute("ROLLBACK").map_err(pg)?;
            let recorded = row.first().cloned().flatten().unwrap_or_default();
            if recorded != current {
                return Err(MigrateError::Changed { migration: migration.name, recorded, current });
            }
            continue;
        }
        conn.execute(migration.sql).map_err(|e| rollback(conn, pg(e)))?;
        let record = format!(
            "RESET ROLE; INSERT INTO {META_SCHEMA}.schema_version (version, name, checksum) VALUES ({}, '{}', '{current}'); COMMIT",
            migration.version, migration.name
        );
        conn.execute(&record).map_err(|e| rollback(conn, pg(e)))?;
        applied.push(migration.version);
    }
    Ok(applied)
}

fn rollback(conn: &mut Connection, error: MigrateError) -> MigrateError {
    // The error being returned matters more than a failed ROLLBACK.
    let _ = conn.execute("ROLLBACK");
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_dense_and_names_match() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version as usize, index + 1);
            assert!(migration.name.starts_with(&format!("{:04}_", migration.version)));
        }
    }
}
