//! Tools: what `demo` and `bench` run, and the matrix's renderings.

/// Helpers of `applianced demo`: the appliance as a child, loads on every lane.
pub mod demo;
/// `applianced bench`: the appliance beside PostgreSQL's COPY ceiling and multi-row INSERT.
pub mod bench;
/// Markdown and JSON renderings of the matrix.
pub mod matrix_docs;
