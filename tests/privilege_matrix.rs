//! Behavioural proof of the ownership matrix: every (role, relation,
//! privilege) statement that the matrix denies fails with SQLSTATE 42501,
//! and every one it allows succeeds inside a rolled-back transaction. Also
//! schemas (CREATE), the database (TEMP), functions (EXECUTE), role
//! switching, and the owner's NOLOGIN.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use applianced::model::matrix::{self, Privilege, Role};
use applianced::pg::Connection;
use common::TestCluster;

struct Relation {
    name: String,
    relkind: String,
    first_column: String,
}

fn relations(admin: &mut Connection) -> Vec<Relation> {
    let schemas: Vec<String> = matrix::application_schemas().iter().map(|s| format!("'{s}'")).collect();
    let sql = format!(
        "SELECT n.nspname || '.' || c.relname, c.relkind, (SELECT attname FROM pg_attribute WHERE attrelid = c.oid AND attnum = 1)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname IN ({}, 'ransomeye_meta') AND c.relkind IN ('r', 'p', 'v') ORDER BY 1",
        schemas.join(", ")
    );
    admin
        .simple_query(&sql)
        .unwrap()
        .into_iter()
        .map(|r| Relation {
            name: r[0].clone().unwrap(),
            relkind: r[1].clone().unwrap(),
            first_column: r[2].clone().unwrap(),
        })
        .collect()
}

/// The minimal statement that needs exactly `privilege` on `rel`, or None
/// where the privilege can only be exercised by a role that may create
/// objects (REFERENCES needs CREATE somewhere; no application role has it),
/// in which case the catalog check in selftest covers it.
fn statement(rel: &Relation, privilege: Privilege) -> Option<String> {
    let (name, col) = (&rel.name, &rel.first_column);
    let view = rel.relkind == "v";
    match privilege {
        Privilege::Select => Some(format!("SELECT 1 FROM {name} LIMIT 0")),
        Privilege::Insert => Some(format!("INSERT INTO {name} ({col}) SELECT NULL WHERE false")),
        Privilege::Update => Some(format!("UPDATE {name} SET {col} = NULL WHERE false")),
        Privilege::Delete => Some(format!("DELETE FROM {name} WHERE false")),
        // TRUNCATE of a view is rejected by relkind (42809) before privileges.
        Privilege::Truncate if view => None,
        Privilege::Truncate => Some(format!("TRUNCATE {name}")),
        Privilege::References => None,
        Privilege::Trigger => Some(format!(
            "CREATE TRIGGER matrix_probe {} ON {name} FOR EACH ROW EXECUTE FUNCTION pg_catalog.suppress_redundant_updates_trigger()",
            if view { "INSTEAD OF INSERT" } else { "BEFORE INSERT" }
        )),
    }
}

/// Run `sql` in a transaction that is always rolled back; return its SQLSTATE on error.
fn probe(conn: &mut Connection, sql: &str) -> Result<(), String> {
    let result = conn.execute(&format!("BEGIN; {sql}"));
    conn.execute("ROLLBACK").expect("rollback");
    match result {
        Ok(()) => Ok(()),
        Err(e) => Err(e.sqlstate().map(str::to_string).unwrap_or_else(|| e.to_string())),
    }
}

#[test]
fn every_table_cell_is_enforced_by_postgresql() {
    let cluster = TestCluster::start();
    let rels = relations(&mut cluster.admin());
    assert!(rels.len() > 200, "expected every partition to be probed, got {}", rels.len());
    let mut checked = 0usize;
    let mut wrong = Vec::new();
    for role in Role::grantees() {
        let allowed = matrix::table_privileges(role);
        let mut conn = cluster.connect(role.name());
        for rel in &rels {
            for privilege in Privilege::ALL {
                let Some(sql) = statement(rel, privilege) else {
                    continue;
                };
                let expect_ok = allowed.iter().any(|(r, p)| *r == rel.name && *p == privilege);
                let outcome = probe(&mut conn, &sql);
                checked += 1;
                match (&outcome, expect_ok) {
                    (Ok(()), true) => {}
                    (Err(state), false) if state == "42501" => {}
                    _ => wrong.push(format!("{} {} {}: {outcome:?}", role.name(), privilege.sql(), rel.name)),
                }
            }
        }
    }
    println!("checked {checked} (role, relation, privilege) statements");
    assert!(wrong.is_empty(), "{} cells differ from the matrix:\n{}", wrong.len(), wrong.join("\n"));
}

