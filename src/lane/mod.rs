//! The ingest lane of one module: a process of its own, running one small
//! event loop over a sans-I/O core.
//!
//! `core` and `session` hold the state machine (connections, producers,
//! credit, batches, the PostgreSQL request in flight); `batch` builds one
//! transaction; `uring` drives the core over io_uring, `poll` over poll(2)
//! where io_uring is unavailable; `links` are the lane's control socket
//! and the socket to its `connector`, the process that opens its
//! PostgreSQL connections; `process` is the lane process's entry and
//! `probe` the sandbox probes a lane process can run instead of serving.

pub mod batch;
pub mod connector;
/// Connections, their protocol state and the credit they hold.
mod conns;
pub mod core;
/// The credit ledger: granted and buffered bytes within the lane's budget.
mod credit;
/// Peer admission by SO_PEERCRED and rate-limited logs.
pub mod ingress;
pub mod links;
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
pub mod session;
pub mod spooling;
pub mod uring;
