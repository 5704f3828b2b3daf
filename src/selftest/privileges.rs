//! Privilege checks: the live catalog must equal the ownership matrix
//! exactly, for every grantee role and PUBLIC, on every relation (tables,
//! each partition, views, sequences), column, schema, function and the
//! database. Expected cells come from [`crate::model::matrix`]; the catalog side
//! uses `has_*_privilege` (effective rights, including anything inherited
//! through role membership) and `aclexplode` for PUBLIC.

use std::collections::BTreeSet;

use super::Check;
use super::catalog::{rows, sql_list, text};
use crate::base::limits::{META_SCHEMA, VIEW_SCHEMA};
use crate::model::matrix;
use crate::model::matrix::{Privilege, Role, application_schemas, function_execute, schema_usage};
use crate::pg::Connection;

fn grantee_list() -> String {
    sql_list(Role::grantees().map(Role::name))
}

fn all_role_list() -> String {
    sql_list(Role::ALL.into_iter().map(Role::name))
}

fn schema_list() -> String {
    sql_list(application_schemas())
}

/// Compare two sets of cells; every difference is one failure line.
fn compare(expected: &BTreeSet<String>, actual: &BTreeSet<String>) -> Vec<String> {
    let mut failures: Vec<String> =
        actual.difference(expected).map(|cell| format!("unexpected privilege: {cell}")).collect();
    failures.extend(expected.difference(actual).map(|cell| format!("missing privilege: {cell}")));
    failures
}

fn collect(found: &[crate::pg::Row], columns: usize) -> BTreeSet<String> {
    found.iter().map(|r| (0..columns).map(|i| text(r, i)).collect::<Vec<_>>().join(" ")).collect()
}

pub fn role_attributes(conn: &mut Connection) -> Check {
    const NAME: &str = "role attributes";
    let sql = format!(
        "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication, rolcanlogin,
                rolinherit, rolconnlimit
         FROM pg_roles WHERE rolname IN ({})",
        all_role_list()
    );
    let found = match rows(conn, NAME, &sql) {
        Ok(rows) => rows,
        Err(check) => return check,
    };
    let mut failures = Vec::new();
    for role in Role::ALL {
        let Some(row) = found.iter().find(|r| text(r, 0) == role.name()) else {
            failures.push(format!("role {} does not exist", role.name()));
            continue;
        };
        for (index, attribute) in
            [(1, "SUPERUSER"), (2, "CREATEROLE"), (3, "CREATEDB"), (4, "BYPASSRLS"), (5, "REPLICATION")]
        {
            if text(row, index) != "f" {
                failures.push(format!("{} has {attribute}", role.name()));
            }
        }
        let flag = |index: usize| text(row, index) == "t";
        if flag(6) != role.can_login() {
            failures.push(format!("{} LOGIN is {}, matrix says {}", role.name(), flag(6), role.can_login()));
        }
        if flag(7) != role.inherits() {
            failures.push(format!("{} INHERIT is {}, matrix says {}", role.name(), flag(7), role.inherits()));
        }
        if text(row, 8) != role.connection_limit().to_string() {
            failures.push(format!(
                "{} CONNECTION LIMIT is {}, matrix says {}",
                role.name(),
                text(row, 8),
                role.connection_limit()
            ));
        }
    }
    // Memberships exactly as the matrix lists them: any other (including
    // pg_read_all_data and friends) would add privileges it does not list.
    let members = format!(
        "SELECT m.rolname, r.rolname FROM pg_auth_members a JOIN pg_roles m ON m.oid = a.member JOIN pg_roles r ON r.oid = a.roleid
         WHERE m.rolname IN ({0}) OR r.rolname IN ({0})",
        all_role_list()
    );
    let expected: Vec<(String, String)> = Role::ALL
        .into_iter()
        .filter_map(|r| r.member_of().map(|of| (r.name().to_string(), of.name().to_string())))
        .collect();
    match rows(conn, NAME, &members) {
        Ok(found) => {
            let found: Vec<(String, String)> =
                found.iter().map(|r| (text(r, 0).to_string(), text(r, 1).to_string())).collect();
            for (member, of) in &found {
                if !expected.contains(&(member.clone(), of.clone())) {
                    failures.push(format!("{member} is a member of {of}, which the matrix does not list"));
                }
            }
            for (member, of) in &expected {
                if !found.contains(&(member.clone(), of.clone())) {
                    failures.push(format!("{member} is not a member of {of}, as the matrix says"));
                }
            }
        }
        Err(check) => return check,
    }
    let memberships: Vec<String> = expected.iter().map(|(m, of)| format!("{m} NOINHERIT in {of}")).collect();
    Check::from_failures(
        NAME,
        format!(
            "{} roles: none superuser/createrole/createdb/bypassrls/replication, owner NOLOGIN, connection limits as the matrix; memberships: {}",
            Role::ALL.len(),
            memberships.join(", ")
        ),
        failures,
    )
}

