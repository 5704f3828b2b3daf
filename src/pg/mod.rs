//! The appliance's own PostgreSQL wire client, built on `postgres-protocol`.
//!
//! `wire` is sans-I/O: it frames and parses backend messages from a
//! `BytesMut`, checking every length against its cap before anything is
//! allocated (STYLE S7). `conn` drives it over a blocking Unix-socket
//! transport: startup, authentication (peer/trust, SCRAM-SHA-256), simple
//! query, errors with SQLSTATE. Runs in whichever process needs the
//! database: `init`, `selftest`, the supervisor.

pub mod conn;
pub mod pipeline;
pub mod wire;

pub use conn::{ConnectParams, Connection};
pub use wire::{PgError, Row};
