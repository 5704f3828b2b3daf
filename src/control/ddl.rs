//! SQL text for the event tables and the Core-facing views, rendered from
//! the layouts in [`crate::model::schema`].
//!
//! The rendered text is checked in as `sql/0003_event_tables.sql` and
//! `sql/0004_core_views.sql`; `tests/generated_sql.rs` fails when a file and
//! its rendering differ, and `tests/schema_catalog.rs` compares the live
//! catalog with the same layouts. Regenerate with
//! `applianced generate-sql --dir sql`. Pure text generation, no I/O.

use std::fmt::Write;

use crate::base::limits::APPLIANCE_SCHEMA;
use crate::model::matrix::{Module, Role};
use crate::model::schema::{Column, EVENT_TABLES, EventTable, QUARANTINE_COLUMNS};

/// BRIN `pages_per_range`: 32 pages (about 900 rows of 250 B) per summary
/// keeps time-range scans tight on the day-sized leaves while the index
/// stays a few kB per leaf.
const BRIN_PAGES_PER_RANGE: u32 = 32;

fn column_sql(column: &Column) -> String {
    let null = if column.nullable { "" } else { " NOT NULL" };
    let ty = match column.column_type.sql_name() {
        "timestamp with time zone" => "timestamptz",
        other => other,
    };
    format!("{} {ty}{null}", column.name)
}

fn render_table(sql: &mut String, table: &EventTable) {
    let name = table.qualified_name();
    let columns: Vec<String> = table.all_columns().map(column_sql).collect();
    let _ =
        writeln!(sql, "CREATE TABLE {name} (\n    {}\n) PARTITION BY RANGE (ingest_time);", columns.join(",\n    "));
    // The parents' partitioned BRIN indexes keep `autosummarize = on` as
    // applied (0003 is checksummed); migration 0006 creates the leaves'
    // indexes with it off and summarizes by vacuum and maintenance instead.
    let _ = writeln!(
        sql,
        "CREATE INDEX {t}_ingest_time_brin ON {name} USING brin (ingest_time) WITH (pages_per_range = {BRIN_PAGES_PER_RANGE}, autosummarize = on);",
        t = table.name
    );
    let _ = writeln!(
        sql,
        "CREATE INDEX {t}_event_time_brin ON {name} USING brin (event_time) WITH (pages_per_range = {BRIN_PAGES_PER_RANGE}, autosummarize = on);",
        t = table.name
    );
    if let Some(btree) = table.btree {
        let _ = writeln!(sql, "-- B-tree for the named query: {}", btree.query);
        let _ = writeln!(
            sql,
            "CREATE INDEX {t}_{c}_btree ON {name} USING btree ({cols});",
            t = table.name,
            c = btree.columns.join("_"),
            cols = btree.columns.join(", ")
        );
    }
    let _ = writeln!(
        sql,
        "INSERT INTO {APPLIANCE_SCHEMA}.event_tables (schema_name, table_name) VALUES ('{}', '{}');\n",
        table.module.schema(),
        table.name
    );
}

fn render_quarantine(sql: &mut String, module: Module) {
    let columns: Vec<String> = QUARANTINE_COLUMNS
        .iter()
        .map(|(name, ty)| {
            let ty = if *ty == "timestamp with time zone" { "timestamptz" } else { ty };
            let null = if *name == "payload" || *name == "producer_seq" { "" } else { " NOT NULL" };
            format!("{name} {ty}{null}")
        })
        .collect();
    let _ = writeln!(
        sql,
        "CREATE TABLE {} (\n    {}\n) WITH (fillfactor = 100);",
        module.quarantine_table(),
        columns.join(",\n    ")
    );
    let _ = writeln!(
        sql,
        "CREATE INDEX quarantine_received_at_brin ON {} USING brin (received_at) WITH (autosummarize = on);\n",
        module.quarantine_table()
    );
}

/// `sql/0003_event_tables.sql`.
pub fn render_event_tables_sql() -> String {
    let mut sql = String::from(
        "-- Event tables, rendered from src/model/schema.rs by `applianced generate-sql`; do not edit by hand.\n\
         -- Every table is LOGGED, append-only by privilege, range-partitioned by the appliance-assigned\n\
         -- ingest_time (one partition per UTC day) and hash-subpartitioned by producer_id.\n\
         -- Partitions are created by appliance.ensure_partitions(); there is no DEFAULT partition.\n\n",
    );
    let _ = writeln!(sql, "SET LOCAL ROLE {};\n", Role::Owner.name());
    for module in Module::ALL {
        let _ = writeln!(sql, "-- {}: {}", module.name(), module.description());
        for table in EVENT_TABLES.iter().filter(|t| t.module == module) {
            render_table(&mut sql, table);
        }
        render_quarantine(&mut sql, module);
    }
    sql
}

/// `sql/0004_core_views.sql`.
pub fn render_core_views_sql() -> String {
    let mut sql = String::from(
        "-- Core-facing views, rendered from src/model/schema.rs by `applianced generate-sql`; do not edit by hand.\n\
         -- Owned by ransomeye_owner (not security_invoker), so Core's reader role needs SELECT on the\n\
         -- view only and holds nothing on any base table. Only columns marked core_view are exposed.\n\n",
    );
    let _ = writeln!(sql, "SET LOCAL ROLE {};\n", Role::Owner.name());
    for table in EVENT_TABLES {
        let columns: Vec<&str> = table.all_columns().filter(|c| c.core_view).map(|c| c.name).collect();
        let _ = writeln!(
            sql,
            "CREATE VIEW {} WITH (security_barrier = true) AS\n    SELECT {}\n    FROM {};\n",
            table.view_name(),
            columns.join(", "),
            table.qualified_name()
        );
    }
    sql
}
