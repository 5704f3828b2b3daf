//! The codec layer: byte formats, sans-I/O.

/// Protocol v1 frame codec: producer <-> lane.
pub mod frame;
/// Per-table validation of event records, in place.
pub mod validate;
/// COPY BINARY encoder.
pub mod copy;
/// The flat `key = value` format of the config file and the state files.
pub mod pairs;