pub fn ownership(conn: &mut Connection) -> Check {
    const NAME: &str = "object ownership";
    let owner = Role::Owner.name();
    let sql = format!(
        "SELECT 'schema ' || nspname, pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname IN ({s})
         UNION ALL SELECT 'relation ' || n.nspname || '.' || c.relname, pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ({s})
         UNION ALL SELECT 'function ' || p.oid::regprocedure::text, pg_get_userbyid(p.proowner) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname IN ({s})",
        s = schema_list()
    );
    let found = match rows(conn, NAME, &sql) {
        Ok(rows) => rows,
        Err(check) => return check,
    };
    let failures = found
        .iter()
        .filter(|r| text(r, 1) != owner)
        .map(|r| format!("{} is owned by {}", text(r, 0), text(r, 1)))
        .collect();
    Check::from_failures(NAME, format!("{} schemas, relations and functions owned by {owner}", found.len()), failures)
}

pub fn table_privileges(conn: &mut Connection) -> Check {
    const NAME: &str = "table privileges";
    let privileges = Privilege::ALL.iter().map(|p| format!("('{}')", p.sql())).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "SELECT r.rolname, n.nspname || '.' || c.relname, p.priv
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         CROSS JOIN (VALUES {privileges}) p(priv) CROSS JOIN pg_roles r
         WHERE n.nspname IN ({s}) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND r.rolname IN ({g})
           AND has_table_privilege(r.oid, c.oid, p.priv)
         UNION ALL
         SELECT 'PUBLIC', n.nspname || '.' || c.relname, a.privilege_type
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
         WHERE n.nspname IN ({s}) AND a.grantee = 0",
        s = schema_list(),
        g = grantee_list()
    );
    let found = match rows(conn, NAME, &sql) {
        Ok(rows) => rows,
        Err(check) => return check,
    };
    let relations = match rows(
        conn,
        NAME,
        &format!(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ({}) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')",
            schema_list()
        ),
    ) {
        Ok(rows) => rows.first().map(|r| text(r, 0).to_string()).unwrap_or_default(),
        Err(check) => return check,
    };
    let expected: BTreeSet<String> = Role::grantees()
        .flat_map(|role| {
            matrix::table_privileges(role).into_iter().map(move |(rel, p)| format!("{} {rel} {}", role.name(), p.sql()))
        })
        .collect();
    let failures = compare(&expected, &collect(&found, 3));
    let cells = Role::grantees().count() + 1;
    Check::from_failures(
        NAME,
        format!(
            "{relations} relations x {cells} grantees incl. PUBLIC x {} privileges: {} granted cells, all as the matrix says",
            Privilege::ALL.len(),
            expected.len()
        ),
        failures,
    )
}

pub fn column_privileges(conn: &mut Connection) -> Check {
    const NAME: &str = "column privileges";
    // Column-level ACLs are never used by the matrix: any is drift.
    let sql = format!(
        "SELECT 'column ACL', n.nspname || '.' || c.relname || '.' || a.attname, a.attacl::text
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname IN ({s}) AND a.attacl IS NOT NULL",
        s = schema_list()
    );
    let acl = match rows(conn, NAME, &sql) {
        Ok(rows) => rows,
        Err(check) => return check,
    };
    let mut failures: Vec<String> =
        acl.iter().map(|r| format!("column-level grant on {}: {}", text(r, 1), text(r, 2))).collect();
    // Effective column rights on every non-leaf relation equal the table-level cells.
    let sql = format!(
        "SELECT r.rolname, n.nspname || '.' || c.relname, p.priv, count(*)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         CROSS JOIN (VALUES ('SELECT'), ('INSERT'), ('UPDATE'), ('REFERENCES')) p(priv) CROSS JOIN pg_roles r
         WHERE n.nspname IN ({s}) AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition AND r.rolname IN ({g})
           AND has_column_privilege(r.oid, c.oid, a.attnum, p.priv)
         GROUP BY 1, 2, 3",
        s = schema_list(),
        g = grantee_list()
    );
    let found = match rows(conn, NAME, &sql) {
        Ok(rows) => rows,
        Err(check) => return check,
    };
    let expected: BTreeSet<String> = Role::grantees()
        .flat_map(|role| {
            matrix::table_privileges(role).into_iter().map(move |(rel, p)| format!("{} {rel} {}", role.name(), p.sql()))
        })
        .collect();
    failures.extend(compare(&expected, &collect(&found, 3)));
    Check::from_failures(NAME, "no column-level ACLs; effective column rights equal the table cells".into(), failures)
}

