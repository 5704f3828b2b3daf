//! Catalog checks that are not privileges: schema version, durability
//! settings, table layouts and persistence, partitions ahead.

use super::Check;
use crate::base::limits::{HASH_PARTITIONS, META_SCHEMA, PARTITION_DAYS_AHEAD_REQUIRED};
use crate::control::migrate::{MIGRATIONS, latest_version};
use crate::model::matrix::application_schemas;
use crate::model::schema::EVENT_TABLES;
use crate::pg::{Connection, Row};

/// Run a query or turn its error into a failed check.
pub(super) fn rows(conn: &mut Connection, name: &'static str, sql: &str) -> Result<Vec<Row>, Check> {
    conn.simple_query(sql).map_err(|e| Check::failed(name, e.to_string()))
}

pub(super) fn text(row: &Row, index: usize) -> &str {
    row.get(index).and_then(|v| v.as_deref()).unwrap_or("")
}

/// `'a', 'b'` for an IN list of identifiers we generate ourselves.
pub(super) fn sql_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    items.into_iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ")
}

pub fn schema_version(conn: &mut Connection) -> Check {
    const NAME: &str = "schema version";
    let found =
        match rows(conn, NAME, &format!("SELECT version, name FROM {META_SCHEMA}.schema_version ORDER BY version")) {
            Ok(rows) => rows,
            Err(check) => return check,
        };
    let mut failures = Vec::new();
    let applied: Vec<(String, String)> =
        found.iter().map(|r| (text(r, 0).to_string(), text(r, 1).to_string())).collect();
    for migration in MIGRATIONS {
        if !applied.iter().any(|(v, n)| v == &migration.version.to_string() && n == migration.name) {
            failures.push(format!("migration {} is not applied", migration.name));
        }
    }
    for (version, name) in &applied {
        if !MIGRATIONS.iter().any(|m| &m.version.to_string() == version) {
            failures
                .push(format!("unknown migration {version} ({name}) is applied: database is newer than this binary"));
        }
    }
    Check::from_failures(NAME, format!("version {} ({} migrations applied)", latest_version(), applied.len()), failures)
}

pub fn durability(conn: &mut Connection) -> Check {
    const NAME: &str = "durability settings";
    let found = match rows(
        conn,
        NAME,
        "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'full_page_writes', 'data_checksums', 'synchronous_commit') ORDER BY name",
    ) {
        Ok(rows) => rows,
        Err(check) => return check,
    };
    let mut failures = Vec::new();
    let mut shown = Vec::new();
    for row in &found {
        let (name, value) = (text(row, 0), text(row, 1));
        shown.push(format!("{name}={value}"));
        let good = match name {
            "synchronous_commit" => value != "off",
            _ => value == "on",
        };
        if !good {
            failures.push(format!("{name} is {value}"));
        }
    }
    if found.len() != 4 {
        failures.push(format!("expected 4 settings, found {}", found.len()));
    }
    // A per-role or per-database override would weaken a session that selftest does not see.
    let overrides = "SELECT coalesce(r.rolname, '*') || ' in ' || coalesce(d.datname, '*') || ': ' || s.setting
         FROM pg_db_role_setting x LEFT JOIN pg_roles r ON r.oid = x.setrole LEFT JOIN pg_database d ON d.oid = x.setdatabase,
         unnest(x.setconfig) s(setting)
         WHERE s.setting ~* '^(fsync|full_page_writes|synchronous_commit)='";
    match rows(conn, NAME, overrides) {
        Ok(found) => failures.extend(found.iter().map(|r| format!("override {}", text(r, 0)))),
        Err(check) => return check,
    }
    Check::from_failures(NAME, shown.join(", "), failures)
}

