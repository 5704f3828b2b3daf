//! applianced: the data plane of RansomEye.
//!
//! One folder per layer; a layer imports only the layers before it in this
//! list (`tests/layers.rs` fails on an import that goes upward, and the
//! producer side never imports the server side). One event's path reads
//! from the file names: `producer/client` frames it (`codec/frame`), the
//! lane admits and decodes it (`lane/ingress`, `lane/session`), validates
//! it (`codec/validate`), batches it as COPY rows (`lane/batch`,
//! `codec/copy`), makes it durable (`lane/spooling`, `lane/commit_queue`, `storage/spool`) and
//! acknowledges it, then commits it (`pg/pipeline`).
#![deny(unsafe_code)]

/// Named limits, time, failpoints and the only `unsafe`: libc wrappers.
pub mod base;
/// What the appliance stores and who may touch it: modules, tables, the
/// ownership matrix (single source of truth).
pub mod model;
/// Byte formats, sans-I/O: the ingest protocol's frames, event validation,
/// COPY BINARY, the key = value files.
pub mod codec;
/// The durable per-lane spool and the free-space reserve.
#[cfg(feature = "server")]
pub mod storage;
/// PostgreSQL wire client on postgres-protocol: sans-I/O framing + blocking transport.
#[cfg(feature = "server")]
pub mod pg;
/// The per-lane sandbox and co-location (CPU placement, I/O priority).
#[cfg(feature = "server")]
pub mod sandbox;
/// The producer side: the module client library, the load client and
/// synthetic events. Imports only base, model and codec.
pub mod producer;
/// The per-module lane: admission, sans-I/O core, batches, drivers.
#[cfg(feature = "server")]
pub mod lane;
/// The appliance's control plane: accounts, the embedded cluster,
/// configuration, migrations and grants, launching and supervising lanes,
/// partition maintenance.
#[cfg(feature = "server")]
pub mod control;
/// `applianced selftest`: health and privilege checks of a live installation.
#[cfg(feature = "server")]
pub mod selftest;
/// `applianced demo` and `applianced bench` helpers, the matrix's renderings.
#[cfg(feature = "server")]
pub mod tools;
/// Command orchestration and exit codes.
#[cfg(feature = "server")]
pub mod app;