#[test]
fn schemas_functions_database_and_roles_are_enforced() {
    let cluster = TestCluster::start();
    let functions: Vec<String> = cluster
        .admin()
        .simple_query(
            "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname IN ('appliance', 'core', 'dpi', 'linux_agent', 'windows_agent', 'core_api') ORDER BY 1",
        )
        .unwrap()
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    assert!(functions.len() >= 5);
    let mut wrong = Vec::new();
    for role in Role::grantees() {
        let mut conn = cluster.connect(role.name());
        for schema in matrix::application_schemas().into_iter().chain(["public", "ransomeye_meta"]) {
            let outcome = probe(&mut conn, &format!("CREATE TABLE {schema}.matrix_probe (x int)"));
            if outcome != Err("42501".into()) {
                wrong.push(format!("{} CREATE in {schema}: {outcome:?}", role.name()));
            }
        }
        let outcome = probe(&mut conn, "CREATE TEMP TABLE matrix_probe (x int)");
        if outcome != Err("42501".into()) {
            wrong.push(format!("{} TEMP: {outcome:?}", role.name()));
        }
        // SET ROLE works exactly where the matrix makes a role a member
        // (maintenance -> owner, for retention), nowhere else.
        for target in Role::ALL.into_iter().filter(|r| *r != role) {
            let outcome = probe(&mut conn, &format!("SET ROLE {}", target.name()));
            let expected = if role.member_of() == Some(target) { Ok(()) } else { Err("42501".into()) };
            if outcome != expected {
                wrong.push(format!("{} SET ROLE {}: {outcome:?}", role.name(), target.name()));
            }
            let _ = conn.execute("RESET ROLE");
        }
        let allowed = matrix::function_execute(role);
        for function in &functions {
            let call = match function.as_str() {
                "appliance.caller_module()" => "SELECT appliance.caller_module()".to_string(),
                "appliance.watermark_get(bigint)" => "SELECT * FROM appliance.watermark_get(1)".to_string(),
                "appliance.watermark_advance(bigint,bigint,bigint,bigint,bigint)" => {
                    "SELECT appliance.watermark_advance(1, 1, 1, 10, 10)".to_string()
                }
                "appliance.ensure_partitions(date,integer)" => {
                    "SELECT appliance.ensure_partitions(current_date, 1)".to_string()
                }
                "appliance.partition_window()" => "SELECT * FROM appliance.partition_window()".to_string(),
                "appliance.summarize_brin_nowait(regclass,integer)" => {
                    "SELECT appliance.summarize_brin_nowait(0::oid::regclass, 100)".to_string()
                }
                other => panic!("no probe for function {other}; add one"),
            };
            let outcome = probe(&mut conn, &call);
            let expect_ok = allowed.contains(&function.as_str());
            match (&outcome, expect_ok) {
                (Ok(()), true) => {}
                (Err(state), false) if state == "42501" => {}
                _ => wrong.push(format!("{} EXECUTE {function}: {outcome:?}", role.name())),
            }
        }
    }
    match Connection::connect(&cluster.params(Role::Owner.name())) {
        Err(e) => assert_eq!(e.sqlstate(), Some("28000"), "owner login: {e}"),
        Ok(_) => wrong.push("the NOLOGIN owner could log in".into()),
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn watermark_functions_only_touch_the_callers_module() {
    let cluster = TestCluster::start();
    let mut dpi = cluster.connect(Role::Writer(matrix::Module::Dpi).name());
    let mut linux = cluster.connect(Role::Writer(matrix::Module::LinuxAgent).name());
    dpi.execute("SELECT appliance.watermark_advance(7, 1, 1, 100, 100)").unwrap();
    let seen = dpi.simple_query("SELECT producer_epoch, last_seq FROM appliance.watermark_get(7)").unwrap();
    assert_eq!(seen, vec![vec![Some("1".into()), Some("100".into())]]);
    // Same producer id, other module: an independent watermark, invisible to DPI's.
    assert!(linux.simple_query("SELECT * FROM appliance.watermark_get(7)").unwrap().is_empty());
    // Gap, overlap and stale epoch are refused with their codes.
    let gap = dpi.execute("SELECT appliance.watermark_advance(7, 1, 102, 110, 9)").unwrap_err();
    assert_eq!(gap.sqlstate(), Some("RE001"));
    let overlap = dpi.execute("SELECT appliance.watermark_advance(7, 1, 50, 150, 101)").unwrap_err();
    assert_eq!(overlap.sqlstate(), Some("RE001"));
    dpi.execute("SELECT appliance.watermark_advance(7, 2, 1, 5, 5)").unwrap();
    let stale = dpi.execute("SELECT appliance.watermark_advance(7, 1, 101, 110, 10)").unwrap_err();
    assert_eq!(stale.sqlstate(), Some("RE002"));
    let ledger = cluster
        .admin()
        .query_value("SELECT count(*) FROM appliance.batch_ledger WHERE module = 'dpi' AND producer_id = 7")
        .unwrap();
    assert_eq!(ledger, "2");
}
