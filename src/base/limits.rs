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
/// Lock wait bound for the maintenance pass's BRIN summarization of the
/// closed days' leaves (`brin_summarize_new_values` takes SHARE UPDATE
/// EXCLUSIVE on the leaf, which only a vacuum or analyze of that leaf
/// holds). Below `deadlock_timeout` (1 s, `cluster.rs`): a waiter past it
/// makes PostgreSQL cancel the autovacuum it waits for, and a vacuum
/// summarizes the leaf itself. A leaf skipped on timeout is retried by the
/// next pass; the pass's length stays bounded by this times the leaves.
pub const SUMMARIZE_LOCK_TIMEOUT_MS: u32 = 100;

/// Largest backend message the wire client accepts (S7). The biggest
/// legitimate message we receive is a DataRow of a catalog query or an
/// ErrorResponse; 16 MiB leaves room for both and bounds a hostile server.
pub const PG_MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest simple-query result the wire client buffers, in rows. The
/// selftest's largest query (privilege cells) stays far below this.
pub const PG_RESULT_ROWS_MAX: usize = 1_000_000;
/// Read buffer size for the PostgreSQL socket.
pub const PG_READ_BUFFER_BYTES: usize = 64 * 1024;
/// Send buffer (SO_SNDBUF) the connector asks for on each lane connection
/// to PostgreSQL: a backend can read this much of a transaction's COPY data
/// while the lane is busy with its spool (an fdatasync, a record read back),
/// instead of the kernel's default of 208 KiB. The kernel caps the request
/// at `net.core.wmem_max` (the lane logs the size in effect) and holds the
/// bytes in kernel memory, not the lane's: at most this (doubled by the
/// kernel's bookkeeping) per connection.
pub const PG_SEND_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// How long `init` waits for the embedded cluster to accept connections.
pub const PG_START_TIMEOUT_S: u32 = 60;

/// Connection slots of the embedded cluster (`max_connections`).
pub const PG_CONNECTIONS_MAX: u32 = 64;
/// Slots only a superuser may take (`superuser_reserved_connections`): init
/// and selftest get in while every other slot is held. PostgreSQL 15 has no
/// reservation for other roles (`reserved_connections` came in 16).
pub const PG_SUPERUSER_RESERVED_CONNECTIONS: u32 = 3;
/// How long a connection may hold a slot before it has authenticated
/// (`authentication_timeout`, default 60 s). Peer authentication needs one
/// round trip; a peer that connects and sends nothing is dropped after this.
pub const PG_AUTHENTICATION_TIMEOUT_S: u32 = 10;
/// Size of one file of PostgreSQL's log (`log_rotation_size`).
pub const PG_LOG_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Files of PostgreSQL's log kept; the supervisor deletes older ones
/// (`cluster::prune_logs`). With `PG_LOG_FILE_BYTES`: 128 MiB of log, the
/// last 300,000 lines or so of a flood, days of an ordinary appliance.
pub const PG_LOG_FILES_MAX: usize = 8;
/// The bound on PostgreSQL's log directory while the appliance runs, as
/// the supervisor's pruning leaves it (`cluster::prune_logs`, every loop):
/// the kept files, each at most twice the rotation size, plus one file's
/// worth for the start-up output and what arrives between two prunes.
pub fn pg_log_bytes_max() -> u64 {
    (2 * pg_log_files_max() as u64 + 1) * pg_log_file_bytes()
}

/// `PG_LOG_FILE_BYTES`; test builds (`failpoints`) may lower it with
/// `APPLIANCED_TEST_PG_LOG_FILE_KB`, so a test can flood past it quickly.
pub fn pg_log_file_bytes() -> u64 {
    #[cfg(feature = "failpoints")]
    if let Some(kb) = std::env::var("APPLIANCED_TEST_PG_LOG_FILE_KB").ok().and_then(|v| v.parse::<u64>().ok()) {
        return kb * 1024;
    }
    PG_LOG_FILE_BYTES
}

/// `PG_LOG_FILES_MAX`; test builds may set it with `APPLIANCED_TEST_PG_LOG_FILES`.
pub fn pg_log_files_max() -> usize {
    #[cfg(feature = "failpoints")]
    if let Some(n) = std::env::var("APPLIANCED_TEST_PG_LOG_FILES").ok().and_then(|v| v.parse::<usize>().ok()) {
        return n.max(1);
    }
    PG_LOG_FILES_MAX
}