pub fn schema_privileges(conn: &mut Connection) -> Check {
    const NAME: &str = "schema privileges";
    let sql = format!(
        "SELECT r.rolname, n.nspname, p.priv FROM pg_namespace n CROSS JOIN (VALUES ('USAGE'), ('CREATE')) p(priv) CROSS JOIN pg_roles r
         WHERE n.nspname IN ({s}, 'public', '{META_SCHEMA}') AND r.rolname IN ({g}) AND has_schema_privilege(r.oid, n.oid, p.priv)
         UNION ALL
         SELECT 'PUBLIC', n.nspname, a.privilege_type FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
         WHERE n.nspname IN ({s}, 'public', '{META_SCHEMA}') AND a.grantee = 0",
        s = schema_list(),
        g = grantee_list()
    );
    let found = match rows(conn, NAME, &sql) {
        Ok(rows) => rows,
        Err(check) => return check,
    };
    let expected: BTreeSet<String> = Role::grantees()
        .flat_map(|role| schema_usage(role).into_iter().map(move |s| format!("{} {s} USAGE", role.name())))
        .collect();
    let failures = compare(&expected, &collect(&found, 3));
    Check::from_failures(
        NAME,
        format!("USAGE only as the matrix says (Core reader: {VIEW_SCHEMA} only); CREATE for nobody; PUBLIC nothing"),
        failures,
    )
}

pub fn function_privileges(conn: &mut Connection) -> Check {
    const NAME: &str = "function privileges";
    let sql = format!(
        "SELECT r.rolname, p.oid::regprocedure::text, 'EXECUTE' FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace CROSS JOIN pg_roles r
         WHERE n.nspname IN ({s}, '{META_SCHEMA}') AND r.rolname IN ({g}) AND has_function_privilege(r.oid, p.oid, 'EXECUTE')
         UNION ALL
         SELECT 'PUBLIC', p.oid::regprocedure::text, a.privilege_type FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace,
                aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
         WHERE n.nspname IN ({s}, '{META_SCHEMA}') AND a.grantee = 0
         UNION ALL
         SELECT 'SECURITY DEFINER without pinned search_path', p.oid::regprocedure::text, coalesce(array_to_string(p.proconfig, ';'), '')
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname IN ({s}, '{META_SCHEMA}') AND p.prosecdef
           AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)",
        s = schema_list(),
        g = grantee_list()
    );
    let found = match rows(conn, NAME, &sql) {
        Ok(rows) => rows,
        Err(check) => return check,
    };
    let expected: BTreeSet<String> = Role::grantees()
        .flat_map(|role| function_execute(role).into_iter().map(move |f| format!("{} {f} EXECUTE", role.name())))
        .collect();
    let failures = compare(&expected, &collect(&found, 3));
    Check::from_failures(NAME, "EXECUTE only as the matrix says; PUBLIC nothing; every SECURITY DEFINER function pins search_path=pg_catalog, pg_temp".into(), failures)
}

pub fn database_privileges(conn: &mut Connection) -> Check {
    const NAME: &str = "database privileges";
    let sql = format!(
        "SELECT r.rolname, 'database', p.priv FROM pg_database d CROSS JOIN (VALUES ('CONNECT'), ('CREATE'), ('TEMPORARY')) p(priv) CROSS JOIN pg_roles r
         WHERE d.datname = current_database() AND r.rolname IN ({g}) AND has_database_privilege(r.oid, d.oid, p.priv)
         UNION ALL
         SELECT 'PUBLIC', 'database', a.privilege_type FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
         WHERE d.datname = current_database() AND a.grantee = 0",
        g = grantee_list()
    );
    let found = match rows(conn, NAME, &sql) {
        Ok(rows) => rows,
        Err(check) => return check,
    };
    let expected: BTreeSet<String> =
        Role::grantees().filter(|r| r.can_login()).map(|role| format!("{} database CONNECT", role.name())).collect();
    let failures = compare(&expected, &collect(&found, 3));
    Check::from_failures(NAME, "CONNECT for login roles only; no CREATE or TEMP; PUBLIC nothing".into(), failures)
}