/// Every event parent's columns equal the layout in src/model/schema.rs.
pub fn table_layouts(conn: &mut Connection) -> Check {
    const NAME: &str = "event table layouts";
    let found = match rows(
        conn,
        NAME,
        "SELECT n.nspname || '.' || c.relname, string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END, ', ' ORDER BY a.attnum)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN appliance.event_tables e ON e.schema_name = n.nspname AND e.table_name = c.relname
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE c.relkind = 'p' GROUP BY 1 ORDER BY 1",
    ) {
        Ok(rows) => rows,
        Err(check) => return check,
    };
    let mut failures = Vec::new();
    for table in EVENT_TABLES {
        let expected: Vec<String> = table
            .all_columns()
            .map(|c| format!("{} {}{}", c.name, c.column_type.sql_name(), if c.nullable { "" } else { " not null" }))
            .collect();
        let expected = expected.join(", ");
        match found.iter().find(|r| text(r, 0) == table.qualified_name()) {
            None => failures.push(format!("{} is missing or not partitioned", table.qualified_name())),
            Some(row) if text(row, 1) != expected => {
                failures.push(format!(
                    "{}: catalog has ({}), code has ({expected})",
                    table.qualified_name(),
                    text(row, 1)
                ));
            }
            Some(_) => {}
        }
    }
    if found.len() != EVENT_TABLES.len() {
        failures.push(format!("registry lists {} event tables, code defines {}", found.len(), EVENT_TABLES.len()));
    }
    Check::from_failures(NAME, format!("{} tables match src/model/schema.rs", EVENT_TABLES.len()), failures)
}

/// Every table is LOGGED: no application table may lose rows in a crash.
pub fn persistence(conn: &mut Connection) -> Check {
    const NAME: &str = "LOGGED tables";
    let sql = format!(
        "SELECT n.nspname || '.' || c.relname, c.relpersistence FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname IN ({}) AND c.relkind IN ('r', 'p')",
        sql_list(application_schemas())
    );
    let found = match rows(conn, NAME, &sql) {
        Ok(rows) => rows,
        Err(check) => return check,
    };
    let failures = found
        .iter()
        .filter(|r| text(r, 1) != "p")
        .map(|r| format!("{} has relpersistence '{}' (expected LOGGED)", text(r, 0), text(r, 1)))
        .collect();
    Check::from_failures(NAME, format!("{} tables, all LOGGED, none UNLOGGED or TEMP", found.len()), failures)
}

/// Partitions exist for today and the required days ahead, each with its
/// full set of hash leaves.
pub fn partitions_ahead(conn: &mut Connection) -> Check {
    const NAME: &str = "partitions ahead";
    let days = PARTITION_DAYS_AHEAD_REQUIRED;
    // Today by the appliance's clock (the one its lanes stamp ingest_time with).
    let today = crate::base::clock::date_text(crate::base::clock::today_days());
    let sql = format!(
        "WITH days AS (SELECT ('{today}'::date + g) AS d FROM generate_series(0, {days}) g)
         SELECT e.schema_name || '.' || e.table_name, to_char(days.d, 'YYYY-MM-DD'),
                (SELECT count(*) FROM pg_inherits l WHERE l.inhparent = c.oid)
         FROM appliance.event_tables e CROSS JOIN days
         LEFT JOIN pg_namespace n ON n.nspname = e.schema_name
         LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = e.table_name || '_p' || to_char(days.d, 'YYYYMMDD')
             AND EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid AND i.inhparent = format('%I.%I', e.schema_name, e.table_name)::regclass)
         ORDER BY 1, 2"
    );
    let found = match rows(conn, NAME, &sql) {
        Ok(rows) => rows,
        Err(check) => return check,
    };
    let leaves = HASH_PARTITIONS.to_string();
    let failures: Vec<String> = found
        .iter()
        .filter(|r| text(r, 2) != leaves)
        .map(|r| format!("{} has no attached partition with {leaves} leaves for {}", text(r, 0), text(r, 1)))
        .collect();
    let expected_rows = EVENT_TABLES.len() * (days as usize + 1);
    let mut failures = failures;
    if found.len() != expected_rows {
        failures.push(format!("expected {expected_rows} (table, day) pairs, found {}", found.len()));
    }
    Check::from_failures(
        NAME,
        format!("{} tables x today+{days} days, {leaves} hash leaves each", EVENT_TABLES.len()),
        failures,
    )
}

