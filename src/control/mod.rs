//! The control layer: everything around the lanes.

/// Errors of the commands, and their exit codes.
pub mod error;
/// The OS accounts: server account, lane identities, the database socket's group.
pub mod accounts;
/// The embedded PostgreSQL cluster.
pub mod cluster;
/// Config file parsing into a typed target.
pub mod config;
/// Versioned migrations from `sql/`.
pub mod migrate;
/// `applianced init`: cluster or external database, migrations, partitions ahead.
pub mod setup;
/// The GRANT/REVOKE script rendered from the matrix.
pub mod grants;
/// SQL rendering of event tables and Core views from the schema.
pub mod ddl;
/// Starting a lane process: its OS identity, spool directory and descriptors;
/// where its files are in the state directory.
pub mod launch;
/// `applianced run`: binds the sockets, supervises lanes and the cluster.
pub mod supervisor;
/// Partition maintenance and retention, on the supervisor's own thread.
pub mod maintenance;
/// The appliance's metrics exposition, from its state directory and /proc.
pub mod exposition;
