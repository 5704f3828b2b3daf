//! Named limits and fixed names, gathered in one place (STYLE S6).
//!
//! Every bound used by the data plane is a constant here with its unit last
//! and a sentence on why it has that value.

/// Database the appliance owns inside the cluster.
pub const DATABASE_NAME: &str = "ransomeye";
/// Bootstrap superuser created by initdb; used only by `init`, `selftest`
/// and the supervisor, never by an ingest lane.
pub const ADMIN_ROLE: &str = "ransomeye_admin";
/// Schema holding the Core-facing views (the only thing Core can read).
pub const VIEW_SCHEMA: &str = "core_api";
/// Schema holding the appliance's own bookkeeping (watermarks, ledger,
/// module-role map, SECURITY DEFINER functions).
pub const APPLIANCE_SCHEMA: &str = "appliance";
/// Schema holding the migration ledger; owned by the admin role.
pub const META_SCHEMA: &str = "ransomeye_meta";

/// Hash sub-partitions per daily partition. Four leaves spread relation
/// extension locks across concurrent COPY streams (the baseline's layout,
/// shared/reference/postgresql-ingest-baseline.md §4) while keeping the
/// number of relations per day small (15 tables x 5 = 75).
pub const HASH_PARTITIONS: u32 = 4;
/// Days of partitions `init` creates ahead of today by default.
pub const PARTITION_DAYS_AHEAD_DEFAULT: u32 = 7;
/// Days of partitions that selftest requires to exist ahead of now.
/// Smaller than the default horizon so a day of failed maintenance is
/// caught before ingest can fail.
pub const PARTITION_DAYS_AHEAD_REQUIRED: u32 = 2;
/// Lock wait bound for partition DDL: ATTACH must never make ingest queue
/// behind a long lock request.
pub const PARTITION_LOCK_TIMEOUT_MS: u32 = 2000;

/// Largest backend message the wire client accepts (S7). The biggest
/// legitimate message we receive is a DataRow of a catalog query or an
/// ErrorResponse; 16 MiB leaves room for both and bounds a hostile server.
pub const PG_MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest simple-query result the wire client buffers, in rows. The
/// selftest's largest query (privilege cells) stays far below this.
pub const PG_RESULT_ROWS_MAX: usize = 1_000_000;
/// Read buffer size for the PostgreSQL socket.
pub const PG_READ_BUFFER_BYTES: usize = 64 * 1024;
/// How long `init` waits for the embedded cluster to accept connections.
pub const PG_START_TIMEOUT_S: u32 = 60;

/// Unix socket paths are limited to 108 bytes including the NUL
/// (unix(7), `sun_path`).
pub const UNIX_PATH_BYTES_MAX: usize = 107;

const _: () = assert!(PARTITION_DAYS_AHEAD_REQUIRED < PARTITION_DAYS_AHEAD_DEFAULT);
const _: () = assert!(PG_READ_BUFFER_BYTES < PG_MESSAGE_BYTES_MAX);

/// Socket read/write timeout of the blocking wire client. The longest
/// statement it runs is a migration or the partition pre-creation, which
/// take seconds; two minutes bounds a hung server without cutting them off.
pub const PG_IO_TIMEOUT_S: u64 = 120;