/// How much of the end of a PostgreSQL log file is read to find why the
/// cluster stopped (`cluster::last_failure`).
pub const PG_LOG_TAIL_BYTES: u64 = 64 * 1024;

/// Unix socket paths are limited to 108 bytes including the NUL
/// (unix(7), `sun_path`).
pub const UNIX_PATH_BYTES_MAX: usize = 107;

const _: () = assert!(PARTITION_DAYS_AHEAD_REQUIRED < PARTITION_DAYS_AHEAD_DEFAULT);
const _: () = assert!(PG_READ_BUFFER_BYTES < PG_MESSAGE_BYTES_MAX);

/// Socket read/write timeout of the blocking wire client. The longest
/// statement it runs is a migration or the partition pre-creation, which
/// take seconds; two minutes bounds a hung server without cutting them off.
pub const PG_IO_TIMEOUT_S: u64 = 120;

// --- ingest protocol (hardening/PROTOCOL.md) ---

/// Largest frame body a producer may send. 1 MiB holds about 4,000 events
/// of 250 B, enough to amortise the 16-byte header and one CRC call, and
/// small enough that one connection's frame never dominates a lane's budget.
pub const FRAME_BODY_BYTES_MAX: usize = 1024 * 1024;
/// Largest event record (header + fields). The widest table row
/// (Windows process: two 8 KiB texts plus small fields) fits in 20 KiB.
pub const RECORD_BYTES_MAX: usize = 20 * 1024;
/// Events per EVENTS frame; bounded so a per-event reject list stays small.
pub const FRAME_EVENTS_MAX: u32 = 8192;
/// Reason strings in REJECT and ERROR frames.
pub const REASON_BYTES_MAX: usize = 256;
/// Read buffer per client connection: one maximal frame plus its header.
pub const CLIENT_READ_BUFFER_BYTES: usize = FRAME_BODY_BYTES_MAX + 64 * 1024;

/// The largest producer id and epoch (PostgreSQL's bigint).
pub const PRODUCER_ID_MAX: u64 = i64::MAX as u64;
/// The first of the producer ids reserved for the appliance's own use
/// (selftest's round trip): the top 65,536 ids. Only a peer with the
/// appliance's uid may claim them; every grant the configuration makes
/// ends below them.
pub const RESERVED_PRODUCER_ID_FIRST: u64 = PRODUCER_ID_MAX - 0xFFFF;

// --- lane ---

/// Bytes of events a connection may have in flight (sent, not yet acked):
/// the credit window. 4 MiB is 16k events of 250 B, about 20 ms of a lane's
/// ingest, so a single producer can keep a lane busy.
pub const CONNECTION_CREDIT_BYTES: u32 = 4 * 1024 * 1024;
/// Memory budget of one lane for buffered events (pending and in-flight
/// batches). Credit is granted only while the lane is under it.
pub const LANE_BUFFER_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Client connections per lane. When every slot is taken, a new
/// connection takes the slot of the oldest one that has not sent HELLO, or
/// else of the one idle longest (at least `CONNECTION_IDLE_EVICTABLE_MS`);
/// with neither, it is refused.
pub const LANE_CONNECTIONS_MAX: usize = 64;
/// Credit every connection can always get, whatever the others hold: the
/// lane keeps this much of its budget unallocated for each slot that holds
/// less (free slots and connections before HELLO included). Idle
/// connections that took their whole window therefore cannot starve a new
/// producer. 256 KiB is above what the reference client waits for before
/// sending a frame (64 KiB + one maximal record).
pub const CONNECTION_CREDIT_GUARANTEED_BYTES: usize = 256 * 1024;
/// Smallest CREDIT grant worth a frame, unless it fills the window: fewer
/// CREDIT frames, each worth at least one full frame of small events.
pub const CREDIT_GRANT_MIN_BYTES: usize = 64 * 1024;
/// How often a lane reports its metrics to the supervisor.
pub const LANE_METRICS_INTERVAL_MS: u64 = 1_000;
/// A lane reports a change of its backlog state (records waiting for a
/// commit stream) to the supervisor at most this often; the supervisor
/// then shares the commit streams among the lanes with a backlog.
pub const LANE_BACKLOG_REPORT_MS: u64 = 50;
/// Distinct SQLSTATEs a lane counts its database refusals under; new
/// codes beyond these count as `other` (the report stays bounded).
pub const LANE_SQLSTATES_MAX: usize = 16;
/// The supervisor logs a lane stalled (commit lag beyond
/// `lane_commit_lag_max_ms`) at most once per this interval.
pub const LANE_STALL_LOG_INTERVAL_MS: u64 = 60_000;
/// Metrics socket connections the supervisor answers per turn of its loop
/// (the rest wait in the listen backlog for the next turn).
pub const METRICS_ACCEPTS_PER_TICK_MAX: usize = 8;
/// Bytes of the last database error a lane reports (cut beyond).
pub const LANE_LAST_ERROR_BYTES_MAX: usize = 200;
/// selftest's `commit lag` fails beyond this: a healthy lane commits what it
/// acknowledged within seconds (a 16 MiB transaction of 50,000 rows
/// commits in well under 1 s), so two minutes means PostgreSQL refuses it,
/// or is gone.
pub const LANE_COMMIT_LAG_MAX_MS: u64 = 120_000;
/// Environment variable with which test builds (`failpoints`) lower
/// `LANE_COMMIT_LAG_MAX_MS` for selftest, so a stall test need not wait
/// two minutes.
pub const TEST_COMMIT_LAG_MAX_ENV: &str = "APPLIANCED_TEST_COMMIT_LAG_MAX_MS";

