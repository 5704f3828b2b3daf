//! The binding ownership matrix: which module may write and read what.
//!
//! This is the single source of truth (STYLE S5). The GRANT/REVOKE script
//! (`applianced matrix --format sql`, checked in as
//! `sql/0005_ownership_matrix.sql`), the docs table in
//! `hardening/DATA-PLANE.md` and the selftest's privilege comparison are all
//! derived from the functions here; tests fail if any of them drifts.
//!
//! Binding rules, enforced by construction below and checked by tests:
//! agents never read; DPI reads nothing; Core reads only through the
//! `core_api` views; no module reads another module's tables; nobody holds
//! UPDATE, DELETE or TRUNCATE on an event table.

use crate::base::limits::{APPLIANCE_SCHEMA, VIEW_SCHEMA};
use crate::model::schema::{EVENT_TABLES, tables_of};

pub use super::module::Module;

/// What a module may read, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadAccess {
    /// No SELECT on anything.
    Nothing,
    /// SELECT on the `core_api` views only, through a separate reader role.
    CoreViews,
}

impl Module {
    /// What the module may read ([`ReadAccess`]).
    pub fn reads(self) -> ReadAccess {
        match self {
            Module::Core => ReadAccess::CoreViews,
            Module::Dpi | Module::LinuxAgent | Module::WindowsAgent => ReadAccess::Nothing,
        }
    }
}

/// A PostgreSQL role of the appliance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// NOLOGIN owner of every schema, table, view and function.
    Owner,
    /// Partition maintenance: creates partitions ahead through a
    /// SECURITY DEFINER function; holds no table privilege.
    Maintenance,
    /// The ingest lane of one module.
    Writer(Module),
    /// Core Engine's read-only role over the views.
    CoreReader,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Owner,
        Role::Maintenance,
        Role::Writer(Module::Core),
        Role::Writer(Module::Dpi),
        Role::Writer(Module::LinuxAgent),
        Role::Writer(Module::WindowsAgent),
        Role::CoreReader,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Owner => "ransomeye_owner",
            Role::Maintenance => "ransomeye_maint",
            Role::Writer(Module::Core) => "ransomeye_core_writer",
            Role::Writer(Module::Dpi) => "ransomeye_dpi_writer",
            Role::Writer(Module::LinuxAgent) => "ransomeye_linux_agent_writer",
            Role::Writer(Module::WindowsAgent) => "ransomeye_windows_agent_writer",
            Role::CoreReader => "ransomeye_core_reader",
        }
    }

    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Whether the role may log in. The owner never does: its rights are
    /// reached only through pinned SECURITY DEFINER code, and by the
    /// maintenance role's explicit `SET ROLE` ([`Role::member_of`]).
    pub fn can_login(self) -> bool {
        match self {
            Role::Owner => false,
            Role::Maintenance | Role::Writer(_) | Role::CoreReader => true,
        }
    }

    /// The one role this role is a member of. Partition maintenance is a
    /// NOINHERIT member of the owner: retention (`DETACH ... CONCURRENTLY`,
    /// `DROP`, BRIN summarization) needs the owner and cannot run inside a
    /// SECURITY DEFINER function, so the supervisor's maintenance session
    /// runs it after `SET ROLE` to the owner instead of as a superuser.
    /// NOINHERIT keeps every privilege check of the role itself as the
    /// matrix lists it until that `SET ROLE` (sql/0008).
    pub const fn member_of(self) -> Option<Role> {
        match self {
            Role::Maintenance => Some(Role::Owner),
            Role::Owner | Role::Writer(_) | Role::CoreReader => None,
        }
    }

    /// Whether the role uses the privileges of the roles it is a member of
    /// without `SET ROLE` (PostgreSQL's INHERIT attribute).
    pub const fn inherits(self) -> bool {
        self.member_of().is_none()
    }

    /// `CONNECTION LIMIT` of the role (sql/0001; selftest compares). Their
    /// sum with the superuser's reserved slots stays within
    /// `max_connections`, so no role can take another's slots once it has
    /// authenticated: each lane holds up to `COMMIT_STREAMS_MAX` (4; 8
    /// leave room for reconnects while broken connections' backends are
    /// still exiting), maintenance 1.
    pub const fn connection_limit(self) -> u32 {
        match self {
            Role::Owner => 0,
            Role::Maintenance => 2,
            Role::Writer(_) | Role::CoreReader => 8,
        }
    }

    /// Roles that hold granted privileges (everything but the owner).
    pub fn grantees() -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(|r| *r != Role::Owner)
    }
}

const fn connection_limits_total() -> u32 {
    let mut total = 0;
    let mut index = 0;
    while index < Role::ALL.len() {
        total += Role::ALL[index].connection_limit();
        index += 1;
    }
    total
}
const _: () =
    assert!(2 * crate::base::limits::COMMIT_STREAMS_MAX as u32 <= Role::Writer(Module::Dpi).connection_limit());
const _: () = assert!(
    connection_limits_total() + crate::base::limits::PG_SUPERUSER_RESERVED_CONNECTIONS
        <= crate::base::limits::PG_CONNECTIONS_MAX
);

/// Table privileges PostgreSQL knows, in `has_table_privilege` spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Privilege {
    Select,
    Insert,
    Update,
    Delete,
    Truncate,
    References,
    Trigger,
}

