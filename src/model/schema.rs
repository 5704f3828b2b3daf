//! Event table layouts: the one definition of every event table's columns.
//!
//! Consumes nothing; produces static descriptions used by the COPY encoder
//! (column lists, types), the validator (length caps), the ownership matrix
//! (which module writes which table) and the tests that compare these
//! layouts with the live PostgreSQL catalog (`tests/schema_catalog.rs`).
//! The SQL in `sql/0003_event_tables.sql` is written to match; the catalog
//! test fails on any difference in name, order, type or nullability.
//!
//! Invariant: every event table starts with [`COMMON_COLUMNS`] in that order,
//! is range-partitioned by `ingest_time` (one partition per UTC day) and
//! hash-subpartitioned by `producer_id` into [`crate::base::limits::HASH_PARTITIONS`]
//! leaves.

use crate::model::module::Module;

/// PostgreSQL column types used by event tables. Each maps to exactly one
/// binary COPY encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    Int2,
    Int4,
    Int8,
    Float4,
    Text,
    Bytea,
    Uuid,
    Inet,
    Timestamptz,
}

impl ColumnType {
    /// The name `format_type()` prints for this type in the catalog.
    pub fn sql_name(self) -> &'static str {
        match self {
            ColumnType::Int2 => "smallint",
            ColumnType::Int4 => "integer",
            ColumnType::Int8 => "bigint",
            ColumnType::Float4 => "real",
            ColumnType::Text => "text",
            ColumnType::Bytea => "bytea",
            ColumnType::Uuid => "uuid",
            ColumnType::Inet => "inet",
            ColumnType::Timestamptz => "timestamp with time zone",
        }
    }
}

/// One column of an event table.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    pub name: &'static str,
    pub column_type: ColumnType,
    pub nullable: bool,
    /// Upper bound on the encoded value in bytes (text and bytea); fixed-size
    /// types carry their own size here.
    pub value_bytes_max: u32,
    /// Whether the Core-facing view exposes this column.
    pub core_view: bool,
}

const fn col(name: &'static str, column_type: ColumnType, value_bytes_max: u32) -> Column {
    Column { name, column_type, nullable: false, value_bytes_max, core_view: true }
}

const fn opt(name: &'static str, column_type: ColumnType, value_bytes_max: u32) -> Column {
    Column { name, column_type, nullable: true, value_bytes_max, core_view: true }
}

const fn hidden(column: Column) -> Column {
    Column { core_view: false, ..column }
}

use ColumnType::{Bytea, Float4, Inet, Int2, Int4, Int8, Text, Timestamptz, Uuid};

/// Columns every event row carries, in this order, first.
/// `producer_epoch` is an ingest-protocol detail and is not shown to Core.
pub const COMMON_COLUMNS: &[Column] = &[
    col("producer_id", Int8, 8),
    hidden(col("producer_epoch", Int8, 8)),
    col("producer_seq", Int8, 8),
    col("source_id", Uuid, 16),
    col("event_time", Timestamptz, 8),
    col("ingest_time", Timestamptz, 8),
];

/// Text caps. A path on Linux is at most PATH_MAX (4096) bytes; Windows
/// long paths are at most 32767 UTF-16 units, capped here at 8 KiB of UTF-8
/// because ETW truncates image paths well below that.
const PATH_BYTES_MAX: u32 = 4096;
const WIN_PATH_BYTES_MAX: u32 = 8192;
const CMDLINE_BYTES_MAX: u32 = 8192;
const NAME_BYTES_MAX: u32 = 256;
const SHORT_TEXT_BYTES_MAX: u32 = 64;
const LONG_TEXT_BYTES_MAX: u32 = 4096;
/// An inet value in binary COPY form: family, bits, is_cidr, length, 16 bytes.
const INET_BYTES_MAX: u32 = 20;

/// A B-tree index that a named query needs (at most one per table).
#[derive(Clone, Copy, Debug)]
pub struct BtreeIndex {
    pub columns: &'static [&'static str],
    /// The query that needs it.
    pub query: &'static str,
}

/// One event table.
#[derive(Clone, Copy, Debug)]
pub struct EventTable {
    pub module: Module,
    pub name: &'static str,
    /// Columns after [`COMMON_COLUMNS`].
    pub columns: &'static [Column],
    pub btree: Option<BtreeIndex>,
}

impl EventTable {
    /// Schema-qualified name, e.g. `linux_agent.process_events`.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.module.schema(), self.name)
    }

    /// Name of the Core-facing view, e.g. `core_api.linux_agent_process_events`.
    pub fn view_name(&self) -> String {
        format!("{}.{}_{}", crate::base::limits::VIEW_SCHEMA, self.module.schema(), self.name)
    }

    /// Every column in table order: common columns first.
    pub fn all_columns(&self) -> impl Iterator<Item = &'static Column> + '_ {
        COMMON_COLUMNS.iter().chain(self.columns.iter())
    }
}