/// `LANE_COMMIT_LAG_MAX_MS`, or in test builds the value of
/// `APPLIANCED_TEST_COMMIT_LAG_MAX_MS`.
pub fn lane_commit_lag_max_ms() -> u64 {
    #[cfg(feature = "failpoints")]
    if let Some(ms) = std::env::var(TEST_COMMIT_LAG_MAX_ENV).ok().and_then(|v| v.parse::<u64>().ok()) {
        return ms;
    }
    LANE_COMMIT_LAG_MAX_MS
}
/// selftest's `commit lag` fails when a lane's last metrics report is older
/// than this (it reports every `LANE_METRICS_INTERVAL_MS`).
pub const LANE_REPORT_AGE_MAX_MS: u64 = 30_000;
/// Replies queued for a connection (not yet written to its socket) above
/// which it gets no more credit: a producer that does not read is paused.
pub const CONNECTION_OUTPUT_PAUSE_BYTES: usize = 64 * 1024;
/// Replies queued for a connection above which, after the frame that
/// produced them, it is closed with ERROR `NotReading`: what an EVENTS
/// frame can add beyond it is bounded by `FRAME_EVENTS_MAX` REJECTs.
pub const CONNECTION_OUTPUT_BYTES_MAX: usize = 1024 * 1024;
/// A connection being closed whose last replies are still not written
/// after this long is cut (its peer does not read).
pub const CONNECTION_LINGER_MS: u64 = 2_000;
/// A connection must send HELLO within this long after it is accepted.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// A connection that sent nothing for this long may lose its slot to a new
/// connection when every slot is taken.
pub const CONNECTION_IDLE_EVICTABLE_MS: u64 = 1_000;
/// A connection with nothing in flight that sent nothing for this long is
/// closed with ERROR `Timeout` (its producer reconnects when it has events).
pub const CONNECTION_IDLE_TIMEOUT_MS: u64 = 600_000;
/// Producers a lane keeps in memory. Beyond it, producers with no
/// connection whose acknowledged events are all committed (so PostgreSQL's
/// watermark says the same) are forgotten, least recently seen first; a
/// later HELLO reads their watermark again. (Producers with events spooled
/// and not yet committed are kept: those are bounded by the spool quota.)
pub const LANE_PRODUCERS_MAX: usize = 16_384;

/// `LANE_PRODUCERS_MAX`; test builds (`failpoints`) may lower it with
/// `APPLIANCED_TEST_LANE_PRODUCERS_MAX` (passed to lanes by the
/// supervisor), so a test can pass it quickly.
pub fn lane_producers_max() -> usize {
    #[cfg(feature = "failpoints")]
    {
        static OVERRIDE: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
        if let Some(n) = *OVERRIDE
            .get_or_init(|| std::env::var(TEST_LANE_PRODUCERS_MAX_ENV).ok().and_then(|v| v.parse::<usize>().ok()))
        {
            return n.max(8);
        }
    }
    LANE_PRODUCERS_MAX
}

