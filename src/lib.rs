//! applianced: the data plane of RansomEye.
//!
//! Modules in data-flow order (STYLE S1). The ingest path (socket →
//! ingress → frame → lane → copy → pg → ack) is being built by the
//! ingest-lanes issue; what exists today is the foundation it stands on.
#![deny(unsafe_code)]

// --- ingest path ---
/// Peer authentication by SO_PEERCRED and rate-limited refusal logs.
pub mod ingress;
/// Protocol v1 frame codec (sans-I/O): producer <-> lane.
pub mod frame;
/// Per-table validation of event records, in place.
pub mod validate;
/// COPY BINARY encoder (sans-I/O).
pub mod copy;
/// The per-module lane: sans-I/O core, batches, io_uring and poll drivers.
pub mod lane;
/// The durable per-lane spool: checksummed segment files, recovery, quota.
pub mod spool;
/// The free-space reserve of the state filesystem (sans-I/O).
pub mod disk;
/// Wall-clock time (simulated in test builds for the partition lifecycle).
pub mod clock;
/// Failpoints at each batch stage (the `failpoints` feature only).
pub mod failpoint;
/// Deterministic synthetic events for load generation and tests (sans-I/O).
pub mod synth;
/// PostgreSQL wire client on postgres-protocol: sans-I/O framing + blocking transport.
pub mod pg;
/// The module client library (producer side of protocol v1).
pub mod client;
/// The load client: synthetic events until every one is acknowledged.
pub mod load;

// --- side paths ---
/// The per-lane sandbox: no_new_privs, Landlock, seccomp, verification.
pub mod sandbox;
/// Co-location: CPU placement, I/O priority, address-space limit.
pub mod colocate;
/// Command orchestration and exit codes.
pub mod app;
/// `applianced run`: binds the sockets, supervises lanes and the cluster.
pub mod supervisor;
/// Starting a lane process: its OS identity, spool directory and descriptors.
pub mod launch;
/// Partition maintenance and retention, on the supervisor's own thread.
pub mod maintenance;
/// Helpers of `applianced demo`: the appliance as a child, loads on every lane.
pub mod demo;
/// `applianced bench`: the appliance beside PostgreSQL's COPY ceiling and multi-row INSERT.
pub mod bench;
/// The OS accounts: server account, lane identities, the database socket's group.
pub mod accounts;
/// The embedded PostgreSQL cluster.
pub mod cluster;
/// Config file parsing into a typed target.
pub mod config;
/// SQL rendering of event tables and Core views from `schema`.
pub mod ddl;
/// The GRANT/REVOKE script rendered from `matrix`.
pub mod grants;
/// Named limits and fixed names.
pub mod limits;
/// The binding ownership matrix: modules, roles, privileges (single source of truth).
pub mod matrix;
/// Markdown and JSON renderings of `matrix`.
pub mod matrix_docs;
/// Versioned migrations from `sql/`.
pub mod migrate;
/// Event table layouts: columns, types, caps, Core view exposure.
pub mod schema;
/// `applianced selftest`: health and privilege checks of a live installation.
pub mod selftest;
/// The only module with `unsafe`: small libc wrappers.
#[allow(unsafe_code)]
pub mod sys;