/// Every event table, grouped by module (a module's tables in the order of
/// their wire index, PROTOCOL.md §5.4; the modules in no particular order).
pub const EVENT_TABLES: &[EventTable] = &[
    // Linux agent: process, file and network events from the host sensor.
    EventTable {
        module: Module::LinuxAgent,
        name: "process_events",
        columns: &[
            col("action", Int2, 2),
            col("pid", Int4, 4),
            col("ppid", Int4, 4),
            col("uid", Int4, 4),
            col("gid", Int4, 4),
            col("exe", Text, PATH_BYTES_MAX),
            col("cmdline", Text, CMDLINE_BYTES_MAX),
            opt("sha256", Bytea, 32),
        ],
        btree: None,
    },
    EventTable {
        module: Module::LinuxAgent,
        name: "file_events",
        columns: &[
            col("action", Int2, 2),
            col("pid", Int4, 4),
            col("uid", Int4, 4),
            col("path", Text, PATH_BYTES_MAX),
            opt("target_path", Text, PATH_BYTES_MAX),
            col("bytes_written", Int8, 8),
            opt("entropy", Float4, 4),
        ],
        btree: None,
    },
    EventTable {
        module: Module::LinuxAgent,
        name: "network_events",
        columns: &[
            col("action", Int2, 2),
            col("pid", Int4, 4),
            col("uid", Int4, 4),
            col("protocol", Int2, 2),
            col("local_addr", Inet, INET_BYTES_MAX),
            col("local_port", Int4, 4),
            col("remote_addr", Inet, INET_BYTES_MAX),
            col("remote_port", Int4, 4),
            col("bytes_sent", Int8, 8),
            col("bytes_received", Int8, 8),
        ],
        btree: None,
    },
    // Windows agents (through the relay): ETW process, file, registry, network.
    EventTable {
        module: Module::WindowsAgent,
        name: "process_events",
        columns: &[
            col("action", Int2, 2),
            col("pid", Int8, 8),
            col("ppid", Int8, 8),
            col("user_sid", Text, NAME_BYTES_MAX),
            col("image_path", Text, WIN_PATH_BYTES_MAX),
            col("command_line", Text, CMDLINE_BYTES_MAX),
            col("integrity_level", Int2, 2),
            opt("sha256", Bytea, 32),
        ],
        btree: None,
    },
    EventTable {
        module: Module::WindowsAgent,
        name: "file_events",
        columns: &[
            col("action", Int2, 2),
            col("pid", Int8, 8),
            col("user_sid", Text, NAME_BYTES_MAX),
            col("path", Text, WIN_PATH_BYTES_MAX),
            opt("target_path", Text, WIN_PATH_BYTES_MAX),
            col("bytes_written", Int8, 8),
            opt("entropy", Float4, 4),
        ],
        btree: None,
    },
    EventTable {
        module: Module::WindowsAgent,
        name: "registry_events",
        columns: &[
            col("action", Int2, 2),
            col("pid", Int8, 8),
            col("user_sid", Text, NAME_BYTES_MAX),
            col("key_path", Text, WIN_PATH_BYTES_MAX),
            opt("value_name", Text, NAME_BYTES_MAX),
            col("value_type", Int2, 2),
            // Raw registry data may hold secrets; Core sees type and name only.
            hidden(opt("value_data", Bytea, 1024)),
        ],
        btree: None,
    },
    EventTable {
        module: Module::WindowsAgent,
        name: "network_events",
        columns: &[
            col("action", Int2, 2),
            col("pid", Int8, 8),
            col("protocol", Int2, 2),
            col("local_addr", Inet, INET_BYTES_MAX),
            col("local_port", Int4, 4),
            col("remote_addr", Inet, INET_BYTES_MAX),
            col("remote_port", Int4, 4),
            col("bytes_sent", Int8, 8),
            col("bytes_received", Int8, 8),
        ],
        btree: None,
    },
    // DPI probe: flows and protocol metadata.
    EventTable {
        module: Module::Dpi,
        name: "flows",
        columns: &[
            col("flow_id", Uuid, 16),
            col("protocol", Int2, 2),
            col("src_addr", Inet, INET_BYTES_MAX),
            col("src_port", Int4, 4),
            col("dst_addr", Inet, INET_BYTES_MAX),
            col("dst_port", Int4, 4),
            col("packets", Int8, 8),
            col("bytes", Int8, 8),
            col("duration_ms", Int8, 8),
            opt("app_protocol", Text, SHORT_TEXT_BYTES_MAX),
        ],
        btree: None,
    },
    EventTable {
        module: Module::Dpi,
        name: "dns",
        columns: &[
            col("flow_id", Uuid, 16),
            col("query_name", Text, NAME_BYTES_MAX),
            col("query_type", Int4, 4),
            col("response_code", Int2, 2),
            opt("answers", Text, LONG_TEXT_BYTES_MAX),
        ],
        btree: None,
    },
    EventTable {
        module: Module::Dpi,
        name: "tls",
        columns: &[
            col("flow_id", Uuid, 16),
            opt("sni", Text, NAME_BYTES_MAX),
            col("version", Int4, 4),
            col("cipher_suite", Int4, 4),
            opt("ja3", Bytea, 16),
            opt("cert_sha256", Bytea, 32),
        ],
        btree: None,
    },
    EventTable {
        module: Module::Dpi,
        name: "smb",
        columns: &[
            col("flow_id", Uuid, 16),
            col("command", Int4, 4),
            col("dialect", Int4, 4),
            opt("share", Text, NAME_BYTES_MAX),
            opt("path", Text, WIN_PATH_BYTES_MAX),
            col("status", Int8, 8),
            col("bytes", Int8, 8),
        ],
        btree: None,
    },
    EventTable {
        module: Module::Dpi,
        name: "http",
        columns: &[
            col("flow_id", Uuid, 16),
            col("method", Text, 16),
            col("host", Text, NAME_BYTES_MAX),
            col("uri", Text, LONG_TEXT_BYTES_MAX),
            col("status_code", Int2, 2),
            opt("user_agent", Text, NAME_BYTES_MAX),
            opt("content_type", Text, SHORT_TEXT_BYTES_MAX),
            col("bytes", Int8, 8),
        ],
        btree: None,
    },
    // Core Engine: its own decisions, append-only.
    EventTable {
        module: Module::Core,
        name: "detections",
        columns: &[
            col("detection_id", Uuid, 16),
            col("rule_id", Text, SHORT_TEXT_BYTES_MAX),
            col("severity", Int2, 2),
            col("score", Float4, 4),
            col("subject_source_id", Uuid, 16),
            col("summary", Text, LONG_TEXT_BYTES_MAX),
            opt("evidence", Text, LONG_TEXT_BYTES_MAX),
        ],
        btree: None,
    },
    EventTable {
        module: Module::Core,
        name: "incident_transitions",
        columns: &[
            col("incident_id", Uuid, 16),
            col("from_state", Int2, 2),
            col("to_state", Int2, 2),
            col("actor", Text, NAME_BYTES_MAX),
            opt("reason", Text, LONG_TEXT_BYTES_MAX),
        ],
        btree: Some(BtreeIndex {
            columns: &["incident_id", "ingest_time"],
            query: "incident timeline: all transitions of one incident in ingest order \
                    (core_api.core_incident_transitions WHERE incident_id = $1 ORDER BY ingest_time)",
        }),
    },
    EventTable {
        module: Module::Core,
        name: "response_actions",
        columns: &[
            col("action_id", Uuid, 16),
            opt("incident_id", Uuid, 16),
            col("action_kind", Int2, 2),
            col("target", Text, NAME_BYTES_MAX),
            col("requested_by", Text, NAME_BYTES_MAX),
            col("outcome", Int2, 2),
            opt("detail", Text, LONG_TEXT_BYTES_MAX),
        ],
        btree: None,
    },
];