/// The test-build variable of `lane_producers_max`.
pub const TEST_LANE_PRODUCERS_MAX_ENV: &str = "APPLIANCED_TEST_LANE_PRODUCERS_MAX";
/// Watermark lookups for HELLOs sent before the next spooled transaction
/// when both wait, so HELLO churn cannot hold back commits.
pub const LOOKUPS_PER_TRANSACTION_MAX: u32 = 4;

/// Rows per batch (one spool record, sealed and acknowledged together).
pub const BATCH_ROWS_MAX: usize = 10_000;
/// Encoded COPY bytes per batch.
pub const BATCH_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Capacity of each chunk of a table's COPY stream in a batch. A row that
/// does not fit in the current chunk starts the next one, so a stream never
/// grows by reallocation (which copied it into fresh, zero-filled pages:
/// the largest share of a lane's page faults, `perf record` on the bench),
/// and equal-sized chunks freed with a committed batch are what the
/// allocator hands out for the next one. One CopyData message per chunk.
pub const COPY_CHUNK_BYTES: usize = 256 * 1024;
/// Parts of a send queue one SENDMSG of the lane's ring offers: enough for
/// a whole transaction (`TRANSACTION_BYTES_MAX`), whose queue holds two
/// parts per COPY chunk (the chunk's 5-byte CopyData header, then the
/// chunk, shared) plus a partly filled chunk per table and the statements,
/// so the kernel moves as much of it as the socket's buffer holds without
/// waiting for the lane's loop to submit the next part. The vectors are
/// allocated once per ring slot (16 bytes each; at most `IOV_MAX` = 1024).
pub const RING_SEND_PARTS_MAX: usize = 256;
/// Rows per transaction: consecutive spooled batches waiting for
/// PostgreSQL are sent together in one transaction up to this bound.
/// Measured with `applianced bench` (1,000,000 events, one run each, this
/// machine kind): PostgreSQL CPU in variant c was 3.75 s per million events
/// with 10,000-row transactions and 2.53 s with 50,000; 100,000 rows
/// (24 MiB) overflowed the spool cache and made the lanes read batches back
/// from disk (lane CPU 1.12 s/M against 0.76 s/M).
pub const TRANSACTION_ROWS_MAX: usize = 50_000;
/// Encoded COPY bytes per transaction (with `TRANSACTION_ROWS_MAX`).
pub const TRANSACTION_BYTES_MAX: usize = 16 * 1024 * 1024;
// Two parts per full chunk, and room for 32 tables' last chunks and statements.
const _: () =
    assert!(RING_SEND_PARTS_MAX >= 2 * (TRANSACTION_BYTES_MAX / COPY_CHUNK_BYTES + 32) && RING_SEND_PARTS_MAX <= 1024);
/// PostgreSQL connections a lane commits its spool over (`lane
/// --commit-streams`, `run --commit-streams`): at most this many
/// transactions of one lane are in flight at once, each on its own
/// connection; their COMMITs are sent one at a time in spool order
/// (DATA-PLANE §4.3). Twice this fits the writer role's CONNECTION LIMIT,
/// leaving room for reconnects.
pub const COMMIT_STREAMS_MAX: usize = 4;
/// Allocations up to this size come from a lane's heap, and freed memory
/// is kept for reuse (`sys::keep_freed_heap`): above the largest buffer a
/// lane allocates (a spool record read back, `SPOOL_RECORD_BYTES_MAX`).
pub const LANE_HEAP_REUSE_BYTES: usize = 32 * 1024 * 1024;
/// Free heap a lane keeps before it returns memory to the kernel
/// (M_TRIM_THRESHOLD). A DPI lane's heap reached 98–125 MiB in
/// 1,000,000-event bench runs; with 96 MiB here the whole heap was
/// trimmed after a burst (resident 91 → 32 MiB) and faulted in again,
/// page by page, by the next.
pub const LANE_HEAP_KEPT_BYTES: usize = 128 * 1024 * 1024;
/// A batch is flushed at most this long after its first event arrived.
pub const BATCH_FLUSH_INTERVAL_MS: u64 = 5;
/// Log lines per second per lane of each kind a peer can provoke at will
/// (connections refused, admitted, evicted or closed with an ERROR); the
/// rest are counted and reported with the next line of that kind.
pub const REJECT_LOG_PER_S: u32 = 5;
/// A line that can repeat every turn of the supervisor's loop (a write
/// that keeps failing, a lane that keeps sending what is ignored) is
/// logged once per this interval, with the count of those suppressed.
pub const REPEATED_LOG_INTERVAL_MS: u64 = 60_000;
/// Reconnect backoff to PostgreSQL: first wait and cap.
pub const PG_RECONNECT_BACKOFF_MIN_MS: u64 = 50;
pub const PG_RECONNECT_BACKOFF_MAX_MS: u64 = 5_000;
/// io_uring submission queue entries per lane ring.
pub const RING_ENTRIES: u32 = 256;

