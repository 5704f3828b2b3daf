//! `applianced init`: create (or re-check) the embedded cluster or an
//! external database, apply the migrations, create partitions ahead.

use std::path::Path;

use crate::base::limits::DATABASE_NAME;
use crate::control::cluster::{self, Embedded, InitOptions};
use crate::control::config::Target;
use crate::control::error::AppError;
use crate::control::migrate;

/// `applianced init`: create or update the embedded cluster, apply
/// migrations, create partitions ahead.
pub fn init(state_dir: &Path, pg_bin_dir: Option<&Path>, days_ahead: u32) -> Result<Embedded, AppError> {
    let embedded = cluster::create_and_start(&InitOptions { state_dir, pg_bin_dir, port: cluster::DEFAULT_PORT })?;
    println!("cluster: running, socket {}", embedded.dir.socket_path(embedded.port).display());
    let mut conn = embedded
        .connect_admin(DATABASE_NAME)
        .map_err(|source| AppError::Pg { step: "connect to the appliance database", source })?;
    migrate_database(&mut conn, days_ahead)?;
    Ok(embedded)
}

/// `applianced init --config FILE` for an external PostgreSQL: the database
/// must exist and the configured role must be allowed to create roles,
/// schemas and tables (a superuser, as for the embedded cluster).
pub fn init_external(config: &Path, days_ahead: u32) -> Result<(), AppError> {
    let target = crate::control::config::load(config).map_err(AppError::Config)?;
    if let Target::Embedded(embedded) = &target {
        return init(&embedded.dir.root, Some(&embedded.pg_bin_dir), days_ahead).map(|_| ());
    }
    let mut conn =
        target.connect_admin().map_err(|source| AppError::Pg { step: "connect to the external database", source })?;
    migrate_database(&mut conn, days_ahead)
}

fn migrate_database(conn: &mut crate::pg::Connection, days_ahead: u32) -> Result<(), AppError> {
    let applied = migrate::apply(conn).map_err(AppError::Migrate)?;
    println!("schema: version {} ({} migration(s) applied now)", migrate::latest_version(), applied.len());
    // Yesterday too, so a host whose clock just crossed midnight still has a window.
    let created = conn
        .query_value(&format!(
            "SELECT appliance.ensure_partitions((now() AT TIME ZONE 'UTC')::date - 1, {})",
            days_ahead + 2
        ))
        .map_err(|source| AppError::Pg { step: "create partitions ahead", source })?;
    println!("partitions: {created} daily partition(s) created, horizon today+{days_ahead} days (UTC)");
    Ok(())
}