/// Event tables written by one module.
pub fn tables_of(module: Module) -> impl Iterator<Item = &'static EventTable> {
    EVENT_TABLES.iter().filter(move |table| table.module == module)
}

/// Columns of every per-module quarantine table (`<module>.quarantine`),
/// where the lane records each rejected event with its reason.
pub const QUARANTINE_COLUMNS: &[(&str, &str)] = &[
    ("received_at", "timestamp with time zone"),
    ("producer_id", "bigint"),
    ("producer_epoch", "bigint"),
    ("producer_seq", "bigint"),
    ("table_name", "text"),
    ("reason_code", "smallint"),
    ("reason", "text"),
    ("payload", "bytea"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_owns_tables_and_names_are_unique() {
        for module in Module::ALL {
            assert!(tables_of(module).count() > 0, "{module:?} owns no table");
        }
        let mut names: Vec<String> = EVENT_TABLES.iter().map(EventTable::qualified_name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), EVENT_TABLES.len());
    }

    #[test]
    fn column_names_unique_per_table() {
        for table in EVENT_TABLES {
            let mut names: Vec<&str> = table.all_columns().map(|c| c.name).collect();
            names.sort_unstable();
            let before = names.len();
            names.dedup();
            assert_eq!(before, names.len(), "{}", table.qualified_name());
            if let Some(btree) = table.btree {
                for c in btree.columns {
                    assert!(table.all_columns().any(|col| col.name == *c));
                }
            }
        }
    }
}