const _: () = assert!(CONNECTION_CREDIT_BYTES as usize >= FRAME_BODY_BYTES_MAX);
// The guaranteed shares leave at least half the budget for larger windows.
const _: () = assert!(LANE_CONNECTIONS_MAX * CONNECTION_CREDIT_GUARANTEED_BYTES <= LANE_BUFFER_BYTES_MAX / 2);
const _: () = assert!(CONNECTION_CREDIT_GUARANTEED_BYTES >= 64 * 1024 + RECORD_BYTES_MAX);
const _: () = assert!(CONNECTION_OUTPUT_PAUSE_BYTES < CONNECTION_OUTPUT_BYTES_MAX);
const _: () = assert!(LANE_BUFFER_BYTES_MAX >= 2 * BATCH_BYTES_MAX);
const _: () = assert!(RECORD_BYTES_MAX < FRAME_BODY_BYTES_MAX);
// Every connection needs a ring slot for its recv and its send, plus
// accept, the three link polls, and a recv and a send per commit stream.
const _: () = assert!((RING_ENTRIES as usize) >= 2 * LANE_CONNECTIONS_MAX + 4 + 2 * COMMIT_STREAMS_MAX);

// --- supervisor ---

/// How often the supervisor creates partitions ahead (as ransomeye_maint).
pub const MAINTENANCE_INTERVAL_S: u64 = 3600;
/// selftest fails when a running appliance's last successful maintenance
/// run (partitions ahead and retention) finished longer ago than this, in
/// real seconds: two intervals, so one failed run (a lock timeout, retried
/// by the next) does not fail it, but two in a row, or a stalled
/// supervisor, do.
pub const MAINTENANCE_STALE_S: u64 = 2 * MAINTENANCE_INTERVAL_S;
/// The maintenance thread's reconnect backoff: first wait and cap, so a
/// cluster that is down or recovering is retried at least twice a minute
/// without a log line more often than once a second.
pub const MAINTENANCE_RETRY_MIN_MS: u64 = 1_000;
pub const MAINTENANCE_RETRY_MAX_MS: u64 = 30_000;
/// Statement timeout of the maintenance session: `DETACH ... CONCURRENTLY`
/// waits for every older snapshot, so a reader holding one could hold the
/// pass; five minutes bounds it and the next pass retries.
pub const MAINTENANCE_STATEMENT_TIMEOUT_S: u64 = 300;
/// How long `run` waits, before it reports ready, for the first
/// maintenance pass to create partitions ahead (a cluster in crash
/// recovery takes seconds); past it, the lanes serve anyway and rows
/// outside every partition window are quarantined, never lost.
pub const MAINTENANCE_FIRST_PASS_WAIT_S: u64 = 60;
/// How long a lane may take to drain after SIGTERM before it is killed.
pub const LANE_DRAIN_TIMEOUT_S: u64 = 30;
/// How long a starting lane may take to connect its sandbox and serve.
pub const LANE_READY_TIMEOUT_S: u64 = 10;
/// Restarts of a stopped cluster by the supervisor: first wait and cap
/// (never given up: the lanes keep spooling while it is down).
pub const CLUSTER_RESTART_BACKOFF_MIN_MS: u64 = 500;
pub const CLUSTER_RESTART_BACKOFF_MAX_MS: u64 = 30_000;
/// Lane restart backoff: first wait and cap.
pub const LANE_RESTART_BACKOFF_MIN_MS: u64 = 100;
pub const LANE_RESTART_BACKOFF_MAX_MS: u64 = 10_000;

// --- co-location ---

