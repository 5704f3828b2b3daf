//! The ingest lane of one module: a process of its own, running one small
//! event loop over a sans-I/O core.
//!
//! One event, by file: `ingress` admits its connection by SO_PEERCRED;
//! `core` is the state machine the drivers call (`uring` over io_uring,
//! `poll` over poll(2) where io_uring is unavailable); `session` answers
//! HELLO and takes EVENTS in (sequence, validation, deduplication) into
//! the pending `batch`; `spooling` appends the sealed batch through the
//! `commit_queue` (the spool's records until committed), acknowledges it
//! once durable, and sends it to PostgreSQL as one transaction. The core's
//! state is owned by sub-states with their own invariants: `conns` (slots,
//! deadlines, and the `credit` ledger), `producers` (the bounded table and
//! the lookups waiting), `commit_queue`. `links` are the lane's control
//! socket and the socket to its `connector`, the process that opens its
//! PostgreSQL connections; `process` is the lane process's entry and
//! `probe` the sandbox probes a lane process can run instead of serving.
//! No file of the core imports a file that imports it (`tests/layers.rs`).

pub mod batch;
/// The spool's records until committed, and every decision about them.
mod commit_queue;
pub mod connector;
/// The core's errors: why a lane exits, why a connection is given up.
pub mod error;
/// Connections, their protocol state and the credit they hold.
mod conns;
pub mod core;
/// The credit ledger: granted and buffered bytes within the lane's budget.
mod credit;
/// Peer admission by SO_PEERCRED and rate-limited logs.
pub mod ingress;
pub mod links;
/// What a lane counts, and the OpenMetrics exposition of it.
pub mod metrics;
pub mod poll;
pub mod probe;
/// The producers a lane knows, bounded.
mod producers;
pub mod process;
pub mod runtime;
/// A scripted PostgreSQL backend for the core's tests and fuzz target.
#[cfg(any(test, feature = "testkit"))]
pub mod scripted;
#[cfg(test)]
mod scripted_tests;
/// HELLO and EVENTS: the protocol steps of one connection.
mod session;
/// Appending, acknowledging and committing through the commit queue.
mod spooling;
pub mod uring;
