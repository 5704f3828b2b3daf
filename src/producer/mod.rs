//! The producer side of protocol v1. Imports only base, model and codec:
//! a module team can take it without the server.

/// The module client library.
pub mod client;
/// The load client: synthetic events until every one is acknowledged.
pub mod load;
/// Deterministic synthetic events for load generation and tests (sans-I/O).
pub mod synth;