pub fn no_default_partition(conn: &mut Connection) -> Check {
    const NAME: &str = "no DEFAULT partition";
    let sql = format!(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname IN ({}) AND c.relispartition AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'",
        sql_list(application_schemas())
    );
    match rows(conn, NAME, &sql) {
        Ok(found) => Check::from_failures(
            NAME,
            "no catch-all partition; rows outside every window fail loudly".into(),
            found.iter().map(|r| format!("{} is a DEFAULT partition", text(r, 0))).collect(),
        ),
        Err(check) => check,
    }
}

/// No partition is left half-detached (DETACH ... CONCURRENTLY interrupted).
pub fn no_pending_detach(conn: &mut Connection) -> Check {
    const NAME: &str = "no pending detach";
    let sql =
        "SELECT i.inhrelid::regclass::text, i.inhparent::regclass::text FROM pg_inherits i WHERE i.inhdetachpending";
    match rows(conn, NAME, sql) {
        Ok(found) => Check::from_failures(
            NAME,
            "no partition is in the middle of DETACH CONCURRENTLY".into(),
            found.iter().map(|r| format!("{} is pending detach from {}", text(r, 0), text(r, 1))).collect(),
        ),
        Err(check) => check,
    }
}

/// Transaction-id age of every application table and of the database stays
/// far below the anti-wraparound threshold.
pub fn xid_age(conn: &mut Connection) -> Check {
    const NAME: &str = "transaction-id age";
    let sql = format!(
        "SELECT coalesce(max(age(c.relfrozenxid)), 0), (SELECT age(datfrozenxid) FROM pg_database WHERE datname = current_database()),
                current_setting('autovacuum_freeze_max_age')::bigint
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ({}) AND c.relkind = 'r'",
        sql_list(application_schemas())
    );
    let found = match rows(conn, NAME, &sql) {
        Ok(rows) => rows,
        Err(check) => return check,
    };
    let Some(row) = found.first() else { return Check::failed(NAME, "no result".into()) };
    let (tables, database, max): (f64, f64, f64) = (
        text(row, 0).parse().unwrap_or(f64::MAX),
        text(row, 1).parse().unwrap_or(f64::MAX),
        text(row, 2).parse().unwrap_or(1.0),
    );
    let limit = max * crate::base::limits::XID_AGE_FRACTION_MAX;
    let mut failures = Vec::new();
    if tables > limit || database > limit {
        failures.push(format!(
            "age {tables} (tables) / {database} (database) exceeds {limit} = {} x autovacuum_freeze_max_age",
            crate::base::limits::XID_AGE_FRACTION_MAX
        ));
    }
    Check::from_failures(NAME, format!("oldest table {tables}, database {database}, limit {limit}"), failures)
}

/// Insert-only event leaves carry almost no dead tuples.
pub fn bloat(conn: &mut Connection) -> Check {
    const NAME: &str = "dead tuples";
    let sql = format!(
        "SELECT s.schemaname || '.' || s.relname, s.n_live_tup, s.n_dead_tup FROM pg_stat_all_tables s
         WHERE s.schemaname IN ({}) AND s.n_live_tup + s.n_dead_tup >= {}
           AND s.n_dead_tup > {} * (s.n_live_tup + s.n_dead_tup)",
        sql_list(application_schemas()),
        crate::base::limits::BLOAT_CHECK_TUPLES_MIN,
        crate::base::limits::DEAD_TUPLE_FRACTION_MAX
    );
    match rows(conn, NAME, &sql) {
        Ok(found) => Check::from_failures(
            NAME,
            format!(
                "no table with at least {} tuples has more than {} % dead",
                crate::base::limits::BLOAT_CHECK_TUPLES_MIN,
                crate::base::limits::DEAD_TUPLE_FRACTION_MAX * 100.0
            ),
            found.iter().map(|r| format!("{}: {} live, {} dead", text(r, 0), text(r, 1), text(r, 2))).collect(),
        ),
        Err(check) => check,
    }
}
