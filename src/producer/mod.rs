//! The producer side of protocol v1. Imports only base, model and codec:
//! a module team can take it without the server.

/// One connection to a lane: SO_PEERCRED check, handshake, frames.
pub mod client;
/// Events as typed values, encoded and validated as the lane does.
pub mod event;
/// The reliable event stream: numbering, credit, ACK, resend after a reconnect.
pub mod stream;
/// The load client: synthetic events until every one is acknowledged.
pub mod load;
/// Deterministic synthetic events for load generation and tests (sans-I/O).
pub mod synth;