/// Best-effort I/O priority level of lane processes (0 highest, 7 lowest):
/// 4 is the kernel's default level, stated explicitly; lanes write little
/// to disk themselves (PostgreSQL does), so they never need to preempt it.
pub const LANE_IO_PRIORITY_LEVEL: u8 = 4;
/// Address-space limit of a lane (RLIMIT_AS). The lane's own buffers are
/// bounded by LANE_BUFFER_BYTES_MAX plus one receive buffer per slot; the
/// rest is the binary, libc and allocator reservations (a debug lane maps
/// about 60 MiB). 1 GiB bounds a runaway lane long before it can starve
/// the co-located modules, with ample room for legitimate use.
pub const LANE_ADDRESS_SPACE_BYTES_MAX: u64 = 1024 * 1024 * 1024;
const _: () = assert!(LANE_ADDRESS_SPACE_BYTES_MAX as usize > 4 * LANE_BUFFER_BYTES_MAX);

/// The largest REJECT frame: header, fixed body, longest reason.
pub const REJECT_FRAME_BYTES_MAX: usize = 16 + 24 + REASON_BYTES_MAX;
/// What one connection can make its lane hold beyond the shared budget:
/// its read buffer (one maximal frame), and its queued replies up to
/// `CONNECTION_OUTPUT_BYTES_MAX` plus what the frame that crossed it added
/// (one REJECT per event), plus what the driver has in flight (as much
/// again).
pub const CONNECTION_MEMORY_BYTES_MAX: usize =
    CLIENT_READ_BUFFER_BYTES + 2 * (CONNECTION_OUTPUT_BYTES_MAX + FRAME_EVENTS_MAX as usize * REJECT_FRAME_BYTES_MAX);
/// Bytes per producer the lane keeps (map entry, watermark entry, overhead).
pub const PRODUCER_ENTRY_BYTES_MAX: usize = 256;
/// What a lane's memory stays under whatever its peers do, derived from
/// the bounds: the event budget, every connection at its bound, the spool
/// cache with its read-ahead and its aligned write buffer, per commit stream a transaction and the one before it (its
/// chunks held by a send still in flight when a reset rebuilt the
/// transaction; requests share the chunks, never copy them), the producer
/// table, and the free heap the lane keeps (`LANE_HEAP_KEPT_BYTES`) plus 64 MiB for the
/// binary, libraries and allocator slack. `tests/dos.rs` checks a lane's
/// resident size against it under attack.
pub const LANE_MEMORY_BOUND_BYTES: usize = LANE_BUFFER_BYTES_MAX
    + LANE_CONNECTIONS_MAX * CONNECTION_MEMORY_BYTES_MAX
    + SPOOL_CACHE_BYTES_MAX
    + SPOOL_READ_AHEAD_BYTES_MAX
    + SPOOL_WRITE_BUFFER_BYTES
    + SPOOL_BLOCK_BYTES
    + COMMIT_STREAMS_MAX * 2 * TRANSACTION_BYTES_MAX
    + LANE_PRODUCERS_MAX * PRODUCER_ENTRY_BYTES_MAX
    + LANE_HEAP_KEPT_BYTES
    + 64 * 1024 * 1024;
const _: () = assert!(LANE_MEMORY_BOUND_BYTES < LANE_ADDRESS_SPACE_BYTES_MAX as usize);

// --- selftest thresholds ---

/// Largest transaction-id age of any application table, as a fraction of
/// autovacuum_freeze_max_age. Anti-wraparound vacuum starts at 1.0; at 0.5
/// an operator still has half the interval to react.
pub const XID_AGE_FRACTION_MAX: f64 = 0.5;
/// Largest share of dead tuples in an event leaf with at least
/// BLOAT_CHECK_TUPLES_MIN tuples. Event tables are insert-only; dead
/// tuples come only from aborted batches, so more than 10 % means
/// something keeps failing.
pub const DEAD_TUPLE_FRACTION_MAX: f64 = 0.1;
pub const BLOAT_CHECK_TUPLES_MIN: u64 = 10_000;