impl Privilege {
    pub const ALL: [Privilege; 7] = [
        Privilege::Select,
        Privilege::Insert,
        Privilege::Update,
        Privilege::Delete,
        Privilege::Truncate,
        Privilege::References,
        Privilege::Trigger,
    ];

    pub fn sql(self) -> &'static str {
        match self {
            Privilege::Select => "SELECT",
            Privilege::Insert => "INSERT",
            Privilege::Update => "UPDATE",
            Privilege::Delete => "DELETE",
            Privilege::Truncate => "TRUNCATE",
            Privilege::References => "REFERENCES",
            Privilege::Trigger => "TRIGGER",
        }
    }

    pub fn from_sql(text: &str) -> Option<Privilege> {
        Privilege::ALL.into_iter().find(|p| p.sql() == text)
    }
}

/// SECURITY DEFINER functions and their exact signatures (as
/// `regprocedure` prints them).
pub const FN_WATERMARK_GET: &str = "appliance.watermark_get(bigint)";
pub const FN_WATERMARK_ADVANCE: &str = "appliance.watermark_advance(bigint,bigint,bigint,bigint,bigint)";
pub const FN_ENSURE_PARTITIONS: &str = "appliance.ensure_partitions(date,integer)";
pub const FN_PARTITION_WINDOW: &str = "appliance.partition_window()";

/// Schemas of the application, in creation order.
pub fn application_schemas() -> Vec<&'static str> {
    let mut schemas: Vec<&'static str> = Module::ALL.iter().map(|m| m.schema()).collect();
    schemas.push(VIEW_SCHEMA);
    schemas.push(APPLIANCE_SCHEMA);
    schemas
}

/// Tables (parents) a role may INSERT into.
pub fn write_tables(role: Role) -> Vec<String> {
    match role {
        Role::Writer(module) => {
            let mut tables: Vec<String> = tables_of(module).map(|t| t.qualified_name()).collect();
            tables.push(module.quarantine_table());
            tables
        }
        Role::Owner | Role::Maintenance | Role::CoreReader => Vec::new(),
    }
}

/// Relations a role may SELECT from.
pub fn read_objects(role: Role) -> Vec<String> {
    match role {
        Role::CoreReader => EVENT_TABLES.iter().map(|t| t.view_name()).collect(),
        Role::Owner | Role::Maintenance | Role::Writer(_) => Vec::new(),
    }
}

/// Every (relation, privilege) a role holds. Anything else is denied.
pub fn table_privileges(role: Role) -> Vec<(String, Privilege)> {
    let mut cells: Vec<(String, Privilege)> = write_tables(role).into_iter().map(|t| (t, Privilege::Insert)).collect();
    cells.extend(read_objects(role).into_iter().map(|v| (v, Privilege::Select)));
    cells
}

/// Schemas on which a role holds USAGE. No role holds CREATE anywhere.
pub fn schema_usage(role: Role) -> Vec<&'static str> {
    match role {
        Role::Writer(module) => vec![module.schema(), APPLIANCE_SCHEMA],
        Role::CoreReader => vec![VIEW_SCHEMA],
        Role::Maintenance => vec![APPLIANCE_SCHEMA],
        Role::Owner => Vec::new(),
    }
}

/// Functions a role may EXECUTE.
pub fn function_execute(role: Role) -> Vec<&'static str> {
    match role {
        Role::Writer(_) => vec![FN_WATERMARK_GET, FN_WATERMARK_ADVANCE, FN_PARTITION_WINDOW],
        Role::Maintenance => vec![FN_ENSURE_PARTITIONS],
        Role::Owner | Role::CoreReader => Vec::new(),
    }
}

/// The human-readable READ method of a module.
pub fn read_method(module: Module) -> &'static str {
    match module.reads() {
        ReadAccess::CoreViews => {
            "SELECT on core_api views only, as ransomeye_core_reader (views owned by ransomeye_owner; no privilege on any base table)"
        }
        ReadAccess::Nothing => {
            "none: no SELECT anywhere; its lane learns its own producers' watermark only as the return value of appliance.watermark_get()"
        }
    }
}

/// Roles that act for a module: its writer, and for Core also the reader.
pub fn module_roles(module: Module) -> Vec<Role> {
    match module.reads() {
        ReadAccess::CoreViews => vec![Role::Writer(module), Role::CoreReader],
        ReadAccess::Nothing => vec![Role::Writer(module)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_rules_hold() {
        for module in Module::ALL {
            let writer = Role::Writer(module);
            // Writers never read.
            assert!(read_objects(writer).is_empty(), "{module:?} writer reads");
            // Writers write only their own schema.
            for table in write_tables(writer) {
                assert!(table.starts_with(&format!("{}.", module.schema())), "{table}");
            }
        }
        // Only Core reads, and only views.
        for view in read_objects(Role::CoreReader) {
            assert!(view.starts_with("core_api."), "{view}");
        }
        // Nobody may UPDATE, DELETE or TRUNCATE anything.
        for role in Role::ALL {
            for (_, privilege) in table_privileges(role) {
                assert!(matches!(privilege, Privilege::Insert | Privilege::Select));
            }
        }
    }
}
