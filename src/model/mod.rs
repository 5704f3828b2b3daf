//! The model layer: what the appliance stores and who may touch it.

/// The producing modules and their fixed names.
pub mod module;
/// The binding ownership matrix: modules, roles, privileges (single source of truth).
pub mod matrix;
/// Event table layouts: columns, types, caps, Core view exposure.
pub mod schema;