/// Default disk quota of one lane's spool; beyond it producers are pushed
/// back (STATUS spool-full, no credit) until commits free space.
pub const SPOOL_QUOTA_BYTES_DEFAULT: u64 = 1024 * 1024 * 1024;
/// Smallest spool quota accepted (`run --spool-quota-mb`): room for two
/// largest batches.
pub const SPOOL_QUOTA_BYTES_MIN: u64 = 2 * SPOOL_RECORD_BYTES_MAX as u64;
/// A spool segment is closed when the next record would pass this size.
pub const SPOOL_SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// Spool records (format 3) start and end on a multiple of this many bytes
/// of their segment, and are written with `O_DIRECT` from a buffer aligned
/// to it: 4096 covers the logical block and memory alignment `O_DIRECT`
/// asks of 512- and 4096-byte-sector disks.
pub const SPOOL_BLOCK_BYTES: usize = 4096;
/// The aligned buffer a record is copied through on its way to disk (one
/// `pwrite` per buffer-full): a lane holds one, of this size plus one block
/// for alignment.
pub const SPOOL_WRITE_BUFFER_BYTES: usize = 1024 * 1024;
const _: () = assert!(SPOOL_WRITE_BUFFER_BYTES % SPOOL_BLOCK_BYTES == 0);
/// Largest spool record (one batch: `BATCH_BYTES_MAX` of rows plus the
/// frame that filled it and its quarantined events).
pub const SPOOL_RECORD_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Spooled batches kept in memory for sending; beyond this they are read
/// back from their segment when their turn comes.
pub const SPOOL_CACHE_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Records of the next transaction read back ahead of their turn, while
/// every commit stream is busy (so the stream that frees up starts it
/// without waiting for the disk): the cache may pass
/// `SPOOL_CACHE_BYTES_MAX` by this much for them, one transaction's worth.
pub const SPOOL_READ_AHEAD_BYTES_MAX: usize = TRANSACTION_BYTES_MAX;
/// After a failed spool write (disk full, file size limit), the lane
/// retries this often while producers are pushed back.
pub const SPOOL_RETRY_INTERVAL_MS: u64 = 1000;
/// The embedded cluster's `max_wal_size` is this fraction (1/N) of the
/// state filesystem, between the two bounds below: on a small filesystem
/// WAL is checkpointed away before it can fill it (`disk::max_wal_size`).
pub const MAX_WAL_SIZE_SHARE_OF_FS: u64 = 16;
/// Smallest `max_wal_size`: four 16 MiB WAL segments.
pub const MAX_WAL_SIZE_BYTES_MIN: u64 = 64 * 1024 * 1024;
/// Largest `max_wal_size`: a 1,000,000-event burst writes about 215 MB of
/// WAL (`applianced bench`, WAL B/event), so bursts are checkpointed by
/// time, not by size, on a large filesystem.
pub const MAX_WAL_SIZE_BYTES_MAX: u64 = 8 * 1024 * 1024 * 1024;
/// Largest `min_wal_size` (recycled WAL kept after a checkpoint).
pub const MIN_WAL_SIZE_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// The free-space reserve holds this many times `max_wal_size`: a soft
/// limit, which WAL passes while a checkpoint under load is still running.
pub const WAL_RESERVE_FACTOR: u64 = 2;
/// Event-table bytes on disk (heap, indexes, maps) per spool byte of the
/// same events, in percent, rounded up: `applianced bench` measures
/// table B/event 230 against 239 B/event of COPY tuples in the spool
/// (96 %); 110 leaves room for fuller indexes and partition overhead.
pub const PG_TABLE_PERCENT_OF_SPOOL: u64 = 110;
/// Free space kept beyond the named parts of the reserve: catalog rows of
/// new partitions, visibility and free-space maps, temporary files.
pub const DISK_RESERVE_MARGIN_BYTES: u64 = 64 * 1024 * 1024;
/// A lane pushed back at the free-space reserve resumes only once this
/// much more than the reserve is free: PostgreSQL's checkpoints free and
/// take WAL segments (up to `max_wal_size - min_wal_size`, 32 MiB on the
/// smallest filesystem) and would make it flap at the reserve.
pub const DISK_RESERVE_RESUME_BYTES: u64 = 64 * 1024 * 1024;
/// While a lane is below the free-space reserve it checks again this often
/// (fstatfs of the spool directory) and resumes on its own.
pub const DISK_RESERVE_RECHECK_MS: u64 = 500;
/// How long `demo` and the tests wait for spooled (acknowledged) events to
/// be committed before calling them missing (selftest's round trip has its
/// own 15 s bound).
pub const COMMIT_WAIT_S: u64 = 60;
/// How often a lane re-reads its module's partition window while it has
/// batches to send (and after every reconnect).
pub const WINDOW_REFRESH_INTERVAL_MS: u64 = 1000;
/// Days of day partitions kept per module unless `run --retention` says otherwise.
pub const RETENTION_DAYS_DEFAULT: u32 = 30;
/// Smallest retention accepted: today's and yesterday's partitions are
/// never dropped (a batch sealed just before midnight commits after it).
pub const RETENTION_DAYS_MIN: u32 = 2;
