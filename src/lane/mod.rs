//! The ingest lane of one module: a process of its own, running one small
//! event loop over a sans-I/O core.
//!
//! `core` and `session` hold the state machine (connections, producers,
//! credit, batches, the PostgreSQL request in flight); `batch` builds one
//! transaction; `uring` drives the core over io_uring, `poll` over poll(2)
//! where io_uring is unavailable; `process` is the lane process's entry.

pub mod batch;
pub mod core;
pub mod poll;
pub mod process;
pub mod session;
pub mod spooling;
pub mod uring;
