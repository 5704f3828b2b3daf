//! Human and machine renderings of the ownership matrix: the markdown table
//! (`applianced matrix --format markdown`, embedded verbatim in
//! `hardening/DATA-PLANE.md`) and the JSON document (`--format json`).
//! Pure text generation, no I/O.

use serde_json::{Value, json};

use crate::model::matrix::{
    Module, Role, function_execute, module_roles, read_method, read_objects, schema_usage, write_tables,
};
use crate::model::schema::tables_of;

/// The `Module | WRITE Tables | READ Tables | READ Method` table.
pub fn render_markdown(instance: &str) -> String {
    let mut out = String::from("| Module | WRITE Tables | READ Tables | READ Method |\n|---|---|---|---|\n");
    for module in Module::ALL {
        let writes = write_tables(Role::Writer(module)).join("<br>");
        let reads: Vec<String> = module_roles(module).into_iter().flat_map(read_objects).collect();
        let reads = if reads.is_empty() { "none".to_string() } else { reads.join("<br>") };
        out.push_str(&format!(
            "| `{}` ({}; role `{}`; socket `@{}`; OS user `{}`; lane OS user `{}`) | {} | {} | {} |\n",
            module.name(),
            module.description(),
            Role::Writer(module).name(),
            module.socket_name(instance),
            module.os_identity(),
            module.lane_identity(),
            writes,
            reads,
            read_method(module),
        ));
    }
    out.push_str(&format!(
        "| appliance owner (role `{}`, NOLOGIN) | none by grant: owns every table, view and function; no session can log in as it | none | none |\n",
        Role::Owner.name()
    ));
    out.push_str(&format!(
        "| appliance partition maintenance (role `{}`, OS user of the supervisor) | none by grant: creates partitions only through `{}`; retention runs after `SET ROLE {}` (NOINHERIT member) | none | none |\n",
        Role::Maintenance.name(),
        crate::model::matrix::FN_ENSURE_PARTITIONS,
        Role::Owner.name()
    ));
    out
}

fn role_json(role: Role) -> Value {
    json!({
        "pg_role": role.name(),
        "login": role.can_login(),
        "insert": write_tables(role),
        "select": read_objects(role),
        "schema_usage": schema_usage(role),
        "execute": function_execute(role),
    })
}

/// The machine-readable matrix.
pub fn render_json(instance: &str) -> Value {
    let modules: Vec<Value> = Module::ALL
        .into_iter()
        .map(|module| {
            let write_tables: Vec<Value> = tables_of(module)
                .map(|t| {
                    json!({
                        "table": t.qualified_name(),
                        "columns": t.all_columns().map(|c| c.name).collect::<Vec<_>>(),
                    })
                })
                .chain(std::iter::once(json!({
                    "table": module.quarantine_table(),
                    "columns": crate::model::schema::QUARANTINE_COLUMNS.iter().map(|c| c.0).collect::<Vec<_>>(),
                })))
                .collect();
            let read_objects: Vec<String> = module_roles(module).into_iter().flat_map(read_objects).collect();
            json!({
                "module": module.name(),
                "description": module.description(),
                "pg_role": Role::Writer(module).name(),
                "reader_role": module_roles(module).into_iter().find(|r| *r == Role::CoreReader).map(Role::name),
                "os_identity": module.os_identity(),
                "lane_os_identity": module.lane_identity(),
                "socket": format!("@{}", module.socket_name(instance)),
                "write_tables": write_tables,
                "read_objects": read_objects,
                "read_method": read_method(module),
                "execute_functions": function_execute(Role::Writer(module)),
            })
        })
        .collect();
    json!({
        "instance": instance,
        "modules": modules,
        "roles": Role::ALL.into_iter().map(role_json).collect::<Vec<_>>(),
    })
}
